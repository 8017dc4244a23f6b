//! Push subscriptions: the gateway POSTs each message to a real HTTP receiver and settles it by
//! the answer. What is left in the queues is checked with our own AMQP client.

use std::time::Duration;

use carrot_gateway::config::{AmqpUrls, BrokerConfig, Config};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::outage::Vhost;
use crate::receiver::{Receiver, Reply};
use crate::support::{
    Amqp, DEADLINE, Gateway, json, problem, ready_gateway, spawn_gateway, spawn_gateway_with_env,
    unique,
};

fn subscription(name: &str, queue: &str, url: &str) -> Value {
    json!({
        "name": name, "queue": queue, "url": url,
        "timeout": 5, "max_attempts": 5,
        "backoff": {"initial_ms": 20, "max_ms": 200},
    })
}

/// Creates a subscription on the gateway at `base`.
async fn subscribe(base: &str, body: &Value) -> Value {
    let answer = reqwest::Client::new()
        .post(format!("{base}/subscriptions"))
        .json(body)
        .send()
        .await
        .expect("answers");
    json(answer, 201).await
}

async fn state(base: &str, name: &str) -> Value {
    let answer = reqwest::Client::new()
        .get(format!("{base}/subscriptions/{name}"))
        .send()
        .await
        .expect("answers");
    json(answer, 200).await
}

