//! What the gateway promises consumers, apart from routes and AMQP: leases, envelopes, consumer sets.

pub mod amqp_headers;
pub mod consumer_sets;
pub mod envelope;
pub mod leases;
pub mod push;
