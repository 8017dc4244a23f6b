//! TLS on both sides: `amqps://` to a RabbitMQ TLS listener that requires a client certificate,
//! and HTTPS on the gateway's own listener. What the broker received is checked over plain AMQP.

use std::time::Duration;

use carrot_gateway::config::{AmqpUrls, BrokerConfig, Config, ServerConfig};
use carrot_gateway::net::tls::{BrokerTls, ListenerTls};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::pki::{AMQPS_PORT, CLIENT_NAME, amqps_url, https_client, pki};
use crate::support::{Amqp, DEADLINE, Gateway, problem, unique};

/// A gateway on the broker's TLS listener, trusting `ca` and presenting the client certificate
/// if `with_client_certificate`.
async fn amqps_gateway(ca: &std::path::Path, with_client_certificate: bool) -> Gateway {
    let pki = pki();
    let client = with_client_certificate.then_some((&*pki.client_cert, &*pki.client_key));
    Gateway::start_with(Config {
        broker: BrokerConfig {
            amqp_url: AmqpUrls::one(amqps_url().await),
            tls: BrokerTls::from_files(Some(ca), client).expect("the test files are usable"),
            broker_timeout: Duration::from_secs(5),
            ..Default::default()
        },
        ..Config::default()
    })
    .await
}

