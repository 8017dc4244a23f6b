//! A throw-away certificate authority, and a TLS listener of the local RabbitMQ that trusts it.
//!
//! The broker's listener is started at run time (`rabbit_networking:start_ssl_listener`) on a
//! port of its own, loopback only, requiring a client certificate; the broker's plain port and
//! settings are left alone. It is started once per test run: a listener left by an earlier run
//! holds that run's certificates, so it is replaced.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::sync::OnceCell;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::support::DEADLINE;

/// The broker's TLS port in these tests (RabbitMQ's usual 5671 is left to real configurations).
pub const AMQPS_PORT: u16 = 25671;
/// The common name of the client certificate, as the broker reports it.
pub const CLIENT_NAME: &str = "carrot-gateway test client";

/// PEM files the gateway reads, and the DER the broker is given.
pub struct Pki {
    pub ca: PathBuf,
    /// A CA that signed nothing here: trusting only it must fail.
    pub other_ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// For 127.0.0.1 and localhost: the broker's listener and the gateway's HTTPS listener.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    ca_der: Vec<u8>,
    server_der: Vec<u8>,
    server_key_der: Vec<u8>,
}

/// The run's certificates, made on first use.
pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(make_pki)
}

/// The broker's TLS URL, once its TLS listener is up.
pub async fn amqps_url() -> String {
    static LISTENER: OnceCell<()> = OnceCell::const_new();
    LISTENER.get_or_init(start_broker_listener).await;
    format!("amqps://guest:guest@127.0.0.1:{AMQPS_PORT}/%2f")
}

/// An HTTPS client that trusts the test CA only.
pub fn https_client() -> reqwest::Client {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(pki().ca_der.clone()))
        .expect("the test CA is a usable root");
    let tls = ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .expect("HTTPS client")
}

fn make_pki() -> Pki {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("target tmp dir is writable");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("target tmp dir is writable");
        path
    };

    let (ca, ca_pem, ca_der) = authority("carrot-gateway test CA");
    let (_, other_ca_pem, _) = authority("carrot-gateway other CA");
    let server = leaf(
        &ca,
        &["127.0.0.1", "localhost"],
        "localhost",
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let client = leaf(&ca, &[], CLIENT_NAME, ExtendedKeyUsagePurpose::ClientAuth);
    Pki {
        ca: write("ca.pem", &ca_pem),
        other_ca: write("other-ca.pem", &other_ca_pem),
        client_cert: write("client.pem", &client.cert.pem()),
        client_key: write("client-key.pem", &client.key.serialize_pem()),
        server_cert: write("server.pem", &server.cert.pem()),
        server_key: write("server-key.pem", &server.key.serialize_pem()),
        ca_der,
        server_der: server.cert.der().to_vec(),
        server_key_der: server.key.serialize_der(),
    }
}

fn authority(name: &str) -> (Issuer<'static, KeyPair>, String, Vec<u8>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().expect("CA key");
    let cert = params.self_signed(&key).expect("CA certificate");
    (Issuer::new(params, key), cert.pem(), cert.der().to_vec())
}

struct Leaf {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    names: &[&str],
    common_name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> Leaf {
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let mut params = CertificateParams::new(names).expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, issuer).expect("leaf certificate");
    Leaf { cert, key }
}

/// Replaces any earlier test listener on `AMQPS_PORT` with one holding this run's certificates.
async fn start_broker_listener() {
    let pki = pki();
    let der = |bytes: &[u8]| format!("base64:decode(\"{}\")", BASE64.encode(bytes));
    // Certificates go in as DER terms, so the broker needs no access to our files.
    let expression = format!(
        "Listener = {{\"127.0.0.1\", {AMQPS_PORT}}}, \
         catch rabbit_networking:stop_tcp_listener(Listener), \
         rabbit_networking:ensure_ssl(), \
         rabbit_networking:start_ssl_listener(Listener, \
           [{{cacerts, [{ca}]}}, {{cert, {cert}}}, {{key, {{'PrivateKeyInfo', {key}}}}}, \
            {{verify, verify_peer}}, {{fail_if_no_peer_cert, true}}], 1).",
        ca = der(&pki.ca_der),
        cert = der(&pki.server_der),
        key = der(&pki.server_key_der),
    );
    let output = tokio::time::timeout(
        DEADLINE,
        tokio::process::Command::new("rabbitmqctl")
            .args(["eval", &expression])
            .output(),
    )
    .await
    .expect("rabbitmqctl finishes in time")
    .expect("rabbitmqctl runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.trim() == "ok",
        "the broker's TLS listener did not start: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
