//! Server-Sent Events: one `message` event per delivery (carrot's iterconsume / wait).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{Stream, StreamExt};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::consume::{hand_out, not_leased};
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery};
use super::names::queue_name;
use super::state::AppState;
use crate::auth::Permission;
use crate::broker::StreamOffset;
use crate::messaging::consume::{AckPolicy, Envelopes};
use crate::messaging::consumer_sets::DEFAULT_PREFETCH;
use crate::messaging::stream_read::parse_offset;
use axum::http::HeaderMap;

const DEFAULT_HEARTBEAT: u64 = 15;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream_queue))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// basic.qos: unacknowledged messages at most (default 10).
    #[param(minimum = 1, maximum = 65535)]
    pub prefetch: Option<u16>,
    /// `lease` (default, settle each with its receipt) or `auto`.
    pub ack: Option<AckPolicy>,
    /// Lease length in seconds for `ack=lease` (default 30, at most `lease_max`, 900 by default).
    #[param(minimum = 1, maximum = 900)]
    pub lease: Option<u64>,
    /// Decode YAML and msgpack bodies to JSON (default true).
    pub decode: Option<bool>,
    /// Seconds between heartbeat comments while idle (default 15).
    #[param(minimum = 1, maximum = 300)]
    pub heartbeat: Option<u64>,
    /// Stream queues only: where to start, `first`, `last`, `next`, an offset, or an RFC 3339
    /// time. Each event's `id` is the message's offset, so an EventSource that reconnects with
    /// `Last-Event-ID` goes on after it (that header alone also starts a stream read). No
    /// `ack` or `lease`: a stream keeps its messages.
    pub offset: Option<String>,
}

/// Stream the queue's messages as they arrive.
///
/// Each event is `event: message` with the JSON of `/next` as data. A slow reader stops the
/// broker's deliveries (at most `prefetch` unacknowledged). When the client disconnects the
/// consumer is cancelled and every unsettled message returns to the queue. If the broker
/// connection is lost the stream sends an `error` event and ends: reconnect.
#[utoipa::path(
    get,
    path = "/queues/{queue}/stream",
    tag = "consume",
    params(("queue" = String, Path, description = "Queue name"), StreamParams),
    responses(
        (status = 200, description = "text/event-stream of `message` events", content_type = "text/event-stream"),
    )
)]
pub async fn stream_queue(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(queue): ApiPath<String>,
    ApiQuery(params): ApiQuery<StreamParams>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    queue_name(&queue)?;
    caller.require(Permission::Read, "queue", &queue)?;
    let prefetch = params.prefetch.unwrap_or(DEFAULT_PREFETCH);
    if prefetch == 0 {
        return Err(ApiError::InvalidRequest(
            "prefetch=0 would let the broker deliver without limit; use 1–65535".into(),
        ));
    }
    let every = heartbeat(params.heartbeat)?;
    if let Some(offset) = stream_offset(&params, &headers)? {
        not_leased(params.ack, params.lease)?;
        let decode = params.decode.unwrap_or(true);
        let envelopes = state
            .consumption
            .stream_from(&queue, &offset, prefetch, decode)
            .await?;
        return Ok(sse(envelopes, every));
    }
    let ack = params.ack.unwrap_or_default();
    let limits = state.consumption.limits();
    let how = hand_out(ack, params.lease, params.decode, limits)?;
    let envelopes = state
        .consumption
        .stream_queue(&queue, prefetch, how)
        .await?;
    Ok(sse(envelopes, every))
}

/// Where a stream read starts: `offset`, else after the `Last-Event-ID` an EventSource sends
/// when it reconnects; `None` for a queue read.
fn stream_offset(
    params: &StreamParams,
    headers: &HeaderMap,
) -> Result<Option<StreamOffset>, ApiError> {
    if let Some(offset) = &params.offset {
        return parse_offset(offset)
            .map(Some)
            .map_err(ApiError::InvalidRequest);
    }
    let Some(last) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let last = last
        .to_str()
        .ok()
        .and_then(|id| id.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            ApiError::InvalidRequest(
                "Last-Event-ID must be the offset of the last event received (a whole number)"
                    .into(),
            )
        })?;
    Ok(Some(StreamOffset::At(last.saturating_add(1))))
}

/// The interval of heartbeat comments while a stream is idle.
pub fn heartbeat(seconds: Option<u64>) -> Result<Duration, ApiError> {
    let heartbeat = seconds.unwrap_or(DEFAULT_HEARTBEAT);
    if !(1..=300).contains(&heartbeat) {
        return Err(ApiError::InvalidRequest(format!(
            "heartbeat={heartbeat} must be between 1 and 300 seconds"
        )));
    }
    Ok(Duration::from_secs(heartbeat))
}

/// Envelopes as `message` events; an error becomes an `error` event with its problem, the last.
pub fn sse(
    envelopes: Envelopes,
    heartbeat: Duration,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let open = OpenStream::new();
    let events = envelopes.map(move |next| {
        let _counted = &open;
        let event = match next {
            Ok(envelope) => {
                let event = Event::default()
                    .event("message")
                    .data(serde_json::to_string(&envelope).unwrap_or_default());
                match envelope.offset {
                    Some(offset) => event.id(offset.to_string()),
                    None => event,
                }
            }
            Err(error) => {
                let problem = ApiError::from(error).problem();
                Event::default()
                    .event("error")
                    .data(serde_json::to_string(&problem).unwrap_or_default())
            }
        };
        Ok(event)
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(heartbeat).text("heartbeat"))
}

/// Counts an open stream in the metrics for as long as it lives.
struct OpenStream;

impl OpenStream {
    fn new() -> Self {
        metrics::gauge!(crate::metrics::STREAMS_OPEN).increment(1.0);
        Self
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::gauge!(crate::metrics::STREAMS_OPEN).decrement(1.0);
    }
}
