//! Opens AMQP connections, over TLS with the configured CA and client certificate for `amqps://`.
//!
//! deadpool-lapin's manager connects with lapin's default TLS settings only, so the pool is
//! built here on deadpool directly, and the one-off connections use the same connector.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deadpool::managed::{self, Hook, Metrics, Pool, RecycleError, RecycleResult};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::{Connection, ConnectionProperties, ErrorKind};
use tokio_rustls::rustls::{self, AlertDescription, CertificateError};

use crate::tls::BrokerTls;

/// Where and how to connect: the URL and the TLS settings used when it is `amqps://`.
pub struct Connector {
    url: String,
    tls: OwnedTLSConfig,
}

impl Connector {
    pub fn new(url: &str, tls: &BrokerTls) -> Self {
        Self {
            url: url.to_owned(),
            tls: OwnedTLSConfig {
                cert_chain: tls.ca_pem.clone(),
                // lapin's "PKCS8" identity takes PEM certificates and any PEM private key.
                identity: tls.client.as_ref().map(|client| OwnedIdentity::PKCS8 {
                    pem: client.cert_pem.clone(),
                    key: client.key_pem.clone(),
                }),
            },
        }
    }

    pub async fn connect(&self) -> lapin::Result<Connection> {
        let runtime = lapin::runtime::default_runtime()?;
        Connection::connect_with_config(&self.url, properties(), self.tls.clone(), runtime).await
    }
}

fn properties() -> ConnectionProperties {
    // No lapin auto-recovery: the pool replaces dead connections, and the two together leak.
    ConnectionProperties::default().with_connection_name("carrot-gateway".into())
}

/// What to change when the TLS handshake with the broker failed for a reason the settings fix.
pub fn tls_hint(error: &lapin::Error) -> Option<&'static str> {
    let ErrorKind::IOError(io) = error.kind() else {
        return None;
    };
    // rustls' error travels inside an io::Error, sometimes wrapped in a second one.
    let mut inner = io.get_ref()?;
    while let Some(io) = inner.downcast_ref::<std::io::Error>() {
        inner = io.get_ref()?;
    }
    match inner.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => Some(
            "the broker's certificate is not signed by a CA the gateway trusts: give that CA \
             with --amqp-ca-file / CARROT_AMQP_CA_FILE / amqp_tls.ca_file",
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => Some(
            "the broker's certificate does not name the host of the AMQP URL: \
             connect by a name or address the certificate lists",
        ),
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => Some(
            "the broker requires a client certificate: set --amqp-client-cert and \
             --amqp-client-key (CARROT_AMQP_CLIENT_CERT/KEY, amqp_tls.client_cert/client_key)",
        ),
        rustls::Error::AlertReceived(
            AlertDescription::UnknownCA | AlertDescription::BadCertificate,
        ) => Some("the broker does not accept the gateway's client certificate"),
        _ => None,
    }
}

pub struct ConnectionManager {
    connector: Arc<Connector>,
}

impl managed::Manager for ConnectionManager {
    type Type = Connection;
    type Error = lapin::Error;

    async fn create(&self) -> Result<Connection, lapin::Error> {
        self.connector.connect().await
    }

    async fn recycle(
        &self,
        connection: &mut Connection,
        _: &Metrics,
    ) -> RecycleResult<lapin::Error> {
        // Only checked at checkout: the supervisor's probe is what notices a dead idle connection.
        if connection.status().connected() {
            Ok(())
        } else {
            Err(RecycleError::message(format!(
                "the connection is not connected: {:?}",
                connection.status()
            )))
        }
    }
}

pub type ConnectionPool = Pool<ConnectionManager>;
pub type ConnectionPoolError = managed::PoolError<lapin::Error>;

/// A pool of at most `max_size` connections; `opened` counts every connection it creates.
pub fn connection_pool(
    connector: Arc<Connector>,
    max_size: usize,
    timeout: Duration,
    opened: Arc<AtomicU64>,
) -> ConnectionPool {
    Pool::builder(ConnectionManager { connector })
        .max_size(max_size)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .post_create(Hook::sync_fn(move |_, _| {
            opened.fetch_add(1, Ordering::AcqRel);
            Ok(())
        }))
        .build()
        .expect("a runtime is set, so building the pool cannot fail")
}
