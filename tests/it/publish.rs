//! Raw-mode publishing: bytes, properties, routing, confirms.

use lapin::ExchangeKind;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::json;

use crate::support::{Amqp, json, problem, ready_gateway};

#[tokio::test(flavor = "multi_thread")]
async fn raw_body_and_every_property_arrive_exactly() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let exchange = amqp.exchange(ExchangeKind::Direct).await;
    let queue = amqp.queue_bound(&exchange, &["order.created"]).await;

    let body: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
    let query = "routing_key=order.created&delivery_mode=transient&priority=7&expiration=60000\
        &message_id=m-1&correlation_id=c-1&reply_to=replies&type=order&app_id=shop\
        &user_id=guest&timestamp=1700000000&cluster_id=cl";
    let answer = gateway
        .publish(
            &exchange,
            query,
            Some("application/x-thing; charset=latin1"),
            body.clone(),
        )
        .await;
    assert_eq!(json(answer, 200).await, json!({"routed": true}));

    let message = amqp.get(&queue).await.expect("message arrived");
    let delivery = &message.delivery;
    assert_eq!(delivery.data, body);
    assert_eq!(delivery.routing_key.as_str(), "order.created");
    assert_eq!(delivery.exchange.as_str(), exchange);
    let props = &delivery.properties;
    assert_eq!(
        props.content_type().as_ref().map(|s| s.as_str()),
        Some("application/x-thing")
    );
    assert_eq!(
        props.content_encoding().as_ref().map(|s| s.as_str()),
        Some("latin1")
    );
    assert_eq!(props.delivery_mode(), &Some(1));
    assert_eq!(props.priority(), &Some(7));
    assert_eq!(
        props.expiration().as_ref().map(|s| s.as_str()),
        Some("60000")
    );
    assert_eq!(props.message_id().as_ref().map(|s| s.as_str()), Some("m-1"));
    assert_eq!(
        props.correlation_id().as_ref().map(|s| s.as_str()),
        Some("c-1")
    );
    assert_eq!(
        props.reply_to().as_ref().map(|s| s.as_str()),
        Some("replies")
    );
    assert_eq!(props.kind().as_ref().map(|s| s.as_str()), Some("order"));
    assert_eq!(props.app_id().as_ref().map(|s| s.as_str()), Some("shop"));
    assert_eq!(props.user_id().as_ref().map(|s| s.as_str()), Some("guest"));
    assert_eq!(props.timestamp(), &Some(1_700_000_000));
    assert_eq!(props.cluster_id().as_ref().map(|s| s.as_str()), Some("cl"));
    assert_eq!(
        props.headers(),
        &None,
        "HTTP headers never become AMQP headers"
    );
    assert!(amqp.get(&queue).await.is_none(), "published once");
}

