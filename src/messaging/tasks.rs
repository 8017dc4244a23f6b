//! Celery tasks from any language: a task call becomes a Celery protocol-2 message that a Celery
//! worker runs, and with the worker's `rpc://` result backend its result comes back here.
//!
//! The rpc backend sends each result to the `reply_to` of its task's message, with the task id as
//! `correlation_id`. Every task the gateway publishes names the gateway's own results queue
//! there; one consumer reads it into a bounded table of task states. Results of tasks another
//! process published go to that process, as with any rpc-backend client.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use super::envelope::Envelope;
use crate::broker::{self, Broker, Consumed};
use crate::model::topology::QueueSpec;
use crate::model::{Invalid, OutgoingMessage, Properties, PublishOutcome};

/// Task states kept, oldest forgotten first.
const STATES_KEPT: usize = 10_000;
/// The results queue outlives the gateway by a day, then the broker deletes it.
const RESULTS_EXPIRE_MS: i64 = 24 * 60 * 60 * 1000;
/// Results read ahead of being stored.
const RESULTS_PREFETCH: u16 = 64;
const RETRY: Duration = Duration::from_secs(1);

/// A task call, as Celery's `apply_async` takes it.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskCall {
    /// Positional arguments.
    #[serde(default)]
    pub args: Vec<Value>,
    /// Keyword arguments.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub kwargs: Map<String, Value>,
    /// Run no earlier than this many seconds from now.
    #[schema(minimum = 0)]
    pub countdown: Option<f64>,
    /// Run no earlier than this time, RFC 3339 in UTC (`2026-12-04T10:00:00Z`).
    pub eta: Option<String>,
    /// After this the worker revokes the task instead of running it.
    pub expires: Option<Expires>,
    /// The queue its workers consume (default `celery`, Celery's own default).
    pub queue: Option<String>,
    #[schema(minimum = 0, maximum = 255)]
    pub priority: Option<u8>,
}

/// When a task expires.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged, expecting = "seconds from now, or an RFC 3339 UTC time")]
pub enum Expires {
    /// Seconds from now.
    Seconds(f64),
    /// An RFC 3339 time in UTC (`2026-12-04T10:00:00Z`).
    At(String),
}

/// A task's state, as Celery's `AsyncResult` tells it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TaskState {
    pub id: String,
    /// `PENDING` until the worker says otherwise: `STARTED`, `RETRY`, `SUCCESS`, `FAILURE`,
    /// `REVOKED`, or a state of the task's own.
    pub state: String,
    /// The task's return value; for a failure, the exception (`exc_type`, `exc_message`).
    #[schema(value_type = Value)]
    pub result: Value,
    pub traceback: Option<String>,
    pub date_done: Option<String>,
    /// The queue it was sent to.
    pub queue: String,
}

/// A task call's message, ready to publish, and its id.
#[derive(Debug)]
pub struct TaskMessage {
    pub id: String,
    pub queue: String,
    pub message: OutgoingMessage,
}

impl TaskCall {
    /// The protocol-2 message of a call of `task`, its results to go to `reply_to`.
    pub fn message(
        &self,
        task: &str,
        reply_to: &str,
        now: SystemTime,
    ) -> Result<TaskMessage, Invalid> {
        if task.is_empty() || task.len() > 255 || task.chars().any(char::is_control) {
            return Err(Invalid(
                "the task name must be 1 to 255 bytes with no control characters, as Celery \
                 registers it (`proj.tasks.add`)"
                    .into(),
            ));
        }
        let queue = self.queue.clone().unwrap_or_else(|| "celery".to_owned());
        crate::model::check_shortstr("queue", &queue)?;
        let eta = self.eta(now)?;
        let expires = self.expires(now)?;
        let id = uuid::Uuid::new_v4().to_string();
        let args = Value::Array(self.args.clone());
        let kwargs = Value::Object(self.kwargs.clone());
        let headers = json!({
            "lang": "py",
            "task": task,
            "id": id,
            "shadow": null,
            "eta": eta,
            "expires": expires,
            "group": null,
            "group_index": null,
            "retries": 0,
            "timelimit": [null, null],
            "root_id": id,
            "parent_id": null,
            "argsrepr": args.to_string(),
            "kwargsrepr": kwargs.to_string(),
            "origin": "carrot-gateway",
            "ignore_result": false,
        });
        let embed = json!({"callbacks": null, "errbacks": null, "chain": null, "chord": null});
        let body = serde_json::to_vec(&json!([args, kwargs, embed]))
            .map_err(|error| Invalid(format!("the arguments do not serialize: {error}")))?;
        let properties = Properties {
            content_type: Some("application/json".into()),
            content_encoding: Some("utf-8".into()),
            headers: headers.as_object().cloned(),
            priority: self.priority,
            correlation_id: Some(id.clone()),
            reply_to: Some(reply_to.to_owned()),
            ..Properties::default()
        };
        Ok(TaskMessage {
            id,
            queue: queue.clone(),
            message: OutgoingMessage {
                routing_key: queue,
                body: Bytes::from(body),
                properties,
            },
        })
    }

