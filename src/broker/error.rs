//! What can go wrong talking to the broker, classified once so the HTTP layer can map it.

use std::time::Duration;

use lapin::ErrorKind;
use lapin::protocol::AMQPErrorKind;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// No usable connection: the broker is down, unreachable, or closed the connection.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// This channel was closed (by an earlier error on it); the connection may be fine.
    #[error("{0}")]
    ChannelClosed(String),
    /// The connection closed after a message was sent and before its confirm: the broker may or
    /// may not have stored it.
    #[error("the broker connection closed before the message was confirmed ({0})")]
    ConfirmLost(String),
    /// The broker did not reply or confirm in time.
    #[error("broker did not answer within {0:?}")]
    Timeout(Duration),
    /// AMQP 404 NOT_FOUND on an exchange.
    #[error("{0}")]
    ExchangeNotFound(String),
    /// AMQP 404 NOT_FOUND on a queue.
    #[error("{0}")]
    QueueNotFound(String),
    /// AMQP 403 ACCESS_REFUSED.
    #[error("{0}")]
    AccessRefused(String),
    /// AMQP 406 PRECONDITION_FAILED or 405 RESOURCE_LOCKED.
    #[error("{0}")]
    PreconditionFailed(String),
    /// The broker refused arguments or settings of something new (becomes 400).
    #[error("{0}")]
    InvalidArgument(String),
    /// A message's properties do not fit one AMQP frame; `index` is its place in a batch.
    #[error(
        "the properties (headers included) take {size} bytes encoded, and the broker takes at \
         most {limit} per message (its frame_max): send fewer or smaller headers"
    )]
    PropertiesTooLarge {
        index: Option<usize>,
        size: usize,
        limit: usize,
    },
    /// The queue is a stream: RabbitMQ refuses basic.get, purge and reject on it by closing the
    /// whole connection.
    #[error("{0}")]
    StreamQueue(String),
    /// Offsets were asked of a queue that is not a stream.
    #[error("{0}")]
    NotAStream(String),
    /// The channel holding an unsettled message closed; the broker requeued the message.
    #[error("the channel that held this message closed, so the broker put it back in its queue")]
    LeaseLost,
    /// Any other reply the broker closed the channel with.
    #[error("broker refused the request: {code} {text}")]
    Refused { code: u16, text: String },
}

impl From<lapin::Error> for Error {
    fn from(error: lapin::Error) -> Self {
        match error.kind() {
            ErrorKind::ProtocolError(amqp) => {
                let text = amqp.get_message().to_string();
                match amqp.kind() {
                    AMQPErrorKind::Hard(_) if text.contains("not supported by stream queues") => {
                        Error::StreamQueue(text)
                    }
                    AMQPErrorKind::Hard(_) => Error::Unavailable(text),
                    AMQPErrorKind::Soft(_) => classify_reply(amqp.get_id(), text),
                }
            }
            // The channel is gone, perhaps closed by the broker for an earlier request on it;
            // the connection may well be fine, and its supervisor finds out if it is not.
            ErrorKind::InvalidChannelState(state, operation) => {
                Error::ChannelClosed(format!("channel closed ({state:?}) during {operation}"))
            }
            _ => Error::Unavailable(error.to_string()),
        }
    }
}

/// Maps a channel-level reply code (and RabbitMQ's reply text) to an error.
pub fn classify_reply(code: u16, text: String) -> Error {
    match code {
        404 if text.contains("no queue") => Error::QueueNotFound(text),
        404 => Error::ExchangeNotFound(text),
        403 => Error::AccessRefused(text),
        405 | 406 => Error::PreconditionFailed(text),
        _ => Error::Refused { code, text },
    }
}

impl Error {
    /// True when the failure is the connection's, not the request's or one channel's.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::ConfirmLost(_))
    }

    /// The error of a publish whose frames all went out: the outcome of a lost connection is
    /// unknown then, and anything the broker refused is the request's fault.
    pub fn unconfirmed(error: lapin::Error) -> Self {
        match Error::from(error) {
            Error::Unavailable(text) => Error::ConfirmLost(text),
            Error::PreconditionFailed(text) => Error::InvalidArgument(text),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_is_told_apart_by_rabbitmq_text() {
        assert!(matches!(
            classify_reply(404, "NOT_FOUND - no queue 'q' in vhost '/'".into()),
            Error::QueueNotFound(_)
        ));
        assert!(matches!(
            classify_reply(404, "NOT_FOUND - no exchange 'x' in vhost '/'".into()),
            Error::ExchangeNotFound(_)
        ));
        assert!(matches!(
            classify_reply(405, "RESOURCE_LOCKED".into()),
            Error::PreconditionFailed(_)
        ));
    }

    #[test]
    fn a_publish_sent_but_not_confirmed_has_an_unknown_outcome() {
        use lapin::protocol::{AMQPError, AMQPSoftError};
        let lost = lapin::Error::from(ErrorKind::InvalidConnectionState(
            lapin::ConnectionState::Error,
        ));
        assert!(matches!(Error::unconfirmed(lost), Error::ConfirmLost(_)));
        let refused = |soft: AMQPSoftError, text: &str| {
            let amqp = AMQPError::new(AMQPErrorKind::Soft(soft), text.into());
            Error::unconfirmed(lapin::Error::from(ErrorKind::ProtocolError(amqp)))
        };
        assert!(matches!(
            refused(
                AMQPSoftError::NOTFOUND,
                "NOT_FOUND - no exchange 'x' in vhost '/'"
            ),
            Error::ExchangeNotFound(_)
        ));
        assert!(matches!(
            refused(
                AMQPSoftError::PRECONDITIONFAILED,
                "PRECONDITION_FAILED - user_id"
            ),
            Error::InvalidArgument(_)
        ));
    }
}
