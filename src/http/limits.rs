//! What one request may carry: its header fields, its body size, and time to send the body.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

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
    if headers.len() > limits.max_headers {
        return ApiError::HeadersTooLarge(format!(
            "the request carries {} header fields and the gateway takes at most {} \
             (max_headers); send fewer",
            headers.len(),
            limits.max_headers
        ))
        .into_response();
    }
    // As on the wire: name, ": ", value and the line end.
    let bytes: usize = headers
        .iter()
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
