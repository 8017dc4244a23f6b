//! A delivered message as raw HTTP: the body bytes, with everything else in `Amqp-*` headers.

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;

use crate::messaging::amqp_headers::amqp_headers;
use crate::messaging::envelope::Envelope;

/// Builds the response from the envelope's fields and the original bytes.
pub fn raw_response(envelope: &Envelope, body: bytes::Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    for (name, value) in amqp_headers(envelope) {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    response
}
