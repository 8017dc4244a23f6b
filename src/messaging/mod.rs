//! What the gateway promises readers and subscribers, apart from routes and AMQP: handing
//! messages out, leases, envelopes, consumer sets, filtered discards, push subscriptions, Celery
//! tasks, streams read by offset.

pub mod amqp_headers;
pub mod consume;
pub mod consumer_sets;
pub mod discard;
pub mod envelope;
pub mod idempotency;
pub mod lease_scope;
pub mod leases;
pub mod push;
pub mod shared_keys;
pub mod stream_read;
pub mod tasks;
