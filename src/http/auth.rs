//! Bearer-token authentication for every route but the probes and documents.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::state::AppState;
use crate::auth::{Permission, Principal};

/// Paths anyone may read: Kubernetes probes and the API description.
const OPEN: [&str; 4] = ["/healthz", "/readyz", "/openapi.json", "/docs"];

pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let open = OPEN.contains(&path) || path.starts_with("/docs/");
    if open || (path == "/metrics" && !state.auth.protect_metrics) {
        request.extensions_mut().insert(Principal::Anonymous);
        return next.run(request).await;
    }
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    match state.auth.authenticate(authorization) {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(error) => ApiError::Unauthorized(error.to_string()).into_response(),
    }
}

/// The authenticated caller of a request.
pub struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Caller)
            // Only reachable if a route escaped the middleware: refuse rather than allow.
            .ok_or_else(|| ApiError::Unauthorized("the request was not authenticated".into()))
    }
}

impl Caller {
    /// 403 unless the caller's `permission` pattern covers `name`.
    pub fn require(&self, permission: Permission, what: &str, name: &str) -> Result<(), ApiError> {
        self.0
            .require(permission, what, name)
            .map_err(ApiError::Forbidden)
    }

    /// 403 unless some permission covers `name`.
    pub fn require_any(&self, what: &str, name: &str) -> Result<(), ApiError> {
        if self.0.may_see(name) {
            return Ok(());
        }
        Err(ApiError::Forbidden(format!(
            "this token has no permission on {what} {name:?}"
        )))
    }
}
