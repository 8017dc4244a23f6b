//! Declaring, inspecting and deleting exchanges, queues and bindings.
//!
//! Each operation runs on a pooled channel; the broker answers a failed one by closing the
//! channel, which is then discarded. Passive declares tell "created" from "already there".

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, ExchangeKind};

use super::channels::discard;
use super::fields::table_from_json;
use super::{Broker, Error};
use crate::model::topology::{BindingSpec, ExchangeSpec, QueueInfo, QueueSpec, is_plugin_type};

impl Broker {
    /// Runs one operation on a pooled channel, discarding the channel if the broker closed it.
    pub(super) async fn on_channel<T>(
        &self,
        operation: impl AsyncFnOnce(&Channel) -> lapin::Result<T>,
    ) -> Result<T, Error> {
        let channel = self.checkout().await?;
        match tokio::time::timeout(self.inner.timeout, operation(&channel)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                discard(channel);
                Err(self.observe(error.into()))
            }
            Err(_elapsed) => {
                discard(channel);
                Err(Error::Timeout(self.inner.timeout))
            }
        }
    }

    pub async fn exchange_exists(&self, name: &str) -> Result<bool, Error> {
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        };
        let found = self
            .on_channel(async |channel| {
                channel
                    .exchange_declare(
                        short(name),
                        ExchangeKind::Direct,
                        passive,
                        FieldTable::default(),
                    )
                    .await
            })
            .await;
        match found {
            Ok(()) => Ok(true),
            Err(Error::ExchangeNotFound(_)) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Declares an exchange; `Ok(true)` when this call created it.
    pub async fn declare_exchange(&self, name: &str, spec: &ExchangeSpec) -> Result<bool, Error> {
        let existed = self.exchange_exists(name).await?;
        let options = ExchangeDeclareOptions {
            passive: false,
            durable: spec.durable,
            auto_delete: spec.auto_delete,
            internal: spec.internal,
            nowait: false,
        };
        let arguments = table_from_json(&spec.arguments);
        let declared = if is_plugin_type(&spec.kind) {
            self.declare_plugin_exchange(name, &spec.kind, options, arguments)
                .await
        } else {
            self.on_channel(async |channel| {
                channel
                    .exchange_declare(short(name), exchange_kind(&spec.kind), options, arguments)
                    .await
            })
            .await
        };
        match declared {
            Ok(()) => Ok(!existed),
            Err(Error::PreconditionFailed(text)) if !existed => Err(Error::InvalidArgument(text)),
            Err(error) => Err(conflict(error)),
        }
    }

    /// RabbitMQ answers an unknown exchange type by closing the whole connection, so plugin
    /// types are declared on a connection of their own, never on the shared ones.
    async fn declare_plugin_exchange(
        &self,
        name: &str,
        type_name: &str,
        options: ExchangeDeclareOptions,
        arguments: FieldTable,
    ) -> Result<(), Error> {
        let attempt = async {
            let (connection, _node) = self.inner.connector.connect().await?;
            let channel = connection.create_channel().await?;
            let declared = channel
                .exchange_declare(short(name), exchange_kind(type_name), options, arguments)
                .await;
            let _ = connection.close(200, "OK".into()).await;
            declared
        };
        match tokio::time::timeout(self.inner.timeout, attempt).await {
            Err(_elapsed) => Err(Error::Timeout(self.inner.timeout)),
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => match Error::from(error) {
                Error::Unavailable(text) if text.contains("exchange type") => {
                    Err(Error::InvalidArgument(format!(
                        "the broker has no exchange type {type_name} (is its plugin enabled?): {text}"
                    )))
                }
                other => Err(other),
            },
        }
    }

    pub async fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<(), Error> {
        if !self.exchange_exists(name).await? {
            return Err(Error::ExchangeNotFound(format!(
                "NOT_FOUND - no exchange '{name}'"
            )));
        }
        let options = ExchangeDeleteOptions {
            if_unused,
            nowait: false,
        };
        self.inner.lanes.known.forget(name);
        self.on_channel(async |channel| channel.exchange_delete(short(name), options).await)
            .await
            .map_err(unmet_condition)
    }

    pub async fn queue_info(&self, name: &str) -> Result<QueueInfo, Error> {
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let queue = self
            .on_channel(async |channel| {
                channel
                    .queue_declare(short(name), passive, FieldTable::default())
                    .await
            })
            .await?;
        Ok(QueueInfo {
            name: name.to_owned(),
            message_count: queue.message_count(),
            consumer_count: queue.consumer_count(),
        })
    }

    /// Declares a queue and its bindings; `Ok((true, _))` when this call created the queue.
    ///
    /// Every binding's exchange is checked first, and a queue this call created is deleted
    /// again if a binding still fails, so a failed request leaves nothing behind.
    pub async fn declare_queue(
        &self,
        name: &str,
        spec: &QueueSpec,
    ) -> Result<(bool, QueueInfo), Error> {
        for binding in &spec.bindings {
            if !binding.exchange.is_empty() && !self.exchange_exists(&binding.exchange).await? {
                return Err(Error::ExchangeNotFound(format!(
                    "NOT_FOUND - no exchange '{}' to bind to",
                    binding.exchange
                )));
            }
        }
        let existed = match self.queue_info(name).await {
            Ok(_) => true,
            Err(Error::QueueNotFound(_)) => false,
            Err(error) => return Err(error),
        };
        let options = QueueDeclareOptions {
            passive: false,
            durable: spec.durable,
            exclusive: spec.exclusive,
            auto_delete: spec.auto_delete,
            nowait: false,
        };
        let arguments = table_from_json(&spec.arguments);
        let declared = self
            .on_channel(async |channel| {
                channel.queue_declare(short(name), options, arguments).await
            })
            .await;
        let queue = match declared {
            Ok(queue) => queue,
            // A new queue refused: its arguments are wrong, not in conflict with anything.
            Err(Error::PreconditionFailed(text)) if !existed => {
                return Err(Error::InvalidArgument(text));
            }
            Err(error) => return Err(conflict(error)),
        };
        if spec.is_stream() {
            self.know_stream(name);
        }
        for binding in &spec.bindings {
            if let Err(error) = self.bind(name, binding).await {
                if !existed {
                    let _ = self.delete_queue(name, false, false).await;
                }
                return Err(error);
            }
        }
        Ok((
            !existed,
            QueueInfo {
                name: name.to_owned(),
                message_count: queue.message_count(),
                consumer_count: queue.consumer_count(),
            },
        ))
    }

    /// Deletes a queue; returns how many messages went with it.
    pub async fn delete_queue(
        &self,
        name: &str,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u32, Error> {
        // RabbitMQ deletes a missing queue without complaint; the contract says 404.
        self.queue_info(name).await?;
        let options = QueueDeleteOptions {
            if_unused,
            if_empty,
            nowait: false,
        };
        self.on_channel(async |channel| channel.queue_delete(short(name), options).await)
            .await
            .map_err(unmet_condition)
    }

    /// Empties a queue (carrot's discard_all); returns how many messages were dropped.
    pub async fn purge_queue(&self, name: &str) -> Result<u32, Error> {
        self.refuse_if_stream(name)?;
        self.on_channel(async |channel| {
            channel
                .queue_purge(short(name), QueuePurgeOptions::default())
                .await
        })
        .await
        .map_err(|error| self.learn_stream(name, error))
    }

    pub async fn bind(&self, queue: &str, binding: &BindingSpec) -> Result<(), Error> {
        let arguments = table_from_json(&binding.arguments);
        let bound = self
            .on_channel(async |channel| {
                channel
                    .queue_bind(
                        short(queue),
                        short(&binding.exchange),
                        short(&binding.routing_key),
                        QueueBindOptions::default(),
                        arguments,
                    )
                    .await
            })
            .await;
        binding_error(bound)
    }

    pub async fn unbind(&self, queue: &str, binding: &BindingSpec) -> Result<(), Error> {
        let arguments = table_from_json(&binding.arguments);
        let unbound = self
            .on_channel(async |channel| {
                channel
                    .queue_unbind(
                        short(queue),
                        short(&binding.exchange),
                        short(&binding.routing_key),
                        arguments,
                    )
                    .await
            })
            .await;
        binding_error(unbound)
    }
}

/// A redeclare with other settings: the broker keeps what it has.
fn conflict(error: Error) -> Error {
    match error {
        Error::PreconditionFailed(text) => Error::PreconditionFailed(format!(
            "{text}; the existing settings stay: declare with the same ones, or delete it first"
        )),
        other => other,
    }
}

/// `if_unused` / `if_empty` not met: nothing was deleted.
fn unmet_condition(error: Error) -> Error {
    match error {
        Error::PreconditionFailed(text) => Error::PreconditionFailed(format!(
            "{text}; nothing was deleted: empty or unbind it first, or drop the condition"
        )),
        other => other,
    }
}

/// A refused binding is bad input (e.g. an x-match the broker rejects), not a conflict.
fn binding_error(result: Result<(), Error>) -> Result<(), Error> {
    result.map_err(|error| match error {
        Error::PreconditionFailed(text) => Error::InvalidArgument(text),
        other => other,
    })
}

fn exchange_kind(kind: &str) -> ExchangeKind {
    match kind {
        "direct" => ExchangeKind::Direct,
        "fanout" => ExchangeKind::Fanout,
        "topic" => ExchangeKind::Topic,
        "headers" => ExchangeKind::Headers,
        other => ExchangeKind::Custom(other.to_owned()),
    }
}

/// Callers validated lengths (names, routing keys) before reaching the broker.
fn short(text: &str) -> ShortString {
    ShortString::from(text)
}
