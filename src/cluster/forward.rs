//! Passes a request on to the replica that holds what it names, and its answer back.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;

use super::Cluster;

/// Carries a forwarded request's signature: `<unix seconds>.<mac>`.
pub const PEER_HEADER: HeaderName = HeaderName::from_static("carrot-peer");
/// Names the process that answered a forwarded request, which must be the one the token names.
pub const INSTANCE_HEADER: HeaderName = HeaderName::from_static("carrot-instance");
/// How far apart two replicas' clocks may be.
pub const CLOCK_SKEW_SECS: u64 = 300;

/// Why a request could not be answered by the replica holding what it names.
#[derive(Debug)]
pub enum NotForwarded {
    /// Nothing answers at its address (or its request cannot even start): it stopped, and what
    /// it held went back to the broker with its connections.
    OwnerGone(String),
    /// It was reached but the exchange broke off; it may still be there.
    Unavailable(String),
    /// The request's own body could not be read.
    Body(String),
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default()
}

/// Headers that describe one hop, not the request; `carrot-peer` is set afresh.
fn end_to_end(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "host"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
            | "carrot-peer"
            | "carrot-instance"
    )
}

impl Cluster {
    /// Sends `request` to the replica at `owner`, signed, and streams its answer back if the
    /// process that answers is `instance`: another one at that address (a pod IP given to a new
    /// pod, a restarted replica) never held what the request names.
    pub async fn forward(
        &self,
        owner: &str,
        instance: &str,
        request: Request,
        body_limit: usize,
    ) -> Result<Response, NotForwarded> {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path_and_query().map_or_else(
            || parts.uri.path().to_owned(),
            |path| path.as_str().to_owned(),
        );
        let body = axum::body::to_bytes(body, body_limit)
            .await
            .map_err(|error| NotForwarded::Body(error.to_string()))?;
        let signature = self
            .tokens
            .sign_forward(parts.method.as_str(), &path, now_secs())
            .ok_or_else(|| NotForwarded::OwnerGone("this gateway has no replicas".into()))?;

        let mut outgoing = self
            .client
            .request(parts.method.clone(), format!("{owner}{path}"))
            .body(body);
        for (name, value) in &parts.headers {
            if end_to_end(name) {
                outgoing = outgoing.header(name, value);
            }
        }
        let answer = outgoing
            .header(PEER_HEADER, signature)
            .send()
            .await
            .map_err(|error| {
                if error.is_connect() || error.is_builder() {
                    NotForwarded::OwnerGone(format!("{owner}: {error}"))
                } else {
                    NotForwarded::Unavailable(format!("{owner}: {error}"))
                }
            })?;

        if answer
            .headers()
            .get(INSTANCE_HEADER)
            .and_then(|id| id.to_str().ok())
            != Some(instance)
        {
            return Err(NotForwarded::OwnerGone(format!(
                "{owner} is answered by another process than the one that handed this out"
            )));
        }
        let mut response = Response::builder().status(answer.status());
        for (name, value) in answer.headers() {
            if end_to_end(name) {
                response = response.header(name, value);
            }
        }
        let response = response
            .header(
                HeaderName::from_static("carrot-answered-by"),
                HeaderValue::from_str(owner).unwrap_or(HeaderValue::from_static("replica")),
            )
            .body(Body::from_stream(answer.bytes_stream()))
            .map_err(|error| NotForwarded::Unavailable(error.to_string()))?;
        Ok(response)
    }
}

/// Whether a request came from another replica, and if it says so, whether it proves it.
#[derive(Clone, Copy)]
pub enum Origin {
    Client,
    Replica,
    Forged,
}

impl Cluster {
    pub fn origin(&self, request: &Request) -> Origin {
        let Some(signature) = request.headers().get(PEER_HEADER) else {
            return Origin::Client;
        };
        let path = request
            .uri()
            .path_and_query()
            .map_or(request.uri().path(), |path| path.as_str());
        let valid = signature.to_str().is_ok_and(|signature| {
            self.tokens.verify_forward(
                request.method().as_str(),
                path,
                signature,
                now_secs(),
                CLOCK_SKEW_SECS,
            )
        });
        if valid {
            Origin::Replica
        } else {
            Origin::Forged
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header;

    #[test]
    fn hop_headers_stay_behind_and_the_rest_go_on() {
        for hop in [
            header::HOST,
            header::CONNECTION,
            header::TRANSFER_ENCODING,
            PEER_HEADER,
        ] {
            assert!(!end_to_end(&hop), "{hop}");
        }
        for kept in [header::AUTHORIZATION, header::ACCEPT, header::CONTENT_TYPE] {
            assert!(end_to_end(&kept), "{kept}");
        }
    }
}
