//! Receipts and consumer set ids that name the replica holding them.
//!
//! Alone, a token is 32 random hex digits. With replicas it is `<random>.<owner>.<mac>`: the
//! owner is this process's instance id and advertised address, and the MAC (HMAC-SHA256 under
//! the shared secret) makes it unforgeable, so a client can neither steer a replica to forward
//! anywhere else nor derive another token. The instance id tells a restarted replica, which
//! lost its leases with its connections, from the one that handed the token out.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the MAC kept in a token: 128 bits cannot be guessed.
const MAC_BYTES: usize = 16;
/// Hex digits of an instance id.
const INSTANCE_LEN: usize = 32;

/// Mints tokens for this process, and tells whose a token is.
pub struct Tokens {
    me: Option<Me>,
}

struct Me {
    instance: String,
    url: String,
    key: Vec<u8>,
}

/// Who holds what a token names.
#[derive(Debug, PartialEq, Eq)]
pub enum Whose {
    /// This process, or nobody: answered here (an unknown token is a 404 here).
    Here,
    /// Another replica: its address, and the instance id it must answer with.
    Peer { url: String, instance: String },
    /// A replica that was at this process's own address before it restarted: what it held was
    /// released when it stopped.
    Gone,
}

impl Tokens {
    /// Tokens of a gateway alone.
    pub fn alone() -> Self {
        Self { me: None }
    }

    /// Tokens of the replica reached at `url`, signed with `secret`.
    pub fn replica(url: &str, secret: &str) -> Self {
        Self {
            me: Some(Me {
                instance: uuid::Uuid::new_v4().simple().to_string(),
                url: url.to_owned(),
                key: secret.as_bytes().to_vec(),
            }),
        }
    }

    pub fn is_replica(&self) -> bool {
        self.me.is_some()
    }

    /// This replica's advertised address and instance id, which it answers forwarded requests
    /// with.
    pub fn me(&self) -> Option<(&str, &str)> {
        self.me
            .as_ref()
            .map(|me| (me.url.as_str(), me.instance.as_str()))
    }

    /// A new token: 122 random bits, and with replicas the signed owner.
    pub fn mint(&self) -> String {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let Some(me) = &self.me else {
            return id;
        };
        let owner = URL_SAFE_NO_PAD.encode(format!("{}{}", me.instance, me.url));
        let signed = format!("{id}.{owner}");
        let mac = me.mac(signed.as_bytes());
        format!("{signed}.{mac}")
    }

    pub fn whose(&self, token: &str) -> Whose {
        let Some(me) = &self.me else {
            return Whose::Here;
        };
        let Some((signed, mac)) = token.rsplit_once('.') else {
            return Whose::Here;
        };
        let Some((_, owner)) = signed.split_once('.') else {
            return Whose::Here;
        };
        if !me.verify(signed.as_bytes(), mac) {
            // Forged or from another deployment: unknown here, like any unknown token.
            return Whose::Here;
        }
        let Some(owner) = URL_SAFE_NO_PAD
            .decode(owner)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
        else {
            return Whose::Here;
        };
        let Some((instance, url)) = owner.split_at_checked(INSTANCE_LEN) else {
            return Whose::Here;
        };
        if instance == me.instance {
            Whose::Here
        } else if url == me.url {
            Whose::Gone
        } else {
            Whose::Peer {
                url: url.to_owned(),
                instance: instance.to_owned(),
            }
        }
    }

    /// Signs a request forwarded to another replica: `<unix seconds>.<mac>`.
    pub fn sign_forward(&self, method: &str, path: &str, now: u64) -> Option<String> {
        let me = self.me.as_ref()?;
        let mac = me.mac(forward_text(method, path, now).as_bytes());
        Some(format!("{now}.{mac}"))
    }

    /// Checks a forwarded request's signature, made at most `skew` seconds from `now`.
    pub fn verify_forward(
        &self,
        method: &str,
        path: &str,
        signature: &str,
        now: u64,
        skew: u64,
    ) -> bool {
        let Some(me) = &self.me else {
            return false;
        };
        let Some((at, mac)) = signature.split_once('.') else {
            return false;
        };
        let Ok(at) = at.parse::<u64>() else {
            return false;
        };
        at.abs_diff(now) <= skew && me.verify(forward_text(method, path, at).as_bytes(), mac)
    }
}

