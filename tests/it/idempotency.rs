//! `Idempotency-Key` on publish: a retry gets the first answer again and publishes nothing, the
//! same key for another request is refused, and only answers the broker decided are kept.

use std::sync::Arc;

use carrot_gateway::auth::{Auth, Token};
use carrot_gateway::config::{AuthConfig, Config};
use futures_util::future::join_all;

use crate::support::{Amqp, Gateway, json, problem, ready_gateway, unique};

async fn publish(
    gateway: &Gateway,
    query: &str,
    key: &str,
    token: Option<&str>,
    body: &str,
) -> reqwest::Response {
    let mut request = gateway
        .http
        .post(gateway.url(&format!("/exchanges/amq.default/messages?{query}")))
        .header("content-type", "text/plain")
        .header("idempotency-key", key)
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("gateway answers")
}

fn replayed(answer: &reqwest::Response) -> bool {
    answer
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|value| value == "true")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_gets_the_first_answer_and_publishes_nothing() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    let query = format!("routing_key={queue}");
    let key = unique("key");

    let first = publish(&gateway, &query, &key, None, "once").await;
    assert!(!replayed(&first));
    assert_eq!(json(first, 200).await["routed"], true);
    // Quoted, as the draft's structured-field form has it: the same key.
    let again = publish(&gateway, &query, &format!("\"{key}\""), None, "once").await;
    assert!(replayed(&again), "a retry is marked as a replay");
    assert_eq!(json(again, 200).await["routed"], true);

    let other = publish(&gateway, &query, &key, None, "another body").await;
    problem(other, 422, "idempotency_key_reused").await;
    let moved = publish(&gateway, &format!("{query}&priority=1"), &key, None, "once").await;
    problem(moved, 422, "idempotency_key_reused").await;

    let bodies: Vec<String> = amqp
        .drain(&queue)
        .await
        .iter()
        .map(|message| String::from_utf8_lossy(&message.delivery.data).into_owned())
        .collect();
    assert_eq!(bodies, ["once"], "published exactly once");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_with_one_key_publish_once() {
    let gateway = Arc::new(ready_gateway().await);
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    let key = unique("key");

    let answers = join_all((0..16).map(|_| {
        let (gateway, query, key) = (gateway.clone(), format!("routing_key={queue}"), key.clone());
        async move {
            let answer = publish(&gateway, &query, &key, None, "racing").await;
            (answer.status().as_u16(), replayed(&answer))
        }
    }))
    .await;
    let first = answers
        .iter()
        .filter(|(status, replayed)| *status == 200 && !replayed)
        .count();
    assert_eq!(first, 1, "one request published: {answers:?}");
    assert!(
        answers
            .iter()
            .all(|(status, replayed)| *replayed || *status == 409 || *status == 200),
        "the others replayed or were told the first is in flight: {answers:?}"
    );
    assert_eq!(amqp.drain(&queue).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_decided_answers_are_kept() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    let query = format!("routing_key={queue}");

    // Refused before anything was sent: not kept, so the key is free for the fixed request.
    let key = unique("key");
    let refused = publish(&gateway, &format!("{query}&priority=256"), &key, None, "x").await;
    problem(refused, 400, "invalid_request").await;
    let fixed = publish(&gateway, &format!("{query}&priority=1"), &key, None, "x").await;
    assert!(!replayed(&fixed));
    assert_eq!(json(fixed, 200).await["routed"], true);

    // A mandatory publish that no queue took is the broker's answer: kept and replayed.
    let key = unique("key");
    let nowhere = "routing_key=test.no-such-queue&mandatory=true";
    problem(
        publish(&gateway, nowhere, &key, None, "x").await,
        422,
        "unroutable",
    )
    .await;
    let again = publish(&gateway, nowhere, &key, None, "x").await;
    assert!(replayed(&again));
    problem(again, 422, "unroutable").await;

    for bad in ["", "has space", &"k".repeat(256)] {
        problem(
            publish(&gateway, &query, bad, None, "x").await,
            400,
            "invalid_request",
        )
        .await;
    }
    assert_eq!(amqp.drain(&queue).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_are_scoped_per_token() {
    let one = Token::new("one", "one-secret", "", ".*", "").expect("valid");
    let two = Token::new("two", "two-secret", "", ".*", "").expect("valid");
    let gateway = Gateway::start_with(Config {
        auth: AuthConfig {
            tokens: Arc::new(Auth::new(vec![one, two], false, false)),
            ..Default::default()
        },
        ..Config::default()
    })
    .await;
    gateway.wait_ready(200).await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    let query = format!("routing_key={queue}");
    let key = unique("key");

    let first = publish(&gateway, &query, &key, Some("one-secret"), "same").await;
    assert!(!replayed(&first));
    json(first, 200).await;
    let second = publish(&gateway, &query, &key, Some("two-secret"), "same").await;
    assert!(!replayed(&second), "another token's key is its own");
    json(second, 200).await;
    assert_eq!(amqp.drain(&queue).await.len(), 2);
}

/// Two gateways keeping their keys in the machine's Redis, as replicas behind one Service do.
async fn sharing_redis(url: &str) -> Gateway {
    let gateway = Gateway::start_with(Config {
        broker: carrot_gateway::config::BrokerConfig {
            idempotency_store: Some(url.to_owned()),
            ..Default::default()
        },
        ..Config::default()
    })
    .await;
    gateway.wait_ready(200).await;
    gateway
}

const REDIS: &str = "redis://127.0.0.1:6379/0";

#[tokio::test(flavor = "multi_thread")]
async fn with_a_shared_store_a_retry_on_another_replica_is_replayed() {
    let (a, b) = (sharing_redis(REDIS).await, sharing_redis(REDIS).await);
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    let query = format!("routing_key={queue}");
    let key = unique("key");

    let first = publish(&a, &query, &key, None, "once").await;
    assert!(!replayed(&first));
    json(first, 200).await;
    let again = publish(&b, &query, &key, None, "once").await;
    assert!(
        replayed(&again),
        "the other replica replays the first answer"
    );
    assert_eq!(json(again, 200).await["routed"], true);
    problem(
        publish(&b, &query, &key, None, "other").await,
        422,
        "idempotency_key_reused",
    )
    .await;

    // Concurrent first tries on both replicas: one publishes, the rest replay or wait (409).
    let racing = unique("key");
    let tries = (0..16).map(|i| {
        let gateway = if i % 2 == 0 { &a } else { &b };
        publish(gateway, &query, &racing, None, "raced")
    });
    let statuses: Vec<u16> = join_all(tries)
        .await
        .iter()
        .map(|answer| answer.status().as_u16())
        .collect();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 409),
        "{statuses:?}"
    );
    assert!(statuses.contains(&200), "{statuses:?}");

    let bodies: Vec<Vec<u8>> = amqp
        .drain(&queue)
        .await
        .into_iter()
        .map(|m| m.data.clone())
        .collect();
    assert_eq!(bodies, [b"once".to_vec(), b"raced".to_vec()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_does_not_answer_refuses_the_publish_and_publishes_nothing() {
    // Nothing listens on port 1.
    let gateway = sharing_redis("redis://127.0.0.1:1/0").await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    let query = format!("routing_key={queue}");
    let refused = publish(&gateway, &query, &unique("key"), None, "never").await;
    problem(refused, 503, "idempotency_store_unavailable").await;
    // Without a key the store is not asked.
    let plain = gateway
        .http
        .post(gateway.url(&format!("/exchanges/amq.default/messages?{query}")))
        .header("content-type", "text/plain")
        .body("plain")
        .send()
        .await
        .expect("answers");
    json(plain, 200).await;
    let bodies: Vec<Vec<u8>> = amqp
        .drain(&queue)
        .await
        .into_iter()
        .map(|m| m.data.clone())
        .collect();
    assert_eq!(bodies, [b"plain".to_vec()]);
}
