//! Batch mode, and the exactness of `routed` under concurrency.

use std::sync::Arc;

use futures_util::future::join_all;
use lapin::ExchangeKind;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};
use serde_json::json;

use crate::support::{Amqp, json, problem, ready_gateway};

#[tokio::test(flavor = "multi_thread")]
async fn batch_publishes_in_order_with_properties_and_typed_headers() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let exchange = amqp.exchange(ExchangeKind::Topic).await;
    let queue = amqp.queue_bound(&exchange, &["*.stock.#"]).await;

    let batch = json!({"messages": [
        {"routing_key": "usd.stock", "body": {"px": 1.5},
         "properties": {"delivery_mode": 1, "priority": 5, "correlation_id": "c1",
                        "headers": {"x-trace": "abc", "n": 42, "big": 9007199254740993i64,
                                    "f": 2.5, "ok": true, "none": null,
                                    "list": [1, "two"], "table": {"k": -1}}}},
        {"routing_key": "nowhere", "body": "aGVsbG8=", "body_encoding": "base64"},
        {"routing_key": "eur.stock.db", "body": "héllo", "body_encoding": "utf8"},
    ]});
    let answer = json(gateway.publish_batch(&exchange, &batch).await, 200).await;
    assert_eq!(
        answer,
        json!({"results": [
            {"routed": true},
            {"routed": false, "reply_code": 312, "reply_text": "NO_ROUTE"},
            {"routed": true},
        ]})
    );

    let first = amqp.get(&queue).await.expect("first message");
    let delivery = &first.delivery;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&delivery.data).expect("JSON"),
        json!({"px": 1.5})
    );
    let props = &delivery.properties;
    assert_eq!(
        props.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    assert_eq!(props.delivery_mode(), &Some(1));
    assert_eq!(props.priority(), &Some(5));
    assert_eq!(
        props.correlation_id().as_ref().map(|s| s.as_str()),
        Some("c1")
    );
    let headers = props.headers().as_ref().expect("headers").inner();
    assert_eq!(
        headers.get("x-trace"),
        Some(&AMQPValue::LongString(LongString::from("abc")))
    );
    assert_eq!(headers.get("n"), Some(&AMQPValue::LongLongInt(42)));
    assert_eq!(
        headers.get("big"),
        Some(&AMQPValue::LongLongInt(9_007_199_254_740_993))
    );
    assert_eq!(headers.get("f"), Some(&AMQPValue::Double(2.5)));
    assert_eq!(headers.get("ok"), Some(&AMQPValue::Boolean(true)));
    assert_eq!(headers.get("none"), Some(&AMQPValue::Void));
    let mut list = FieldArray::default();
    list.push(AMQPValue::LongLongInt(1));
    list.push(AMQPValue::LongString("two".into()));
    assert_eq!(headers.get("list"), Some(&AMQPValue::FieldArray(list)));
    let mut table = FieldTable::default();
    table.insert("k".into(), AMQPValue::LongLongInt(-1));
    assert_eq!(headers.get("table"), Some(&AMQPValue::FieldTable(table)));

    let third = amqp.get(&queue).await.expect("third message");
    assert_eq!(third.delivery.data, "héllo".as_bytes());
    assert_eq!(
        third
            .delivery
            .properties
            .content_type()
            .as_ref()
            .map(|s| s.as_str()),
        Some("text/plain")
    );
    assert!(amqp.get(&queue).await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_message_publishes_nothing_of_its_batch() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;

    let bad_batches = [
        json!({"messages": [{"routing_key": queue, "body": 1},
                            {"routing_key": queue, "body": 2, "properties": {"priority": 256}}]}),
        json!({"messages": [{"routing_key": queue, "body": 1},
                            {"routing_key": queue, "body": "%%", "body_encoding": "base64"}]}),
        json!({"messages": [{"routing_key": queue, "body": 1},
                            {"routing_key": queue, "body": 2, "properties": {"expiration": "soon"}}]}),
        json!({"messages": [{"routing_key": queue, "body": 1},
                            {"routing_key": "k".repeat(256), "body": 2}]}),
        json!({"messages": [{"routing_key": queue, "body": 1, "colour": "red"}]}),
        json!({"messages": []}),
    ];
    for batch in bad_batches {
        let body = problem(
            gateway.publish_batch("amq.default", &batch).await,
            400,
            "invalid_request",
        )
        .await;
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("messages")),
            "{body}"
        );
    }
    let pickle = json!({"messages": [{"routing_key": queue, "body": 1},
                                     {"routing_key": queue, "body": 2, "serializer": "pickle"}]});
    problem(
        gateway.publish_batch("amq.default", &pickle).await,
        415,
        "unsupported_serializer",
    )
    .await;
    assert_eq!(
        amqp.count(&queue).await,
        0,
        "nothing of an invalid batch was published"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_to_a_missing_exchange_is_404() {
    let gateway = ready_gateway().await;
    let batch = json!({"messages": [{"body": 1}, {"body": 2}]});
    let missing = crate::support::unique("missing");
    problem(
        gateway.publish_batch(&missing, &batch).await,
        404,
        "exchange_not_found",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_reports_a_nack_in_that_message_only() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(2));
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    let queue = amqp.queue_with("amq.direct", &[], arguments).await;

    let batch = json!({"mandatory": true, "messages": [
        {"routing_key": queue, "body": 1}, {"routing_key": queue, "body": 2},
        {"routing_key": queue, "body": 3}, {"routing_key": "nobody", "body": 4}]});
    let answer = json(gateway.publish_batch("amq.default", &batch).await, 200).await;
    let results = answer["results"].as_array().expect("results");
    assert_eq!(results[0], json!({"routed": true}));
    assert_eq!(results[1], json!({"routed": true}));
    assert_eq!(results[2]["code"], "publish_nacked");
    assert_eq!(results[2]["status"], 503);
    assert_eq!(results[3]["code"], "unroutable");
    assert_eq!(results[3]["status"], 422);
    assert_eq!(results[3]["reply_code"], 312);
    assert_eq!(amqp.count(&queue).await, 2);
}

/// lapin pairs returns with the wrong confirms when publishes share a channel; the gateway must
/// still tell every client exactly whether its own message was routed.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_mandatory_publishes_get_exactly_their_own_routed_answer() {
    let gateway = Arc::new(ready_gateway().await);
    let amqp = Amqp::connect().await;
    let exchange = amqp.exchange(ExchangeKind::Direct).await;
    let queue = amqp.queue_bound(&exchange, &["in"]).await;

    // Every fifth message is unroutable; identical bodies would hide a mix-up, so each is unique.
    let expected = |i: usize| !i.is_multiple_of(5);
    let key = |i: usize| if expected(i) { "in" } else { "out" };
    let singles = join_all((0..400).map(|i| {
        let (gateway, exchange) = (gateway.clone(), exchange.clone());
        async move {
            let answer = gateway
                .publish(
                    &exchange,
                    &format!("routing_key={}&message_id=s{i}", key(i)),
                    None,
                    format!("s{i}"),
                )
                .await;
            (i, json(answer, 200).await["routed"].as_bool())
        }
    }));
    let batches = join_all((0..8).map(|b| {
        let (gateway, exchange) = (gateway.clone(), exchange.clone());
        async move {
            let messages: Vec<_> = (0..200)
                .map(|i| json!({"routing_key": key(i), "body": format!("b{b}-{i}")}))
                .collect();
            let answer = json(
                gateway
                    .publish_batch(&exchange, &json!({"messages": messages}))
                    .await,
                200,
            )
            .await;
            (b, answer)
        }
    }));
    let (singles, batches) = tokio::join!(singles, batches);

    for (i, routed) in singles {
        assert_eq!(routed, Some(expected(i)), "single message {i}");
    }
    for (b, answer) in batches {
        let results = answer["results"].as_array().expect("results");
        assert_eq!(results.len(), 200);
        for (i, result) in results.iter().enumerate() {
            assert_eq!(
                result["routed"].as_bool(),
                Some(expected(i)),
                "batch {b} message {i}"
            );
        }
    }
    assert_eq!(amqp.count(&queue).await, 400 * 4 / 5 + 8 * 200 * 4 / 5);
}