fn forward_text(method: &str, path: &str, at: u64) -> String {
    format!("forward\n{method}\n{path}\n{at}")
}

impl Me {
    fn hmac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.key).expect("HMAC takes a key of any length")
    }

    fn mac(&self, text: &[u8]) -> String {
        let mut mac = self.hmac();
        mac.update(text);
        URL_SAFE_NO_PAD.encode(&mac.finalize().into_bytes()[..MAC_BYTES])
    }

    fn verify(&self, text: &[u8], mac: &str) -> bool {
        let Ok(given) = URL_SAFE_NO_PAD.decode(mac) else {
            return false;
        };
        let mut expected = self.hmac();
        expected.update(text);
        given.len() == MAC_BYTES && expected.verify_truncated_left(&given).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn alone_a_token_is_32_hex_digits_and_always_here() {
        let tokens = Tokens::alone();
        let token = tokens.mint();
        assert_eq!(token.len(), 32);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(tokens.whose(&token), Whose::Here);
        assert_eq!(tokens.whose("a.b.c"), Whose::Here);
    }

    #[test]
    fn a_replica_knows_its_own_tokens_and_its_peers() {
        let a = Tokens::replica("http://10.0.0.1:8080", SECRET);
        let b = Tokens::replica("http://10.0.0.2:8080", SECRET);
        let token = a.mint();
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "URL-safe: {token}"
        );
        assert_eq!(a.whose(&token), Whose::Here);
        assert_eq!(
            b.whose(&token),
            Whose::Peer {
                url: "http://10.0.0.1:8080".into(),
                instance: a.me().expect("a replica").1.into(),
            }
        );
        assert_ne!(a.mint(), token);
    }

    #[test]
    fn a_restarted_replica_at_the_same_address_knows_the_token_is_gone() {
        let before = Tokens::replica("http://gw-0.peers:8080", SECRET);
        let after = Tokens::replica("http://gw-0.peers:8080", SECRET);
        assert_eq!(after.whose(&before.mint()), Whose::Gone);
    }

    #[test]
    fn a_forged_or_foreign_token_is_unknown_here() {
        let a = Tokens::replica("http://10.0.0.1:8080", SECRET);
        let b = Tokens::replica("http://10.0.0.2:8080", SECRET);
        let other = Tokens::replica("http://evil:8080", "another secret of thirty-two bytes!");
        assert_eq!(b.whose(&other.mint()), Whose::Here);

        let token = a.mint();
        let (signed, _mac) = token.rsplit_once('.').expect("three parts");
        let (id, _owner) = signed.split_once('.').expect("three parts");
        let evil = URL_SAFE_NO_PAD.encode(format!("{}http://evil:8080", "0".repeat(32)));
        let mac = token.rsplit('.').next().expect("mac");
        assert_eq!(b.whose(&format!("{id}.{evil}.{mac}")), Whose::Here);
        assert_eq!(b.whose(&format!("{signed}.AAAA")), Whose::Here);
        assert_eq!(b.whose(&format!("{signed}.")), Whose::Here);
    }

    #[test]
    fn forward_signatures_cover_method_path_and_time() {
        let a = Tokens::replica("http://10.0.0.1:8080", SECRET);
        let b = Tokens::replica("http://10.0.0.2:8080", SECRET);
        let signature = a
            .sign_forward("POST", "/queues/q/messages/r/ack", 1000)
            .expect("replica");
        assert!(b.verify_forward("POST", "/queues/q/messages/r/ack", &signature, 1010, 60));
        assert!(!b.verify_forward("POST", "/queues/q/messages/r/reject", &signature, 1010, 60));
        assert!(!b.verify_forward("GET", "/queues/q/messages/r/ack", &signature, 1010, 60));
        assert!(!b.verify_forward("POST", "/queues/q/messages/r/ack", &signature, 2000, 60));
        assert!(!b.verify_forward("POST", "/queues/q/messages/r/ack", "1000.x", 1000, 60));
        assert!(!Tokens::alone().verify_forward("POST", "/", &signature, 1000, 60));
    }
}