    fn eta(&self, now: SystemTime) -> Result<Option<String>, Invalid> {
        match (self.countdown, &self.eta) {
            (Some(_), Some(_)) => Err(Invalid(
                "give countdown or eta, not both: both say when the task may run".into(),
            )),
            (Some(countdown), None) => {
                Ok(Some(rfc3339_millis(now + seconds("countdown", countdown)?)))
            }
            (None, Some(eta)) => Ok(Some(rfc3339_millis(utc_time("eta", eta)?))),
            (None, None) => Ok(None),
        }
    }

    fn expires(&self, now: SystemTime) -> Result<Option<String>, Invalid> {
        match &self.expires {
            None => Ok(None),
            Some(Expires::Seconds(after)) => {
                Ok(Some(rfc3339_millis(now + seconds("expires", *after)?)))
            }
            Some(Expires::At(at)) => Ok(Some(rfc3339_millis(utc_time("expires", at)?))),
        }
    }
}

fn seconds(name: &str, value: f64) -> Result<Duration, Invalid> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|duration| duration.as_secs() < 10 * 365 * 24 * 3600)
        .ok_or_else(|| {
            Invalid(format!(
                "{name} must be a number of seconds from 0 up to ten years, not {value}"
            ))
        })
}

fn utc_time(name: &str, text: &str) -> Result<SystemTime, Invalid> {
    humantime::parse_rfc3339(text).map_err(|_| {
        Invalid(format!(
            "{name}={text:?} must be an RFC 3339 time in UTC, such as 2026-12-04T10:00:00Z"
        ))
    })
}

fn rfc3339_millis(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// Why a task call was not sent.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("{0}")]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Broker(#[from] broker::Error),
    /// No queue took it: no worker consumes the queue it names.
    #[error("no queue named {queue:?} took the task ({reply_text}); start a worker on it first")]
    Unroutable { queue: String, reply_text: String },
    #[error("the broker refused the task message")]
    Nacked,
}

/// Task calls, and the states their results brought back.
#[derive(Clone)]
pub struct Tasks {
    broker: Broker,
    /// Where workers with the rpc backend send results: this gateway's own queue.
    results_queue: Arc<str>,
    states: Arc<Mutex<States>>,
    listening: Arc<tokio::sync::Mutex<bool>>,
    shutdown: CancellationToken,
}

#[derive(Default)]
struct States {
    by_id: HashMap<String, TaskState>,
    order: VecDeque<String>,
}

impl States {
    fn insert(&mut self, state: TaskState) {
        if self.by_id.len() >= STATES_KEPT
            && let Some(oldest) = self.order.pop_front()
        {
            self.by_id.remove(&oldest);
        }
        self.order.push_back(state.id.clone());
        self.by_id.insert(state.id.clone(), state);
    }

    fn remove(&mut self, id: &str) {
        if self.by_id.remove(id).is_some() {
            self.order.retain(|kept| kept != id);
        }
    }
}

impl Tasks {
    pub fn new(broker: Broker, shutdown: CancellationToken) -> Self {
        let results_queue = format!("carrot-gateway.results.{}", uuid::Uuid::new_v4().simple());
        Self {
            broker,
            results_queue: results_queue.into(),
            states: Arc::default(),
            listening: Arc::default(),
            shutdown,
        }
    }

    fn states(&self) -> std::sync::MutexGuard<'_, States> {
        self.states.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends a call of `task`; its state is `PENDING` until a result comes back.
    pub async fn send(&self, task: &str, call: &TaskCall) -> Result<TaskState, TaskError> {
        let TaskMessage { id, queue, message } =
            call.message(task, &self.results_queue, SystemTime::now())?;
        self.listen().await?;
        let state = TaskState {
            id: id.clone(),
            state: "PENDING".into(),
            result: Value::Null,
            traceback: None,
            date_done: None,
            queue: queue.clone(),
        };
        // Known before it is sent: a quick worker's result may come back before the confirm.
        self.states().insert(state.clone());
        let published = self.broker.publish("", &message).await;
        let refused = match published {
            Ok(PublishOutcome::Routed) => return Ok(state),
            Ok(PublishOutcome::Unroutable { reply_text, .. }) => {
                TaskError::Unroutable { queue, reply_text }
            }
            Ok(PublishOutcome::Nacked) => TaskError::Nacked,
            Err(error) => TaskError::Broker(error),
        };
        self.states().remove(&id);
        Err(refused)
    }

    /// What this gateway knows of a task it sent; `None` for one it never sent (or forgot).
    pub fn state(&self, id: &str) -> Option<TaskState> {
        self.states().by_id.get(id).cloned()
    }

