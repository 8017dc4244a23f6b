//! Which answer each publish on a shared channel gets.
//!
//! lapin resolves every confirm by its delivery tag correctly (`multiple` included), but hands
//! each basic.return to whichever confirm it resolves next, often another message's. So the
//! returns a lane sees are pooled here and given back to the message they carry, by content.
//!
//! That is exact because RabbitMQ sends a message's basic.return before its basic.ack, returns
//! in publish order, and the acks of unroutable messages in tag order: once the confirms of a
//! lapin batch are all seen (see `Lane`'s barrier), every return of a message up to the
//! highest tag seen has surfaced on one of them. Two messages of identical content (exchange,
//! routing key, properties, body) are told apart only by order; they route alike unless a
//! binding changed between them.

use std::collections::BTreeMap;

use bytes::Bytes;
use lapin::message::BasicReturnMessage;
use lapin::types::ShortString;
use lapin::{BasicProperties, Confirmation};
use tokio::sync::oneshot;

use crate::broker::Error;
use crate::broker::publish::outcome;
use crate::model::PublishOutcome;

pub type Reply = oneshot::Sender<Result<PublishOutcome, Error>>;

/// What a return is matched on: everything the broker sends back.
pub struct Content {
    pub exchange: ShortString,
    pub routing_key: ShortString,
    pub body: Bytes,
    pub properties: BasicProperties,
}

/// How one publish ended: its confirm, or how far it got before failing.
pub type Fate = Result<Confirmation, Failure>;

pub struct Failure {
    /// The frames were out: the broker may have taken the message.
    pub sent: bool,
    pub error: lapin::Error,
}

/// A fate with the return lapin attached taken off: that one may be anyone's.
enum Verdict {
    Ack,
    Nack,
    Failed(Failure),
}

enum State {
    InFlight,
    /// `sealed`: seen before the latest barrier, so its batch's returns have all surfaced.
    Resolved {
        verdict: Verdict,
        sealed: bool,
    },
}

struct Entry {
    content: Content,
    state: State,
    reply: Reply,
}

/// The broker closed the channel: whose message it was decides everyone else's answer.
struct Closure {
    /// The exchange RabbitMQ's reply names, if any.
    exchange: Option<String>,
    /// The first message in flight to that exchange: the broker took those before it and
    /// dropped those after it.
    first: Option<u64>,
}

#[derive(Default)]
pub struct Ledger {
    entries: BTreeMap<u64, Entry>,
    returns: Vec<BasicReturnMessage>,
    next_id: u64,
    closure: Option<Closure>,
}

