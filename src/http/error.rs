//! The one HTTP error type: every failure becomes RFC 9457 problem+json with a stable `code`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::broker;
use crate::model::{Invalid, SerializerError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    ExchangeNotFound(String),
    #[error("{0}")]
    QueueNotFound(String),
    #[error("{0}")]
    ReceiptNotFound(String),
    #[error("{0}")]
    ConsumerNotFound(String),
    #[error("{0}")]
    SubscriptionNotFound(String),
    #[error("{0}")]
    RouteNotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    ConsumerBusy(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    HeadersTooLarge(String),
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    UnsupportedSerializer(String),
    #[error("{0}")]
    Unroutable(String),
    #[error("{0}")]
    BrokerUnavailable(String),
    #[error("{0}")]
    PublishNacked(String),
    #[error("{0}")]
    BrokerTimeout(String),
    #[error("{0}")]
    ConfirmLost(String),
    /// Logged in full; the client only learns that it was the gateway's fault.
    #[error("{0}")]
    Internal(String),
}

/// The problem+json body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:carrot-gateway:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    /// What was wrong and what to do about it.
    pub detail: String,
    /// Stable snake_case word to branch on.
    pub code: &'static str,
}

/// Marks a response whose `Retry-After` the broker's reconnect schedule decides.
#[derive(Debug, Clone, Copy)]
pub struct NeedsRetryAfter;

/// The cause of a 5xx, for the one log line that names the request it failed.
#[derive(Debug, Clone)]
pub struct ServerFailure {
    pub code: &'static str,
    pub error: String,
}

/// Every problem the gateway answers with. The one table from a problem to its status, `code`
/// and title; the OpenAPI document lists each operation's problems from it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Code {
    InvalidRequest,
    Unauthorized,
    Forbidden,
    ExchangeNotFound,
    QueueNotFound,
    ConsumerNotFound,
    SubscriptionNotFound,
    ReceiptNotFound,
    NotFound,
    MethodNotAllowed,
    PreconditionFailed,
    ConsumerBusy,
    PayloadTooLarge,
    HeadersTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
    UnsupportedSerializer,
    Unroutable,
    BrokerUnavailable,
    PublishNacked,
    BrokerTimeout,
    ConfirmLost,
    InternalError,
}

impl Code {
    pub const ALL: [Code; 23] = [
        Code::InvalidRequest,
        Code::Unauthorized,
        Code::Forbidden,
        Code::ExchangeNotFound,
        Code::QueueNotFound,
        Code::ConsumerNotFound,
        Code::SubscriptionNotFound,
        Code::ReceiptNotFound,
        Code::NotFound,
        Code::MethodNotAllowed,
        Code::PreconditionFailed,
        Code::ConsumerBusy,
        Code::PayloadTooLarge,
        Code::HeadersTooLarge,
        Code::RequestTimeout,
        Code::UnsupportedMediaType,
        Code::UnsupportedSerializer,
        Code::Unroutable,
        Code::BrokerUnavailable,
        Code::PublishNacked,
        Code::BrokerTimeout,
        Code::ConfirmLost,
        Code::InternalError,
    ];

