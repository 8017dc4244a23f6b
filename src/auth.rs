//! Bearer tokens with RabbitMQ-style permissions: `configure`, `write` and `read` regexes over names.

use std::sync::Arc;

use regex::Regex;
use subtle::ConstantTimeEq;

/// What an operation needs on a name, as RabbitMQ's permissions mean it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Declare or delete exchanges and queues.
    Configure,
    /// Publish to an exchange; bind a queue.
    Write,
    /// Consume, settle, purge, stream; bind from an exchange.
    Read,
}

impl Permission {
    fn word(self) -> &'static str {
        match self {
            Self::Configure => "configure",
            Self::Write => "write",
            Self::Read => "read",
        }
    }
}

/// One configured token.
#[derive(Debug)]
pub struct Token {
    pub name: String,
    secret: Vec<u8>,
    configure: Option<Regex>,
    write: Option<Regex>,
    read: Option<Regex>,
}

impl Token {
    /// An empty pattern grants nothing, as in RabbitMQ.
    pub fn new(
        name: &str,
        secret: &str,
        configure: &str,
        write: &str,
        read: &str,
    ) -> Result<Self, String> {
        if secret.is_empty() {
            return Err(format!("token {name:?} is empty"));
        }
        let pattern = |which: &str, text: &str| -> Result<Option<Regex>, String> {
            if text.is_empty() {
                return Ok(None);
            }
            Regex::new(text)
                .map(Some)
                .map_err(|error| format!("token {name:?}: {which} pattern: {error}"))
        };
        Ok(Self {
            name: name.to_owned(),
            secret: secret.as_bytes().to_vec(),
            configure: pattern("configure", configure)?,
            write: pattern("write", write)?,
            read: pattern("read", read)?,
        })
    }

    fn pattern(&self, permission: Permission) -> Option<&Regex> {
        match permission {
            Permission::Configure => self.configure.as_ref(),
            Permission::Write => self.write.as_ref(),
            Permission::Read => self.read.as_ref(),
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Principal {
    /// No token needed (no tokens configured, or anonymous access allowed): every permission.
    Anonymous,
    Token(Arc<Token>),
}

impl Principal {
    pub fn name(&self) -> Option<&str> {
        match self {
            Principal::Anonymous => None,
            Principal::Token(token) => Some(&token.name),
        }
    }

    /// `what` is "exchange" or "queue", for the message.
    pub fn require(&self, permission: Permission, what: &str, name: &str) -> Result<(), String> {
        let Principal::Token(token) = self else {
            return Ok(());
        };
        match token.pattern(permission) {
            Some(pattern) if pattern.is_match(name) => Ok(()),
            Some(pattern) => Err(format!(
                "token {:?} may not {} {what} {name:?}: its {} pattern is {:?}",
                token.name,
                permission.word(),
                permission.word(),
                pattern.as_str()
            )),
            None => Err(format!(
                "token {:?} has no {} permission at all",
                token.name,
                permission.word()
            )),
        }
    }

    /// True when any permission covers `name` (looking at an exchange or queue).
    pub fn may_see(&self, name: &str) -> bool {
        [Permission::Configure, Permission::Write, Permission::Read]
            .into_iter()
            .any(|permission| self.require(permission, "", name).is_ok())
    }
}

#[derive(Debug, Default)]
pub struct Auth {
    tokens: Vec<Arc<Token>>,
    allow_anonymous: bool,
    /// `/metrics` needs a token too.
    pub protect_metrics: bool,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("this gateway needs a token: send Authorization: Bearer <token>")]
    Missing,
    #[error("the token is not valid for this gateway")]
    Wrong,
}

impl Auth {
    pub fn new(tokens: Vec<Token>, allow_anonymous: bool, protect_metrics: bool) -> Self {
        Self {
            tokens: tokens.into_iter().map(Arc::new).collect(),
            allow_anonymous,
            protect_metrics,
        }
    }

    pub fn has_tokens(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Reads `Authorization: Bearer …`; every token is compared, in constant time.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        let Some(header) = authorization else {
            return if self.allow_anonymous || self.tokens.is_empty() {
                Ok(Principal::Anonymous)
            } else {
                Err(AuthError::Missing)
            };
        };
        let presented = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or(AuthError::Wrong)?
            .trim()
            .as_bytes();
        let mut found = None;
        for token in &self.tokens {
            if bool::from(token.secret.as_slice().ct_eq(presented)) {
                found = Some(token.clone());
            }
        }
        found.map(Principal::Token).ok_or(AuthError::Wrong)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        let app = Token::new("app", "s3cret", "^app\\.", "^app\\.", "^app\\.").expect("valid");
        let reader = Token::new("reader", "r3ad", "", "", ".*").expect("valid");
        Auth::new(vec![app, reader], false, false)
    }

    #[test]
    fn tokens_are_checked() {
        let auth = auth();
        assert_eq!(auth.authenticate(None).err(), Some(AuthError::Missing));
        assert_eq!(
            auth.authenticate(Some("Bearer nope")).err(),
            Some(AuthError::Wrong)
        );
        assert_eq!(
            auth.authenticate(Some("Basic s3cret")).err(),
            Some(AuthError::Wrong)
        );
        let principal = auth
            .authenticate(Some("Bearer s3cret"))
            .expect("known token");
        assert_eq!(principal.name(), Some("app"));
    }

    #[test]
    fn patterns_decide_like_rabbitmq() {
        let auth = auth();
        let app = auth.authenticate(Some("Bearer s3cret")).expect("known");
        assert!(
            app.require(Permission::Write, "exchange", "app.orders")
                .is_ok()
        );
        let error = app
            .require(Permission::Write, "exchange", "billing")
            .expect_err("denied");
        assert!(error.contains("^app\\\\."), "{error}");
        let reader = auth.authenticate(Some("Bearer r3ad")).expect("known");
        assert!(
            reader
                .require(Permission::Read, "queue", "anything")
                .is_ok()
        );
        assert!(
            reader
                .require(Permission::Configure, "queue", "anything")
                .is_err()
        );
        assert!(reader.may_see("anything"));
    }

    #[test]
    fn anonymous_when_allowed_or_no_tokens() {
        assert!(matches!(
            Auth::default().authenticate(None),
            Ok(Principal::Anonymous)
        ));
        let open = Auth::new(
            vec![Token::new("t", "x", "", "", "").expect("valid")],
            true,
            false,
        );
        assert!(matches!(open.authenticate(None), Ok(Principal::Anonymous)));
        assert!(
            open.authenticate(Some("Bearer y")).is_err(),
            "a wrong token is never anonymous"
        );
    }
}
