//! Consuming over HTTP (carrot's Consumer.fetch / iterqueue): `/next`, `/messages`, and
//! settling leases with their receipts.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, Problem};
use super::extract::{ApiPath, ApiQuery};
use super::names::queue_name;
use super::raw_message::raw_response;
use crate::auth::Permission;
use crate::broker::{AckMode, Taken};
use crate::messaging::envelope::{Envelope, rfc3339};
use crate::messaging::leases::{LeaseError, Settle};

/// Most messages one `GET /queues/{queue}/messages` returns.
pub const MAX_LIMIT: u32 = 100;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(next_message))
        .routes(routes!(get_messages))
        .routes(routes!(ack_message))
        .routes(routes!(reject_message))
        .routes(routes!(requeue_message))
        .routes(routes!(extend_lease))
}

/// How long consumers may hold and wait, from the gateway's settings.
#[derive(Debug, Clone, Copy)]
pub struct ConsumeLimits {
    pub lease_default: Duration,
    pub lease_max: Duration,
    pub wait_max: Duration,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConsumeParams {
    /// `lease` (default): settle with the receipt; `auto`: removed on delivery (at most once).
    pub ack: Option<String>,
    /// Lease length in seconds (default 30, at most the configured maximum).
    pub lease: Option<u64>,
    /// Long poll: wait up to this many seconds for a message before answering 204.
    pub wait: Option<u64>,
    /// Decode YAML and msgpack bodies to JSON (default true).
    pub decode: Option<bool>,
    /// `json` (default) or `raw`: the body bytes with `Amqp-*` headers.
    pub format: Option<String>,
    /// `/messages` only: how many messages at most (1–100, default 10).
    pub limit: Option<u32>,
}

struct ConsumeRequest {
    mode: AckMode,
    lease: Duration,
    wait: Duration,
    decode: bool,
    raw: bool,
}

impl ConsumeRequest {
    fn new(
        params: &ConsumeParams,
        headers: &HeaderMap,
        limits: ConsumeLimits,
    ) -> Result<Self, ApiError> {
        let mode = parse_ack(params.ack.as_deref())?;
        let lease = lease_duration(params.lease, limits)?;
        let wait = wait_duration(params.wait, limits)?;
        let accepts_bytes = headers
            .get(header::ACCEPT)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|accept| accept.contains("application/octet-stream"));
        let raw = match params.format.as_deref() {
            None => accepts_bytes,
            Some("json") => false,
            Some("raw") => true,
            Some(other) => {
                return Err(ApiError::InvalidRequest(format!(
                    "format={other} is not valid; use json or raw"
                )));
            }
        };
        Ok(Self {
            mode,
            lease,
            wait,
            decode: params.decode.unwrap_or(true),
            raw,
        })
    }
}

pub fn parse_ack(ack: Option<&str>) -> Result<AckMode, ApiError> {
    Ok(crate::messaging::consumer_sets::parse_ack(ack)?)
}

/// A long poll within the gateway's `wait_max`.
pub fn wait_duration(seconds: Option<u64>, limits: ConsumeLimits) -> Result<Duration, ApiError> {
    let wait = Duration::from_secs(seconds.unwrap_or(0));
    if wait > limits.wait_max {
        return Err(ApiError::InvalidRequest(format!(
            "wait={} is longer than this gateway allows ({} s); poll again instead",
            wait.as_secs(),
            limits.wait_max.as_secs()
        )));
    }
    Ok(wait)
}

