//! `/consumers`: consumer sets over one or more queues (carrot's ConsumerSet).

use std::convert::Infallible;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::Stream;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use std::sync::Arc;

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery, Body, parse_object};
use super::names::queue_name;
use super::state::AppState;
use super::streams::{heartbeat, sse};
use crate::auth::Permission;
use crate::messaging::consumer_sets::{ConsumerSet, ConsumerSetError, ConsumerSetRequest};
use crate::messaging::envelope::Envelope;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_consumer))
        .routes(routes!(get_consumer, delete_consumer))
        .routes(routes!(next_from_consumer))
        .routes(routes!(stream_consumer))
        .routes(routes!(cancel_consumer_queue))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConsumerResponse {
    pub id: String,
    pub queues: Vec<String>,
    pub prefetch: u16,
    pub ack: &'static str,
    /// Declared in the config file (never reaped).
    pub named: bool,
}

impl ConsumerResponse {
    fn of(set: &ConsumerSet) -> Self {
        Self {
            id: set.id.clone(),
            queues: set.queues(),
            prefetch: set.prefetch,
            ack: set.ack.name(),
            named: set.named,
        }
    }
}

/// Create a consumer set over one or more queues; it starts consuming at once.
#[utoipa::path(
    post,
    path = "/consumers",
    tag = "consumer sets",
    request_body = ConsumerSetRequest,
    responses(
        (status = 201, description = "Created", body = ConsumerResponse),
    )
)]
pub async fn create_consumer(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body,
) -> Result<(StatusCode, Json<ConsumerResponse>), ApiError> {
    let spec = parse_object::<ConsumerSetRequest>(&body)?.validate()?;
    for queue in &spec.queues {
        caller.require(Permission::Read, "queue", queue)?;
    }
    let owner = caller.0.name().map(str::to_owned);
    let set = state.consumers.create(spec, owner).await?;
    Ok((StatusCode::CREATED, Json(ConsumerResponse::of(&set))))
}

/// A consumer set's settings.
#[utoipa::path(
    get,
    path = "/consumers/{id}",
    tag = "consumer sets",
    params(("id" = String, Path, description = "Id from POST /consumers, or a name from the config file")),
    responses(
        (status = 200, description = "The set: its queues, prefetch and ack mode", body = ConsumerResponse),
    )
)]
pub async fn get_consumer(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ConsumerResponse>, ApiError> {
    let set = visible_set(&state, &caller, &id)?;
    Ok(Json(ConsumerResponse::of(&set)))
}

/// Cancel and close a consumer set; its unsettled messages go back to their queues.
#[utoipa::path(
    delete,
    path = "/consumers/{id}",
    tag = "consumer sets",
    params(("id" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
    )
)]
pub async fn delete_consumer(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    visible_set(&state, &caller, &id)?;
    state.consumers.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConsumerNextParams {
    /// Long poll: seconds to wait for a message before 204 (default 0, at most `wait_max`, 20
    /// by default).
    #[param(minimum = 0, maximum = 20)]
    pub wait: Option<u64>,
    /// Lease length in seconds, for a set with `ack: lease` (default 30, at most `lease_max`,
    /// 900 by default).
    #[param(minimum = 1, maximum = 900)]
    pub lease: Option<u64>,
    /// Decode YAML and msgpack bodies to JSON (default true).
    pub decode: Option<bool>,
}

/// The query of a set's stream; its prefetch and ack mode are the set's own.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConsumerStreamParams {
    /// Lease length in seconds, for a set with `ack: lease` (default 30, at most `lease_max`,
    /// 900 by default).
    #[param(minimum = 1, maximum = 900)]
    pub lease: Option<u64>,
    /// Decode YAML and msgpack bodies to JSON (default true).
    pub decode: Option<bool>,
    /// Seconds between heartbeat comments while idle (default 15).
    #[param(minimum = 1, maximum = 300)]
    pub heartbeat: Option<u64>,
}

/// The next message from any queue of the set; 204 when none arrives within `wait`.
#[utoipa::path(
    get,
    path = "/consumers/{id}/next",
    tag = "consumer sets",
    params(("id" = String, Path), ConsumerNextParams),
    responses(
        (status = 200, description = "A message; `queue` says which", body = Envelope),
        (status = 204, description = "Nothing within `wait`"),
    )
)]
pub async fn next_from_consumer(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<ConsumerNextParams>,
) -> Result<Response, ApiError> {
    let set = visible_set(&state, &caller, &id)?;
    let limits = state.consumption.limits();
    let (lease, wait) = (limits.lease(params.lease)?, limits.wait(params.wait)?);
    let decode = params.decode.unwrap_or(true);
    let next = state.consumption.next_from_set(&set, lease, decode, wait);
    match next.await? {
        Some(handed) => Ok(Json(handed.envelope).into_response()),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

/// Stream the set's messages as Server-Sent Events (same events as `/queues/{queue}/stream`).
#[utoipa::path(
    get,
    path = "/consumers/{id}/stream",
    tag = "consumer sets",
    params(("id" = String, Path), ConsumerStreamParams),
    responses(
        (status = 200, description = "text/event-stream of `message` events", content_type = "text/event-stream"),
    )
)]
pub async fn stream_consumer(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<ConsumerStreamParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let set = visible_set(&state, &caller, &id)?;
    let lease = state.consumption.limits().lease(params.lease)?;
    let every = heartbeat(params.heartbeat)?;
    let decode = params.decode.unwrap_or(true);
    let envelopes = state.consumption.stream_set(&set, lease, decode).await?;
    Ok(sse(envelopes, every))
}

/// Stop consuming one queue of the set (carrot's cancel_by_queue).
#[utoipa::path(
    delete,
    path = "/consumers/{id}/queues/{queue}",
    tag = "consumer sets",
    params(("id" = String, Path), ("queue" = String, Path)),
    responses(
        (status = 204, description = "Cancelled"),
    )
)]
pub async fn cancel_consumer_queue(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, queue)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    queue_name(&queue)?;
    visible_set(&state, &caller, &id)?;
    state.consumers.cancel_queue(&id, &queue).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A set its caller may use: its creator's, or a named one whose queues the caller may read.
fn visible_set(state: &AppState, caller: &Caller, id: &str) -> Result<Arc<ConsumerSet>, ApiError> {
    let set = state.consumers.get(id)?;
    let allowed = match caller.0.name() {
        None => true,
        Some(_) if set.named => set
            .queues()
            .iter()
            .all(|queue| caller.require(Permission::Read, "queue", queue).is_ok()),
        Some(name) => set.owner.as_deref() == Some(name),
    };
    if !allowed {
        // Another token's set is not even acknowledged to exist.
        return Err(ConsumerSetError::NotFound(id.to_owned()).into());
    }
    Ok(set)
}