    /// Declares the results queue and starts reading it, once; a reader that stopped is
    /// started again.
    async fn listen(&self) -> Result<(), broker::Error> {
        let mut listening = self.listening.lock().await;
        if *listening {
            return Ok(());
        }
        self.declare_results_queue().await?;
        *listening = true;
        let tasks = self.clone();
        tokio::spawn(async move {
            tasks.read_results().await;
            *tasks.listening.lock().await = false;
        });
        Ok(())
    }

    async fn declare_results_queue(&self) -> Result<(), broker::Error> {
        let mut arguments = Map::new();
        arguments.insert("x-expires".into(), json!(RESULTS_EXPIRE_MS));
        let spec = QueueSpec {
            durable: false,
            arguments,
            ..QueueSpec::default()
        };
        self.broker
            .declare_queue(&self.results_queue, &spec)
            .await
            .map(|_| ())
    }

    /// Reads results until shutdown, declaring the queue again after the broker lost it.
    async fn read_results(&self) {
        let queue = vec![self.results_queue.to_string()];
        while !self.shutdown.is_cancelled() {
            let consumers = match self.broker.consume_queues(&queue, RESULTS_PREFETCH).await {
                Ok(consumers) => consumers,
                Err(error) => {
                    tracing::debug!(%error, "task results: cannot consume; trying again");
                    self.pause().await;
                    let _ = self.declare_results_queue().await;
                    continue;
                }
            };
            self.store_results(consumers).await;
            self.pause().await;
            let _ = self.declare_results_queue().await;
        }
    }

    /// Waits a moment before trying the broker again, unless the gateway stops.
    async fn pause(&self) {
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            () = self.shutdown.cancelled() => {}
        }
    }

    async fn store_results(&self, mut consumers: broker::QueueConsumers) {
        loop {
            let next = tokio::select! {
                next = consumers.next() => next,
                () = self.shutdown.cancelled() => return,
            };
            let Some(Ok(consumed)) = next else {
                return;
            };
            self.store(&consumed);
            if let Err(error) = consumed.handle.ack().await {
                tracing::debug!(%error, "task results: ack failed; the result comes again");
            }
        }
    }

    /// Records a result message of the rpc backend: `{"task_id", "status", "result", …}`.
    fn store(&self, consumed: &Consumed) {
        let body = Envelope::new(&consumed.delivered, true).body;
        let id = consumed
            .delivered
            .properties
            .correlation_id
            .clone()
            .or_else(|| body["task_id"].as_str().map(str::to_owned));
        let (Some(id), Some(status)) = (id, body["status"].as_str()) else {
            tracing::debug!("task results: a message that is no Celery result was dropped");
            return;
        };
        let mut states = self.states();
        let Some(known) = states.by_id.get_mut(&id) else {
            tracing::debug!(
                task_id = id,
                "task results: a result of an unknown task was dropped"
            );
            return;
        };
        known.state = status.to_owned();
        known.result = body["result"].clone();
        known.traceback = body["traceback"].as_str().map(str::to_owned);
        known.date_done = body["date_done"].as_str().map(str::to_owned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(value: Value) -> TaskCall {
        serde_json::from_value(value).expect("a task call")
    }

    #[test]
    fn countdown_and_expires_count_from_now() {
        let now = humantime::parse_rfc3339("2026-12-04T10:00:00Z").expect("a time");
        let sent = call(json!({"countdown": 1.5, "expires": 60}))
            .message("proj.add", "results", now)
            .expect("a message");
        let headers = sent.message.properties.headers.expect("headers");
        assert_eq!(headers["eta"], "2026-12-04T10:00:01.500Z");
        assert_eq!(headers["expires"], "2026-12-04T10:01:00.000Z");
        assert_eq!(headers["id"], sent.id.as_str());
        assert_eq!(sent.queue, "celery");
        assert_eq!(sent.message.routing_key, "celery");
        assert_eq!(sent.message.properties.reply_to.as_deref(), Some("results"));
    }

    #[test]
    fn an_eta_is_kept_and_no_time_means_none() {
        let now = SystemTime::UNIX_EPOCH;
        let at = call(json!({"eta": "2026-12-04T10:00:00Z", "expires": "2026-12-05T00:00:00Z"}))
            .message("t", "r", now)
            .expect("a message");
        let headers = at.message.properties.headers.expect("headers");
        assert_eq!(headers["eta"], "2026-12-04T10:00:00.000Z");
        assert_eq!(headers["expires"], "2026-12-05T00:00:00.000Z");
        let plain = call(json!({})).message("t", "r", now).expect("a message");
        let headers = plain.message.properties.headers.expect("headers");
        assert_eq!(headers["eta"], Value::Null);
        assert_eq!(headers["expires"], Value::Null);
    }
}
