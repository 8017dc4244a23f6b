//! Replicas that cooperate: a receipt or consumer set handed out by one replica is settled or
//! read through another, which forwards to the owner; an owner that is gone answers 410.
//! What the broker holds is checked with an independent AMQP client.

use std::time::Duration;

use std::sync::Arc;

use carrot_gateway::auth::{Auth, Token};
use carrot_gateway::config::{AuthConfig, ClusterConfig, Config};
use futures_util::StreamExt;
use lapin::BasicProperties;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::support::{Amqp, DEADLINE, Gateway, json, problem, unique};

const SECRET: &str = "a shared secret of at least thirty-two bytes";

/// A replica that advertises its own address.
async fn replica() -> Gateway {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    replica_on(listener, Config::default()).await
}

async fn replica_on(listener: TcpListener, config: Config) -> Gateway {
    let advertised = format!("http://{}", listener.local_addr().expect("address"));
    let gateway = Gateway::start_on(
        listener,
        Config {
            cluster: ClusterConfig {
                advertise_url: Some(advertised),
                peer_secret: Some(SECRET.to_owned()),
            },
            ..config
        },
    );
    gateway.wait_ready(200).await;
    gateway
}

async fn queue_with(amqp: &Amqp, ids: &[&str]) -> String {
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    for id in ids {
        let properties = BasicProperties::default().with_message_id((*id).into());
        amqp.send(&queue, id.as_bytes(), properties).await;
    }
    queue
}

fn ids_of(messages: &[lapin::message::BasicGetMessage]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|message| {
            message
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.to_string())
        })
        .collect()
}

async fn lease(gateway: &Gateway, queue: &str) -> (String, Value) {
    let answer = gateway
        .http
        .get(gateway.url(&format!("/queues/{queue}/next?lease=60")))
        .send()
        .await
        .expect("answers");
    let leased = json(answer, 200).await;
    let receipt = leased["receipt"].as_str().expect("receipt").to_owned();
    (receipt, leased)
}

