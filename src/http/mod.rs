//! The HTTP surface: one module per resource, merged here with the layers every route shares.

mod auth;
mod consume;
mod consumers;
pub mod error;
mod exchanges;
mod extract;
mod health;
mod idempotent;
pub mod limits;
mod messages;
mod metrics;
mod names;
mod openapi;
mod owner;
mod publish_input;
mod queues;
mod raw_message;
mod request_reply;
mod state;
mod streams;
mod subscriptions;
mod tasks;

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use utoipa_axum::router::OpenApiRouter;

use error::{ApiError, NeedsRetryAfter, ServerFailure};

pub use openapi::openapi_json;
pub use state::{AppState, Shared};

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Every route with its OpenAPI description, before state and layers.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .merge(health::router())
        .merge(messages::router())
        .merge(exchanges::router())
        .merge(queues::router())
        .merge(consume::router())
        .merge(streams::router())
        .merge(consumers::router())
        .merge(subscriptions::router())
        .merge(tasks::router())
        .merge(openapi::router())
        .merge(metrics::router())
}

pub fn app(state: AppState, limits: limits::RequestLimits) -> Router {
    // Installed before serving, so the first scrape already has every series registered.
    crate::metrics::handle();
    let (router, _) = routes().split_for_parts();
    let routed = router
        .merge(openapi::docs_assets())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            owner::route_to_owner,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .route_layer(middleware::from_fn(metrics::track))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone());
    // Around the whole router, not with `Router::layer`: that would wrap every route on its
    // own, and axum clones a route's whole stack of boxed services for each request.
    let layered = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(middleware::from_fn_with_state(state, finish))
        .layer(CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(ApiError::Internal(
                "a handler panicked".into(),
            ))
        }))
        .layer(middleware::from_fn_with_state(limits, limits::check_head))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .service(routed);
    Router::new().fallback_service(layered)
}

async fn not_found(request: Request) -> ApiError {
    ApiError::RouteNotFound(format!(
        "no resource at {}; see /openapi.json for the paths this gateway serves",
        request.uri().path()
    ))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "{} is not allowed on {}; see /openapi.json",
        request.method(),
        request.uri().path()
    ))
}

/// Logs a request that failed on the gateway's side, naming it, and tells clients of a broker
/// outage when the gateway will have tried to reconnect.
///
/// A log line per failure rather than a tracing span per request: formatting a span's fields
/// for every request cost about 7% of the instructions of a publish.
async fn finish(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let uri = request.uri().clone();
    let id = request.headers().get(&REQUEST_ID).cloned();
    let mut response = next.run(request).await;
    let request_id = id
        .as_ref()
        .and_then(|id| id.to_str().ok())
        .unwrap_or_default();
    let status = response.status().as_u16();
    match response.extensions_mut().remove::<ServerFailure>() {
        Some(failure) => tracing::warn!(
            %method, path = uri.path(), request_id, status, code = failure.code,
            error = %failure.error, "request failed"
        ),
        None => tracing::debug!(
            %method, path = uri.path(), request_id, status, elapsed = ?started.elapsed(), "request"
        ),
    }
    if response.extensions().get::<NeedsRetryAfter>().is_some() {
        let seconds = state
            .broker
            .retry_after()
            .max(Duration::from_secs(1))
            .as_secs();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
