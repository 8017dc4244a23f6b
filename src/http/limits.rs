//! What one request may carry: its header fields, its body size, and time to send the body.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// Longest `x-request-id` taken; it comes back on the response and in the logs.
const MAX_REQUEST_ID_BYTES: usize = 200;

#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub max_body_bytes: usize,
    pub max_headers: usize,
    pub max_header_bytes: usize,
    /// Time to send the whole body once the head arrived.
    pub body_timeout: Duration,
}

/// The body's deadline, for the extractor that reads it (`extract::Body`).
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

/// Refuses a head over the limits with 431, before any handler runs.
pub async fn check_head(
    State(limits): State<RequestLimits>,
    mut request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    // The request id is left out: the gateway adds it when the client did not send one, and a
    // client should not lose a field of its limit to that. Its own size is bounded instead.
    let request_id = headers.get(super::REQUEST_ID);
    if let Some(id) = request_id.filter(|id| id.len() > MAX_REQUEST_ID_BYTES) {
        return ApiError::HeadersTooLarge(format!(
            "x-request-id takes {} bytes and the gateway takes at most {MAX_REQUEST_ID_BYTES}; \
             send a shorter id",
            id.len()
        ))
        .into_response();
    }
    let fields = headers.len() - usize::from(request_id.is_some());
    if fields > limits.max_headers {
        return ApiError::HeadersTooLarge(format!(
            "the request carries {fields} header fields and the gateway takes at most {} \
             (max_headers); send fewer",
            limits.max_headers
        ))
        .into_response();
    }
    // As on the wire: name, ": ", value and the line end.
    let bytes: usize = headers
        .iter()
        .filter(|(name, _)| *name != super::REQUEST_ID)
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if bytes > limits.max_header_bytes {
        return ApiError::HeadersTooLarge(format!(
            "the request's header fields take {bytes} bytes and the gateway takes at most {} \
             (max_header_bytes); send smaller ones",
            limits.max_header_bytes
        ))
        .into_response();
    }
    request
        .extensions_mut()
        .insert(BodyTimeout(limits.body_timeout));
    next.run(request).await
}