pub fn lease_duration(seconds: Option<u64>, limits: ConsumeLimits) -> Result<Duration, ApiError> {
    let lease = seconds.map_or(limits.lease_default, Duration::from_secs);
    if lease.is_zero() || lease > limits.lease_max {
        return Err(ApiError::InvalidRequest(format!(
            "lease={} must be between 1 and {} seconds (the gateway's lease_max, kept below \
             the broker's consumer_timeout)",
            lease.as_secs(),
            limits.lease_max.as_secs()
        )));
    }
    Ok(lease)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessagesResponse {
    pub messages: Vec<Envelope>,
}

/// Take the next message (carrot's Consumer.fetch); 204 when the queue stays empty.
#[utoipa::path(
    get,
    path = "/queues/{queue}/next",
    tag = "consume",
    params(("queue" = String, Path, description = "Queue name"), ConsumeParams),
    responses(
        (status = 200, description = "A message (JSON envelope, or raw bytes with Amqp-* headers)", body = Envelope),
        (status = 204, description = "The queue is empty (after `wait`)"),
        (status = 400, description = "invalid_request", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "queue_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "broker_unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn next_message(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(queue): ApiPath<String>,
    ApiQuery(params): ApiQuery<ConsumeParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    queue_name(&queue)?;
    caller.require(Permission::Read, "queue", &queue)?;
    if params.limit.is_some() {
        return Err(ApiError::InvalidRequest(
            "limit applies to GET /queues/{queue}/messages; /next returns one message".into(),
        ));
    }
    let request = ConsumeRequest::new(&params, &headers, state.limits)?;
    let Some(taken) = take(&state, &queue, &request, 1).await?.pop() else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let body = taken.0.body.clone();
    let envelope = envelope(&state, &queue, &request, taken);
    if request.raw {
        return Ok(raw_response(&envelope, body));
    }
    Ok(Json(envelope).into_response())
}

/// Take up to `limit` messages at once (carrot's iterqueue(limit)).
#[utoipa::path(
    get,
    path = "/queues/{queue}/messages",
    tag = "consume",
    params(("queue" = String, Path, description = "Queue name"), ConsumeParams),
    responses(
        (status = 200, description = "Zero or more messages", body = MessagesResponse),
        (status = 400, description = "invalid_request", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "queue_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "broker_unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_messages(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(queue): ApiPath<String>,
    ApiQuery(params): ApiQuery<ConsumeParams>,
    headers: HeaderMap,
) -> Result<Json<MessagesResponse>, ApiError> {
    queue_name(&queue)?;
    caller.require(Permission::Read, "queue", &queue)?;
    let limit = params.limit.unwrap_or(10);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::InvalidRequest(format!(
            "limit={limit} must be between 1 and {MAX_LIMIT}"
        )));
    }
    let request = ConsumeRequest::new(&params, &headers, state.limits)?;
    if request.raw {
        return Err(ApiError::InvalidRequest(
            "format=raw carries one message; use GET /queues/{queue}/next for raw bytes".into(),
        ));
    }
    let messages = take(&state, &queue, &request, limit)
        .await?
        .into_iter()
        .map(|taken| envelope(&state, &queue, &request, taken))
        .collect();
    Ok(Json(MessagesResponse { messages }))
}

/// Up to `limit` messages by basic.get; if there are none, a long poll for one.
async fn take(
    state: &AppState,
    queue: &str,
    request: &ConsumeRequest,
    limit: u32,
) -> Result<Vec<Taken>, ApiError> {
    let mut taken = Vec::new();
    for _ in 0..limit {
        match state.broker.get(queue, request.mode).await {
            Ok(Some(message)) => taken.push(message),
            Ok(None) => break,
            // Keep what was already taken: leased ones must reach the client.
            Err(_) if !taken.is_empty() => break,
            Err(error) => return Err(error.into()),
        }
    }
    if taken.is_empty() && !request.wait.is_zero() {
        let waited = tokio::select! {
            waited = state.broker.wait_one(queue, request.mode, request.wait) => waited?,
            () = state.shutdown.cancelled() => None,
        };
        taken.extend(waited);
    }
    Ok(taken)
}

fn envelope(state: &AppState, queue: &str, request: &ConsumeRequest, taken: Taken) -> Envelope {
    let (delivered, handle) = taken;
    let envelope = Envelope::new(&delivered, request.decode).from_queue(queue);
    match handle {
        Some(handle) => {
            let granted = state.leases.grant(queue, handle, request.lease);
            envelope.with_lease(granted.receipt, granted.expires_at)
        }
        None => envelope,
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExtendParams {
    /// New lease length in seconds from now (default: the gateway's default lease).
    pub lease: Option<u64>,
}

/// Acknowledge a leased message: it is removed from the queue (message.ack).
#[utoipa::path(
    post,
    path = "/queues/{queue}/messages/{receipt}/ack",
    tag = "consume",
    params(("queue" = String, Path), ("receipt" = String, Path, description = "From the message's envelope")),
    responses(
        (status = 204, description = "Settled"),
        (status = 404, description = "receipt_not_found: settled, expired (requeued) or unknown", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn ack_message(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((queue, receipt)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    settle(&state, &caller, &queue, &receipt, Settle::Ack).await
}

/// Reject a leased message without requeueing it: dead-lettered if the queue has a DLX.
#[utoipa::path(
    post,
    path = "/queues/{queue}/messages/{receipt}/reject",
    tag = "consume",
    params(("queue" = String, Path), ("receipt" = String, Path, description = "From the message's envelope")),
    responses(
        (status = 204, description = "Settled"),
        (status = 404, description = "receipt_not_found: settled, expired (requeued) or unknown", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn reject_message(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((queue, receipt)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    settle(&state, &caller, &queue, &receipt, Settle::Reject).await
}

/// Put a leased message back in its queue for another delivery (message.requeue).
#[utoipa::path(
    post,
    path = "/queues/{queue}/messages/{receipt}/requeue",
    tag = "consume",
    params(("queue" = String, Path), ("receipt" = String, Path, description = "From the message's envelope")),
    responses(
        (status = 204, description = "Settled"),
        (status = 404, description = "receipt_not_found: settled, expired (requeued) or unknown", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn requeue_message(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((queue, receipt)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    settle(&state, &caller, &queue, &receipt, Settle::Requeue).await
}

/// Extend a lease: it now ends `lease` seconds from now (in the `Amqp-Lease-Expires-At` header).
#[utoipa::path(
    post,
    path = "/queues/{queue}/messages/{receipt}/extend",
    tag = "consume",
    params(("queue" = String, Path), ("receipt" = String, Path, description = "From the message's envelope"), ExtendParams),
    responses(
        (status = 204, description = "Extended"),
        (status = 400, description = "invalid_request: lease out of bounds", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "receipt_not_found: settled, expired (requeued) or unknown", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn extend_lease(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((queue, receipt)): ApiPath<(String, String)>,
    ApiQuery(params): ApiQuery<ExtendParams>,
) -> Result<Response, ApiError> {
    queue_name(&queue)?;
    caller.require(Permission::Read, "queue", &queue)?;
    let lease = lease_duration(params.lease, state.limits)?;
    let expires = state
        .leases
        .extend(&queue, &receipt, lease)
        .map_err(lease_error)?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(value) = HeaderValue::from_str(&rfc3339(expires)) {
        response
            .headers_mut()
            .insert("amqp-lease-expires-at", value);
    }
    Ok(response)
}

async fn settle(
    state: &AppState,
    caller: &Caller,
    queue: &str,
    receipt: &str,
    how: Settle,
) -> Result<StatusCode, ApiError> {
    queue_name(queue)?;
    caller.require(Permission::Read, "queue", queue)?;
    state
        .leases
        .settle(queue, receipt, how)
        .await
        .map_err(lease_error)?;
    Ok(StatusCode::NO_CONTENT)
}

fn lease_error(error: LeaseError) -> ApiError {
    match error {
        LeaseError::NotFound => ApiError::ReceiptNotFound(format!(
            "{error}; take the message again with GET /queues/{{queue}}/next"
        )),
        LeaseError::Broker(error) => error.into(),
    }
}
