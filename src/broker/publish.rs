//! basic.publish with publisher confirms: one message (through a shared lane when it may), or a
//! pipelined batch on a channel of its own.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use futures_util::future::join_all;
use lapin::message::BasicReturnMessage;
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation};

use super::channels::discard;
use super::fields::{encoded_len, to_basic_properties};
use super::{Broker, Error};
use crate::metrics;
use crate::model::{OutgoingMessage, PublishOutcome};

/// Always mandatory: the gateway reports `routed` even when the client did not ask to fail on it.
pub(super) const OPTIONS: BasicPublishOptions = BasicPublishOptions {
    mandatory: true,
    immediate: false,
};

/// For a reply to a direct reply-to address, which RabbitMQ returns as unroutable whenever it is
/// published mandatory, even as it delivers it.
const REPLY_OPTIONS: BasicPublishOptions = BasicPublishOptions {
    mandatory: false,
    immediate: false,
};

/// Whether the message is a reply to a request made with direct reply-to.
pub(super) fn is_reply(exchange: &str, routing_key: &str) -> bool {
    exchange.is_empty() && routing_key.starts_with("amq.rabbitmq.reply-to.")
}

fn options_for(exchange: &str, routing_key: &str) -> BasicPublishOptions {
    if is_reply(exchange, routing_key) {
        REPLY_OPTIONS
    } else {
        OPTIONS
    }
}

impl Broker {
    /// Publishes one message and waits for its confirm.
    pub async fn publish(
        &self,
        exchange: &str,
        message: &OutgoingMessage,
    ) -> Result<PublishOutcome, Error> {
        let properties = to_basic_properties(&message.properties);
        self.check_fits(None, &properties)?;
        let lanes = &self.inner.lanes;
        let publishing = lanes.enter();
        let published = if lanes.takes(&publishing, exchange, message) {
            self.check_ready()?;
            metrics::count(metrics::PUBLISHED, 1);
            lanes
                .publish(
                    exchange,
                    &message.routing_key,
                    message.body.clone(),
                    properties,
                )
                .await
                .map_err(|error| self.observe(error))
        } else {
            let published = self.publish_alone(exchange, message, properties).await;
            if published.is_ok() {
                lanes.known.learn(exchange);
            }
            published
        };
        // Whichever path saw it: an exchange that is gone or forbidden must not reach a lane.
        if let Err(Error::ExchangeNotFound(_) | Error::AccessRefused(_)) = &published {
            lanes.known.forget(exchange);
        }
        published
    }

    /// Publishes one message on a channel of its own.
    async fn publish_alone(
        &self,
        exchange: &str,
        message: &OutgoingMessage,
        properties: BasicProperties,
    ) -> Result<PublishOutcome, Error> {
        let channel = self.checkout().await?;
        metrics::count(metrics::PUBLISHED, 1);
        let published = self
            .publish_one(&channel, exchange, message, properties)
            .await;
        if published.is_err() {
            discard(channel);
        }
        published
    }

    /// Publishes one message on a channel nobody else publishes on, and waits for its confirm.
    /// After an error the channel must not be used again: it failed, or a late confirm or
    /// return would be paired with the next publish on it.
    pub(super) async fn publish_one(
        &self,
        channel: &Channel,
        exchange: &str,
        message: &OutgoingMessage,
        properties: BasicProperties,
    ) -> Result<PublishOutcome, Error> {
        let sent = tokio::time::timeout(self.inner.timeout, async {
            // An error before the frames are out means the broker never had the whole message.
            let confirm = channel
                .basic_publish(
                    ShortString::from(exchange),
                    ShortString::from(message.routing_key.as_str()),
                    options_for(exchange, &message.routing_key),
                    &message.body,
                    properties,
                )
                .await?;
            confirm.await.map_err(Error::unconfirmed)
        })
        .await;
        match sent {
            Ok(Ok(confirmation)) => Ok(outcome(confirmation, None)),
            Ok(Err(error)) => Err(self.observe(error)),
            Err(_elapsed) => Err(Error::Timeout(self.inner.timeout)),
        }
    }

