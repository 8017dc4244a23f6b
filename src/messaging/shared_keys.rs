//! `Idempotency-Key` answers kept in Redis, so that every replica sees every key: a retry that
//! lands on another replica is replayed there, and two replicas never both publish one key.
//!
//! One Redis string per key, `carrot-gateway:idempotency:<sha256 of token and key>`, holding
//! JSON: the request's fingerprint, the claiming request's id and, once decided, the answer.
//! A claim is `SET … NX` with a short expiry (a replica that dies mid-publish frees the key);
//! finishing or freeing it is a script that checks the claim is still this request's.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use super::idempotency::{Answer, Begin};

/// How long a claim holds its key while its request publishes: the longest a publish may take
/// (its confirm within the broker timeout), with room to spare.
const CLAIM_HOLD: Duration = Duration::from_secs(60);
/// How long one Redis command may take before the request is answered 503.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

const FINISH: &str = r"
local held = redis.call('GET', KEYS[1])
if held and cjson.decode(held).claim == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0";

const RELEASE: &str = r"
local held = redis.call('GET', KEYS[1])
if held and cjson.decode(held).claim == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// The store could not be asked: the request is refused rather than risk a second publish.
#[derive(Debug, thiserror::Error)]
#[error("the idempotency key store (Redis) did not answer: {0}")]
pub struct StoreUnavailable(pub String);

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    fingerprint: String,
    claim: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    answer: Option<StoredAnswer>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredAnswer {
    status: u16,
    content_type: Option<String>,
    body: String,
}

/// A connection to Redis, made when first needed and remade after a failure.
pub struct SharedKeys {
    client: redis::Client,
    connection: Mutex<Option<ConnectionManager>>,
}

impl std::fmt::Debug for SharedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedKeys").finish_non_exhaustive()
    }
}

/// A request's claim on a key in Redis.
#[derive(Debug, Clone)]
pub struct SharedClaim {
    key: String,
    claim: String,
    fingerprint: String,
}

impl SharedKeys {
    pub fn new(url: &str) -> Result<Self, String> {
        let client = redis::Client::open(url)
            .map_err(|error| format!("idempotency_store {url:?}: {error}"))?;
        Ok(Self {
            client,
            connection: Mutex::new(None),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, StoreUnavailable> {
        let mut held = self.connection.lock().await;
        if let Some(connection) = held.as_ref() {
            return Ok(connection.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1);
        let connection = tokio::time::timeout(
            COMMAND_TIMEOUT,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        .map_err(|_| StoreUnavailable("no connection within 2 s".into()))?
        .map_err(|error| StoreUnavailable(error.to_string()))?;
        *held = Some(connection.clone());
        Ok(connection)
    }

    /// Claims the key, or says why the request may not publish.
    pub async fn begin(
        &self,
        token: Option<&str>,
        key: &str,
        fingerprint: [u8; 32],
    ) -> Result<Begin<SharedClaim>, StoreUnavailable> {
        let mut connection = self.connection().await?;
        let claim = SharedClaim {
            key: redis_key(token, key),
            claim: uuid::Uuid::new_v4().simple().to_string(),
            fingerprint: hex(&fingerprint),
        };
        let held = serde_json::to_string(&Stored {
            fingerprint: claim.fingerprint.clone(),
            claim: claim.claim.clone(),
            answer: None,
        })
        .unwrap_or_default();
        // A key that expires between the claim and the look is claimed again.
        for _ in 0..2 {
            let claimed: Option<String> = redis::cmd("SET")
                .arg(&claim.key)
                .arg(&held)
                .arg("NX")
                .arg("PX")
                .arg(millis(CLAIM_HOLD))
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            if claimed.is_some() {
                return Ok(Begin::Fresh(claim));
            }
            let found: Option<String> = redis::cmd("GET")
                .arg(&claim.key)
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            let Some(found) = found else { continue };
            let stored: Stored = serde_json::from_str(&found).map_err(|error| {
                StoreUnavailable(format!("a stored key does not parse: {error}"))
            })?;
            if stored.fingerprint != claim.fingerprint {
                return Ok(Begin::Mismatch);
            }
            return Ok(match stored.answer {
                None => Begin::InFlight,
                Some(answer) => Begin::Replay(Answer {
                    status: answer.status,
                    content_type: answer.content_type,
                    body: Bytes::from(STANDARD.decode(answer.body).unwrap_or_default()),
                }),
            });
        }
        Err(StoreUnavailable(
            "the key kept changing under the claim".into(),
        ))
    }

    /// Keeps `answer` for `ttl`, if the claim is still this request's.
    pub async fn keep(&self, claim: &SharedClaim, answer: &Answer, ttl: Duration) {
        let stored = serde_json::to_string(&Stored {
            fingerprint: claim.fingerprint.clone(),
            claim: claim.claim.clone(),
            answer: Some(StoredAnswer {
                status: answer.status,
                content_type: answer.content_type.clone(),
                body: STANDARD.encode(&answer.body),
            }),
        })
        .unwrap_or_default();
        let kept = async {
            let mut connection = self.connection().await?;
            redis::Script::new(FINISH)
                .key(&claim.key)
                .arg(&claim.claim)
                .arg(stored)
                .arg(millis(ttl))
                .invoke_async::<i64>(&mut connection)
                .await
                .map_err(unavailable)
        };
        if let Err(error) = kept.await {
            // The claim expires by itself; a retry then publishes again, as without a key.
            tracing::warn!(%error, "keeping an idempotency answer in Redis failed");
        }
    }

    /// Frees the key for another try, if the claim is still this request's.
    pub async fn release(&self, claim: &SharedClaim) {
        let released = async {
            let mut connection = self.connection().await?;
            redis::Script::new(RELEASE)
                .key(&claim.key)
                .arg(&claim.claim)
                .invoke_async::<i64>(&mut connection)
                .await
                .map_err(unavailable)
        };
        if let Err(error) = released.await {
            tracing::warn!(%error, "freeing an idempotency key in Redis failed; it expires by itself");
        }
    }
}

fn unavailable(error: redis::RedisError) -> StoreUnavailable {
    StoreUnavailable(error.to_string())
}

/// The token and key hashed: neither is written to Redis as such.
fn redis_key(token: Option<&str>, key: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(token.unwrap_or("").as_bytes());
    hash.update([0]);
    hash.update([u8::from(token.is_some())]);
    hash.update(key.as_bytes());
    format!("carrot-gateway:idempotency:{}", hex(&hash.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_scoped_by_token_and_hide_both() {
        let anonymous = redis_key(None, "k");
        assert_ne!(anonymous, redis_key(Some(""), "k"));
        assert_ne!(redis_key(Some("a"), "k"), redis_key(Some("b"), "k"));
        assert!(!redis_key(Some("secret-token"), "my-key").contains("my-key"));
    }
}
