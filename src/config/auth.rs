//! The auth section: the file's `auth:` (tokens, `/metrics` protection, anonymous access) and the
//! flag that lets a public listener serve without tokens.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::MapAccess;

use super::ConfigError;
use super::settings::{Keys, deserialize_keys, settings};
use crate::auth::{Auth, Token};

settings! {
    /// Anonymous access.
    #[command(next_help_heading = "Auth")]
    pub struct AuthArgs;

    /// Who may call, resolved.
    pub struct AuthConfig {
        /// Serve without any token even on a non-loopback address.
        #[arg(
            long,
            env = "CARROT_ALLOW_ANONYMOUS",
            num_args = 0..=1,
            default_missing_value = "true"
        )]
        pub allow_anonymous: bool = "false",
    }
    also {
        /// The file's tokens, and how each request is checked against them.
        pub tokens: Arc<Auth>,
    }
}

/// The file's `auth:` section: the setting above, and what only the file can say.
#[derive(Debug, Default)]
pub(super) struct AuthFile {
    pub args: AuthArgs,
    /// `/metrics` needs a token too (any valid one).
    pub protect_metrics: bool,
    pub tokens: Vec<TokenConfig>,
}

impl Keys for AuthFile {
    fn keys() -> Vec<&'static str> {
        [AuthArgs::keys(), vec!["protect_metrics", "tokens"]].concat()
    }

    fn read<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "protect_metrics" => self.protect_metrics = map.next_value()?,
            "tokens" => self.tokens = map.next_value()?,
            _ => return self.args.read(key, map),
        }
        Ok(true)
    }
}

impl<'de> Deserialize<'de> for AuthFile {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_keys(deserializer)
    }
}

/// A bearer token; the secret is given inline, by environment variable or by file (a mounted Secret).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    pub token: Option<String>,
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    /// Regexes over exchange and queue names, as in RabbitMQ; empty grants nothing.
    #[serde(default)]
    pub configure: String,
    #[serde(default)]
    pub write: String,
    #[serde(default)]
    pub read: String,
}

impl AuthFile {
    /// Resolves the tokens, reading secrets from the environment or files as configured.
    ///
    /// Requests without a token get every permission only when the file's
    /// `auth.allow_anonymous` says so: `--allow-anonymous` and `CARROT_ALLOW_ANONYMOUS` only
    /// allow a public listen address without tokens.
    pub(super) fn read_tokens(&self) -> Result<Auth, ConfigError> {
        let mut tokens = Vec::new();
        for (index, entry) in self.tokens.iter().enumerate() {
            let invalid = |message: String| ConfigError::Invalid {
                key: "auth.tokens",
                message: format!("entry {index} ({:?}): {message}", entry.name),
            };
            let secret = match (&entry.token, &entry.token_env, &entry.token_file) {
                (Some(token), None, None) => token.clone(),
                (None, Some(variable), None) => std::env::var(variable)
                    .map_err(|_| invalid(format!("environment variable {variable} is not set")))?,
                (None, None, Some(path)) => std::fs::read_to_string(path)
                    .map_err(|error| invalid(format!("cannot read {}: {error}", path.display())))?
                    .trim()
                    .to_owned(),
                _ => {
                    return Err(invalid(
                        "give exactly one of token, token_env, token_file".into(),
                    ));
                }
            };
            let token = Token::new(
                &entry.name,
                &secret,
                &entry.configure,
                &entry.write,
                &entry.read,
            )
            .map_err(invalid)?;
            tokens.push(token);
        }
        Ok(Auth::new(
            tokens,
            self.args.allow_anonymous.unwrap_or(false),
            self.protect_metrics,
        ))
    }
}