/// Polls the subscription of the gateway at `base` until `done` holds for its state.
async fn wait_state(base: &str, name: &str, done: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + DEADLINE;
    loop {
        let now = state(base, name).await;
        if done(&now) {
            return now;
        }
        assert!(
            Instant::now() < until,
            "subscription never got there: {now}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn delete(gateway: &Gateway, name: &str) {
    let answer = gateway
        .http
        .delete(gateway.url(&format!("/subscriptions/{name}")))
        .send()
        .await
        .expect("answers");
    assert_eq!(answer.status(), 204);
}

/// Once the queue has no consumer, whatever the gateway left unacknowledged is back in it.
async fn assert_settled(amqp: &Amqp, queue: &str, left: u32) {
    let until = Instant::now() + DEADLINE;
    loop {
        let (messages, consumers) = amqp.counts(queue).await;
        if consumers == 0 {
            assert_eq!(messages, left, "messages left in {queue}");
            return;
        }
        assert!(Instant::now() < until, "{queue} keeps a consumer");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn text(body: &str) -> (Vec<u8>, BasicProperties) {
    (
        body.as_bytes().to_vec(),
        BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_message_id(unique("m").as_str().into()),
    )
}

/// A config file with one subscription, for tests that run the gateway binary.
fn config_file(name: &str, queue: &str, url: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{}.yaml", unique("config")));
    std::fs::write(
        &path,
        format!(
            "subscriptions:\n  - {{name: {name}, queue: {queue}, url: \"{url}\", timeout: 60}}\n"
        ),
    )
    .expect("write the config file");
    path
}

/// One test's world: a gateway, our own AMQP client and queue, a scripted receiver, and the
/// name of the subscription between them.
struct Push {
    gateway: Gateway,
    amqp: Amqp,
    queue: String,
    receiver: Receiver,
    name: String,
}

impl Push {
    async fn new(script: Vec<Reply>) -> Self {
        let amqp = Amqp::connect().await;
        let queue = amqp.queue_bound("amq.direct", &[]).await;
        Self::on(amqp, queue, script).await
    }

    async fn on(amqp: Amqp, queue: String, script: Vec<Reply>) -> Self {
        Self {
            gateway: ready_gateway().await,
            amqp,
            queue,
            receiver: Receiver::start(script).await,
            name: unique("sub"),
        }
    }

    /// Creates the subscription: quick test settings, then `changes` over them.
    async fn subscribe(&self, changes: Value) -> Value {
        let mut settings = subscription(&self.name, &self.queue, &self.receiver.url);
        for (key, value) in changes.as_object().into_iter().flatten() {
            settings[key] = value.clone();
        }
        subscribe(&self.gateway.base, &settings).await
    }

    async fn send_text(&self, body: &str) {
        let (body, properties) = text(body);
        self.amqp.send(&self.queue, &body, properties).await;
    }

    async fn wait_state(&self, done: impl Fn(&Value) -> bool) -> Value {
        wait_state(&self.gateway.base, &self.name, done).await
    }

    /// Deletes the subscription and checks what it left in the queue.
    async fn finish(&self, left: u32) {
        delete(&self.gateway, &self.name).await;
        assert_settled(&self.amqp, &self.queue, left).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_2xx_acks_the_message_once() {
    let mut push = Push::new(vec![Reply::Status(204)]).await;
    push.subscribe(json!({})).await;
    let mut headers = FieldTable::default();
    headers.insert("tenant".into(), AMQPValue::LongString("acme".into()));
    push.amqp
        .send(
            &push.queue,
            br#"{"order": 7}"#,
            BasicProperties::default()
                .with_content_type("application/json".into())
                .with_correlation_id("c-7".into())
                .with_headers(headers),
        )
        .await;

    let hit = push.receiver.next_hit().await;
    assert_eq!(&hit.body[..], br#"{"order": 7}"#);
    assert_eq!(hit.header("content-type"), "application/json");
    assert_eq!(hit.header("amqp-attempt"), "1");
    assert_eq!(hit.header("amqp-routing-key"), push.queue);
    assert_eq!(hit.header("amqp-queue"), push.queue);
    assert_eq!(hit.header("amqp-redelivered"), "false");
    assert_eq!(hit.header("amqp-correlation-id"), "c-7");
    assert_eq!(hit.header("amqp-headers"), r#"{"tenant":"acme"}"#);

    let live = push.wait_state(|s| s["delivered"] == 1).await;
    assert_eq!(live["in_flight"], 0);
    assert_eq!(live["retried"], 0);
    assert_eq!(live["status"], "consuming");
    let metrics = push
        .gateway
        .get("/metrics")
        .await
        .text()
        .await
        .expect("metrics");
    assert!(
        metrics.lines().any(
            |line| line.starts_with("carrot_subscription_messages_total")
                && line.contains(&format!("subscription=\"{}\"", push.name))
                && line.contains("outcome=\"acked\"")
        ),
        "no acked count for {}",
        push.name
    );
    push.finish(0).await;
    assert!(push.receiver.try_hit().is_none(), "delivered twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_500_is_retried_and_then_acked() {
    let mut push = Push::new(vec![Reply::Status(500), Reply::Status(200)]).await;
    push.subscribe(json!({})).await;
    push.send_text("again").await;

    let first = push.receiver.next_hit().await;
    let second = push.receiver.next_hit().await;
    assert_eq!(first.header("amqp-attempt"), "1");
    assert_eq!(second.header("amqp-attempt"), "2");
    assert_eq!(
        first.header("amqp-message-id"),
        second.header("amqp-message-id")
    );
    assert_eq!(&second.body[..], b"again");

    let live = push.wait_state(|s| s["delivered"] == 1).await;
    assert_eq!(live["retried"], 1);
    assert!(
        live["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("500")),
        "{live}"
    );
    push.finish(0).await;
}

/// A queue dead-lettering into a queue of its own.
async fn queue_with_dead_letters(amqp: &Amqp) -> (String, String) {
    let dead = amqp.queue_bound("amq.direct", &[]).await;
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    arguments.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(dead.as_str().into()),
    );
    let queue = amqp.queue_with("amq.direct", &[], arguments).await;
    (queue, dead)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_400_is_dead_lettered_without_retries() {
    let amqp = Amqp::connect().await;
    let (queue, dead) = queue_with_dead_letters(&amqp).await;
    let mut push = Push::on(amqp, queue, vec![Reply::Status(400)]).await;
    push.subscribe(json!({})).await;
    push.send_text("poison").await;

    assert_eq!(push.receiver.next_hit().await.header("amqp-attempt"), "1");
    let live = push.wait_state(|s| s["dead_lettered"] == 1).await;
    assert_eq!(live["delivered"], 0);
    assert_eq!(live["retried"], 0);
    // Dead-lettering happens in the broker after the reject; wait for it to land.
    push.amqp.wait_count(&dead, 1).await;
    let dead_letters = push.amqp.drain(&dead).await;
    assert_eq!(dead_letters.len(), 1);
    assert_eq!(dead_letters[0].delivery.data, b"poison");
    push.finish(0).await;
    assert!(push.receiver.try_hit().is_none(), "a 400 is not retried");
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_are_retried_up_to_max_attempts_honouring_retry_after() {
    let amqp = Amqp::connect().await;
    let (queue, dead) = queue_with_dead_letters(&amqp).await;
    let script = vec![
        Reply::RetryAfter(429, 1),
        Reply::Status(503),
        Reply::Status(502),
    ];
    let mut push = Push::on(amqp, queue, script).await;
    push.subscribe(json!({"max_attempts": 3})).await;
    push.send_text("doomed").await;

    let hits = [
        push.receiver.next_hit().await,
        push.receiver.next_hit().await,
        push.receiver.next_hit().await,
    ];
    let attempts: Vec<&str> = hits.iter().map(|hit| hit.header("amqp-attempt")).collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    assert!(
        hits[1].at - hits[0].at >= Duration::from_millis(950),
        "Retry-After: 1 was not honoured"
    );
    let live = push.wait_state(|s| s["dead_lettered"] == 1).await;
    assert_eq!(live["retried"], 2);
    assert!(
        live["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("502") && e.contains("giving up")),
        "{live}"
    );
    push.amqp.wait_count(&dead, 1).await;
    assert_eq!(push.amqp.drain(&dead).await.len(), 1);
    push.finish(0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timeout_is_retried() {
    let mut push = Push::new(vec![Reply::Hang]).await;
    push.subscribe(json!({"timeout": 0.3})).await;
    push.send_text("slowpoke").await;

    assert_eq!(push.receiver.next_hit().await.header("amqp-attempt"), "1");
    assert_eq!(push.receiver.next_hit().await.header("amqp-attempt"), "2");
    let live = push.wait_state(|s| s["delivered"] == 1).await;
    assert!(
        live["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("did not answer")),
        "{live}"
    );
    push.finish(0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_is_down_gets_the_message_once_it_is_up() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    // Reserve a port, then free it: nothing listens there until the receiver starts.
    let address = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("address");
    let name = unique("sub");
    let mut settings = subscription(&name, &queue, &format!("http://{address}/hook"));
    settings["max_attempts"] = json!(1000);
    subscribe(&gateway.base, &settings).await;
    let (body, properties) = text("patience");
    amqp.send(&queue, &body, properties).await;

    let failing = wait_state(&gateway.base, &name, |s| s["retried"].as_u64() >= Some(2)).await;
    assert!(
        failing["last_error"]
            .as_str()
            .is_some_and(|e| e.to_lowercase().contains("connect")),
        "{failing}"
    );
    assert_eq!(failing["in_flight"], 1);
    let listener = TcpListener::bind(address).await.expect("rebind the port");
    let mut receiver = Receiver::start_on(listener, vec![]);
    let hit = receiver.next_hit().await;
    assert_eq!(&hit.body[..], b"patience");
    assert!(hit.header("amqp-attempt").parse::<u32>().expect("number") >= 3);
    wait_state(&gateway.base, &name, |s| s["delivered"] == 1).await;
    delete(&gateway, &name).await;
    assert_settled(&amqp, &queue, 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn never_more_in_flight_than_the_concurrency() {
    let mut push = Push::new(vec![Reply::Slow(Duration::from_millis(150)); 12]).await;
    let mut sent: Vec<String> = (0..12).map(|index| format!("m{index}")).collect();
    for body in &sent {
        push.send_text(body).await;
    }
    push.subscribe(json!({"concurrency": 3})).await;

    let mut bodies = Vec::new();
    for _ in 0..12 {
        bodies.push(String::from_utf8_lossy(&push.receiver.next_hit().await.body).into_owned());
    }
    push.wait_state(|s| s["delivered"] == 12).await;
    bodies.sort();
    sent.sort();
    assert_eq!(bodies, sent);
    let most = push.receiver.most_in_flight();
    assert!((2..=3).contains(&most), "{most} requests in flight at once");
    push.finish(0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrency_one_keeps_the_queue_order_through_retries() {
    let mut push = Push::new(vec![Reply::Status(200), Reply::Status(503)]).await;
    for index in 0..4 {
        push.send_text(&format!("m{index}")).await;
    }
    push.subscribe(json!({})).await;
    let mut bodies = Vec::new();
    for _ in 0..5 {
        bodies.push(String::from_utf8_lossy(&push.receiver.next_hit().await.body).into_owned());
    }
    assert_eq!(bodies, ["m0", "m1", "m1", "m2", "m3"]);
    push.wait_state(|s| s["delivered"] == 4).await;
    push.finish(0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cloudevents_binary_mode_sets_the_ce_headers() {
    let mut push = Push::new(vec![]).await;
    push.subscribe(json!({"format": "cloudevents"})).await;
    push.amqp
        .send(
            &push.queue,
            br#"{"sku": "A1"}"#,
            BasicProperties::default()
                .with_content_type("application/json".into())
                .with_message_id("evt-1".into())
                .with_type("stock.changed".into())
                .with_timestamp(1_700_000_000),
        )
        .await;

    let hit = push.receiver.next_hit().await;
    assert_eq!(hit.header("ce-specversion"), "1.0");
    assert_eq!(hit.header("ce-id"), "evt-1");
    assert_eq!(hit.header("ce-type"), "stock.changed");
    assert_eq!(hit.header("ce-source"), format!("/queues/{}", push.queue));
    assert_eq!(hit.header("ce-subject"), push.queue);
    assert_eq!(hit.header("ce-time"), "2023-11-14T22:13:20Z");
    assert_eq!(hit.header("content-type"), "application/json");
    assert_eq!(&hit.body[..], br#"{"sku": "A1"}"#);
    push.wait_state(|s| s["delivered"] == 1).await;
    push.finish(0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_envelope_format_posts_the_json_of_next() {
    let mut push = Push::new(vec![]).await;
    push.subscribe(json!({"format": "envelope"})).await;
    push.send_text("wrapped").await;

    let hit = push.receiver.next_hit().await;
    assert_eq!(hit.header("content-type"), "application/json");
    assert_eq!(hit.header("amqp-attempt"), "1");
    let envelope: Value = serde_json::from_slice(&hit.body).expect("JSON envelope");
    assert_eq!(envelope["body"], "wrapped");
    assert_eq!(envelope["body_encoding"], "utf8");
    assert_eq!(envelope["queue"], push.queue.as_str());
    assert_eq!(envelope["properties"]["content_type"], "text/plain");
    assert!(envelope.get("receipt").is_none());
    push.wait_state(|s| s["delivered"] == 1).await;
    push.finish(0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn subscriptions_are_created_listed_and_deleted() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    let name = unique("sub");
    let settings = json!({"name": name, "queue": queue, "url": "http://127.0.0.1:9/hook",
        "concurrency": 4, "timeout": 10, "max_attempts": 5,
        "backoff": {"initial_ms": 200, "max_ms": 30000}, "format": "raw"});
    let created = subscribe(&gateway.base, &settings).await;
    for (key, value) in settings.as_object().expect("object") {
        assert_eq!(&created[key], value, "{key}");
    }
    assert_eq!(created["configured"], false);
    assert_eq!(created["status"], "consuming");

    let again = gateway
        .http
        .post(gateway.url("/subscriptions"))
        .json(&settings)
        .send()
        .await
        .expect("answers");
    assert_eq!(json(again, 200).await["name"], name.as_str());
    let mut other = settings.clone();
    other["concurrency"] = json!(2);
    let conflict = gateway
        .http
        .post(gateway.url("/subscriptions"))
        .json(&other)
        .send()
        .await
        .expect("answers");
    problem(conflict, 409, "precondition_failed").await;

    let listed = json(gateway.get("/subscriptions").await, 200).await;
    assert!(
        listed["subscriptions"]
            .as_array()
            .expect("list")
            .iter()
            .any(|s| s["name"] == name.as_str())
    );
    delete(&gateway, &name).await;
    problem(
        gateway.get(&format!("/subscriptions/{name}")).await,
        404,
        "subscription_not_found",
    )
    .await;
    let gone = gateway
        .http
        .delete(gateway.url(&format!("/subscriptions/{name}")))
        .send()
        .await
        .expect("answers");
    problem(gone, 404, "subscription_not_found").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_subscriptions_are_refused_with_what_to_fix() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    let post = |body: Value| {
        let gateway = &gateway;
        async move {
            gateway
                .http
                .post(gateway.url("/subscriptions"))
                .json(&body)
                .send()
                .await
                .expect("answers")
        }
    };
    let missing = post(json!({"name": unique("sub"), "queue": unique("nowhere"),
        "url": "http://127.0.0.1:9/hook"}))
    .await;
    problem(missing, 404, "queue_not_found").await;
    for (body, needle) in [
        (
            json!({"name": "s", "queue": queue, "url": "mailto:app"}),
            "http://",
        ),
        (
            json!({"name": "s", "queue": queue, "url": "http://a/h", "concurrency": 0}),
            "concurrency",
        ),
        (
            json!({"name": "s", "queue": queue, "url": "http://a/h", "format": "xml"}),
            "format",
        ),
        (
            json!({"name": "s", "queue": queue, "url": "http://a/h", "retries": 3}),
            "retries",
        ),
        (json!({"name": "s", "url": "http://a/h"}), "queue"),
    ] {
        let refused = problem(post(body.clone()).await, 400, "invalid_request").await;
        assert!(
            refused["detail"]
                .as_str()
                .is_some_and(|d| d.contains(needle)),
            "{body}: {refused}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_subscription_puts_its_messages_back() {
    let mut push = Push::new(vec![Reply::Hang]).await;
    push.subscribe(json!({"timeout": 60})).await;
    push.send_text("held").await;
    push.receiver.next_hit().await;
    assert_eq!(state(&push.gateway.base, &push.name).await["in_flight"], 1);

    push.finish(1).await;
    let back = push
        .amqp
        .get(&push.queue)
        .await
        .expect("the message is back");
    assert!(back.delivery.redelivered);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_killed_mid_delivery_loses_nothing() {
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    let mut receiver = Receiver::start(vec![Reply::Hang]).await;
    let name = unique("sub");
    let config = config_file(&name, &queue, &receiver.url);
    let config_path = config.to_str().expect("utf-8 path");

    let (mut first, _) = spawn_gateway(&["--config", config_path]).await;
    let (body, properties) = text("survivor");
    amqp.send(&queue, &body, properties).await;
    let hit = receiver.next_hit().await;
    assert_eq!(hit.header("amqp-redelivered"), "false");
    first.kill().await.expect("kill the gateway");

    let (mut second, base) = spawn_gateway(&["--config", config_path]).await;
    let again = receiver.next_hit().await;
    assert_eq!(&again.body[..], b"survivor");
    assert_eq!(again.header("amqp-redelivered"), "true");
    let live = wait_state(&base, &name, |s| s["delivered"] == 1).await;
    assert_eq!(live["configured"], true);
    second.kill().await.expect("kill the gateway");
    assert_settled(&amqp, &queue, 0).await;
    let _ = std::fs::remove_file(&config);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscription_resumes_after_the_broker_connection_is_cut() {
    let vhost = Vhost::create().await;
    let amqp = Amqp::connect_to(&vhost.url()).await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    let gateway = Gateway::start_with(Config {
        broker: BrokerConfig {
            amqp_url: AmqpUrls::one(vhost.url()),
            ..Default::default()
        },
        ..Config::default()
    })
    .await;
    gateway.wait_ready(200).await;
    let mut receiver = Receiver::start(vec![]).await;
    let name = unique("sub");
    subscribe(&gateway.base, &subscription(&name, &queue, &receiver.url)).await;
    let (body, properties) = text("before");
    amqp.send(&queue, &body, properties).await;
    assert_eq!(&receiver.next_hit().await.body[..], b"before");
    wait_state(&gateway.base, &name, |s| s["delivered"] == 1).await;
    drop(amqp);

    crate::support::rabbitmqctl(&["close_all_connections", "-p", &vhost.0, "test cut"]).await;
    wait_state(&gateway.base, &name, |s| !s["last_error"].is_null()).await;
    let amqp = Amqp::connect_to(&vhost.url()).await;
    let (body, properties) = text("after");
    amqp.send(&queue, &body, properties).await;
    assert_eq!(&receiver.next_hit().await.body[..], b"after");
    wait_state(&gateway.base, &name, |s| {
        s["delivered"] == 2 && s["status"] == "consuming"
    })
    .await;
    delete(&gateway, &name).await;
    assert_settled(&amqp, &queue, 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn https_webhooks_are_checked_against_the_trusted_cas() {
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    let mut receiver = Receiver::start_https(vec![]).await;
    let name = unique("sub");
    let ca = crate::pki::pki()
        .ca
        .to_str()
        .expect("utf-8 path")
        .to_owned();
    let (mut gateway, base) = spawn_gateway_with_env(&[], &[("SSL_CERT_FILE", &ca)]).await;
    subscribe(&base, &subscription(&name, &queue, &receiver.url)).await;
    let (body, properties) = text("sealed");
    amqp.send(&queue, &body, properties).await;
    assert_eq!(&receiver.next_hit().await.body[..], b"sealed");
    wait_state(&base, &name, |s| s["delivered"] == 1).await;
    gateway.kill().await.expect("kill the gateway");

    // Without the test CA the receiver's certificate is refused, and the message stays queued.
    let (mut gateway, base) = spawn_gateway(&[]).await;
    let refused = unique("sub");
    subscribe(&base, &subscription(&refused, &queue, &receiver.url)).await;
    let (body, properties) = text("unsent");
    amqp.send(&queue, &body, properties).await;
    wait_state(&base, &refused, |s| {
        s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("certificate"))
    })
    .await;
    gateway.kill().await.expect("kill the gateway");
    assert_settled(&amqp, &queue, 1).await;
    assert!(
        receiver.try_hit().is_none(),
        "an untrusted receiver got the message"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn on_sigterm_a_webhook_in_flight_finishes_and_is_acked() {
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    let mut receiver = Receiver::start(vec![Reply::Slow(Duration::from_millis(1500))]).await;
    let config = config_file(&unique("sub"), &queue, &receiver.url);
    let (mut gateway, _) = spawn_gateway(&["--config", config.to_str().expect("utf-8 path")]).await;
    let (body, properties) = text("in flight");
    amqp.send(&queue, &body, properties).await;
    receiver.next_hit().await;

    let pid = gateway.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = tokio::time::timeout(DEADLINE, gateway.wait())
        .await
        .expect("exits within the grace period")
        .expect("exit status");
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
    // The app answered 200 after the SIGTERM: acked, not put back for a second delivery.
    assert_settled(&amqp, &queue, 0).await;
    assert!(receiver.try_hit().is_none(), "delivered twice");
    let _ = std::fs::remove_file(&config);
}
