//! `/metrics` in Prometheus text format, and the per-request HTTP metrics.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::state::AppState;
use crate::metrics as m;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_metrics))
}

/// Prometheus metrics: HTTP requests, messages, leases, consumers, pools, broker connection.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain")))]
pub async fn get_metrics(State(state): State<AppState>) -> Response {
    state.broker.report_gauges();
    metrics::gauge!(m::LEASES_OPEN).set(state.consumption.leases().count() as f64);
    metrics::gauge!(m::CONSUMER_SETS).set(state.consumers.count() as f64);
    state.subscriptions.report_gauges();
    crate::memory::report_gauges();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m::handle().render(),
    )
        .into_response()
}

/// Counts every request by route template and status, with its latency.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(m::HTTP_REQUESTS, "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(m::HTTP_DURATION, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
