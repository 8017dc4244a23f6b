//! The HTTP section: what one client connection and one request may cost. The file's `http:`
//! section, where the flags' `http-` prefixes are dropped; `max_body_bytes` may also stay at the
//! top level, where files have always had it.

use std::time::Duration;

use super::settings::settings;
use super::{ConfigError, at_least, at_least_a_second};
use crate::http::limits::RequestLimits;
use crate::net::HttpLimits;

settings! {
    /// Timeouts and sizes that bound what one client costs.
    #[command(next_help_heading = "HTTP limits")]
    pub struct HttpArgs;

    /// Timeouts and sizes that bound what one client costs, resolved.
    pub struct HttpConfig {
        /// Largest accepted request body in bytes; larger bodies get 413.
        #[arg(long, env = "CARROT_MAX_BODY_BYTES")]
        pub max_body_bytes: usize = "8388608",

        /// Time a client has to send a complete request head, from connecting or from the
        /// request's first byte; then the connection is closed.
        #[arg(
            long = "http-header-timeout",
            env = "CARROT_HTTP_HEADER_TIMEOUT",
            value_name = "DURATION"
        )]
        pub header_timeout: Duration = "10s",

        /// Time a keep-alive connection may wait for its next request.
        #[arg(
            long = "http-idle-timeout",
            env = "CARROT_HTTP_IDLE_TIMEOUT",
            value_name = "DURATION"
        )]
        pub idle_timeout: Duration = "60s",

        /// Time a client has to send a request body once its head arrived; 408 after.
        #[arg(
            long = "http-body-timeout",
            env = "CARROT_HTTP_BODY_TIMEOUT",
            value_name = "DURATION"
        )]
        pub body_timeout: Duration = "60s",

        /// Client connections open at once; past it the one waiting longest for a request is
        /// closed [default: the open-files limit less 128, at most 25000].
        #[arg(long = "max-connections", env = "CARROT_MAX_CONNECTIONS")]
        pub max_connections: usize,

        /// Header fields a request may carry, x-request-id aside; more get 431.
        #[arg(long = "max-headers", env = "CARROT_MAX_HEADERS")]
        pub max_headers: usize = "100",

        /// Bytes of header fields (names and values) a request may carry, x-request-id aside; more
        /// get 431.
        #[arg(long = "max-header-bytes", env = "CARROT_MAX_HEADER_BYTES")]
        pub max_header_bytes: usize = "32768",
    }
}

impl HttpConfig {
    /// What `net::serve` takes: the limits of each connection.
    pub fn connection_limits(&self) -> HttpLimits {
        HttpLimits {
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            // Read when serving: it follows the open-files limit of the process that serves.
            max_connections: self
                .max_connections
                .unwrap_or_else(crate::net::default_max_connections),
        }
    }

    /// What `http::app` takes: the limits of each request.
    pub fn request_limits(&self) -> RequestLimits {
        RequestLimits {
            max_body_bytes: self.max_body_bytes,
            max_headers: self.max_headers,
            max_header_bytes: self.max_header_bytes,
            body_timeout: self.body_timeout,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least_a_second("http.header_timeout", self.header_timeout)?;
        at_least_a_second("http.idle_timeout", self.idle_timeout)?;
        if let Some(max_connections) = self.max_connections {
            at_least("http.max_connections", max_connections, 1)?;
        }
        at_least_a_second("http.body_timeout", self.body_timeout)?;
        at_least("http.max_headers", self.max_headers, 1)?;
        // A request line and a few ordinary headers must always fit.
        at_least("http.max_header_bytes", self.max_header_bytes, 1024)?;
        at_least("max_body_bytes", self.max_body_bytes, 1)
    }
}
