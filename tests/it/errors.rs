//! Bad input: every error is problem+json that says what to fix, and nothing is published.

use crate::support::{Amqp, Gateway, problem, ready_gateway};
use carrot_gateway::config::{Config, HttpConfig};

#[tokio::test(flavor = "multi_thread")]
async fn bad_raw_publishes_are_400_and_publish_nothing() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    let to = format!("routing_key={queue}");

    let cases = [
        (format!("{to}&immediate=true"), Some("text/plain"), "x"),
        (format!("{to}&priority=256"), None, "x"),
        (format!("{to}&priority=high"), None, "x"),
        (format!("{to}&delivery_mode=3"), None, "x"),
        (format!("{to}&expiration=1m"), None, "x"),
        (format!("{to}&timestamp=yesterday"), None, "x"),
        (format!("{to}&mandatory=yes"), None, "x"),
        (format!("{to}&routng_key=typo"), None, "x"),
        (format!("{to}&message_id={}", "m".repeat(256)), None, "x"),
        (format!("routing_key={}", "k".repeat(256)), None, "x"),
        (to.clone(), Some("application/json"), "{not json"),
    ];
    for (query, content_type, body) in cases {
        let answer = gateway
            .publish("amq.default", &query, content_type, body)
            .await;
        let problem = problem(answer, 400, "invalid_request").await;
        assert!(
            problem["type"]
                .as_str()
                .is_some_and(|t| t.ends_with("invalid_request"))
        );
    }
    let answer = gateway
        .publish("amq.default", &to, Some("no media type"), "x")
        .await;
    problem(answer, 415, "unsupported_media_type").await;
    let answer = gateway
        .publish(
            "amq.default",
            &format!("{to}&serializer=msgpack"),
            Some("text/plain"),
            "x",
        )
        .await;
    problem(answer, 415, "unsupported_media_type").await;
    assert_eq!(amqp.count(&queue).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn immediate_true_explains_why() {
    let gateway = ready_gateway().await;
    let answer = gateway
        .publish("amq.default", "immediate=true", None, "x")
        .await;
    let body = problem(answer, 400, "invalid_request").await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("RabbitMQ")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn names_longer_than_255_bytes_are_400() {
    let gateway = ready_gateway().await;
    let long = "é".repeat(128); // 256 bytes
    let answer = gateway.publish(&long, "", None, "x").await;
    let body = problem(answer, 400, "invalid_request").await;
    assert!(
        body["detail"].as_str().is_some_and(|d| d.contains("255")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_over_the_limit_are_413_and_publish_nothing() {
    let gateway = Gateway::start_with(Config {
        http: HttpConfig {
            max_body_bytes: 1024,
            ..Default::default()
        },
        ..Config::default()
    })
    .await;
    gateway.wait_ready(200).await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;

    let answer = gateway
        .publish(
            "amq.default",
            &format!("routing_key={queue}"),
            None,
            vec![b'x'; 1025],
        )
        .await;
    problem(answer, 413, "payload_too_large").await;
    let batch = serde_json::json!({"messages": [{"routing_key": queue, "body": "y".repeat(2000)}]});
    problem(
        gateway.publish_batch("amq.default", &batch).await,
        413,
        "payload_too_large",
    )
    .await;
    let answer = gateway
        .publish(
            "amq.default",
            &format!("routing_key={queue}"),
            None,
            vec![b'x'; 1024],
        )
        .await;
    assert_eq!(answer.status(), 200);
    assert_eq!(amqp.count(&queue).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_routes_and_methods_are_problems_too() {
    let gateway = ready_gateway().await;
    let answer = gateway
        .http
        .get(gateway.url("/nowhere"))
        .send()
        .await
        .expect("answers");
    problem(answer, 404, "not_found").await;
    let answer = gateway
        .http
        .get(gateway.url("/exchanges/x/messages"))
        .send()
        .await
        .expect("answers");
    problem(answer, 405, "method_not_allowed").await;
}