impl Ledger {
    /// Records a publish about to be sent; ids follow the channel's delivery tags in order.
    pub fn open(&mut self, content: Content, reply: Reply) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.entries.insert(
            id,
            Entry {
                content,
                state: State::InFlight,
                reply,
            },
        );
        id
    }

    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.entries.len()
    }

    /// Notes how a publish ended, pooling the return lapin attached to it, whoever's it is.
    pub fn resolve(&mut self, id: u64, fate: Fate) {
        let verdict = match fate {
            Ok(Confirmation::Ack(returned)) => {
                self.returns.extend(returned);
                Verdict::Ack
            }
            Ok(Confirmation::Nack(returned)) => {
                self.returns.extend(returned);
                Verdict::Nack
            }
            // Confirm mode is set on every lane; without it nothing was confirmed.
            Ok(Confirmation::NotRequested) => Verdict::Nack,
            Err(failure) => {
                if failure.sent {
                    self.note_closure(&failure.error);
                }
                Verdict::Failed(failure)
            }
        };
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.state = State::Resolved {
                verdict,
                sealed: false,
            };
        }
    }

    /// Marks every publish resolved so far as decidable once the barrier after it has passed.
    /// Returns whether there is any.
    pub fn seal(&mut self) -> bool {
        let mut any = false;
        for entry in self.entries.values_mut() {
            if let State::Resolved { sealed, .. } = &mut entry.state {
                *sealed = true;
                any = true;
            }
        }
        any
    }

    /// Answers every sealed publish, in publish order. Returns whether the channel failed.
    pub fn settle(&mut self) -> bool {
        let sealed: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, entry)| matches!(entry.state, State::Resolved { sealed: true, .. }))
            .map(|(id, _)| *id)
            .collect();
        let mut failed = false;
        for id in sealed {
            let Some(entry) = self.entries.remove(&id) else {
                continue;
            };
            let State::Resolved { verdict, .. } = entry.state else {
                continue;
            };
            // A nacked message's return is taken too, so it cannot go to a later one.
            let returned = self.take_return(&entry.content);
            let answer = match verdict {
                Verdict::Ack => Ok(outcome(Confirmation::Ack(returned), None)),
                Verdict::Nack => Ok(outcome(Confirmation::Nack(None), None)),
                Verdict::Failed(Failure { sent: false, error }) => {
                    failed = true;
                    Err(Error::from(error))
                }
                Verdict::Failed(Failure { sent: true, error }) => {
                    failed = true;
                    Err(self.unconfirmed(id, &entry.content, error))
                }
            };
            // The client may have given up (timeout, disconnect); nobody is left to tell.
            let _ = entry.reply.send(answer);
        }
        if self.entries.is_empty() {
            self.closure = None;
            if !self.returns.is_empty() {
                tracing::warn!(
                    returns = self.returns.len(),
                    "returned messages matched no publish on their channel"
                );
                self.returns.clear();
            }
        }
        failed
    }

    /// Fails everything still in flight, as when the lane itself stops.
    pub fn abandon(&mut self, error: &Error) {
        for (_, entry) in std::mem::take(&mut self.entries) {
            let _ = entry.reply.send(Err(error.clone()));
        }
        self.returns.clear();
        self.closure = None;
    }

    fn take_return(&mut self, content: &Content) -> Option<BasicReturnMessage> {
        let same = |returned: &BasicReturnMessage| {
            let delivery = &returned.delivery;
            delivery.exchange == content.exchange
                && delivery.routing_key == content.routing_key
                && delivery.data[..] == content.body[..]
        };
        let index = self
            .returns
            .iter()
            .position(|returned| {
                same(returned) && returned.delivery.properties == content.properties
            })
            .or_else(|| self.returns.iter().position(same))?;
        Some(self.returns.remove(index))
    }

    /// Remembers, at the first sign of a broker-closed channel, which message caused it.
    fn note_closure(&mut self, error: &lapin::Error) {
        if self.closure.is_some() || !closed_by_broker(error) {
            return;
        }
        let exchange = quoted_exchange(&error.to_string());
        let first = exchange.as_deref().and_then(|name| {
            self.entries
                .iter()
                .find(|(_, entry)| entry.content.exchange.as_str() == name)
                .map(|(id, _)| *id)
        });
        self.closure = Some(Closure { exchange, first });
    }

    /// The answer for a publish that was sent and never confirmed.
    fn unconfirmed(&self, id: u64, content: &Content, error: lapin::Error) -> Error {
        let Some(closure) = self.closure.as_ref().filter(|_| closed_by_broker(&error)) else {
            return Error::unconfirmed(error);
        };
        let text = error.to_string();
        match (&closure.exchange, closure.first) {
            (Some(exchange), _) if exchange == content.exchange.as_str() => {
                Error::unconfirmed(error)
            }
            (_, Some(first)) if id > first => Error::ChannelClosed(format!(
                "the broker closed the shared publishing channel over an earlier message \
                 ({text}) before it took this one, so it was not stored"
            )),
            _ => Error::ConfirmLost(format!(
                "the broker closed the shared publishing channel over another message ({text})"
            )),
        }
    }
}

/// A channel.close from the broker (404, 403, 406, ...), as opposed to a lost connection.
fn closed_by_broker(error: &lapin::Error) -> bool {
    matches!(
        error.kind(),
        lapin::ErrorKind::ProtocolError(amqp)
            if matches!(amqp.kind(), lapin::protocol::AMQPErrorKind::Soft(_))
    )
}

