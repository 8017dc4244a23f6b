//! Extractors whose rejections are `ApiError`s, so malformed input gets problem+json too.

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::limits::BodyTimeout;

/// Query string; unknown parameters are refused by the target types, naming the typo.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| ApiQuery(value))
            .map_err(|rejection: QueryRejection| {
                ApiError::InvalidRequest(format!(
                    "bad query string: {}",
                    strip_prefix(&rejection.body_text())
                ))
            })
    }
}

/// Percent-decoded path parameters.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|rejection: PathRejection| {
                ApiError::InvalidRequest(format!(
                    "bad path: {}; names are percent-encoded UTF-8",
                    rejection.body_text()
                ))
            })
    }
}

/// The whole request body, within the configured limit.
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let timeout = request.extensions().get::<BodyTimeout>().map(|t| t.0);
        let read = Bytes::from_request(request, state);
        let read = match timeout {
            Some(timeout) => tokio::time::timeout(timeout, read).await.map_err(|_| {
                ApiError::RequestTimeout(format!(
                    "the request body did not arrive within {} s (body_timeout); send it \
                     faster, or in smaller requests",
                    timeout.as_secs()
                ))
            })?,
            None => read.await,
        };
        read.map(Body).map_err(|rejection: BytesRejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(
                    "the request body is larger than the gateway's limit \
                         (max_body_bytes); send less per request"
                        .to_owned(),
                )
            } else {
                ApiError::InvalidRequest(format!(
                    "cannot read the request body: {}",
                    rejection.body_text()
                ))
            }
        })
    }
}

/// Parses JSON, naming the path of the offending field (`messages[2].properties.priority`).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path == "." || path.is_empty() {
            ApiError::InvalidRequest(format!("bad JSON body: {inner}"))
        } else {
            ApiError::InvalidRequest(format!("bad JSON body at {path}: {inner}"))
        }
    })
}

fn strip_prefix(text: &str) -> &str {
    text.strip_prefix("Failed to deserialize query string: ")
        .unwrap_or(text)
}

/// Parses a JSON object into `T`; serde would also take an array of the fields in order.
pub fn parse_object<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => parse_json(body),
        _ => Err(ApiError::InvalidRequest(
            "the request body must be a JSON object, {...}".into(),
        )),
    }
}

/// Like `parse_object`, but an empty body means every field takes its default.
pub fn parse_object_or_default<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_object(body)
}
