//! TLS material named in the settings: PEM files read and checked once, at start.
//!
//! Reading everything up front turns a missing file, a key that is not a key, or a key that
//! belongs to another certificate into a start-up error naming the file, instead of a broker
//! connection that keeps failing or an HTTPS handshake that fails for every client.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::crypto::{CryptoProvider, aws_lc_rs};
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

/// A TLS file that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct TlsFileError {
    pub path: PathBuf,
    pub problem: String,
}

/// Trust and identity for `amqps://` broker connections.
#[derive(Clone, Default)]
pub struct BrokerTls {
    /// PEM CA certificates trusted on top of the system's roots.
    pub ca_pem: Option<String>,
    /// Presented when the broker asks for a client certificate (`verify_peer`).
    pub client: Option<ClientIdentity>,
}

/// A client certificate chain and its private key, both PEM.
#[derive(Clone)]
pub struct ClientIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl BrokerTls {
    /// Reads the CA bundle and the client certificate and key, each optional.
    pub fn from_files(
        ca_file: Option<&Path>,
        client: Option<(&Path, &Path)>,
    ) -> Result<Self, TlsFileError> {
        let ca_pem = match ca_file {
            Some(path) => Some(read_trust_anchors(path)?),
            None => None,
        };
        let client = match client {
            Some((cert, key)) => {
                let (cert_pem, key_pem) = read_identity(cert, key)?;
                Some(ClientIdentity { cert_pem, key_pem })
            }
            None => None,
        };
        Ok(Self { ca_pem, client })
    }

    pub fn is_set(&self) -> bool {
        self.ca_pem.is_some() || self.client.is_some()
    }
}

impl fmt::Debug for BrokerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key: settings end up in debug logs.
        f.debug_struct("BrokerTls")
            .field("ca", &self.ca_pem.is_some())
            .field("client_identity", &self.client.is_some())
            .finish()
    }
}

/// The HTTPS listener's certificate and key, ready for handshakes.
#[derive(Clone)]
pub struct ListenerTls(Arc<ServerConfig>);

impl fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // rustls' own Debug reaches into the key; the settings need only say HTTPS is on.
        f.write_str("ListenerTls")
    }
}

impl ListenerTls {
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsFileError> {
        let (cert_pem, key_pem) = read_identity(cert, key)?;
        let chain = certificates(cert, &cert_pem)?;
        let key_der = private_key(key, &key_pem)?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| problem(cert, error))?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .map_err(|error| problem(key, format!("cannot serve with this key: {error}")))?;
        // The server speaks HTTP/1.1 only (axum's http2 feature is off).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self(Arc::new(config)))
    }

    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.0.clone()
    }
}

/// TLS for `https://` webhooks: the system's CA certificates, or those of the PEM bundle named
/// by `SSL_CERT_FILE`.
pub fn webhook_client_config() -> Result<ClientConfig, String> {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "reading the system's CA certificates for https:// webhooks");
    }
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS for webhooks: {error}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// One crypto provider for every TLS setting, the one lapin's rustls is built with.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(aws_lc_rs::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|error| problem(path, format!("cannot read it: {error}")))
}

fn problem(path: &Path, problem: impl ToString) -> TlsFileError {
    TlsFileError {
        path: path.to_owned(),
        problem: problem.to_string(),
    }
}

/// Reads a CA bundle, refusing files that hold no certificate or one rustls cannot trust.
fn read_trust_anchors(path: &Path) -> Result<String, TlsFileError> {
    let bytes = read(path)?;
    let certs = certificates(path, &bytes)?;
    let count = certs.len();
    let (_, unusable) = RootCertStore::empty().add_parsable_certificates(certs);
    if unusable > 0 {
        return Err(problem(
            path,
            format!("{unusable} of its {count} certificates cannot be used as a CA"),
        ));
    }
    String::from_utf8(bytes).map_err(|_| problem(path, "is not a PEM text file"))
}

