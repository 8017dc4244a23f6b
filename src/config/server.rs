//! The server section: where the gateway listens, how long it drains, how it logs, and its
//! HTTPS identity. Top-level keys of the file, plus its `tls:` section.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use clap::ValueEnum;
use serde::Deserialize;

use super::settings::{Setting, settings};
use crate::net::tls::ListenerTls;

settings! {
    /// The listener and the process.
    #[command(next_help_heading = "Server")]
    pub struct ServerArgs;

    /// The listener and the process, resolved.
    pub struct ServerConfig {
        /// Address the HTTP listener binds.
        #[arg(long, env = "CARROT_LISTEN")]
        pub listen: SocketAddr = "127.0.0.1:8080",

        /// Time in-flight requests get to finish after SIGTERM.
        #[arg(long, env = "CARROT_SHUTDOWN_GRACE", value_name = "DURATION")]
        pub shutdown_grace: Duration = "25s",

        /// Log line format.
        #[arg(long, env = "CARROT_LOG_FORMAT", value_enum)]
        pub log_format: LogFormat = "text",

        /// Export the gateway's spans over OTLP/HTTP (JSON) to this base URL, e.g.
        /// http://collector:4318 (they go to its /v1/traces); unset: no spans are made.
        #[arg(long, env = "CARROT_OTLP_ENDPOINT", value_name = "URL")]
        pub otlp_endpoint: String,
    }
    also {
        /// Certificate and key of the HTTPS listener, read at start; `None` serves plain HTTP.
        pub tls: Option<ListenerTls>,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Setting for LogFormat {
    type Input = LogFormat;
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        <Self as ValueEnum>::from_str(text, false)
    }
}
