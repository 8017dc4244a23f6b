//! A delivered message as raw HTTP: the body bytes, with everything else in `Amqp-*` headers.

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;

use crate::messaging::amqp_headers::amqp_headers;
use crate::messaging::envelope::Envelope;

/// Builds the response from the envelope's fields and the original bytes.
pub fn raw_response(envelope: &Envelope, body: bytes::Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::OK;
    *response.headers_mut() = amqp_headers(envelope);
    response
}