#[tokio::test(flavor = "multi_thread")]
async fn defaults_follow_carrot_persistent_and_content_type_rules() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;

    let cases = [
        (
            Some("application/json"),
            r#"{"id": 42}"#,
            "application/json",
            Some("utf-8"),
        ),
        (Some("text/plain"), "hello", "text/plain", Some("utf-8")),
        (None, "\u{0}bytes", "application/octet-stream", None),
    ];
    for (content_type, body, want_type, want_encoding) in cases {
        let answer = gateway
            .publish(
                "amq.default",
                &format!("routing_key={queue}"),
                content_type,
                body,
            )
            .await;
        assert_eq!(json(answer, 200).await, json!({"routed": true}));
        let message = amqp.get(&queue).await.expect("message arrived");
        let props = &message.delivery.properties;
        assert_eq!(message.delivery.data, body.as_bytes());
        assert_eq!(props.delivery_mode(), &Some(2), "persistent by default");
        assert_eq!(
            props.content_type().as_ref().map(|s| s.as_str()),
            Some(want_type)
        );
        assert_eq!(
            props.content_encoding().as_ref().map(|s| s.as_str()),
            want_encoding
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn routing_reaches_only_the_bound_queue() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let exchange = amqp.exchange(ExchangeKind::Topic).await;
    let stocks = amqp.queue_bound(&exchange, &["*.stock.#"]).await;
    let others = amqp.queue_bound(&exchange, &["other"]).await;

    for (key, routed) in [
        ("usd.stock", true),
        ("eur.stock.db", true),
        ("stock.nasdaq", false),
    ] {
        let answer = gateway
            .publish(
                &exchange,
                &format!("routing_key={key}"),
                Some("text/plain"),
                key,
            )
            .await;
        assert_eq!(json(answer, 200).await["routed"], routed, "{key}");
    }
    let got: Vec<Vec<u8>> = amqp
        .drain(&stocks)
        .await
        .into_iter()
        .map(|m| m.delivery.data)
        .collect();
    assert_eq!(got, vec![b"usd.stock".to_vec(), b"eur.stock.db".to_vec()]);
    assert_eq!(amqp.count(&others).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn unroutable_is_reported_and_mandatory_makes_it_422() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let exchange = amqp.exchange(ExchangeKind::Direct).await;

    let answer = gateway
        .publish(&exchange, "routing_key=nobody", None, "x")
        .await;
    assert_eq!(
        json(answer, 200).await,
        json!({"routed": false, "reply_code": 312, "reply_text": "NO_ROUTE"})
    );
    let answer = gateway
        .publish(&exchange, "routing_key=nobody&mandatory=true", None, "x")
        .await;
    problem(answer, 422, "unroutable").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_exchange_is_404_and_the_gateway_keeps_working() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;

    let missing = crate::support::unique("missing");
    let answer = gateway.publish(&missing, "", None, "x").await;
    let body = problem(answer, 404, "exchange_not_found").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains(&missing)
    );

    // The channel the broker closed is not reused: the next publishes succeed.
    for _ in 0..3 {
        let answer = gateway
            .publish(
                "amq.default",
                &format!("routing_key={queue}"),
                None,
                "after",
            )
            .await;
        assert_eq!(json(answer, 200).await["routed"], true);
    }
    assert_eq!(amqp.count(&queue).await, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn yaml_and_msgpack_are_kombu_encodings() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    let value = json!({"id": 42, "tags": ["a", "b"], "px": 1.5});

    for (serializer, content_type, encoding) in [
        ("yaml", "application/x-yaml", "utf-8"),
        ("msgpack", "application/x-msgpack", "binary"),
        ("json", "application/json", "utf-8"),
    ] {
        let answer = gateway
            .publish(
                "amq.default",
                &format!("routing_key={queue}&serializer={serializer}"),
                Some("application/json"),
                value.to_string(),
            )
            .await;
        assert_eq!(json(answer, 200).await["routed"], true);
        let message = amqp.get(&queue).await.expect("message arrived");
        let props = &message.delivery.properties;
        assert_eq!(
            props.content_type().as_ref().map(|s| s.as_str()),
            Some(content_type)
        );
        assert_eq!(
            props.content_encoding().as_ref().map(|s| s.as_str()),
            Some(encoding)
        );
        let decoded: serde_json::Value = match serializer {
            "yaml" => yaml_serde::from_slice(&message.delivery.data).expect("valid YAML"),
            "msgpack" => rmp_serde::from_slice(&message.delivery.data).expect("valid msgpack"),
            _ => serde_json::from_slice(&message.delivery.data).expect("valid JSON"),
        };
        assert_eq!(decoded, value, "{serializer}");
    }
    let answer = gateway
        .publish(
            "amq.default",
            &format!("routing_key={queue}&serializer=pickle"),
            Some("application/json"),
            "{}",
        )
        .await;
    problem(answer, 415, "unsupported_serializer").await;
    assert_eq!(amqp.count(&queue).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_nack_is_503_publish_nacked() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(1));
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    let queue = amqp.queue_with("amq.direct", &[], arguments).await;

    let first = gateway
        .publish("amq.default", &format!("routing_key={queue}"), None, "1")
        .await;
    assert_eq!(json(first, 200).await["routed"], true);
    let second = gateway
        .publish("amq.default", &format!("routing_key={queue}"), None, "2")
        .await;
    problem(second, 503, "publish_nacked").await;
    assert_eq!(amqp.count(&queue).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn probes_answer() {
    let gateway = ready_gateway().await;
    let health = gateway
        .http
        .get(gateway.url("/healthz"))
        .send()
        .await
        .expect("answers");
    assert_eq!(json(health, 200).await["status"], "ok");
    let ready = gateway
        .http
        .get(gateway.url("/readyz"))
        .send()
        .await
        .expect("answers");
    assert_eq!(json(ready, 200).await["status"], "ok");
    gateway.stop().await;
}
