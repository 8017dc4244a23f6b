//! Every domain error as the problem a client sees: what went wrong and what to do next.

use super::ApiError;
use crate::broker;
use crate::messaging::consumer_sets::ConsumerSetError;
use crate::messaging::leases::LeaseError;
use crate::messaging::push::PushError;
use crate::messaging::tasks::TaskError;
use crate::model::encoding::EncodingError;
use crate::model::{Invalid, SerializerError};

impl From<broker::Error> for ApiError {
    fn from(error: broker::Error) -> Self {
        use broker::Error as E;
        match error {
            E::PropertiesTooLarge { index, .. } => ApiError::InvalidRequest(match index {
                Some(index) => format!("messages[{index}]: {error}"),
                None => error.to_string(),
            }),
            E::Unavailable(reason) => ApiError::BrokerUnavailable(format!(
                "the gateway cannot use the broker right now ({reason}); retry after the \
                 Retry-After delay, /readyz tells when it is back"
            )),
            E::ChannelClosed(reason) => {
                ApiError::BrokerUnavailable(format!("{reason}; nothing was done, try again"))
            }
            E::ConfirmLost(_) => ApiError::ConfirmLost(format!(
                "{error}; it may or may not be stored: retry only if a duplicate is harmless \
                 (consumers can drop repeats by message_id)"
            )),
            E::Timeout(after) => ApiError::BrokerTimeout(format!(
                "the broker did not answer within {} s; the outcome is unknown, \
                 so check before retrying a publish",
                after.as_secs()
            )),
            E::ExchangeNotFound(text) => ApiError::ExchangeNotFound(format!(
                "{text}; declare it first with PUT /exchanges/{{exchange}}"
            )),
            E::QueueNotFound(text) => ApiError::QueueNotFound(format!(
                "{text}; declare it first with PUT /queues/{{queue}}"
            )),
            E::AccessRefused(text) => ApiError::Forbidden(format!(
                "the broker refused access: {text}; check the permissions of the gateway's broker user"
            )),
            E::PreconditionFailed(text) => ApiError::PreconditionFailed(text),
            E::InvalidArgument(text) => {
                ApiError::InvalidRequest(format!("the broker refused the settings: {text}"))
            }
            E::StreamQueue(text) => ApiError::InvalidRequest(format!(
                "{text}; read a stream by offset: GET /queues/{{queue}}/messages?offset=first \
                 (or last, next, a number, an RFC 3339 time), or its /stream?offset=…"
            )),
            E::NotAStream(text) => ApiError::InvalidRequest(text),
            E::LeaseLost => ApiError::ReceiptNotFound(format!(
                "{error_text}; take it again",
                error_text = E::LeaseLost
            )),
            E::Refused { code, text } => {
                ApiError::InvalidRequest(format!("the broker refused the request ({code}): {text}"))
            }
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(error: Invalid) -> Self {
        ApiError::InvalidRequest(error.0)
    }
}

impl From<SerializerError> for ApiError {
    fn from(error: SerializerError) -> Self {
        match error {
            SerializerError::Unsupported(text) => ApiError::UnsupportedSerializer(text),
            SerializerError::Encode(text) => ApiError::InvalidRequest(text),
        }
    }
}

impl From<LeaseError> for ApiError {
    fn from(error: LeaseError) -> Self {
        match error {
            LeaseError::NotFound => ApiError::ReceiptNotFound(format!(
                "{error}; take the message again with GET /queues/{{queue}}/next"
            )),
            LeaseError::Broker(error) => error.into(),
        }
    }
}

impl From<ConsumerSetError> for ApiError {
    fn from(error: ConsumerSetError) -> Self {
        match error {
            ConsumerSetError::NotFound(_) => {
                ApiError::ConsumerNotFound(format!("{error}; create one with POST /consumers"))
            }
            ConsumerSetError::QueueNotInSet { .. } => ApiError::QueueNotFound(error.to_string()),
            ConsumerSetError::Busy(_) => ApiError::ConsumerBusy(error.to_string()),
            ConsumerSetError::Broker(error) => error.into(),
        }
    }
}

impl From<EncodingError> for ApiError {
    fn from(error: EncodingError) -> Self {
        match error {
            EncodingError::Invalid(error) => error.into(),
            EncodingError::Serializer(error) => error.into(),
            EncodingError::MediaType(text) => ApiError::UnsupportedMediaType(text),
        }
    }
}

impl From<PushError> for ApiError {
    fn from(error: PushError) -> Self {
        match error {
            PushError::NotFound(_) => ApiError::SubscriptionNotFound(format!(
                "{error}; create one with POST /subscriptions"
            )),
            PushError::Conflict(_) => ApiError::PreconditionFailed(error.to_string()),
            PushError::Broker(error) => error.into(),
        }
    }
}

impl From<TaskError> for ApiError {
    fn from(error: TaskError) -> Self {
        match error {
            TaskError::Invalid(error) => error.into(),
            TaskError::Broker(error) => error.into(),
            TaskError::Unroutable { .. } => ApiError::Unroutable(error.to_string()),
            TaskError::Nacked => ApiError::publish_nacked(),
        }
    }
}

impl ApiError {
    /// basic.nack: the broker did not take the message.
    pub fn publish_nacked() -> Self {
        ApiError::PublishNacked(
            "the broker refused the message (basic.nack), e.g. a full queue with \
             x-overflow=reject-publish; it was not stored, retry later"
                .into(),
        )
    }

    /// A mandatory message that no queue took.
    pub fn unroutable(
        exchange: &str,
        routing_key: &str,
        reply_code: u16,
        reply_text: &str,
    ) -> Self {
        ApiError::Unroutable(format!(
            "no queue is bound to exchange {exchange:?} for routing key {routing_key:?} \
             (broker reply {reply_code} {reply_text}); the message was dropped"
        ))
    }
}