/// The exchange in RabbitMQ's reply text, e.g. `NOT_FOUND - no exchange 'x' in vhost '/'`.
fn quoted_exchange(text: &str) -> Option<String> {
    let start = text.find("exchange '")? + "exchange '".len();
    let rest = &text[start..];
    let end = rest.find("' in vhost")?;
    Some(rest[..end].to_owned())
}

#[cfg(test)]
mod tests {
    use lapin::protocol::{AMQPError, AMQPErrorKind, AMQPSoftError};

    use super::*;

    fn content(exchange: &str, routing_key: &str, body: &str) -> Content {
        Content {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            body: Bytes::copy_from_slice(body.as_bytes()),
            properties: BasicProperties::default(),
        }
    }

    fn returned(exchange: &str, routing_key: &str, body: &str) -> BasicReturnMessage {
        BasicReturnMessage {
            delivery: lapin::message::Delivery::mock(
                0,
                exchange.into(),
                routing_key.into(),
                false,
                body.as_bytes().to_vec(),
            ),
            reply_code: 312,
            reply_text: "NO_ROUTE".into(),
        }
    }

    type Answer = oneshot::Receiver<Result<PublishOutcome, Error>>;

    fn open(ledger: &mut Ledger, content: Content) -> (u64, Answer) {
        let (reply, answer) = oneshot::channel();
        (ledger.open(content, reply), answer)
    }

    fn answer(answer: &mut Answer) -> Result<PublishOutcome, Error> {
        answer.try_recv().expect("answered")
    }

    fn ack(returned: Option<BasicReturnMessage>) -> Fate {
        Ok(Confirmation::Ack(returned))
    }

    fn failed(sent: bool, error: lapin::Error) -> Fate {
        Err(Failure { sent, error })
    }

