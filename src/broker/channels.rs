//! A pool of publishing channels in confirm mode, opened on the pooled connections.
//!
//! A channel is checked out by one request at a time: lapin pairs a basic.return with whichever
//! confirm resolves next on the channel, so only an exclusive channel tells exactly which
//! message was unroutable. A channel that failed or timed out is discarded, never reused, and so
//! is one whose connection was retired: the connection then closes once its last channel does.

use std::sync::Arc;
use std::time::Duration;

use deadpool::managed::{self, Metrics, Object, Pool, PoolError, RecycleError, RecycleResult};
use lapin::Channel;
use lapin::options::ConfirmSelectOptions;

use super::Error;
use super::connector::{
    ConnectionPool, ConnectionPoolError, ConnectionState, bounded_pool, tls_hint,
};

/// A publishing channel, and the connection it lives on.
pub struct PublishChannel {
    channel: Channel,
    connection: Arc<ConnectionState>,
}

impl std::ops::Deref for PublishChannel {
    type Target = Channel;

    fn deref(&self) -> &Channel {
        &self.channel
    }
}

impl PublishChannel {
    /// Still open, on a connection that may keep it.
    pub fn is_usable(&self) -> bool {
        self.channel.status().connected() && !self.connection.is_retired()
    }
}

/// Opens a channel in confirm mode on one of the pooled connections.
pub async fn open_confirm_channel(connections: &ConnectionPool) -> Result<PublishChannel, Error> {
    let connection = connections.get().await.map_err(connection_error)?;
    let (channel, state) = connection.create_channel().await?;
    drop(connection);
    // Publisher confirms: a 2xx must mean the broker took responsibility for the message.
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(PublishChannel {
        channel,
        connection: state,
    })
}

pub struct ChannelManager {
    connections: ConnectionPool,
}

impl managed::Manager for ChannelManager {
    type Type = PublishChannel;
    type Error = Error;

    async fn create(&self) -> Result<PublishChannel, Error> {
        open_confirm_channel(&self.connections).await
    }

    async fn recycle(&self, channel: &mut PublishChannel, _: &Metrics) -> RecycleResult<Error> {
        if channel.is_usable() {
            Ok(())
        } else {
            Err(RecycleError::message(
                "channel is closed or its connection retired",
            ))
        }
    }
}

pub type ChannelPool = Pool<ChannelManager>;
pub type PooledChannel = Object<ChannelManager>;

pub fn channel_pool(
    connections: ConnectionPool,
    max_size: usize,
    timeout: Duration,
) -> ChannelPool {
    bounded_pool(ChannelManager { connections }, max_size, timeout)
}

/// Drops a channel for good instead of returning it to the pool.
pub fn discard(channel: PooledChannel) {
    drop(Object::take(channel));
}

pub fn pool_error(error: PoolError<Error>, timeout: Duration) -> Error {
    match error {
        PoolError::Backend(error) => error,
        PoolError::Timeout(_) => Error::Timeout(timeout),
        other => Error::Unavailable(other.to_string()),
    }
}

pub fn connection_error(error: ConnectionPoolError) -> Error {
    match error {
        PoolError::Backend(error) => {
            let hint = tls_hint(&error);
            let text = match Error::from(error) {
                // Refusals while connecting (bad credentials, vhost access) are outages for requests.
                Error::Unavailable(text) => text,
                other => other.to_string(),
            };
            match hint {
                Some(hint) => Error::Unavailable(format!("{text} ({hint})")),
                None => Error::Unavailable(text),
            }
        }
        other => Error::Unavailable(format!("cannot connect to the broker: {other}")),
    }
}
