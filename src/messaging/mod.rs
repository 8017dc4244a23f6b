//! What the gateway promises consumers, with neither HTTP nor AMQP types: leases and envelopes.

pub mod envelope;
pub mod leases;
