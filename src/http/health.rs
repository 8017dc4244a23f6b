//! Liveness and readiness probes.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::state::AppState;
use crate::broker::ConnectionReport;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthResponse {
    /// Always `ok`.
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyResponse {
    /// Always `ok`: while the broker is not connected the answer is a 503 problem.
    pub status: &'static str,
    /// The AMQP connections the gateway holds.
    pub connections: Vec<ConnectionReport>,
    /// This replica among several (`--advertise-url`); null for a gateway alone.
    pub replica: Option<ReplicaReport>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplicaReport {
    /// The address the other replicas forward to.
    pub advertise_url: String,
    /// This process's id; a restarted replica has a new one.
    pub instance: String,
}

/// Liveness: the process is up and serving.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is up", body = HealthResponse)))]
pub async fn healthz() -> Json<HealthResponse> {
    Json(HealthResponse { status: "ok" })
}

/// Readiness: the broker is connected; 503 while it is not (the gateway keeps reconnecting).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Connected to the broker", body = ReadyResponse),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<ReadyResponse>, ApiError> {
    if !state.broker.is_ready() {
        let reason = state
            .broker
            .last_error()
            .unwrap_or_else(|| "not connected to the broker yet".to_owned());
        return Err(ApiError::BrokerUnavailable(format!(
            "not connected to the broker: {reason}; the gateway keeps reconnecting"
        )));
    }
    Ok(Json(ReadyResponse {
        status: "ok",
        connections: state.broker.connections(),
        replica: state
            .cluster
            .tokens
            .me()
            .map(|(url, instance)| ReplicaReport {
                advertise_url: url.to_owned(),
                instance: instance.to_owned(),
            }),
    }))
}
