//! The HTTP listener's limits: one section, as flags, variables and the file's `http:` keys.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use crate::net::HttpLimits;

/// Each limit as given; unset ones take their defaults in `HttpSettings::resolve`.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpArgs {
    /// Seconds a client has to send a complete request head, from connecting or from the
    /// request's first byte; then the connection is closed [default: 10].
    #[arg(
        long = "http-header-timeout",
        env = "CARROT_HTTP_HEADER_TIMEOUT",
        value_name = "SECONDS"
    )]
    pub header_timeout: Option<u64>,

    /// Seconds a keep-alive connection may wait for its next request [default: 60].
    #[arg(
        long = "http-idle-timeout",
        env = "CARROT_HTTP_IDLE_TIMEOUT",
        value_name = "SECONDS"
    )]
    pub idle_timeout: Option<u64>,

    /// Seconds a client has to send a request body once its head arrived; 408 after [default: 60].
    #[arg(
        long = "http-body-timeout",
        env = "CARROT_HTTP_BODY_TIMEOUT",
        value_name = "SECONDS"
    )]
    pub body_timeout: Option<u64>,

    /// Client connections open at once; past it the one waiting longest for a request is
    /// closed [default: the open-files limit less 128, at most 25000].
    #[arg(long = "max-connections", env = "CARROT_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Header fields a request may carry; more get 431 [default: 100].
    #[arg(long = "max-headers", env = "CARROT_MAX_HEADERS")]
    pub max_headers: Option<usize>,

    /// Bytes of header fields (names and values) a request may carry; more get 431
    /// [default: 32768].
    #[arg(long = "max-header-bytes", env = "CARROT_MAX_HEADER_BYTES")]
    pub max_header_bytes: Option<usize>,
}

impl HttpArgs {
    /// Flags and variables (`self`) over the file's keys.
    pub fn or(self, file: Option<HttpArgs>) -> HttpArgs {
        let file = file.unwrap_or_default();
        HttpArgs {
            header_timeout: self.header_timeout.or(file.header_timeout),
            idle_timeout: self.idle_timeout.or(file.idle_timeout),
            body_timeout: self.body_timeout.or(file.body_timeout),
            max_connections: self.max_connections.or(file.max_connections),
            max_headers: self.max_headers.or(file.max_headers),
            max_header_bytes: self.max_header_bytes.or(file.max_header_bytes),
        }
    }
}

/// The limits in force.
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    pub connections: HttpLimits,
    pub body_timeout: Duration,
    pub max_headers: usize,
    pub max_header_bytes: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            connections: HttpLimits {
                header_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(60),
                max_connections: crate::net::default_max_connections(),
            },
            body_timeout: Duration::from_secs(60),
            max_headers: 100,
            max_header_bytes: 32 * 1024,
        }
    }
}

impl HttpSettings {
    pub fn resolve(args: &HttpArgs) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let seconds = |key, value: Option<u64>, default: Duration| match value {
            Some(0) => Err(ConfigError::Invalid {
                key,
                message: "must be at least 1 second".into(),
            }),
            Some(seconds) => Ok(Duration::from_secs(seconds)),
            None => Ok(default),
        };
        let at_least = |key, value: Option<usize>, min: usize, default: usize| match value {
            Some(value) if value < min => Err(ConfigError::Invalid {
                key,
                message: format!("must be at least {min}"),
            }),
            Some(value) => Ok(value),
            None => Ok(default),
        };
        let connections = HttpLimits {
            header_timeout: seconds(
                "http.header_timeout",
                args.header_timeout,
                defaults.connections.header_timeout,
            )?,
            idle_timeout: seconds(
                "http.idle_timeout",
                args.idle_timeout,
                defaults.connections.idle_timeout,
            )?,
            max_connections: at_least(
                "http.max_connections",
                args.max_connections,
                1,
                defaults.connections.max_connections,
            )?,
        };
        Ok(Self {
            connections,
            body_timeout: seconds(
                "http.body_timeout",
                args.body_timeout,
                defaults.body_timeout,
            )?,
            max_headers: at_least(
                "http.max_headers",
                args.max_headers,
                1,
                defaults.max_headers,
            )?,
            // A request line and a few ordinary headers must always fit.
            max_header_bytes: at_least(
                "http.max_header_bytes",
                args.max_header_bytes,
                1024,
                defaults.max_header_bytes,
            )?,
        })
    }
}
