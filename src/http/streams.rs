//! Server-Sent Events: one `message` event per delivery (carrot's iterconsume / wait).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Caller;
use super::consume::{Ack, ConsumeLimits, lease_duration};
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery};
use super::names::queue_name;
use crate::auth::Permission;
use crate::broker::{self, AckMode, Taken};
use crate::messaging::consumer_sets::DEFAULT_PREFETCH;
use crate::messaging::envelope::Envelope;
use crate::messaging::leases::Leases;

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
    pub ack: Option<Ack>,
    /// Lease length in seconds for `ack=lease` (default 30, at most `lease_max`, 900 by default).
    #[param(minimum = 1, maximum = 900)]
    pub lease: Option<u64>,
    /// Decode YAML and msgpack bodies to JSON (default true).
    pub decode: Option<bool>,
    /// Seconds between heartbeat comments while idle (default 15).
    #[param(minimum = 1, maximum = 300)]
    pub heartbeat: Option<u64>,
}

/// How a stream hands out what it receives.
#[derive(Debug, Clone, Copy)]
pub struct StreamSettings {
    pub mode: AckMode,
    pub lease: Duration,
    pub decode: bool,
    pub heartbeat: Duration,
}

impl StreamSettings {
    /// The settings of a queue's stream, and its prefetch.
    pub fn new(params: &StreamParams, limits: ConsumeLimits) -> Result<(Self, u16), ApiError> {
        let prefetch = params.prefetch.unwrap_or(DEFAULT_PREFETCH);
        if prefetch == 0 {
            return Err(ApiError::InvalidRequest(
                "prefetch=0 would let the broker deliver without limit; use 1–65535".into(),
            ));
        }
        let mode = params.ack.map_or(AckMode::Manual, AckMode::from);
        let settings = Self::reading(mode, params.lease, params.decode, params.heartbeat, limits)?;
        Ok((settings, prefetch))
    }

    /// The settings of a stream whose acknowledgement mode is decided already.
    pub fn reading(
        mode: AckMode,
        lease: Option<u64>,
        decode: Option<bool>,
        heartbeat: Option<u64>,
        limits: ConsumeLimits,
    ) -> Result<Self, ApiError> {
        let heartbeat = heartbeat.unwrap_or(DEFAULT_HEARTBEAT);
        if !(1..=300).contains(&heartbeat) {
            return Err(ApiError::InvalidRequest(format!(
                "heartbeat={heartbeat} must be between 1 and 300 seconds"
            )));
        }
        Ok(Self {
            mode,
            lease: lease_duration(lease, limits)?,
            decode: decode.unwrap_or(true),
            heartbeat: Duration::from_secs(heartbeat),
        })
    }
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
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    queue_name(&queue)?;
    caller.require(Permission::Read, "queue", &queue)?;
    let (settings, prefetch) = StreamSettings::new(&params, state.limits)?;
    let subscription = state
        .broker
        .consume_queues(std::slice::from_ref(&queue), prefetch)
        .await?;
    let deliveries = stream::unfold(subscription, |mut subscription| async move {
        let next = subscription.next().await?;
        Some((next, subscription))
    });
    Ok(sse(state, deliveries, settings, |_| {}))
}

/// Turns deliveries into SSE events, settling auto-mode ones and leasing the others.
///
/// `on_lease` sees every receipt handed out; the stream returns its open leases when dropped.
pub fn sse<S>(
    state: AppState,
    deliveries: S,
    settings: StreamSettings,
    on_lease: impl Fn(&str) + Send + 'static,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>>
where
    S: Stream<Item = Result<(String, Taken), broker::Error>> + Send + 'static,
{
    metrics::gauge!(crate::metrics::STREAMS_OPEN).increment(1.0);
    let context = StreamContext {
        deliveries: Box::pin(deliveries),
        leases: LeaseReturn {
            leases: state.leases.clone(),
            receipts: Vec::new(),
        },
        shutdown: state.shutdown.clone(),
        settings,
        on_lease: Box::new(on_lease),
        done: false,
    };
    let events = stream::unfold(context, |mut context| async move {
        if context.done {
            return None;
        }
        use futures_util::StreamExt as _;
        let next = tokio::select! {
            next = context.deliveries.next() => next,
            () = context.shutdown.cancelled() => None,
        }?;
        let event = match next.map(|message| context.hand_out(message)) {
            Ok(handed) => handed.await,
            Err(error) => Err(error),
        };
        let event = event.unwrap_or_else(|error| {
            // The consumer is gone (lost connection, deleted queue): say why, then end.
            context.done = true;
            let problem = ApiError::from(error).problem();
            Event::default()
                .event("error")
                .data(serde_json::to_string(&problem).unwrap_or_default())
        });
        Some((Ok(event), context))
    });
    Sse::new(events).keep_alive(
        KeepAlive::new()
            .interval(settings.heartbeat)
            .text("heartbeat"),
    )
}

type Deliveries =
    std::pin::Pin<Box<dyn Stream<Item = Result<(String, Taken), broker::Error>> + Send>>;

struct StreamContext {
    deliveries: Deliveries,
    leases: LeaseReturn,
    shutdown: tokio_util::sync::CancellationToken,
    settings: StreamSettings,
    on_lease: Box<dyn Fn(&str) + Send>,
    done: bool,
}

impl StreamContext {
    async fn hand_out(
        &mut self,
        (queue, (delivered, handle)): (String, Taken),
    ) -> Result<Event, broker::Error> {
        let envelope = Envelope::new(&delivered, self.settings.decode).from_queue(&queue);
        let envelope = match (self.settings.mode, handle) {
            (AckMode::Auto, Some(handle)) => {
                // Not awaited: the next event need not wait for this ack to be written. The
                // handle keeps its channel open until the ack is out.
                tokio::spawn(async move {
                    if let Err(error) = handle.ack().await {
                        tracing::debug!(%error, "ack of a streamed message failed; the broker requeues it");
                    }
                });
                envelope
            }
            (AckMode::Manual, Some(handle)) => {
                let granted = self
                    .leases
                    .leases
                    .grant(&queue, handle, self.settings.lease);
                self.leases.remember(&granted.receipt);
                (self.on_lease)(&granted.receipt);
                envelope.with_lease(granted.receipt, granted.expires_at)
            }
            (_, None) => envelope,
        };
        Ok(Event::default()
            .event("message")
            .data(serde_json::to_string(&envelope).unwrap_or_default()))
    }
}

/// The stream's open leases, returned to their queues when the client goes away.
struct LeaseReturn {
    leases: Leases,
    receipts: Vec<String>,
}

impl LeaseReturn {
    fn remember(&mut self, receipt: &str) {
        // Settled receipts are forgotten now and then, so a long stream holds only open ones.
        if self.receipts.len() >= 256 {
            let leases = &self.leases;
            self.receipts.retain(|receipt| leases.is_open(receipt));
        }
        self.receipts.push(receipt.to_owned());
    }
}

impl Drop for LeaseReturn {
    fn drop(&mut self) {
        // Dropped exactly once per stream, with the stream.
        metrics::gauge!(crate::metrics::STREAMS_OPEN).decrement(1.0);
        let receipts = std::mem::take(&mut self.receipts);
        if receipts.is_empty() {
            return;
        }
        let leases = self.leases.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { leases.release(receipts).await });
        }
    }
}