    /// Publishes every message on one channel, then collects all confirms together.
    ///
    /// The per-message results are in request order. When nothing at all was confirmed the
    /// shared cause (missing exchange, outage) is returned as the error instead.
    pub async fn publish_batch(
        &self,
        exchange: &str,
        messages: &[OutgoingMessage],
    ) -> Result<Vec<Result<PublishOutcome, Error>>, Error> {
        let properties: Vec<BasicProperties> = messages
            .iter()
            .map(|message| to_basic_properties(&message.properties))
            .collect();
        for (index, properties) in properties.iter().enumerate() {
            self.check_fits(Some(index), properties)?;
        }
        let channel = self.checkout().await?;
        metrics::count(metrics::PUBLISHED, messages.len() as u64);
        let sent = tokio::time::timeout(self.inner.timeout, async {
            let mut confirms = Vec::with_capacity(messages.len());
            for (message, properties) in messages.iter().zip(&properties) {
                match channel
                    .basic_publish(
                        ShortString::from(exchange),
                        ShortString::from(message.routing_key.as_str()),
                        options_for(exchange, &message.routing_key),
                        &message.body,
                        properties.clone(),
                    )
                    .await
                {
                    Ok(confirm) => confirms.push(confirm),
                    Err(error) => return (join_all(confirms).await, Some(Error::from(error))),
                }
            }
            (join_all(confirms).await, None)
        })
        .await;
        let Ok((confirmations, publish_error)) = sent else {
            discard(channel);
            return Err(Error::Timeout(self.inner.timeout));
        };

        let mut returns = Vec::new();
        let mut results: Vec<Result<Confirmation, Error>> = Vec::with_capacity(messages.len());
        for confirmation in confirmations {
            results.push(match confirmation {
                Ok(Confirmation::Ack(returned)) => {
                    returns.extend(returned);
                    Ok(Confirmation::Ack(None))
                }
                Ok(Confirmation::Nack(returned)) => {
                    returns.extend(returned);
                    Ok(Confirmation::Nack(None))
                }
                Ok(Confirmation::NotRequested) => Ok(Confirmation::NotRequested),
                Err(error) => Err(Error::unconfirmed(error)),
            });
        }
        if let Some(error) = publish_error {
            results.resize_with(messages.len(), || Err(error.clone()));
        }
        if results.iter().any(Result::is_err) {
            discard(channel);
        }

        let mut returned_to = match_returns(messages, &properties, returns);
        let outcomes: Vec<Result<PublishOutcome, Error>> = results
            .into_iter()
            .enumerate()
            .map(|(index, result)| {
                result
                    .map(|confirmation| outcome(confirmation, returned_to.remove(&index)))
                    .map_err(|error| self.observe(error))
            })
            .collect();
        match outcomes.iter().find_map(|result| result.as_ref().err()) {
            Some(first) if outcomes.iter().all(Result::is_err) => Err(first.clone()),
            _ => Ok(outcomes),
        }
    }
}

impl Broker {
    /// The broker answers a content header larger than a frame by closing the whole connection.
    pub(super) fn check_fits(
        &self,
        index: Option<usize>,
        properties: &BasicProperties,
    ) -> Result<(), Error> {
        // A frame's own 8 bytes, and the header's class, weight, body size and flags before them.
        let limit = (self.inner.registry.frame_max() as usize).saturating_sub(8 + 12);
        let size = encoded_len(properties);
        if size > limit {
            return Err(Error::PropertiesTooLarge { index, size, limit });
        }
        Ok(())
    }
}

/// `returned` is the return matched to this publish by content, when the confirm did not say.
pub(super) fn outcome(
    confirmation: Confirmation,
    returned: Option<BasicReturnMessage>,
) -> PublishOutcome {
    let outcome = classify(confirmation, returned);
    match outcome {
        PublishOutcome::Nacked => metrics::count(metrics::NACKED, 1),
        PublishOutcome::Unroutable { .. } => {
            metrics::count(metrics::CONFIRMED, 1);
            metrics::count(metrics::RETURNED, 1);
        }
        PublishOutcome::Routed => metrics::count(metrics::CONFIRMED, 1),
    }
    outcome
}

fn classify(confirmation: Confirmation, returned: Option<BasicReturnMessage>) -> PublishOutcome {
    match confirmation {
        Confirmation::Nack(_) => PublishOutcome::Nacked,
        Confirmation::Ack(own) => match own.or(returned) {
            Some(returned) => PublishOutcome::Unroutable {
                reply_code: returned.reply_code,
                reply_text: returned.reply_text.to_string(),
            },
            None => PublishOutcome::Routed,
        },
        // Confirm mode is set on every pooled channel; without it nothing was confirmed.
        Confirmation::NotRequested => PublishOutcome::Nacked,
    }
}

/// Pairs each basic.return with the message it carries back.
///
/// lapin hands a return to whichever confirm resolves next, so within a pipelined batch a
/// return can ride on another message's confirm. The channel is the batch's alone, so every
/// return belongs to one of its messages; identical messages route identically, so picking the
/// first unmatched one of equal content is exact.
fn match_returns(
    messages: &[OutgoingMessage],
    properties: &[BasicProperties],
    returns: Vec<BasicReturnMessage>,
) -> HashMap<usize, BasicReturnMessage> {
    let hasher = RandomState::new();
    let content_hash = |routing_key: &str, body: &[u8]| hasher.hash_one((routing_key, body));
    let mut by_content: HashMap<u64, Vec<usize>> = HashMap::new();
    if !returns.is_empty() {
        for (index, message) in messages.iter().enumerate() {
            by_content
                .entry(content_hash(&message.routing_key, &message.body))
                .or_default()
                .push(index);
        }
    }
    let mut matched = HashMap::with_capacity(returns.len());
    for returned in returns {
        let delivery = &returned.delivery;
        let same_content = |index: &usize| {
            let message = &messages[*index];
            message.routing_key == delivery.routing_key.as_str() && message.body == delivery.data
        };
        let candidates = by_content
            .get(&content_hash(delivery.routing_key.as_str(), &delivery.data))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let unmatched = || {
            candidates
                .iter()
                .copied()
                .filter(|index| !matched.contains_key(index) && same_content(index))
        };
        let index = unmatched()
            .find(|&index| properties[index] == delivery.properties)
            .or_else(|| unmatched().next());
        match index {
            Some(index) => {
                matched.insert(index, returned);
            }
            None => tracing::warn!(
                routing_key = delivery.routing_key.as_str(),
                "a returned message matches no published one"
            ),
        }
    }
    matched
}
