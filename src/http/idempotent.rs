//! `Idempotency-Key` on publish: the key read from the request, and answers kept for retries
//! and replayed with `Idempotent-Replayed: true`.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::messaging::idempotency::{Answer, Claim};

pub const KEY_HEADER: &str = "idempotency-key";
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// Answers of a publish are small JSON documents; a larger one is not kept.
const MOST_KEPT: usize = 1024 * 1024;

/// The request's key: 1 to 255 visible ASCII characters, bare or as a quoted string (the draft's
/// structured-field form); `None` without the header.
pub fn key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(KEY_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::InvalidRequest(
            "Idempotency-Key must be one header of 1 to 255 visible ASCII characters, bare or \
             in double quotes; use a fresh random one (a UUID) per operation"
                .into(),
        )
    };
    if values.next().is_some() {
        return Err(invalid());
    }
    let text = value.to_str().map_err(|_| invalid())?.trim();
    let bare = text
        .strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
        .unwrap_or(text);
    if bare.is_empty() || bare.len() > 255 || !bare.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid());
    }
    Ok(Some(bare.to_owned()))
}

/// Finishes the claim with what the request answered: kept when the broker decided it (a
/// confirm, or the return of a mandatory publish), freed otherwise so a retry publishes.
pub async fn keep(
    claim: Claim,
    answered: Result<Response, ApiError>,
) -> Result<Response, ApiError> {
    let response = match answered {
        Ok(response) if response.status() == StatusCode::OK => response,
        Err(error @ ApiError::Unroutable(_)) => error.into_response(),
        other => {
            claim.finish(None).await;
            return other;
        }
    };
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MOST_KEPT).await else {
        claim.finish(None).await;
        return Err(ApiError::Internal("an answer too large to keep".into()));
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    claim
        .finish(Some(Answer {
            status: parts.status.as_u16(),
            content_type,
            body: bytes.clone(),
        }))
        .await;
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// A kept answer, sent again.
pub fn replay(answer: Answer) -> Response {
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    if let Some(content_type) = answer
        .content_type
        .and_then(|text| HeaderValue::from_str(&text).ok())
    {
        headers.insert(header::CONTENT_TYPE, content_type);
    }
    headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    response
}
