//! The gateway's own terms, with no HTTP and no AMQP library types: messages, their
//! properties and encodings, and the topology specs carrot declares.

pub mod encoding;
mod message;
mod properties;
mod quoted;
mod serializer;
pub mod topology;

pub use message::*;
pub use properties::{DeliveryMode, MAX_TABLE_DEPTH, Properties, check_table};
pub use quoted::check_compared_value;

#[cfg(test)]
pub(crate) use properties::fuzzed;
pub use serializer::{Serializer, SerializerError};
