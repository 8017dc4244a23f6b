//! The one HTTP error type: every failure becomes RFC 9457 problem+json with a stable `code`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

mod code;
mod from;

pub use code::Code;

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
    LeaseLost(String),
    #[error("{0}")]
    ConsumerLost(String),
    #[error("{0}")]
    ReplicaUnavailable(String),
    #[error("{0}")]
    IdempotencyStoreUnavailable(String),
    #[error("{0}")]
    SubscriptionNotFound(String),
    #[error("{0}")]
    TaskNotFound(String),
    #[error("{0}")]
    RouteNotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    ConsumerBusy(String),
    #[error("{0}")]
    IdempotencyKeyInUse(String),
    #[error("{0}")]
    IdempotencyKeyReused(String),
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
    #[error("{0}")]
    ReplyTimeout(String),
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
            ApiError::TaskNotFound(_) => Code::TaskNotFound,
            ApiError::ReceiptNotFound(_) => Code::ReceiptNotFound,
            ApiError::LeaseLost(_) => Code::LeaseLost,
            ApiError::ConsumerLost(_) => Code::ConsumerLost,
            ApiError::ReplicaUnavailable(_) => Code::ReplicaUnavailable,
            ApiError::IdempotencyStoreUnavailable(_) => Code::IdempotencyStoreUnavailable,
            ApiError::RouteNotFound(_) => Code::NotFound,
            ApiError::MethodNotAllowed(_) => Code::MethodNotAllowed,
            ApiError::PreconditionFailed(_) => Code::PreconditionFailed,
            ApiError::ConsumerBusy(_) => Code::ConsumerBusy,
            ApiError::IdempotencyKeyInUse(_) => Code::IdempotencyKeyInUse,
            ApiError::IdempotencyKeyReused(_) => Code::IdempotencyKeyReused,
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
            ApiError::ReplyTimeout(_) => Code::ReplyTimeout,
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
