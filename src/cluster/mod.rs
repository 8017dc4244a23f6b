//! Several replicas behind one Service: what a replica hands out (lease receipts, consumer set
//! ids) names it, and a request about another replica's is forwarded to that replica.

pub mod forward;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use crate::config::ClusterConfig;
use tokens::Tokens;

/// How long a replica waits to reach another before taking it for gone.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// This replica's place among the others; alone, it forwards nothing.
pub struct Cluster {
    pub tokens: Arc<Tokens>,
    client: reqwest::Client,
}

impl Cluster {
    pub fn new(config: &ClusterConfig) -> Result<Self, String> {
        let tokens = match config.advertised() {
            Some((url, secret)) => Tokens::replica(&url, secret),
            None => Tokens::alone(),
        };
        // No overall timeout: the owner bounds its own answers, and a stream has no end.
        let client = reqwest::Client::builder()
            .user_agent(concat!("carrot-gateway/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60))
            .use_preconfigured_tls(crate::net::tls::webhook_client_config()?)
            .build()
            .map_err(|error| format!("the HTTP client for other replicas: {error}"))?;
        Ok(Self {
            tokens: Arc::new(tokens),
            client,
        })
    }
}
