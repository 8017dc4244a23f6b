//! Consuming over HTTP (carrot's Consumer.fetch / iterqueue): `/next`, `/messages`, and
//! settling leases with their receipts.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery};
use super::names::queue_name;
use super::raw_message::raw_response;
use super::state::AppState;
use crate::auth::Permission;
use crate::messaging::consume::{AckPolicy, ConsumeLimits, HandOut, Handed};
use crate::messaging::envelope::{Envelope, rfc3339};
use crate::messaging::leases::Settle;
use crate::messaging::stream_read::{PageRequest, check_reader, parse_offset, read_page};
use crate::telemetry::spans;
use tracing::Instrument as _;

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

/// The query of `/next`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NextParams {
    /// `lease` (default): settle with the receipt; `auto`: removed on delivery (at most once).
    pub ack: Option<AckPolicy>,
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
    pub ack: Option<AckPolicy>,
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
    pub ack: Option<AckPolicy>,
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
    /// Stream queues only: where to read from, `first`, `last`, `next`, an offset, or an RFC
    /// 3339 time. Each message carries its `offset`; resume from the last one plus 1. The
    /// messages stay in the stream (no lease, no ack).
    pub offset: Option<String>,
    /// Stream queues only: a reader name (1–64 of `A-Za-z0-9._-`) whose offset the gateway
    /// keeps on the broker; without `offset`, the read goes on after the last one it was given
    /// (from the stream's first message, the first time).
    pub consumer: Option<String>,
}

/// How the messages of one request are handed out, and how long it may wait for one.
struct Reading {
    how: HandOut,
    wait: std::time::Duration,
}

impl Reading {
    fn new(
        ack: Option<AckPolicy>,
        lease: Option<u64>,
        wait: Option<u64>,
        decode: Option<bool>,
        limits: &ConsumeLimits,
    ) -> Result<Self, ApiError> {
        let how = hand_out(ack.unwrap_or_default(), lease, decode, limits)?;
        Ok(Self {
            how,
            wait: limits.wait(wait)?,
        })
    }
}

/// The hand-out a reader's query asks for, within the gateway's limits.
pub fn hand_out(
    ack: AckPolicy,
    lease: Option<u64>,
    decode: Option<bool>,
    limits: &ConsumeLimits,
) -> Result<HandOut, ApiError> {
    Ok(HandOut {
        ack,
        lease: limits.lease(lease)?,
        decode: decode.unwrap_or(true),
    })
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
    let limits = state.consumption.limits();
    let reading = Reading::new(params.ack, params.lease, params.wait, params.decode, limits)?;
    next(&state, &caller, &queue, &reading, raw, &headers).await
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
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let limits = state.consumption.limits();
    let reading = Reading::new(params.ack, params.lease, params.wait, Some(false), limits)?;
    next(&state, &caller, &queue, &reading, true, &headers).await
}

async fn next(
    state: &AppState,
    caller: &Caller,
    queue: &str,
    reading: &Reading,
    raw: bool,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    queue_name(queue)?;
    caller.require(Permission::Read, "queue", queue)?;
    let taken = take_in_span(state, queue, reading, 1, headers);
    let Some(handed) = taken.await?.pop() else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    if raw {
        return Ok(raw_response(&handed.envelope, handed.body));
    }
    Ok(Json(handed.envelope).into_response())
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
    let limits = state.consumption.limits();
    if params.offset.is_some() || params.consumer.is_some() {
        let request = stream_page(&params, limit, limits)?;
        let page = read_page(
            &state.broker,
            &queue,
            &request,
            state.consumption.shutdown(),
        );
        return Ok(Json(MessagesResponse {
            messages: page.await?,
        }));
    }
    let reading = Reading::new(params.ack, params.lease, params.wait, params.decode, limits)?;
    let taken = take_in_span(&state, &queue, &reading, limit, &headers);
    let messages = taken.await?.into_iter().map(|handed| handed.envelope);
    Ok(Json(MessagesResponse {
        messages: messages.collect(),
    }))
}

/// Takes up to `limit` messages in a `receive` span, when spans are exported.
async fn take_in_span(
    state: &AppState,
    queue: &str,
    reading: &Reading,
    limit: u32,
    headers: &HeaderMap,
) -> Result<Vec<Handed>, ApiError> {
    let span = spans::receive(queue, headers);
    let taken = state
        .consumption
        .take(queue, reading.how, reading.wait, limit)
        .instrument(span.clone())
        .await
        .map_err(ApiError::from);
    match &taken {
        Ok(handed) => {
            let messages: Vec<_> = handed
                .iter()
                .map(|handed| {
                    (
                        Some(handed.envelope.delivery_tag),
                        &handed.envelope.properties,
                    )
                })
                .collect();
            spans::received(&span, &messages);
        }
        Err(error) => spans::failed(&span, error.code().name()),
    }
    taken
}

/// A stream read's request, refusing what streams do not have.
fn stream_page(
    params: &MessagesParams,
    limit: u32,
    limits: &ConsumeLimits,
) -> Result<PageRequest, ApiError> {
    not_leased(params.ack, params.lease)?;
    let offset = params
        .offset
        .as_deref()
        .map(parse_offset)
        .transpose()
        .map_err(ApiError::InvalidRequest)?;
    if let Some(reader) = &params.consumer {
        check_reader(reader).map_err(ApiError::InvalidRequest)?;
    }
    Ok(PageRequest {
        offset,
        reader: params.consumer.clone(),
        limit: u16::try_from(limit).unwrap_or(u16::MAX),
        wait: limits.wait(params.wait)?,
        decode: params.decode.unwrap_or(true),
    })
}

/// A stream keeps every message: there is nothing to lease, requeue or remove.
pub fn not_leased(ack: Option<AckPolicy>, lease: Option<u64>) -> Result<(), ApiError> {
    if ack == Some(AckPolicy::Lease) || lease.is_some() {
        return Err(ApiError::InvalidRequest(
            "a stream queue's messages are not leased, requeued or removed: a stream keeps \
             them all; drop ack and lease, and go on from the last offset plus 1 (or name a \
             consumer)"
                .into(),
        ));
    }
    Ok(())
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
    let lease = state.consumption.limits().lease(params.lease)?;
    let expires = state.consumption.leases().extend(&queue, &receipt, lease)?;
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
        .consumption
        .leases()
        .settle(queue, receipt, how)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
