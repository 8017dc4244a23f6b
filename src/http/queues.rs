//! `/queues/{queue}`: declare (with bindings), inspect, delete, purge, bind and unbind.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery, Body, parse_object, parse_object_or_default};
use super::names::{declared_status, exchange_name, queue_name, refuse_reserved};
use super::state::AppState;
use crate::auth::Permission;
use crate::messaging::discard::{self, DiscardFilter};
use crate::model::topology::{BindingSpec, QueueInfo, QueueSpec};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(declare_queue, get_queue, delete_queue))
        .routes(routes!(purge_queue))
        .routes(routes!(bind_queue, unbind_queue))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteQueueParams {
    /// Only delete it when it has no consumers (else 409).
    #[serde(default)]
    pub if_unused: bool,
    /// Only delete it when it holds no messages (else 409).
    #[serde(default)]
    pub if_empty: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeleteQueueResponse {
    /// Messages deleted with the queue.
    pub message_count: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PurgeResponse {
    /// Messages removed (carrot's discard_all).
    pub discarded: u32,
    /// With a filter: messages looked at that did not match, returned to the queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept: Option<u32>,
    /// With a filter: every ready message was looked at (false when `limit` or `timeout` ended
    /// the scan first; send the request again for the rest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub complete: Option<bool>,
}

/// The query of a filtered discard.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DiscardParams {
    /// With a filter: most messages to look at (default 10000).
    #[param(minimum = 1, maximum = 100000)]
    pub limit: Option<u32>,
    /// With a filter: most seconds to spend looking (default 5; at most the gateway's
    /// `wait_max`, 20 unless configured otherwise).
    #[param(minimum = 1, maximum = 20)]
    pub timeout: Option<u64>,
}

/// The binding made.
#[derive(Debug, Serialize, ToSchema)]
pub struct BindingResponse {
    pub queue: String,
    /// `amq.default` names the default exchange.
    pub exchange: String,
    pub routing_key: String,
    #[schema(value_type = Object)]
    pub arguments: serde_json::Map<String, serde_json::Value>,
}

/// Declare a queue and its bindings in one call (carrot's Consumer.declare).
#[utoipa::path(
    put,
    path = "/queues/{queue}",
    tag = "topology",
    params(("queue" = String, Path, description = "Queue name")),
    request_body(content = QueueSpec, description = "Settings; every field optional"),
    responses(
        (status = 201, description = "Created", body = QueueInfo),
        (status = 200, description = "Already there with the same settings", body = QueueInfo),
    )
)]
pub async fn declare_queue(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    Body(body): Body,
) -> Result<(StatusCode, Json<QueueInfo>), ApiError> {
    queue_name(&name)?;
    caller.require(Permission::Configure, "queue", &name)?;
    refuse_reserved(&name, "declared")?;
    let mut spec: QueueSpec = parse_object_or_default(&body)?;
    spec.validate()?;
    for binding in &mut spec.bindings {
        allow_binding(&caller, &name, &binding.exchange)?;
        binding.exchange = exchange_name(&binding.exchange)?.to_owned();
    }
    let (created, info) = state.broker.declare_queue(&name, &spec).await?;
    let status = declared_status(created);
    Ok((status, Json(info)))
}

/// A queue's message and consumer counts (a passive declare).
#[utoipa::path(
    get,
    path = "/queues/{queue}",
    tag = "topology",
    params(("queue" = String, Path, description = "Queue name")),
    responses(
        (status = 200, description = "It exists", body = QueueInfo),
    )
)]
pub async fn get_queue(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<QueueInfo>, ApiError> {
    queue_name(&name)?;
    caller.require_any("queue", &name)?;
    Ok(Json(state.broker.queue_info(&name).await?))
}

/// Delete a queue and the messages in it.
#[utoipa::path(
    delete,
    path = "/queues/{queue}",
    tag = "topology",
    params(("queue" = String, Path, description = "Queue name"), DeleteQueueParams),
    responses(
        (status = 200, description = "Deleted", body = DeleteQueueResponse),
    )
)]
pub async fn delete_queue(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiQuery(params): ApiQuery<DeleteQueueParams>,
) -> Result<Json<DeleteQueueResponse>, ApiError> {
    queue_name(&name)?;
    caller.require(Permission::Configure, "queue", &name)?;
    refuse_reserved(&name, "deleted")?;
    let message_count = state
        .broker
        .delete_queue(&name, params.if_unused, params.if_empty)
        .await?;
    Ok(Json(DeleteQueueResponse { message_count }))
}

