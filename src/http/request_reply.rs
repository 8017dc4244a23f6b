//! `POST /exchanges/{exchange}/messages?reply=wait`: carrot's Messaging over HTTP. The message
//! goes out as a request with direct reply-to, and the answer is its reply, as `/next` shows a
//! message.

use std::time::Duration;

use axum::Json;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::publish_input::{PublishParams, RawPublish};
use super::raw_message::raw_response;
use super::state::AppState;
use crate::broker::Requested;
use crate::messaging::consume::ConsumeLimits;
use crate::messaging::envelope::Envelope;

/// Time a request waits for its reply unless it says.
const DEFAULT_WAIT: Duration = Duration::from_secs(5);

/// How a request waits for its reply, and how the reply is answered.
#[derive(Debug, Clone, Copy)]
pub struct ReplyWait {
    timeout: Duration,
    raw: bool,
}

/// The reply options of a publish's query; `None` for a plain publish.
pub fn reply_wait(
    params: &PublishParams,
    limits: &ConsumeLimits,
) -> Result<Option<ReplyWait>, ApiError> {
    let invalid = |text: String| Err(ApiError::InvalidRequest(text));
    match params.reply.as_deref() {
        None => {
            if params.timeout.is_some() || params.format.is_some() {
                return invalid(
                    "timeout and format are for reply=wait; add it to wait for a reply, or drop \
                     them"
                        .into(),
                );
            }
            return Ok(None);
        }
        Some("wait") => {}
        Some(other) => return invalid(format!("reply={other} must be wait")),
    }
    if params.reply_to.is_some() {
        return invalid(
            "reply=wait sets reply_to itself (to RabbitMQ's direct reply-to); leave reply_to out"
                .into(),
        );
    }
    let seconds = match params.timeout.as_deref() {
        None => None,
        Some(text) => match text.parse::<u64>() {
            Ok(seconds) => Some(seconds),
            Err(_) => return invalid(format!("timeout={text} must be a whole number of seconds")),
        },
    };
    let timeout = limits.budget("timeout", seconds, DEFAULT_WAIT)?;
    let raw = match params.format.as_deref() {
        None | Some("json") => false,
        Some("raw") => true,
        Some(other) => return invalid(format!("format={other} must be json or raw")),
    };
    Ok(Some(ReplyWait { timeout, raw }))
}

/// Publishes the request and answers with its reply.
pub async fn request(
    state: &AppState,
    exchange: &str,
    mut publish: RawPublish,
    wait: ReplyWait,
) -> Result<Response, ApiError> {
    let correlation_id = publish
        .message
        .properties
        .correlation_id
        .get_or_insert_with(|| uuid::Uuid::new_v4().simple().to_string())
        .clone();
    let requested = state
        .broker
        .request(exchange, &publish.message, wait.timeout)
        .await?;
    match requested {
        Requested::Replied(reply) => {
            let envelope = Envelope::new(&reply, true);
            Ok(if wait.raw {
                raw_response(&envelope, reply.body)
            } else {
                Json(envelope).into_response()
            })
        }
        Requested::Unroutable {
            reply_code,
            reply_text,
        } => Err(ApiError::unroutable(
            exchange,
            &publish.message.routing_key,
            reply_code,
            &reply_text,
        )),
        Requested::Nacked => Err(ApiError::publish_nacked()),
        Requested::NoReply => Err(ApiError::ReplyTimeout(format!(
            "no reply to correlation_id {correlation_id} within {} s; the request was delivered, \
             so a responder may still handle it; wait longer with timeout= (up to wait_max)",
            wait.timeout.as_secs()
        ))),
    }
}
