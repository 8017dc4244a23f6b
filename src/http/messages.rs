//! `POST /exchanges/{exchange}/messages`: carrot's Publisher.send, raw or batch.

use tracing::Instrument as _;

use crate::telemetry::spans;
use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery, Body};
use super::idempotent;
use super::names::exchange_name;
use super::publish_input::{self, BatchRequest, PublishParams, TraceContext};
use super::request_reply;
use super::state::AppState;
use crate::auth::Permission;
use crate::broker;
use crate::messaging::idempotency::{self, Begin};
use crate::model::{OutgoingMessage, PublishOutcome};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(publish_messages))
}

/// Raw-mode answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublishResponse {
    /// Whether at least one queue took the message. For a reply to a direct reply-to address
    /// (`amq.rabbitmq.reply-to.…` on the default exchange), true once the broker confirmed it:
    /// RabbitMQ hands it to the requester's channel if that is still open, and never says.
    pub routed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_text: Option<String>,
}

/// Batch-mode answer: one result per message, in request order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResponse {
    pub results: Vec<BatchResult>,
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct BatchResult {
    /// Confirmed and taken by at least one queue.
    pub routed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_text: Option<String>,
    /// For a message that failed: the status it would have had alone (422, 503, 504).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// For a message that failed: its error code (`unroutable`, `publish_nacked`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Publish one message (raw mode) or a batch, answering after the broker's confirm.
///
/// Raw mode: the body is published byte for byte; its Content-Type becomes `content_type`
/// (charset → `content_encoding`). Batch mode: `Content-Type: application/vnd.carrot.batch+json`;
/// every message is validated before any is published, and the confirms are pipelined. With
/// `reply=wait` (raw mode): published as a request with direct reply-to, answered with the reply.
#[utoipa::path(
    post,
    path = "/exchanges/{exchange}/messages",
    tag = "messages",
    params(
        ("exchange" = String, Path, description = "Exchange name; `amq.default` for the default exchange"),
        PublishParams,
        ("traceparent" = Option<String>, Header, description = "W3C trace context: becomes the AMQP header `traceparent` of every message that has none (a malformed one is dropped with its tracestate)"),
        ("tracestate" = Option<String>, Header, description = "W3C trace state, sent with a valid traceparent as the AMQP header `tracestate`"),
        ("baggage" = Option<String>, Header, description = "W3C baggage: becomes the AMQP header `baggage`"),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters: a retry with the same key and the same request gets the first answer again (`Idempotent-Replayed: true`) instead of publishing twice, for `--idempotency-ttl` (10 minutes); the same key for another request is 422, while the first is unanswered 409"),
    ),
    request_body(
        content(
            (BatchRequest = "application/vnd.carrot.batch+json"),
            (Vec<u8> = "application/octet-stream"),
            (Object = "application/json"),
        ),
        description = "Raw mode: any body and Content-Type. Batch mode: a BatchRequest."
    ),
    responses(
        (status = 200, description = "Confirmed (raw mode)", body = PublishResponse),
        (status = 200, description = "Confirmed (batch mode)", body = BatchResponse),
    )
)]
pub async fn publish_messages(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    RawQuery(query): RawQuery,
    ApiQuery(params): ApiQuery<PublishParams>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let exchange = exchange_name(&name)?;
    caller.require(Permission::Write, "exchange", &name)?;
    let Some(key) = idempotent::key(&headers)? else {
        return publish(&state, exchange, &name, params, &headers, body).await;
    };
    // Trace headers are left out: each retry of a request may carry a span of its own.
    let fingerprint = idempotency::fingerprint(&[
        name.as_bytes(),
        query.unwrap_or_default().as_bytes(),
        content_type(&headers)?.unwrap_or_default().as_bytes(),
        &body,
    ]);
    let begun = state.idempotency.begin(caller.0.name(), &key, fingerprint);
    let begun = begun.await.map_err(|error| {
        ApiError::IdempotencyStoreUnavailable(format!(
            "{error}; nothing was published: retry with the same key shortly"
        ))
    })?;
    match begun {
        Begin::Fresh(claim) => {
            let answered = publish(&state, exchange, &name, params, &headers, body).await;
            idempotent::keep(claim, answered).await
        }
        Begin::Replay(answer) => Ok(idempotent::replay(answer)),
        Begin::InFlight => Err(ApiError::IdempotencyKeyInUse(format!(
            "the first request with Idempotency-Key {key:?} is still being answered; retry it \
             once that one has its answer"
        ))),
        Begin::Mismatch => Err(ApiError::IdempotencyKeyReused(format!(
            "Idempotency-Key {key:?} was used for a different request (another exchange, query, \
             Content-Type or body); use a fresh key per operation"
        ))),
    }
}

