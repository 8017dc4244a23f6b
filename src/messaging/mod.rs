//! What the gateway promises consumers, with neither HTTP nor AMQP types: leases, envelopes, consumer sets.

pub mod consumer_sets;
pub mod envelope;
pub mod leases;
