//! Idempotent publishing (the IETF httpapi `Idempotency-Key` draft): the first request with a key
//! publishes, and its confirmed answer is kept and replayed for the same key, so a client may
//! retry after a lost answer without publishing twice.
//!
//! Keys are scoped per token and kept in this process, for a bounded time and number, or in
//! Redis (`shared_keys`) so that every replica sees them. A
//! request's fingerprint (a SHA-256 of what it asked) tells a retry from a different request
//! that reuses the key. Only answers the broker decided are kept (a confirm, or a return for a
//! mandatory publish); an answer that leaves the outcome open or was refused before anything was
//! sent is forgotten, so the client may try again with the same key.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::shared_keys::{SharedClaim, SharedKeys, StoreUnavailable};

/// What a kept answer holds: enough to send it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
}

/// How a request with a key goes on.
#[derive(Debug)]
pub enum Begin<C = Claim> {
    /// The first with this key: publish, then `finish` the claim.
    Fresh(C),
    /// A retry of a request already answered: send this answer again.
    Replay(Answer),
    /// The same key while its first request is still being answered.
    InFlight,
    /// The same key for a different request.
    Mismatch,
}

/// Who asked and with which key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Scope {
    token: Option<String>,
    key: String,
}

#[derive(Debug)]
enum Entry {
    InFlight {
        fingerprint: [u8; 32],
    },
    Done {
        fingerprint: [u8; 32],
        answer: Answer,
    },
}

#[derive(Default)]
struct Table {
    entries: HashMap<Scope, Entry>,
    /// Answered keys, oldest first, for expiry and the bound on their number.
    order: VecDeque<(Instant, Scope)>,
}

/// The kept answers: of this process, or of every replica when they are in Redis.
#[derive(Clone)]
pub struct IdempotencyKeys {
    ttl: Duration,
    capacity: usize,
    table: Arc<Mutex<Table>>,
    shared: Option<Arc<SharedKeys>>,
}

/// A request's claim on its key; dropping it unfinished frees the key.
#[derive(Debug)]
pub struct Claim {
    keys: Option<IdempotencyKeys>,
    scope: Scope,
    fingerprint: [u8; 32],
    /// The claim in Redis, when the keys are kept there.
    shared: Option<SharedClaim>,
}

