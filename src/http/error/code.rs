//! The one table from a problem to its status, `code` and title.

use axum::http::StatusCode;

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
    TaskNotFound,
    ReceiptNotFound,
    LeaseLost,
    ConsumerLost,
    NotFound,
    MethodNotAllowed,
    PreconditionFailed,
    ConsumerBusy,
    IdempotencyKeyInUse,
    PayloadTooLarge,
    HeadersTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
    UnsupportedSerializer,
    Unroutable,
    IdempotencyKeyReused,
    BrokerUnavailable,
    ReplicaUnavailable,
    IdempotencyStoreUnavailable,
    PublishNacked,
    BrokerTimeout,
    ConfirmLost,
    ReplyTimeout,
    InternalError,
}

impl Code {
    pub const ALL: [Code; 31] = [
        Code::InvalidRequest,
        Code::Unauthorized,
        Code::Forbidden,
        Code::ExchangeNotFound,
        Code::QueueNotFound,
        Code::ConsumerNotFound,
        Code::SubscriptionNotFound,
        Code::TaskNotFound,
        Code::ReceiptNotFound,
        Code::LeaseLost,
        Code::ConsumerLost,
        Code::NotFound,
        Code::MethodNotAllowed,
        Code::PreconditionFailed,
        Code::ConsumerBusy,
        Code::IdempotencyKeyInUse,
        Code::PayloadTooLarge,
        Code::HeadersTooLarge,
        Code::RequestTimeout,
        Code::UnsupportedMediaType,
        Code::UnsupportedSerializer,
        Code::Unroutable,
        Code::IdempotencyKeyReused,
        Code::BrokerUnavailable,
        Code::ReplicaUnavailable,
        Code::IdempotencyStoreUnavailable,
        Code::PublishNacked,
        Code::BrokerTimeout,
        Code::ConfirmLost,
        Code::ReplyTimeout,
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
            TaskNotFound => (StatusCode::NOT_FOUND, "task_not_found", "Task not found"),
            ReceiptNotFound => (
                StatusCode::NOT_FOUND,
                "receipt_not_found",
                "Receipt not found",
            ),
            LeaseLost => (StatusCode::GONE, "lease_lost", "Lease lost"),
            ConsumerLost => (StatusCode::GONE, "consumer_lost", "Consumer set lost"),
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
            IdempotencyKeyInUse => (
                StatusCode::CONFLICT,
                "idempotency_key_in_use",
                "Idempotency key in use",
            ),
            IdempotencyKeyReused => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "Idempotency key reused",
            ),
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
            ReplicaUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "replica_unavailable",
                "Replica unavailable",
            ),
            IdempotencyStoreUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "idempotency_store_unavailable",
                "Idempotency key store unavailable",
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
            ReplyTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "reply_timeout",
                "No reply in time",
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
