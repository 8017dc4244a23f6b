//! Exchanges, queues and bindings over HTTP, and carrot's routing table, checked on the broker.

use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};

use crate::support::{Amqp, Gateway, json, problem, ready_gateway, unique};

impl Gateway {
    pub async fn put(&self, path: &str, body: Value) -> reqwest::Response {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = self.http.request(method, self.url(path));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        request.send().await.expect("gateway answers")
    }

    /// Declares a queue bound as given; the queue deletes itself once the test's broker
    /// connection is gone only if auto_delete, so tests delete what they declare.
    pub async fn queue(&self, bindings: Value) -> String {
        let name = unique("q");
        let answer = self
            .put(
                &format!("/queues/{name}"),
                json!({"durable": false, "auto_delete": false, "bindings": bindings}),
            )
            .await;
        json(answer, 201).await;
        name
    }

    pub async fn exchange(&self, kind: &str) -> String {
        let name = unique("x");
        let answer = self
            .put(
                &format!("/exchanges/{name}"),
                json!({"type": kind, "durable": false, "auto_delete": true}),
            )
            .await;
        json(answer, 201).await;
        name
    }
}

/// Passive declares on a connection of the test's own; a failed one closes its channel.
async fn exchange_exists(name: &str) -> bool {
    Amqp::connect()
        .await
        .channel
        .exchange_declare(
            name.into(),
            lapin::ExchangeKind::Direct,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .is_ok()
}

async fn queue_exists(name: &str) -> bool {
    Amqp::connect()
        .await
        .channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn exchange_lifecycle_and_conflicts() {
    let gateway = ready_gateway().await;
    let name = unique("x");
    let path = format!("/exchanges/{name}");

    let created = json(
        gateway
            .put(&path, json!({"type": "topic", "durable": false}))
            .await,
        201,
    )
    .await;
    assert_eq!(created["name"], name.as_str());
    assert_eq!(created["type"], "topic");
    assert!(exchange_exists(&name).await);
    json(
        gateway
            .put(&path, json!({"type": "topic", "durable": false}))
            .await,
        200,
    )
    .await;
    problem(
        gateway
            .put(&path, json!({"type": "fanout", "durable": false}))
            .await,
        409,
        "precondition_failed",
    )
    .await;
    problem(
        gateway
            .put(&path, json!({"type": "topic", "durable": true}))
            .await,
        409,
        "precondition_failed",
    )
    .await;
    // The conflict closed a pooled channel; the gateway goes on with fresh ones.
    json(
        gateway
            .http
            .get(gateway.url(&path))
            .send()
            .await
            .expect("answers"),
        200,
    )
    .await;

    assert_eq!(gateway.delete(&path).await.status(), 204);
    assert!(!exchange_exists(&name).await);
    problem(
        gateway
            .http
            .get(gateway.url(&path))
            .send()
            .await
            .expect("answers"),
        404,
        "exchange_not_found",
    )
    .await;
    problem(gateway.delete(&path).await, 404, "exchange_not_found").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exchange_inputs_are_checked_before_the_broker_sees_them() {
    let gateway = ready_gateway().await;
    let name = unique("x");
    let path = format!("/exchanges/{name}");
    problem(
        gateway.put(&path, json!({"type": "consistent hash"})).await,
        400,
        "invalid_request",
    )
    .await;
    problem(
        gateway
            .put(&path, json!({"type": "topic", "colour": 1}))
            .await,
        400,
        "invalid_request",
    )
    .await;
    // A plugin type the broker lacks: refused on a side connection, the gateway stays ready.
    problem(
        gateway
            .put(&path, json!({"type": "x-no-such-plugin"}))
            .await,
        400,
        "invalid_request",
    )
    .await;
    gateway.wait_ready(200).await;
    problem(
        gateway.put("/exchanges/amq.custom", json!({})).await,
        403,
        "forbidden",
    )
    .await;
    problem(
        gateway.delete("/exchanges/amq.direct").await,
        403,
        "forbidden",
    )
    .await;
    for builtin in ["amq.default", "amq.direct", "amq.topic"] {
        let answer = gateway
            .http
            .get(gateway.url(&format!("/exchanges/{builtin}")))
            .send()
            .await
            .expect("answers");
        json(answer, 200).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn if_unused_keeps_a_bound_exchange() {
    let gateway = ready_gateway().await;
    let exchange = gateway.exchange("direct").await;
    let queue = gateway
        .queue(json!([{"exchange": exchange, "routing_key": "k"}]))
        .await;
    problem(
        gateway
            .delete(&format!("/exchanges/{exchange}?if_unused=true"))
            .await,
        409,
        "precondition_failed",
    )
    .await;
    json(gateway.delete(&format!("/queues/{queue}")).await, 200).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_lifecycle_purge_and_delete_conditions() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let name = unique("q");
    let path = format!("/queues/{name}");
    let spec = json!({"durable": true, "arguments": {"x-message-ttl": 60000}});

    let created = json(gateway.put(&path, spec.clone()).await, 201).await;
    assert_eq!(
        created,
        json!({"name": name, "message_count": 0, "consumer_count": 0})
    );
    assert!(queue_exists(&name).await);
    json(gateway.put(&path, spec).await, 200).await;
    problem(
        gateway
            .put(
                &path,
                json!({"durable": true, "arguments": {"x-message-ttl": 1000}}),
            )
            .await,
        409,
        "precondition_failed",
    )
    .await;

    for i in 0..3 {
        let answer = gateway
            .publish(
                "amq.default",
                &format!("routing_key={name}"),
                None,
                format!("m{i}"),
            )
            .await;
        assert_eq!(json(answer, 200).await["routed"], true);
    }
    let info = json(
        gateway
            .http
            .get(gateway.url(&path))
            .send()
            .await
            .expect("answers"),
        200,
    )
    .await;
    assert_eq!(info["message_count"], 3);
    problem(
        gateway.delete(&format!("{path}?if_empty=true")).await,
        409,
        "precondition_failed",
    )
    .await;
    assert_eq!(
        amqp.count(&name).await,
        3,
        "a refused delete deletes nothing"
    );

    assert_eq!(
        json(gateway.delete(&format!("{path}/messages")).await, 200).await,
        json!({"discarded": 3})
    );
    assert_eq!(amqp.count(&name).await, 0);
    gateway
        .publish("amq.default", &format!("routing_key={name}"), None, "last")
        .await;
    assert_eq!(
        json(gateway.delete(&path).await, 200).await,
        json!({"message_count": 1})
    );
    assert!(!queue_exists(&name).await);

    problem(gateway.delete(&path).await, 404, "queue_not_found").await;
    problem(
        gateway.delete(&format!("{path}/messages")).await,
        404,
        "queue_not_found",
    )
    .await;
    problem(
        gateway
            .http
            .get(gateway.url(&path))
            .send()
            .await
            .expect("answers"),
        404,
        "queue_not_found",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_binding_to_a_missing_exchange_declares_nothing() {
    let gateway = ready_gateway().await;
    let name = unique("q");
    let answer = gateway
        .put(
            &format!("/queues/{name}"),
            json!({"bindings": [{"exchange": unique("missing"), "routing_key": "k"}]}),
        )
        .await;
    problem(answer, 404, "exchange_not_found").await;
    assert!(!queue_exists(&name).await, "the queue was not left behind");
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_arguments_keep_their_amqp_types() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let dlx = gateway.exchange("fanout").await;
    let dead = gateway.queue(json!([{"exchange": dlx}])).await;
    let name = unique("q");
    let answer = gateway
        .put(
            &format!("/queues/{name}"),
            json!({"durable": false, "arguments": {
            "x-max-priority": 9, "x-dead-letter-exchange": dlx, "x-max-length": 3,
            "x-overflow": "drop-head"}}),
        )
        .await;
    json(answer, 201).await;

    // The broker took x-max-priority as a number: higher priorities come out first.
    for priority in [1, 9, 5] {
        let answer = gateway
            .publish(
                "amq.default",
                &format!("routing_key={name}&priority={priority}"),
                None,
                priority.to_string(),
            )
            .await;
        assert_eq!(answer.status(), 200);
    }
    let order: Vec<String> = amqp
        .drain(&name)
        .await
        .iter()
        .map(|m| String::from_utf8_lossy(&m.delivery.data).into_owned())
        .collect();
    assert_eq!(order, ["9", "5", "1"]);

    // x-max-length 3 with drop-head dead-letters the oldest into the DLX.
    for i in 0..4 {
        gateway
            .publish(
                "amq.default",
                &format!("routing_key={name}"),
                None,
                format!("m{i}"),
            )
            .await;
    }
    assert_eq!(amqp.count(&name).await, 3);
    let dropped = amqp.get(&dead).await.expect("dead-lettered");
    assert_eq!(dropped.delivery.data, b"m0");

    problem(
        gateway
            .put(
                &format!("/queues/{}", unique("q")),
                json!({"arguments": {"x-max-priority": "high"}}),
            )
            .await,
        400,
        "invalid_request",
    )
    .await;
    for queue in [name, dead] {
        json(gateway.delete(&format!("/queues/{queue}")).await, 200).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn quorum_queue() {
    let gateway = ready_gateway().await;
    let name = unique("q");
    let path = format!("/queues/{name}");
    json(
        gateway
            .put(&path, json!({"arguments": {"x-queue-type": "quorum"}}))
            .await,
        201,
    )
    .await;
    json(
        gateway
            .put(&path, json!({"arguments": {"x-queue-type": "quorum"}}))
            .await,
        200,
    )
    .await;
    let answer = gateway
        .publish("amq.default", &format!("routing_key={name}"), None, "q")
        .await;
    assert_eq!(json(answer, 200).await["routed"], true);
    assert_eq!(
        json(gateway.delete(&path).await, 200).await["message_count"],
        1
    );
    // Quorum queues must be durable; the broker's refusal is a 400, not a 500.
    problem(
        gateway
            .put(
                &format!("/queues/{}", unique("q")),
                json!({"durable": false, "arguments": {"x-queue-type": "quorum"}}),
            )
            .await,
        400,
        "invalid_request",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reserved_and_bad_queue_requests() {
    let gateway = ready_gateway().await;
    problem(
        gateway.put("/queues/amq.mine", json!({})).await,
        403,
        "forbidden",
    )
    .await;
    problem(gateway.delete("/queues/amq.mine").await, 403, "forbidden").await;
    let name = unique("q");
    problem(
        gateway
            .put(&format!("/queues/{name}"), json!({"durable": "yes"}))
            .await,
        400,
        "invalid_request",
    )
    .await;
    problem(
        gateway
            .put(
                &format!("/queues/{name}"),
                json!({"bindings": [{"routing_key": "k"}]}),
            )
            .await,
        400,
        "invalid_request",
    )
    .await;
    let long = "q".repeat(256);
    problem(
        gateway.put(&format!("/queues/{long}"), json!({})).await,
        400,
        "invalid_request",
    )
    .await;
    problem(
        gateway
            .delete(&format!("/queues/{name}?if_empty=maybe"))
            .await,
        400,
        "invalid_request",
    )
    .await;
    problem(
        gateway
            .put(&format!("/queues/{name}"), json!({"exclusive": true}))
            .await,
        400,
        "invalid_request",
    )
    .await;
}

/// carrot's routing table: topic, direct, fanout and headers, through the gateway.
#[tokio::test(flavor = "multi_thread")]
async fn carrot_routing_semantics() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;

    let topic = gateway.exchange("topic").await;
    let stocks = gateway
        .queue(json!([{"exchange": topic, "routing_key": "*.stock.#"}]))
        .await;
    let direct = gateway.exchange("direct").await;
    let exact = gateway
        .queue(json!([{"exchange": direct, "routing_key": "usd.stock"}]))
        .await;
    let fanout = gateway.exchange("fanout").await;
    let fan_a = gateway
        .queue(json!([{"exchange": fanout, "routing_key": "ignored"}]))
        .await;
    let fan_b = gateway.queue(json!([{"exchange": fanout}])).await;
    let headers = gateway.exchange("headers").await;
    let all = gateway.queue(json!([{"exchange": headers, "arguments": {"x-match": "all", "format": "pdf", "type": "report"}}])).await;
    let any = unique("q");
    json(
        gateway
            .put(&format!("/queues/{any}"), json!({"durable": false}))
            .await,
        201,
    )
    .await;
    let bound = gateway
        .send(reqwest::Method::POST, &format!("/queues/{any}/bindings"),
              Some(json!({"exchange": headers, "arguments": {"x-match": "any", "format": "pdf", "type": "report"}})))
        .await;
    assert_eq!(json(bound, 201).await["queue"], any.as_str());

    for key in ["usd.stock", "eur.stock.db", "stock.nasdaq"] {
        gateway
            .publish(&topic, &format!("routing_key={key}"), None, key)
            .await;
        gateway
            .publish(&direct, &format!("routing_key={key}"), None, key)
            .await;
        gateway
            .publish(&fanout, &format!("routing_key={key}"), None, key)
            .await;
    }
    for (name, hdrs) in [
        ("both", json!({"format": "pdf", "type": "report"})),
        ("one", json!({"format": "pdf"})),
        ("none", json!({"format": "zip"})),
    ] {
        let batch = json!({"messages": [{"body": name, "body_encoding": "utf8", "properties": {"headers": hdrs}}]});
        json(gateway.publish_batch(&headers, &batch).await, 200).await;
    }

    let bodies = |queue: String| {
        let amqp = &amqp;
        async move {
            amqp.drain(&queue)
                .await
                .into_iter()
                .map(|m| String::from_utf8_lossy(&m.delivery.data).into_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(bodies(stocks.clone()).await, ["usd.stock", "eur.stock.db"]);
    assert_eq!(bodies(exact.clone()).await, ["usd.stock"]);
    assert_eq!(
        bodies(fan_a.clone()).await,
        ["usd.stock", "eur.stock.db", "stock.nasdaq"]
    );
    assert_eq!(
        bodies(fan_b.clone()).await,
        ["usd.stock", "eur.stock.db", "stock.nasdaq"]
    );
    assert_eq!(bodies(all.clone()).await, ["both"]);
    assert_eq!(bodies(any.clone()).await, ["both", "one"]);

    // Unbinding stops the routing (another binding keeps the auto-delete exchange alive).
    let keep = gateway
        .queue(json!([{"exchange": direct, "routing_key": "keep"}]))
        .await;
    let unbound = gateway
        .send(
            reqwest::Method::DELETE,
            &format!("/queues/{exact}/bindings"),
            Some(json!({"exchange": direct, "routing_key": "usd.stock"})),
        )
        .await;
    assert_eq!(unbound.status(), 204);
    let answer = gateway
        .publish(&direct, "routing_key=usd.stock", None, "x")
        .await;
    assert_eq!(json(answer, 200).await["routed"], false);

    for queue in [stocks, exact, fan_a, fan_b, all, any, keep] {
        json(gateway.delete(&format!("/queues/{queue}")).await, 200).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn binding_failures() {
    let gateway = ready_gateway().await;
    let queue = gateway.queue(json!([])).await;
    let bindings = format!("/queues/{queue}/bindings");
    let post = |body: Value| gateway.send(reqwest::Method::POST, &bindings, Some(body));
    problem(
        post(json!({"exchange": unique("missing")})).await,
        404,
        "exchange_not_found",
    )
    .await;
    problem(
        post(json!({"exchange": "amq.default", "routing_key": "k"})).await,
        403,
        "forbidden",
    )
    .await;
    problem(
        post(json!({"exchange": "amq.headers", "arguments": {"x-match": "most"}})).await,
        400,
        "invalid_request",
    )
    .await;
    problem(post(json!({})).await, 400, "invalid_request").await;
    let missing_queue = gateway
        .send(
            reqwest::Method::POST,
            &format!("/queues/{}/bindings", unique("q")),
            Some(json!({"exchange": "amq.direct"})),
        )
        .await;
    problem(missing_queue, 404, "queue_not_found").await;
    json(gateway.delete(&format!("/queues/{queue}")).await, 200).await;
}