async fn settle(gateway: &Gateway, queue: &str, receipt: &str, how: &str) -> reqwest::Response {
    gateway
        .http
        .post(gateway.url(&format!("/queues/{queue}/messages/{receipt}/{how}")))
        .send()
        .await
        .expect("answers")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_from_one_replica_settles_through_another() {
    let (a, b) = (replica().await, replica().await);
    let amqp = Amqp::connect().await;
    let queue = queue_with(&amqp, &["acked", "requeued", "rejected", "extended"]).await;

    let (acked, _) = lease(&a, &queue).await;
    let (requeued, _) = lease(&a, &queue).await;
    let (rejected, _) = lease(&a, &queue).await;
    let (extended, _) = lease(&a, &queue).await;
    assert_eq!(amqp.count(&queue).await, 0, "all four are leased");

    let answer = settle(&b, &queue, &acked, "ack").await;
    assert_eq!(answer.status(), 204);
    assert!(answer.headers().contains_key("carrot-answered-by"));
    // Spent: the owner answers the usual 404, through either replica.
    problem(
        settle(&b, &queue, &acked, "ack").await,
        404,
        "receipt_not_found",
    )
    .await;
    problem(
        settle(&a, &queue, &acked, "ack").await,
        404,
        "receipt_not_found",
    )
    .await;

    assert_eq!(settle(&b, &queue, &rejected, "reject").await.status(), 204);
    let extend = b
        .http
        .post(b.url(&format!(
            "/queues/{queue}/messages/{extended}/extend?lease=120"
        )))
        .send()
        .await
        .expect("answers");
    assert_eq!(
        extend.status(),
        204,
        "{}",
        extend.text().await.unwrap_or_default()
    );
    assert_eq!(settle(&b, &queue, &requeued, "requeue").await.status(), 204);
    assert_eq!(settle(&b, &queue, &extended, "ack").await.status(), 204);

    // A gives back whatever it still holds when it stops: only the requeued one is left.
    a.stop().await;
    let left = amqp.drain(&queue).await;
    assert_eq!(ids_of(&left), ["requeued"]);
    assert!(left[0].redelivered);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_that_stopped_answers_410_and_its_messages_come_back() {
    let (a, b) = (replica().await, replica().await);
    let amqp = Amqp::connect().await;
    let queue = queue_with(&amqp, &["one", "two", "three"]).await;
    let mut receipts = Vec::new();
    for _ in 0..3 {
        receipts.push(lease(&a, &queue).await.0);
    }
    a.stop().await;

    for (receipt, how) in receipts.iter().zip(["ack", "reject", "requeue"]) {
        let lost = problem(settle(&b, &queue, receipt, how).await, 410, "lease_lost").await;
        let detail = lost["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("redelivered"), "{detail}");
    }
    let mut ids = ids_of(&amqp.drain(&queue).await);
    ids.sort();
    assert_eq!(ids, ["one", "three", "two"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_restarted_at_the_same_address_answers_410_for_its_predecessor() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (a, b) = (
        replica_on(listener, Config::default()).await,
        replica().await,
    );
    let amqp = Amqp::connect().await;
    let queue = queue_with(&amqp, &["one", "two"]).await;
    let (first, _) = lease(&a, &queue).await;
    let (second, _) = lease(&a, &queue).await;
    a.stop().await;

    let listener = TcpListener::bind(address)
        .await
        .expect("the same address again");
    let successor = replica_on(listener, Config::default()).await;
    problem(
        settle(&successor, &queue, &first, "ack").await,
        410,
        "lease_lost",
    )
    .await;
    problem(settle(&b, &queue, &second, "ack").await, 410, "lease_lost").await;
    assert_eq!(amqp.drain(&queue).await.len(), 2, "both came back");
}

#[tokio::test(flavor = "multi_thread")]
async fn another_program_at_the_owners_address_is_not_taken_for_the_owner() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (a, b) = (
        replica_on(listener, Config::default()).await,
        replica().await,
    );
    let amqp = Amqp::connect().await;
    let queue = queue_with(&amqp, &["m"]).await;
    let (receipt, _) = lease(&a, &queue).await;
    a.stop().await;

    // Whatever it is asked, this answers 204, as a gateway's ack would.
    let impostor = TcpListener::bind(address)
        .await
        .expect("the same address again");
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = impostor.accept().await {
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let _ = socket
                .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                .await;
        }
    });
    problem(settle(&b, &queue, &receipt, "ack").await, 410, "lease_lost").await;
    assert_eq!(amqp.drain(&queue).await.len(), 1, "the message came back");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forwarded_request_is_authorized_by_the_owner_with_the_clients_token() {
    let token = |name: &str| Token::new(name, &format!("{name}-secret"), ".*", ".*", ".*");
    let auth = || AuthConfig {
        tokens: Arc::new(Auth::new(
            vec![token("alice").expect("valid"), token("bob").expect("valid")],
            false,
            false,
        )),
        ..Default::default()
    };
    let with_auth = || Config {
        auth: auth(),
        ..Config::default()
    };
    let a = replica_on(
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        with_auth(),
    )
    .await;
    let b = replica_on(
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        with_auth(),
    )
    .await;
    let amqp = Amqp::connect().await;
    let queue = queue_with(&amqp, &["m"]).await;
    let created = a
        .http
        .post(a.url("/consumers"))
        .bearer_auth("alice-secret")
        .json(&serde_json::json!({"queues": [queue]}))
        .send()
        .await
        .expect("answers");
    let id = json(created, 201).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let path = format!("/consumers/{id}");

    let anonymous = b.http.get(b.url(&path)).send().await.expect("answers");
    problem(anonymous, 401, "unauthorized").await;
    let bob = b
        .http
        .get(b.url(&path))
        .bearer_auth("bob-secret")
        .send()
        .await
        .expect("answers");
    problem(bob, 404, "consumer_not_found").await;
    let alice = b
        .http
        .get(b.url(&path))
        .bearer_auth("alice-secret")
        .send()
        .await
        .expect("answers");
    json(alice, 200).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_set_created_on_one_replica_is_read_through_another() {
    let (a, b) = (replica().await, replica().await);
    let amqp = Amqp::connect().await;
    let queue = queue_with(&amqp, &["first", "second"]).await;
    let created = a
        .http
        .post(a.url("/consumers"))
        .json(&serde_json::json!({"queues": [queue], "prefetch": 5, "ack": "lease"}))
        .send()
        .await
        .expect("answers");
    let id = json(created, 201).await["id"]
        .as_str()
        .expect("id")
        .to_owned();

    let described = json(
        b.http
            .get(b.url(&format!("/consumers/{id}")))
            .send()
            .await
            .expect("answers"),
        200,
    )
    .await;
    assert_eq!(described["queues"][0], queue.as_str());

    let next = b
        .http
        .get(b.url(&format!("/consumers/{id}/next?wait=5")))
        .send()
        .await
        .expect("answers");
    let message = json(next, 200).await;
    assert_eq!(message["properties"]["message_id"], "first");
    let receipt = message["receipt"].as_str().expect("receipt");
    assert_eq!(settle(&b, &queue, receipt, "ack").await.status(), 204);

    // The stream, through the other replica too.
    let stream = b
        .http
        .get(b.url(&format!("/consumers/{id}/stream")))
        .send()
        .await
        .expect("answers");
    assert_eq!(stream.status(), 200);
    let mut body = stream.bytes_stream();
    let mut seen = String::new();
    tokio::time::timeout(DEADLINE, async {
        while !seen.contains("\"second\"") {
            let chunk = body
                .next()
                .await
                .expect("the stream goes on")
                .expect("a chunk");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("the second message comes through the stream in time");
    drop(body);

    // Deleting through B ends the set on A; what it held goes back to the queue.
    let deleted = delete_when_idle(&b, &id).await;
    assert_eq!(deleted, 204);
    problem(
        a.http
            .get(a.url(&format!("/consumers/{id}")))
            .send()
            .await
            .expect("answers"),
        404,
        "consumer_not_found",
    )
    .await;
    // The set's requeue is sent without waiting for the broker, so it may land a moment later.
    let back = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Some(message) = amqp.get(&queue).await {
                return message;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the streamed, unsettled message is back in time");
    assert_eq!(
        back.properties.message_id().as_ref().map(|id| id.as_str()),
        Some("second")
    );
}

/// Deletes the set once the stream just dropped has let go of it (409 consumer_busy until then).
async fn delete_when_idle(gateway: &Gateway, id: &str) -> u16 {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let status = gateway
            .http
            .delete(gateway.url(&format!("/consumers/{id}")))
            .send()
            .await
            .expect("answers")
            .status()
            .as_u16();
        if status != 409 || tokio::time::Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_receipts_and_signatures_are_refused_without_forwarding() {
    let (a, b) = (replica().await, replica().await);
    let amqp = Amqp::connect().await;
    let queue = queue_with(&amqp, &["kept"]).await;
    let (receipt, _) = lease(&a, &queue).await;

    // Another owner under the same MAC: unknown, so answered where it landed.
    let mut parts: Vec<&str> = receipt.split('.').collect();
    assert_eq!(parts.len(), 3, "{receipt}");
    let elsewhere = base64_url(&format!("{}http://127.0.0.1:1", "0".repeat(32)));
    parts[1] = &elsewhere;
    let forged = parts.join(".");
    problem(
        settle(&b, &queue, &forged, "ack").await,
        404,
        "receipt_not_found",
    )
    .await;

    let claimed = b
        .http
        .post(b.url(&format!("/queues/{queue}/messages/{receipt}/ack")))
        .header("carrot-peer", "1.AAAAAAAAAAAAAAAAAAAAAA")
        .send()
        .await
        .expect("answers");
    problem(claimed, 401, "unauthorized").await;

    // Neither touched the lease: it still acks, and then nothing is left once A lets go.
    assert_eq!(settle(&b, &queue, &receipt, "ack").await.status(), 204);
    a.stop().await;
    assert_eq!(amqp.count(&queue).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_alone_keeps_its_plain_receipts() {
    let gateway = crate::support::ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = queue_with(&amqp, &[&unique("m")]).await;
    let (receipt, _) = lease(&gateway, &queue).await;
    assert_eq!(receipt.len(), 32, "{receipt}");
    assert_eq!(
        settle(&gateway, &queue, &receipt, "ack").await.status(),
        204
    );
    let ready = json(
        gateway
            .http
            .get(gateway.url("/readyz"))
            .send()
            .await
            .expect("answers"),
        200,
    )
    .await;
    assert!(ready["replica"].is_null(), "{ready}");
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_names_the_replica_and_a_restart_gives_a_new_instance() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let first = replica_on(listener, Config::default()).await;
    let readyz = |gateway: &Gateway| gateway.http.get(gateway.url("/readyz")).send();
    let before = json(readyz(&first).await.expect("answers"), 200).await;
    assert_eq!(
        before["replica"]["advertise_url"],
        format!("http://{address}")
    );
    first.stop().await;
    let listener = TcpListener::bind(address)
        .await
        .expect("the same address again");
    let second = replica_on(listener, Config::default()).await;
    let after = json(readyz(&second).await.expect("answers"), 200).await;
    assert_eq!(
        after["replica"]["advertise_url"],
        before["replica"]["advertise_url"]
    );
    assert_ne!(after["replica"]["instance"], before["replica"]["instance"]);
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}