/// Reads a certificate chain and its key, checking that the key belongs to the first certificate.
fn read_identity(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsFileError> {
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let chain = certificates(cert, &cert_pem)?;
    let key_der = private_key(key, &key_pem)?;
    CertifiedKey::from_der(chain, key_der, &provider()).map_err(|error| {
        // `openssl x509 -req` without extensions issues v1 certificates, which rustls refuses.
        if format!("{error:?}").contains("UnsupportedCertVersion") {
            return problem(
                cert,
                "is an X.509 v1 certificate, which TLS here cannot use; issue a v3 one \
                 (with openssl x509 -req, add -extfile with at least one extension)",
            );
        }
        problem(
            key,
            format!(
                "is not the key of the certificate in {}: {error}",
                cert.display()
            ),
        )
    })?;
    Ok((cert_pem, key_pem))
}

fn certificates(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| problem(path, format!("is not valid PEM: {error}")))?;
    if certs.is_empty() {
        return Err(problem(
            path,
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

fn private_key(path: &Path, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|error| match error {
        pem::Error::NoItemsFound => problem(
            path,
            "holds no unencrypted PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC); \
             encrypted keys are not supported",
        ),
        other => problem(path, format!("is not a valid PEM private key: {other}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new() -> Self {
            let path =
                std::env::temp_dir().join(format!("carrot-tls-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir(&path).expect("temp dir is writable");
            Self(path)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).expect("temp dir is writable");
            path
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn self_signed() -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_certificate_and_its_key_are_accepted() {
        let dir = Dir::new();
        let (cert, key) = self_signed();
        let (cert, key) = (dir.write("c.pem", &cert), dir.write("k.pem", &key));
        ListenerTls::from_files(&cert, &key).expect("usable listener identity");
        let broker = BrokerTls::from_files(Some(&cert), Some((&cert, &key))).expect("usable");
        assert!(broker.ca_pem.is_some() && broker.client.is_some());
        assert!(!format!("{broker:?}").contains("PRIVATE"), "{broker:?}");
    }

    /// What `openssl x509 -req` issues without `-extfile`: an X.509 v1 certificate.
    const V1_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBFjCBvQIUOSql4ctnp2LDWBrZiQW9Sp/x08kwCgYIKoZIzj0EAwIwDTELMAkG\nA1UEAwwCdjEwIBcNMjYxMTI3MDE1MTEzWhgPMjEyNjExMDMwMTUxMTNaMA0xCzAJ\nBgNVBAMMAnYxMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEx1mJwzJtxObocoH+\nT0qBu9pGuaplyFStP2xBCICd7VAK94xK5WlyxFk5/ArK3FYB4Hnun9n4v8dpp23n\nWTDG2TAKBggqhkjOPQQDAgNIADBFAiBWS2u8QplxKxETPhDQArG6YmyMeBhs1xAf\nE4Hy5dCNjAIhAOKRS9Lv3wFxaakNi2DRG2XHUyChMY9DU6OKCa/eZkdr\n-----END CERTIFICATE-----\n";
    const V1_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg5BpcH/J1w3DnZd34\nTi4jBvVPzONynm5k+FAzlWMcsnihRANCAATHWYnDMm3E5uhygf5PSoG72ka5qmXI\nVK0/bEEIgJ3tUAr3jErlaXLEWTn8CsrcVgHgee6f2fi/x2mnbedZMMbZ\n-----END PRIVATE KEY-----\n";

    #[test]
    fn a_v1_certificate_is_named_as_such() {
        let dir = Dir::new();
        let (cert, key) = (
            dir.write("v1.pem", V1_CERT),
            dir.write("v1-key.pem", V1_KEY),
        );
        let error = ListenerTls::from_files(&cert, &key)
            .expect_err("refused")
            .to_string();
        assert!(
            error.contains("v1.pem") && error.contains("X.509 v1"),
            "{error}"
        );
    }

    #[test]
    fn each_problem_names_its_file() {
        let dir = Dir::new();
        let (cert, key) = self_signed();
        let (_, other_key) = self_signed();
        let cert = dir.write("cert.pem", &cert);
        let key = dir.write("key.pem", &key);
        let other_key = dir.write("other-key.pem", &other_key);
        let garbage = dir.write("garbage.pem", "not pem at all\n");
        let missing = dir.0.join("missing.pem");

        let cases = [
            (
                ListenerTls::from_files(&missing, &key).err(),
                "missing.pem",
                "cannot read",
            ),
            (
                ListenerTls::from_files(&garbage, &key).err(),
                "garbage.pem",
                "no PEM certificate",
            ),
            (
                ListenerTls::from_files(&cert, &garbage).err(),
                "garbage.pem",
                "no unencrypted",
            ),
            (
                ListenerTls::from_files(&cert, &other_key).err(),
                "other-key.pem",
                "not the key",
            ),
            (
                BrokerTls::from_files(Some(&key), None).err(),
                "key.pem",
                "no PEM certificate",
            ),
        ];
        for (error, file, words) in cases {
            let error = error.expect("refused").to_string();
            assert!(error.contains(file) && error.contains(words), "{error}");
        }
    }
}
