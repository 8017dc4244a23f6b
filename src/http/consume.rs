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
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery};
use super::names::queue_name;
use super::raw_message::raw_response;
use crate::auth::Permission;
use crate::broker::{AckMode, Taken};
pub use crate::messaging::consumer_sets::Ack;
use crate::messaging::envelope::{Envelope, rfc3339};
use crate::messaging::leases::{LeaseError, Settle};

/// Most messages one `GET /queues/{queue}/messages` returns.
pub const MAX_LIMIT: u32 = 100;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(next_message))
        .routes(routes!(next_message_raw))
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

/// The query of `/next`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NextParams {
    /// `lease` (default): settle with the receipt; `auto`: removed on delivery (at most once).
    pub ack: Option<Ack>,
    /// Lease length in seconds (default 30; at most the gateway's `lease_max`, 900 unless
    /// configured otherwise).
    #[param(minimum = 1, maximum = 900)]
    pub lease: Option<u64>,
    /// Long poll: wait up to this many seconds for a message before answering 204 (default 0;
    /// at most the gateway's `wait_max`, 20 unless configured otherwise).
    #[param(minimum = 0, maximum = 20)]
    pub wait: Option<u64>,
    /// Decode YAML and msgpack bodies to JSON (default true).
    pub decode: Option<bool>,
    /// `raw` answers as `GET /queues/{queue}/next/raw` does (as does `Accept:
    /// application/octet-stream`); documented there, kept here for curl users.
    #[param(ignore)]
    pub format: Option<String>,
}

/// The query of `/next/raw`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RawParams {
    /// `lease` (default): settle with the `Amqp-Receipt`; `auto`: removed on delivery.
    pub ack: Option<Ack>,
    /// Lease length in seconds (default 30, at most `lease_max`, 900 by default).
    #[param(minimum = 1, maximum = 900)]
    pub lease: Option<u64>,
    /// Long poll: seconds to wait for a message before 204 (default 0, at most `wait_max`, 20).
    #[param(minimum = 0, maximum = 20)]
    pub wait: Option<u64>,
}

/// The query of `/messages`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MessagesParams {
    /// `lease` (default): settle each with its receipt; `auto`: removed on delivery.
    pub ack: Option<Ack>,
    /// Lease length in seconds (default 30, at most `lease_max`, 900 by default).
    #[param(minimum = 1, maximum = 900)]
    pub lease: Option<u64>,
    /// Long poll, when the queue is empty: seconds to wait for one message (default 0, at most
    /// `wait_max`, 20 by default).
    #[param(minimum = 0, maximum = 20)]
    pub wait: Option<u64>,
    /// Decode YAML and msgpack bodies to JSON (default true).
    pub decode: Option<bool>,
    /// How many messages at most (default 10).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

struct ConsumeRequest {
    mode: AckMode,
    lease: Duration,
    wait: Duration,
    decode: bool,
}

impl ConsumeRequest {
    fn new(
        ack: Option<Ack>,
        lease: Option<u64>,
        wait: Option<u64>,
        decode: Option<bool>,
        limits: ConsumeLimits,
    ) -> Result<Self, ApiError> {
        Ok(Self {
            mode: ack.map_or(AckMode::Manual, AckMode::from),
            lease: lease_duration(lease, limits)?,
            wait: wait_duration(wait, limits)?,
            decode: decode.unwrap_or(true),
        })
    }
}

/// `format=raw`, or an `Accept` of raw bytes, asks `/next` for the raw form.
fn wants_raw(format: Option<&str>, headers: &HeaderMap) -> Result<bool, ApiError> {
    match format {
        None => Ok(headers
            .get(header::ACCEPT)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|accept| accept.contains("application/octet-stream"))),
        Some("json") => Ok(false),
        Some("raw") => Ok(true),
        Some(other) => Err(ApiError::InvalidRequest(format!(
            "format={other} is not valid; use json or raw"
        ))),
    }
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

/// Take the next message (carrot's Consumer.fetch) as a JSON envelope; 204 when the queue stays
/// empty.
#[utoipa::path(
    get,
    path = "/queues/{queue}/next",
    tag = "consume",
    params(("queue" = String, Path, description = "Queue name"), NextParams),
    responses(
        (status = 200, description = "A message", body = Envelope),
        (status = 204, description = "The queue is empty (after `wait`)"),
    )
)]
pub async fn next_message(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(queue): ApiPath<String>,
    ApiQuery(params): ApiQuery<NextParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let raw = wants_raw(params.format.as_deref(), &headers)?;
    let request = ConsumeRequest::new(
        params.ack,
        params.lease,
        params.wait,
        params.decode,
        state.limits,
    )?;
    next(&state, &caller, &queue, &request, raw).await
}

/// Take the next message as its own bytes, with everything else in `Amqp-*` headers; 204 when
/// the queue stays empty.
#[utoipa::path(
    get,
    path = "/queues/{queue}/next/raw",
    tag = "consume",
    params(("queue" = String, Path, description = "Queue name"), RawParams),
    responses(
        (status = 200, description = "A message"),
        (status = 204, description = "The queue is empty (after `wait`)"),
    )
)]
pub async fn next_message_raw(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(queue): ApiPath<String>,
    ApiQuery(params): ApiQuery<RawParams>,
) -> Result<Response, ApiError> {
    let request = ConsumeRequest::new(
        params.ack,
        params.lease,
        params.wait,
        Some(false),
        state.limits,
    )?;
    next(&state, &caller, &queue, &request, true).await
}

async fn next(
    state: &AppState,
    caller: &Caller,
    queue: &str,
    request: &ConsumeRequest,
    raw: bool,
) -> Result<Response, ApiError> {
    queue_name(queue)?;
    caller.require(Permission::Read, "queue", queue)?;
    let Some(taken) = take(state, queue, request, 1).await?.pop() else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let body = taken.0.body.clone();
    let envelope = envelope(state, queue, request, taken);
    if raw {
        return Ok(raw_response(&envelope, body));
    }
    Ok(Json(envelope).into_response())
}

/// Take up to `limit` messages at once (carrot's iterqueue(limit)).
#[utoipa::path(
    get,
    path = "/queues/{queue}/messages",
    tag = "consume",
    params(("queue" = String, Path, description = "Queue name"), MessagesParams),
    responses(
        (status = 200, description = "Zero or more messages", body = MessagesResponse),
    )
)]
pub async fn get_messages(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(queue): ApiPath<String>,
    ApiQuery(params): ApiQuery<MessagesParams>,
) -> Result<Json<MessagesResponse>, ApiError> {
    queue_name(&queue)?;
    caller.require(Permission::Read, "queue", &queue)?;
    let limit = params.limit.unwrap_or(10);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::InvalidRequest(format!(
            "limit={limit} must be between 1 and {MAX_LIMIT}"
        )));
    }
    let request = ConsumeRequest::new(
        params.ack,
        params.lease,
        params.wait,
        params.decode,
        state.limits,
    )?;
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