/// Remove every ready message from a queue (carrot's discard_all), or with a filter only the
/// ready messages it matches (carrot's `discard_all(filterfunc)`): the others go back to the
/// queue, and messages held by consumers are not touched.
#[utoipa::path(
    delete,
    path = "/queues/{queue}/messages",
    tag = "topology",
    params(("queue" = String, Path, description = "Queue name"), DiscardParams),
    request_body(content = Option<DiscardFilter>,
        description = "Which messages to discard; without a body, every ready message"),
    responses(
        (status = 200, description = "Purged, or the matches discarded", body = PurgeResponse),
    )
)]
pub async fn purge_queue(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiQuery(params): ApiQuery<DiscardParams>,
    Body(body): Body,
) -> Result<Json<PurgeResponse>, ApiError> {
    queue_name(&name)?;
    caller.require(Permission::Read, "queue", &name)?;
    let Some(filter) = discard_filter(&body)? else {
        if params.limit.is_some() || params.timeout.is_some() {
            return Err(ApiError::InvalidRequest(
                "limit and timeout bound a filtered discard: send a filter as the body, or drop \
                 them to purge every ready message"
                    .into(),
            ));
        }
        let discarded = state.broker.purge_queue(&name).await?;
        return Ok(Json(PurgeResponse {
            discarded,
            kept: None,
            complete: None,
        }));
    };
    let limit = discard::limit(params.limit)?;
    let budget =
        state
            .consumption
            .limits()
            .budget("timeout", params.timeout, discard::DEFAULT_BUDGET)?;
    let sifted = state
        .broker
        .discard_matching(&name, limit, budget, |message| filter.matches(message))
        .await?;
    Ok(Json(PurgeResponse {
        discarded: sifted.discarded,
        kept: Some(sifted.kept),
        complete: Some(sifted.complete),
    }))
}

/// The filter of a discard's body; `None` without one (or with JSON `null`).
fn discard_filter(body: &[u8]) -> Result<Option<DiscardFilter>, ApiError> {
    if body.trim_ascii().is_empty() || body.trim_ascii() == b"null" {
        return Ok(None);
    }
    let filter: DiscardFilter = parse_object(body)?;
    filter.check()?;
    Ok(Some(filter))
}

/// Bind a queue to an exchange.
#[utoipa::path(
    post,
    path = "/queues/{queue}/bindings",
    tag = "topology",
    params(("queue" = String, Path, description = "Queue name")),
    request_body(content = BindingSpec),
    responses(
        (status = 201, description = "Bound", body = BindingResponse),
    )
)]
pub async fn bind_queue(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    Body(body): Body,
) -> Result<(StatusCode, Json<BindingResponse>), ApiError> {
    let binding = binding_of(&caller, &name, &body)?;
    state.broker.bind(&name, &binding).await?;
    let exchange = match binding.exchange.as_str() {
        "" => super::names::DEFAULT_EXCHANGE_ALIAS.to_owned(),
        named => named.to_owned(),
    };
    Ok((
        StatusCode::CREATED,
        Json(BindingResponse {
            queue: name,
            exchange,
            routing_key: binding.routing_key,
            arguments: binding.arguments,
        }),
    ))
}

/// Remove a binding (the same body as when it was made).
#[utoipa::path(
    delete,
    path = "/queues/{queue}/bindings",
    tag = "topology",
    params(("queue" = String, Path, description = "Queue name")),
    request_body(content = BindingSpec),
    responses(
        (status = 204, description = "Unbound (also when there was no such binding)"),
    )
)]
pub async fn unbind_queue(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    Body(body): Body,
) -> Result<StatusCode, ApiError> {
    let binding = binding_of(&caller, &name, &body)?;
    state.broker.unbind(&name, &binding).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn binding_of(caller: &Caller, queue: &str, body: &[u8]) -> Result<BindingSpec, ApiError> {
    queue_name(queue)?;
    let mut binding: BindingSpec = parse_object(body)?;
    binding.validate()?;
    allow_binding(caller, queue, &binding.exchange)?;
    binding.exchange = exchange_name(&binding.exchange)?.to_owned();
    Ok(binding)
}

/// As in RabbitMQ: binding needs write on the queue and read on the exchange.
fn allow_binding(caller: &Caller, queue: &str, exchange: &str) -> Result<(), ApiError> {
    caller.require(Permission::Write, "queue", queue)?;
    caller.require(Permission::Read, "exchange", exchange)
}
