//! A message ready for the broker, and the checks every AMQP string and name gets.

use super::{Properties, quoted};
use bytes::Bytes;

/// AMQP short strings (names, routing keys, most properties) hold at most 255 bytes.
pub const MAX_SHORTSTR: usize = 255;

/// A message ready for the broker: validated, body already encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingMessage {
    pub routing_key: String,
    pub body: Bytes,
    pub properties: Properties,
}

/// The broker's verdict on one published message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Confirmed and taken by at least one queue.
    Routed,
    /// Confirmed, but no queue took it (basic.return).
    Unroutable { reply_code: u16, reply_text: String },
    /// The broker refused responsibility for it (basic.nack).
    Nacked,
}

/// A rule a request broke, phrased for the person who has to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Checks an AMQP short string: `what` names the field in the message.
pub fn check_shortstr(what: &str, value: &str) -> Result<(), Invalid> {
    if value.len() > MAX_SHORTSTR {
        return Err(Invalid(format!(
            "{what} is {} bytes long; AMQP allows at most {MAX_SHORTSTR}",
            value.len()
        )));
    }
    Ok(())
}

/// Checks an exchange or queue name as it appears in a path.
pub fn check_name(what: &str, value: &str) -> Result<(), Invalid> {
    if value.is_empty() {
        return Err(Invalid(format!(
            "{what} name is empty; use amq.default for the default exchange"
        )));
    }
    let what = format!("{what} name");
    check_shortstr(&what, value)?;
    quoted::check_quoted_name(&what, value)
}