/// Waits until `/readyz` reports why the broker is not connected, and returns that reason.
async fn unready_because(gateway: &Gateway) -> String {
    let until = Instant::now() + DEADLINE;
    loop {
        let answer = gateway
            .http
            .get(gateway.url("/readyz"))
            .send()
            .await
            .expect("gateway answers");
        assert_eq!(answer.status(), 503, "the gateway must not become ready");
        let body: Value = answer.json().await.expect("JSON body");
        if let Some(detail) = body["detail"].as_str()
            && !detail.contains("not connected to the broker yet")
        {
            return detail.to_owned();
        }
        assert!(
            Instant::now() < until,
            "/readyz never gave a reason: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A queue of the checker's own, on the default exchange.
/// Publishes `text` through the gateway and reads it back from the queue with our own client.
async fn assert_publish_arrives(gateway: &Gateway, text: &str) {
    let amqp = Amqp::connect().await;
    let queue = amqp
        .queue_with("amq.direct", &[], FieldTable::default())
        .await;
    let answer = gateway
        .publish(
            "amq.default",
            &format!("routing_key={queue}"),
            Some("text/plain"),
            text.to_owned(),
        )
        .await;
    assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
    let message = amqp
        .get(&queue)
        .await
        .expect("the message reached the queue");
    assert_eq!(message.delivery.data, text.as_bytes());
}

#[tokio::test(flavor = "multi_thread")]
async fn publishes_over_amqps_with_a_ca_file_and_a_client_certificate() {
    let gateway = amqps_gateway(&pki().ca, true).await;
    gateway.wait_ready(200).await;
    assert_publish_arrives(&gateway, "sent over amqps").await;

    // Plugin exchange types are declared on a connection of their own: it takes the same TLS
    // settings, or the broker's answer about the type would never arrive.
    let refused = gateway
        .put(
            &format!("/exchanges/{}", unique("x")),
            json!({"type": "x-no-such-plugin"}),
        )
        .await;
    let body = problem(refused, 400, "invalid_request").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("no exchange type"),
        "{body}"
    );

    let connections = list_tls_connections().await;
    assert!(
        connections
            .iter()
            .any(|(port, subject)| *port == AMQPS_PORT && subject.contains(CLIENT_NAME)),
        "the broker saw no connection with our client certificate: {connections:?}"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_certificate_from_another_ca_is_refused() {
    let gateway = amqps_gateway(&pki().other_ca, true).await;
    let reason = unready_because(&gateway).await;
    assert!(
        reason.contains("UnknownIssuer") && reason.contains("--amqp-ca-file"),
        "{reason}"
    );
    // Refused before the broker is asked: the gateway has no connection to ask it on.
    let answer = gateway
        .publish(
            "amq.default",
            &format!("routing_key={}", unique("q")),
            None,
            "x",
        )
        .await;
    problem(answer, 503, "broker_unavailable").await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_broker_refuses_a_gateway_without_a_client_certificate() {
    let gateway = amqps_gateway(&pki().ca, false).await;
    let reason = unready_because(&gateway).await;
    // The broker's own certificate was accepted: the refusal is about ours.
    assert!(!reason.contains("invalid peer certificate"), "{reason}");
    // In TLS 1.3 the broker checks the client certificate after the handshake and sends its
    // alert as it closes: the gateway reads either the alert (with the hint) or the reset.
    assert!(
        reason.contains("--amqp-client-cert")
            || reason.contains("Connection reset")
            || reason.contains("HandshakeFailure"),
        "{reason}"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_https_listener_serves_health_and_publishes() {
    let pki = pki();
    let mut gateway = Gateway::start_with(Config {
        server: ServerConfig {
            tls: Some(
                ListenerTls::from_files(&pki.server_cert, &pki.server_key)
                    .expect("the test files are usable"),
            ),
            ..Default::default()
        },
        ..Config::default()
    })
    .await;
    assert!(gateway.base.starts_with("https://"), "{}", gateway.base);
    gateway.http = https_client();

    // A client that connects and never starts its handshake does not hold up the others.
    let address = gateway.base.trim_start_matches("https://").to_owned();
    let mut stalled = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connects");

    let health = gateway
        .http
        .get(gateway.url("/healthz"))
        // Well under the listener's handshake timeout, which a blocked accept would wait out.
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("HTTPS answers");
    assert_eq!(health.status(), 200);
    gateway.wait_ready(200).await;

    assert_publish_arrives(&gateway, "sent over https").await;

    // HTTPS only: plain HTTP on the same port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{address}/healthz"))
        .timeout(DEADLINE)
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was served: {plain:?}");

    // Shutdown is still graceful and prompt, with the stalled handshake still open.
    gateway.stop().await;
    let _ = stalled.shutdown().await;
}

/// An environment variable of the gateway process.
type Variable<'a> = (&'a str, &'a str);

#[tokio::test]
async fn a_missing_certificate_file_stops_the_start_and_names_the_file() {
    let pki = pki();
    let missing = pki.ca.with_file_name(format!("{}.pem", unique("missing")));
    let missing = missing.to_str().expect("UTF-8 path");
    let key = pki.server_key.to_str().expect("UTF-8 path");
    let runs: [(&[&str], &[Variable]); 2] = [
        (&["--tls-cert", missing, "--tls-key", key], &[]),
        (
            &["--amqp-url", "amqps://guest:guest@127.0.0.1:5671/%2f"],
            &[("CARROT_AMQP_CA_FILE", missing)],
        ),
    ];
    for (args, env) in runs {
        let output = tokio::time::timeout(
            DEADLINE,
            tokio::process::Command::new(env!("CARGO_BIN_EXE_carrot-gateway"))
                .args(["--listen", "127.0.0.1:0"])
                .args(args)
                .envs(env.iter().copied())
                .env_remove("CARROT_CONFIG")
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("the gateway exits in time")
        .expect("the gateway binary runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(missing) && stderr.contains("cannot read"),
            "{args:?}: {stderr}"
        );
    }
}

/// `(port, peer certificate subject)` of the broker's connections over TLS.
async fn list_tls_connections() -> Vec<(u16, String)> {
    let output = tokio::time::timeout(
        DEADLINE,
        tokio::process::Command::new("rabbitmqctl")
            .args([
                "list_connections",
                "port",
                "ssl",
                "peer_cert_subject",
                "--formatter",
                "json",
                "--quiet",
            ])
            .output(),
    )
    .await
    .expect("rabbitmqctl finishes in time")
    .expect("rabbitmqctl runs");
    assert!(output.status.success(), "{output:?}");
    let rows: Vec<Value> = serde_json::from_slice(&output.stdout).expect("JSON rows");
    rows.iter()
        .filter(|row| row["ssl"] == true)
        .map(|row| {
            let port = row["port"].as_u64().and_then(|p| u16::try_from(p).ok());
            let subject = row["peer_cert_subject"].as_str().unwrap_or_default();
            (port.unwrap_or_default(), subject.to_owned())
        })
        .collect()
}