/// Publishes one raw message (or a request waiting for its reply) or a batch, in a `publish`
/// span when spans are exported: the messages then carry that span's context.
async fn publish(
    state: &AppState,
    exchange: &str,
    name: &str,
    params: PublishParams,
    headers: &HeaderMap,
    body: bytes::Bytes,
) -> Result<Response, ApiError> {
    let span = spans::publish(name, params.routing_key.as_deref(), headers);
    let trace = TraceContext::of(headers).continued_by(spans::traceparent(&span));
    let answered = publish_in(state, exchange, name, params, headers, body, trace)
        .instrument(span.clone())
        .await;
    if let Err(error) = &answered {
        spans::failed(&span, error.code().name());
    }
    answered
}

async fn publish_in(
    state: &AppState,
    exchange: &str,
    name: &str,
    params: PublishParams,
    headers: &HeaderMap,
    body: bytes::Bytes,
    trace: TraceContext,
) -> Result<Response, ApiError> {
    let content_type = content_type(headers)?;
    if publish_input::is_batch(content_type) {
        let (mut messages, mandatory) = publish_input::batch_messages(&params, &body)?;
        for message in &mut messages {
            trace.apply(&mut message.properties);
        }
        let outcomes = state.broker.publish_batch(exchange, &messages).await?;
        let results = outcomes
            .into_iter()
            .map(|outcome| BatchResult::of(outcome, mandatory))
            .collect();
        return Ok(Json(BatchResponse { results }).into_response());
    }
    let reply = request_reply::reply_wait(&params, state.consumption.limits())?;
    let mut publish = publish_input::raw_message(params, content_type, body)?;
    trace.apply(&mut publish.message.properties);
    if let Some(reply) = reply {
        return request_reply::request(state, exchange, publish, reply).await;
    }
    let outcome = state.broker.publish(exchange, &publish.message).await?;
    let answer = PublishResponse::of(outcome, publish.mandatory, name, &publish.message)?;
    Ok(Json(answer).into_response())
}

fn content_type(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    headers
        .get(header::CONTENT_TYPE)
        .map(|value| {
            value.to_str().map_err(|_| {
                ApiError::UnsupportedMediaType("Content-Type is not valid ASCII".into())
            })
        })
        .transpose()
}

impl PublishResponse {
    /// The answer to a confirmed publish; unroutable is a 422 when `mandatory`.
    fn of(
        outcome: PublishOutcome,
        mandatory: bool,
        exchange: &str,
        message: &OutgoingMessage,
    ) -> Result<Self, ApiError> {
        match outcome {
            PublishOutcome::Routed => Ok(Self {
                routed: true,
                reply_code: None,
                reply_text: None,
            }),
            PublishOutcome::Unroutable {
                reply_code,
                reply_text,
            } if mandatory => Err(ApiError::unroutable(
                exchange,
                &message.routing_key,
                reply_code,
                &reply_text,
            )),
            PublishOutcome::Unroutable {
                reply_code,
                reply_text,
            } => Ok(Self {
                routed: false,
                reply_code: Some(reply_code),
                reply_text: Some(reply_text),
            }),
            PublishOutcome::Nacked => Err(ApiError::publish_nacked()),
        }
    }
}

impl BatchResult {
    fn of(outcome: Result<PublishOutcome, broker::Error>, mandatory: bool) -> Self {
        let failed = |error: ApiError| {
            let problem = error.problem();
            Self {
                status: Some(problem.status),
                code: Some(problem.code),
                detail: Some(problem.detail),
                ..Self::default()
            }
        };
        match outcome {
            Ok(PublishOutcome::Routed) => Self {
                routed: true,
                ..Self::default()
            },
            Ok(PublishOutcome::Unroutable {
                reply_code,
                reply_text,
            }) => Self {
                reply_code: Some(reply_code),
                reply_text: Some(reply_text),
                status: mandatory.then_some(422),
                code: mandatory.then_some("unroutable"),
                ..Self::default()
            },
            Ok(PublishOutcome::Nacked) => failed(ApiError::publish_nacked()),
            Err(error) => failed(ApiError::from(error)),
        }
    }
}
