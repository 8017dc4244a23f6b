//! Broker outages: the gateway stays up, answers 503 with Retry-After, reconnects by itself,
//! and never publishes a message twice. Runs in a vhost of its own so other tests are untouched.

use std::time::Duration;

use carrot_gateway::config::{AmqpUrls, BrokerConfig, Config};
use serde_json::Value;

use crate::support::{Amqp, DEADLINE, Gateway, connection_ids, rabbitmqctl, unique};

pub struct Vhost(pub String);

impl Vhost {
    pub async fn create() -> Self {
        let name = unique("vhost");
        rabbitmqctl(&["add_vhost", &name]).await;
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]).await;
        Vhost(name)
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.0)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.0])
            .output();
    }
}

/// A vhost of the test's own with a durable queue, and a ready gateway on that vhost.
async fn gateway_in_own_vhost(broker_timeout: Duration) -> (Vhost, String, Gateway) {
    let vhost = Vhost::create().await;
    let amqp = Amqp::connect_to(&vhost.url()).await;
    let queue = amqp.queue_with("amq.direct", &[], durable()).await;
    drop(amqp);
    let gateway = Gateway::start_with(Config {
        broker: BrokerConfig {
            amqp_url: AmqpUrls::one(vhost.url()),
            broker_timeout,
            ..Default::default()
        },
        ..Config::default()
    })
    .await;
    gateway.wait_ready(200).await;
    (vhost, queue, gateway)
}

#[tokio::test(flavor = "multi_thread")]
async fn outage_gives_503_then_recovers_without_duplicates() {
    let (vhost, queue, gateway) = gateway_in_own_vhost(Duration::from_secs(3)).await;

    let mut confirmed = Vec::new();
    let publish = |id: String| {
        let gateway = &gateway;
        let queue = queue.clone();
        async move {
            let answer = gateway
                .publish(
                    "amq.default",
                    &format!("routing_key={queue}&message_id={id}"),
                    None,
                    id.clone(),
                )
                .await;
            (id, answer)
        }
    };
    for i in 0..5 {
        let (id, answer) = publish(format!("before-{i}")).await;
        assert_eq!(answer.status(), 200);
        confirmed.push(id);
    }

    // Refuse new connections, then cut the live ones.
    rabbitmqctl(&["clear_permissions", "-p", &vhost.0, "guest"]).await;
    rabbitmqctl(&["close_all_connections", "-p", &vhost.0, "test outage"]).await;
    gateway.wait_ready(503).await;

    let (_, answer) = publish("during".to_owned()).await;
    assert_eq!(answer.status(), 503);
    let retry_after: u64 = answer
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=5).contains(&retry_after), "{retry_after}");
    let body: Value = answer.json().await.expect("problem body");
    assert_eq!(body["code"], "broker_unavailable");
    let health = gateway
        .http
        .get(gateway.url("/healthz"))
        .send()
        .await
        .expect("still serving");
    assert_eq!(health.status(), 200);

    rabbitmqctl(&["set_permissions", "-p", &vhost.0, "guest", ".*", ".*", ".*"]).await;
    gateway.wait_ready(200).await;

    let until = tokio::time::Instant::now() + DEADLINE;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (id, answer) = publish(format!("after-{attempt}")).await;
        match answer.status().as_u16() {
            200 => {
                confirmed.push(id);
                break;
            }
            503 => assert!(tokio::time::Instant::now() < until, "never recovered"),
            other => panic!("unexpected status {other}"),
        }
    }

    let amqp = Amqp::connect_to(&vhost.url()).await;
    let mut seen: Vec<String> = amqp
        .drain(&queue)
        .await
        .into_iter()
        .map(|m| String::from_utf8_lossy(&m.delivery.data).into_owned())
        .collect();
    seen.sort();
    let mut unique_seen = seen.clone();
    unique_seen.dedup();
    assert_eq!(seen, unique_seen, "no message is published twice");
    for id in &confirmed {
        assert!(seen.contains(id), "confirmed message {id} was lost");
    }
    assert!(
        !seen.contains(&"during".to_owned()),
        "a 503 publish was not published"
    );
    gateway.stop().await;
}

fn durable() -> lapin::types::FieldTable {
    lapin::types::FieldTable::default()
}

/// Cuts the gateway's connections and waits until it holds a connection newer than `newest`.
async fn cut_and_await_reconnect(gateway: &Gateway, vhost: &Vhost) {
    let newest = connection_ids(gateway).await.into_iter().max().unwrap_or(0);
    rabbitmqctl(&["close_all_connections", "-p", &vhost.0, "test cut"]).await;
    let until = tokio::time::Instant::now() + DEADLINE;
    while connection_ids(gateway).await.iter().all(|&id| id <= newest) {
        assert!(tokio::time::Instant::now() < until, "never reconnected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A 503 means the message never left the gateway, so a client may always retry it; a publish
/// whose confirm the cut swallowed answers 504 instead: its outcome is unknown.
#[tokio::test(flavor = "multi_thread")]
async fn a_503_publish_was_never_stored_even_when_the_connection_is_cut_mid_flight() {
    let (vhost, queue, gateway) = gateway_in_own_vhost(Duration::from_secs(5)).await;

    // Large persistent messages keep many publishes between send and confirm at each cut.
    // Publishers go on until the last cut is through: rabbitmqctl may take seconds to start.
    let padding = "p".repeat(256 * 1024);
    let cutting = std::sync::atomic::AtomicBool::new(true);
    let publishers = (0..16).map(|worker| {
        let (gateway, queue, padding, cutting) = (&gateway, &queue, &padding, &cutting);
        async move {
            let mut answers = Vec::new();
            let mut i = 0;
            while i < 20 || cutting.load(std::sync::atomic::Ordering::Acquire) {
                i += 1;
                let id = format!("m-{worker}-{i}");
                let answer = gateway
                    .publish(
                        "amq.default",
                        &format!("routing_key={queue}&message_id={id}"),
                        None,
                        format!("{id} {padding}"),
                    )
                    .await;
                let status = answer.status().as_u16();
                let code = match status {
                    200 => String::new(),
                    _ => answer.json::<Value>().await.expect("problem")["code"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                };
                answers.push((id, status, code));
            }
            answers
        }
    });
    let cuts = async {
        for _ in 0..3 {
            cut_and_await_reconnect(&gateway, &vhost).await;
        }
        cutting.store(false, std::sync::atomic::Ordering::Release);
    };
    let (answers, ()) = tokio::join!(futures_util::future::join_all(publishers), cuts);

    let amqp = Amqp::connect_to(&vhost.url()).await;
    let stored: std::collections::HashSet<String> = amqp
        .drain(&queue)
        .await
        .into_iter()
        .filter_map(|m| {
            let text = String::from_utf8_lossy(&m.delivery.data).into_owned();
            text.split(' ').next().map(str::to_owned)
        })
        .collect();
    // Whether a cut lands before a send (503) or between send and confirm (504) is the
    // scheduler's choice; either way some publishes must have seen it.
    let mut failed = 0;
    for (id, status, code) in answers.into_iter().flatten() {
        match (status, code.as_str()) {
            (200, _) => assert!(stored.contains(&id), "confirmed {id} was lost"),
            (503, "broker_unavailable") => {
                failed += 1;
                assert!(!stored.contains(&id), "{id} answered 503 but was stored");
            }
            (504, "confirm_lost" | "broker_timeout") => failed += 1,
            other => panic!("{id}: unexpected answer {other:?}"),
        }
    }
    assert!(failed > 0, "the cuts were seen by some publishes");
    gateway.stop().await;
}