    fn broker_closed(text: &str) -> lapin::Error {
        let amqp = AMQPError::new(AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND), text.into());
        lapin::Error::from(lapin::ErrorKind::ProtocolError(amqp))
    }

    #[test]
    fn a_return_riding_on_another_confirm_goes_to_its_own_message() {
        let mut ledger = Ledger::default();
        let (a, mut routed) = open(&mut ledger, content("x", "bound", "1"));
        let (b, mut unroutable) = open(&mut ledger, content("x", "nowhere", "2"));
        // lapin pairs b's return with a's confirm, which resolves first.
        ledger.resolve(a, ack(Some(returned("x", "nowhere", "2"))));
        ledger.resolve(b, ack(None));
        assert!(ledger.seal());
        assert!(!ledger.settle());
        assert_eq!(
            answer(&mut routed).expect("confirmed"),
            PublishOutcome::Routed
        );
        assert!(matches!(
            answer(&mut unroutable).expect("confirmed"),
            PublishOutcome::Unroutable {
                reply_code: 312,
                ..
            }
        ));
        assert_eq!(ledger.in_flight(), 0);
    }

    #[test]
    fn only_sealed_publishes_are_answered() {
        let mut ledger = Ledger::default();
        let (a, mut first) = open(&mut ledger, content("x", "k", "1"));
        let (b, mut second) = open(&mut ledger, content("x", "k", "2"));
        ledger.resolve(a, ack(None));
        ledger.seal();
        // b resolves after the barrier: its batch may still hand out returns.
        ledger.resolve(b, ack(None));
        ledger.settle();
        assert_eq!(
            answer(&mut first).expect("confirmed"),
            PublishOutcome::Routed
        );
        assert!(second.try_recv().is_err(), "b waits for the next barrier");
        ledger.seal();
        ledger.settle();
        assert_eq!(
            answer(&mut second).expect("confirmed"),
            PublishOutcome::Routed
        );
    }

    #[test]
    fn a_nack_in_the_middle_fails_only_its_message() {
        let mut ledger = Ledger::default();
        let ids: Vec<(u64, Answer)> = (0..3)
            .map(|n| open(&mut ledger, content("x", "k", &n.to_string())))
            .collect();
        ledger.resolve(ids[0].0, ack(None));
        ledger.resolve(ids[1].0, Ok(Confirmation::Nack(None)));
        ledger.resolve(ids[2].0, ack(None));
        ledger.seal();
        ledger.settle();
        let mut answers = ids
            .into_iter()
            .map(|(_, mut a)| answer(&mut a).expect("confirmed"));
        assert_eq!(answers.next(), Some(PublishOutcome::Routed));
        assert_eq!(answers.next(), Some(PublishOutcome::Nacked));
        assert_eq!(answers.next(), Some(PublishOutcome::Routed));
    }

    #[test]
    fn identical_messages_take_returns_in_publish_order() {
        let mut ledger = Ledger::default();
        let (a, mut first) = open(&mut ledger, content("x", "nowhere", "same"));
        let (b, mut second) = open(&mut ledger, content("x", "nowhere", "same"));
        ledger.resolve(b, ack(Some(returned("x", "nowhere", "same"))));
        ledger.resolve(a, ack(Some(returned("x", "nowhere", "same"))));
        ledger.seal();
        ledger.settle();
        for answer_of in [&mut first, &mut second] {
            assert!(matches!(
                answer(answer_of).expect("confirmed"),
                PublishOutcome::Unroutable { .. }
            ));
        }
    }

    #[test]
    fn a_closed_channel_blames_the_message_that_closed_it() {
        let mut ledger = Ledger::default();
        let (before, mut taken) = open(&mut ledger, content("good", "k", "1"));
        let (culprit, mut missing) = open(&mut ledger, content("gone", "k", "2"));
        let (after, mut dropped) = open(&mut ledger, content("good", "k", "3"));
        let text = "NOT_FOUND - no exchange 'gone' in vhost '/'";
        for id in [before, culprit, after] {
            ledger.resolve(id, failed(true, broker_closed(text)));
        }
        ledger.seal();
        assert!(ledger.settle());
        assert!(matches!(answer(&mut taken), Err(Error::ConfirmLost(_))));
        assert!(matches!(
            answer(&mut missing),
            Err(Error::ExchangeNotFound(_))
        ));
        assert!(matches!(answer(&mut dropped), Err(Error::ChannelClosed(_))));
    }

    #[test]
    fn a_lost_connection_leaves_every_outcome_unknown() {
        let mut ledger = Ledger::default();
        let (id, mut lost) = open(&mut ledger, content("x", "k", "1"));
        let (never, mut refused) = open(&mut ledger, content("x", "k", "2"));
        let closed = || {
            lapin::Error::from(lapin::ErrorKind::InvalidConnectionState(
                lapin::ConnectionState::Error,
            ))
        };
        ledger.resolve(id, failed(true, closed()));
        ledger.resolve(never, failed(false, closed()));
        ledger.seal();
        ledger.settle();
        assert!(matches!(answer(&mut lost), Err(Error::ConfirmLost(_))));
        assert!(matches!(answer(&mut refused), Err(Error::Unavailable(_))));
    }

    #[test]
    fn returns_left_over_when_nothing_is_in_flight_are_dropped() {
        let mut ledger = Ledger::default();
        let (id, mut routed) = open(&mut ledger, content("x", "k", "1"));
        ledger.resolve(id, ack(Some(returned("y", "other", "?"))));
        ledger.seal();
        ledger.settle();
        assert_eq!(
            answer(&mut routed).expect("confirmed"),
            PublishOutcome::Routed
        );
        let (id, mut later) = open(&mut ledger, content("y", "other", "?"));
        ledger.resolve(id, ack(None));
        ledger.seal();
        ledger.settle();
        assert_eq!(
            answer(&mut later).expect("confirmed"),
            PublishOutcome::Routed
        );
    }

    #[test]
    fn reply_texts_name_their_exchange() {
        assert_eq!(
            quoted_exchange("NOT_FOUND - no exchange 'a b' in vhost '/'").as_deref(),
            Some("a b")
        );
        assert_eq!(
            quoted_exchange(
                "ACCESS_REFUSED - access to exchange 'x' in vhost '/' refused for user 'u'"
            )
            .as_deref(),
            Some("x")
        );
        assert_eq!(quoted_exchange("PRECONDITION_FAILED - user_id"), None);
    }
}