    pub fn parts(self) -> (StatusCode, &'static str, &'static str) {
        use Code::*;
        match self {
            InvalidRequest => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Invalid request",
            ),
            Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            Forbidden => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            ExchangeNotFound => (
                StatusCode::NOT_FOUND,
                "exchange_not_found",
                "Exchange not found",
            ),
            QueueNotFound => (StatusCode::NOT_FOUND, "queue_not_found", "Queue not found"),
            ConsumerNotFound => (
                StatusCode::NOT_FOUND,
                "consumer_not_found",
                "Consumer set not found",
            ),
            SubscriptionNotFound => (
                StatusCode::NOT_FOUND,
                "subscription_not_found",
                "Subscription not found",
            ),
            ReceiptNotFound => (
                StatusCode::NOT_FOUND,
                "receipt_not_found",
                "Receipt not found",
            ),
            NotFound => (StatusCode::NOT_FOUND, "not_found", "No such resource"),
            MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
            ),
            PreconditionFailed => (
                StatusCode::CONFLICT,
                "precondition_failed",
                "Precondition failed",
            ),
            ConsumerBusy => (StatusCode::CONFLICT, "consumer_busy", "Consumer set busy"),
            PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
            ),
            HeadersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                "Request header fields too large",
            ),
            RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "Request body too slow",
            ),
            UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
            ),
            UnsupportedSerializer => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_serializer",
                "Unsupported serializer",
            ),
            Unroutable => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "unroutable",
                "Message unroutable",
            ),
            BrokerUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "broker_unavailable",
                "Broker unavailable",
            ),
            PublishNacked => (
                StatusCode::SERVICE_UNAVAILABLE,
                "publish_nacked",
                "Publish not confirmed",
            ),
            BrokerTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "broker_timeout",
                "Broker timeout",
            ),
            ConfirmLost => (
                StatusCode::GATEWAY_TIMEOUT,
                "confirm_lost",
                "Publish outcome unknown",
            ),
            InternalError => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "Internal error",
            ),
        }
    }

    pub fn status(self) -> StatusCode {
        self.parts().0
    }

    pub fn name(self) -> &'static str {
        self.parts().1
    }

    pub fn title(self) -> &'static str {
        self.parts().2
    }
}

impl ApiError {
    pub fn code(&self) -> Code {
        match self {
            ApiError::InvalidRequest(_) => Code::InvalidRequest,
            ApiError::Unauthorized(_) => Code::Unauthorized,
            ApiError::Forbidden(_) => Code::Forbidden,
            ApiError::ExchangeNotFound(_) => Code::ExchangeNotFound,
            ApiError::QueueNotFound(_) => Code::QueueNotFound,
            ApiError::ConsumerNotFound(_) => Code::ConsumerNotFound,
            ApiError::SubscriptionNotFound(_) => Code::SubscriptionNotFound,
            ApiError::ReceiptNotFound(_) => Code::ReceiptNotFound,
            ApiError::RouteNotFound(_) => Code::NotFound,
            ApiError::MethodNotAllowed(_) => Code::MethodNotAllowed,
            ApiError::PreconditionFailed(_) => Code::PreconditionFailed,
            ApiError::ConsumerBusy(_) => Code::ConsumerBusy,
            ApiError::PayloadTooLarge(_) => Code::PayloadTooLarge,
            ApiError::HeadersTooLarge(_) => Code::HeadersTooLarge,
            ApiError::RequestTimeout(_) => Code::RequestTimeout,
            ApiError::UnsupportedMediaType(_) => Code::UnsupportedMediaType,
            ApiError::UnsupportedSerializer(_) => Code::UnsupportedSerializer,
            ApiError::Unroutable(_) => Code::Unroutable,
            ApiError::BrokerUnavailable(_) => Code::BrokerUnavailable,
            ApiError::PublishNacked(_) => Code::PublishNacked,
            ApiError::BrokerTimeout(_) => Code::BrokerTimeout,
            ApiError::ConfirmLost(_) => Code::ConfirmLost,
            ApiError::Internal(_) => Code::InternalError,
        }
    }

    pub fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        self.code().parts()
    }

    pub fn problem(&self) -> Problem {
        let (status, code, title) = self.parts();
        let detail = match self {
            ApiError::Internal(_) => {
                "the gateway failed unexpectedly; the cause is in its log".to_owned()
            }
            other => other.to_string(),
        };
        Problem {
            kind: format!("urn:carrot-gateway:problem:{code}"),
            title,
            status: status.as_u16(),
            detail,
            code,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let failure = status.is_server_error().then(|| ServerFailure {
            code: problem.code,
            error: self.to_string(),
        });
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if matches!(self, ApiError::Unauthorized(_)) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"carrot-gateway\""),
            );
        }
        if matches!(self, ApiError::BrokerUnavailable(_)) {
            response.extensions_mut().insert(NeedsRetryAfter);
        }
        if let Some(failure) = failure {
            response.extensions_mut().insert(failure);
        }
        response
    }
}

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
                "{text}; the gateway does not serve stream queues yet: read them with an AMQP \
                 or stream client"
            )),
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