impl std::fmt::Debug for IdempotencyKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyKeys")
            .field("ttl", &self.ttl)
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// The fingerprint of a request: every part that decides what it publishes.
pub fn fingerprint(parts: &[&[u8]]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in parts {
        // Lengths first, so that parts cannot shift into one another.
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hash.finalize().into()
}

impl IdempotencyKeys {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            table: Arc::default(),
            shared: None,
        }
    }

    /// Keys kept in the Redis at `url`, shared by every replica that uses it.
    pub fn shared(ttl: Duration, url: &str) -> Result<Self, String> {
        Ok(Self {
            shared: Some(Arc::new(SharedKeys::new(url)?)),
            ..Self::new(ttl, 1)
        })
    }

    /// Claims `key` for `token`'s request, or says why it may not publish.
    pub async fn begin(
        &self,
        token: Option<&str>,
        key: &str,
        fingerprint: [u8; 32],
    ) -> Result<Begin, StoreUnavailable> {
        let Some(shared) = &self.shared else {
            return Ok(self.begin_here(token, key, fingerprint));
        };
        Ok(match shared.begin(token, key, fingerprint).await? {
            Begin::Fresh(claim) => Begin::Fresh(Claim {
                keys: Some(self.clone()),
                scope: Scope {
                    token: token.map(str::to_owned),
                    key: key.to_owned(),
                },
                fingerprint,
                shared: Some(claim),
            }),
            Begin::Replay(answer) => Begin::Replay(answer),
            Begin::InFlight => Begin::InFlight,
            Begin::Mismatch => Begin::Mismatch,
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Claims `key` in this process's table.
    fn begin_here(&self, token: Option<&str>, key: &str, fingerprint: [u8; 32]) -> Begin {
        let scope = Scope {
            token: token.map(str::to_owned),
            key: key.to_owned(),
        };
        let now = Instant::now();
        let mut table = self.table();
        table.expire(now);
        match table.entries.get(&scope) {
            Some(Entry::InFlight { fingerprint: first }) if *first == fingerprint => {
                return Begin::InFlight;
            }
            Some(Entry::Done {
                fingerprint: first,
                answer,
            }) if *first == fingerprint => return Begin::Replay(answer.clone()),
            Some(_) => return Begin::Mismatch,
            None => {}
        }
        table
            .entries
            .insert(scope.clone(), Entry::InFlight { fingerprint });
        Begin::Fresh(Claim {
            keys: Some(self.clone()),
            scope,
            fingerprint,
            shared: None,
        })
    }
}

impl Table {
    fn expire(&mut self, now: Instant) {
        while let Some((expires, _)) = self.order.front() {
            if *expires > now {
                break;
            }
            if let Some((_, scope)) = self.order.pop_front() {
                self.remove_done(&scope);
            }
        }
    }

    fn remove_done(&mut self, scope: &Scope) {
        if matches!(self.entries.get(scope), Some(Entry::Done { .. })) {
            self.entries.remove(scope);
        }
    }
}

impl Claim {
    /// Keeps `answer` for retries; `None` frees the key for another try.
    pub async fn finish(mut self, answer: Option<Answer>) {
        let Some(keys) = self.keys.take() else {
            return;
        };
        if let (Some(shared), Some(claim)) = (&keys.shared, &self.shared) {
            match answer {
                Some(answer) => shared.keep(claim, &answer, keys.ttl).await,
                None => shared.release(claim).await,
            }
            return;
        }
        let mut table = keys.table();
        match answer {
            Some(answer) => {
                let expires = Instant::now() + keys.ttl;
                table.entries.insert(
                    self.scope.clone(),
                    Entry::Done {
                        fingerprint: self.fingerprint,
                        answer,
                    },
                );
                table.order.push_back((expires, self.scope.clone()));
                while table.order.len() > keys.capacity {
                    if let Some((_, oldest)) = table.order.pop_front() {
                        table.remove_done(&oldest);
                    }
                }
            }
            None => {
                table.entries.remove(&self.scope);
            }
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // A request that went away mid-publish leaves no answer: the key is free again.
        let Some(keys) = self.keys.take() else {
            return;
        };
        match (keys.shared.clone(), self.shared.take()) {
            (Some(shared), Some(claim)) => {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move { shared.release(&claim).await });
                }
            }
            _ => {
                keys.table().entries.remove(&self.scope);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &'static str) -> Answer {
        Answer {
            status: 200,
            content_type: Some("application/json".into()),
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    fn fresh(begin: Begin) -> Claim {
        match begin {
            Begin::Fresh(claim) => claim,
            other => panic!("not fresh: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_kept_answer_is_replayed_and_a_different_request_refused() {
        let keys = IdempotencyKeys::new(Duration::from_secs(60), 10);
        let first = fingerprint(&[b"a"]);
        let claim = fresh(keys.begin(None, "k", first).await.expect("kept here"));
        assert!(matches!(
            keys.begin(None, "k", first).await.expect("kept here"),
            Begin::InFlight
        ));
        claim.finish(Some(answer(r#"{"routed":true}"#))).await;
        match keys.begin(None, "k", first).await.expect("kept here") {
            Begin::Replay(replayed) => assert_eq!(replayed, answer(r#"{"routed":true}"#)),
            other => panic!("not replayed: {other:?}"),
        }
        assert!(matches!(
            keys.begin(None, "k", fingerprint(&[b"b"]))
                .await
                .expect("kept here"),
            Begin::Mismatch
        ));
        // Scoped per token: another token's same key is its own.
        fresh(
            keys.begin(Some("other"), "k", first)
                .await
                .expect("kept here"),
        );
    }

    #[tokio::test]
    async fn an_undecided_answer_frees_the_key_and_so_does_a_dropped_claim() {
        let keys = IdempotencyKeys::new(Duration::from_secs(60), 10);
        let print = fingerprint(&[b"a"]);
        fresh(keys.begin(None, "k", print).await.expect("kept here"))
            .finish(None)
            .await;
        drop(fresh(
            keys.begin(None, "k", print).await.expect("kept here"),
        ));
        fresh(keys.begin(None, "k", print).await.expect("kept here"));
    }

    #[tokio::test]
    async fn answers_expire_and_the_oldest_go_beyond_the_bound() {
        let keys = IdempotencyKeys::new(Duration::ZERO, 10);
        let print = fingerprint(&[b"a"]);
        fresh(keys.begin(None, "k", print).await.expect("kept here"))
            .finish(Some(answer("{}")))
            .await;
        fresh(keys.begin(None, "k", print).await.expect("kept here"));

        let keys = IdempotencyKeys::new(Duration::from_secs(60), 2);
        for key in ["k1", "k2", "k3"] {
            fresh(keys.begin(None, key, print).await.expect("kept here"))
                .finish(Some(answer("{}")))
                .await;
        }
        fresh(keys.begin(None, "k1", print).await.expect("kept here"));
        assert!(matches!(
            keys.begin(None, "k3", print).await.expect("kept here"),
            Begin::Replay(_)
        ));
    }

    #[test]
    fn fingerprints_keep_parts_apart() {
        assert_ne!(fingerprint(&[b"ab", b"c"]), fingerprint(&[b"a", b"bc"]));
        assert_eq!(fingerprint(&[b"ab", b"c"]), fingerprint(&[b"ab", b"c"]));
    }
}
