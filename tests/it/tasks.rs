//! Celery tasks over HTTP: the message a worker receives is Celery's protocol 2, and a result sent
//! the way the rpc:// backend sends it becomes the task's state.

use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::AMQPValue;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::support::{Amqp, DEADLINE, Gateway, json, problem, ready_gateway};

impl Gateway {
    async fn send_task(&self, task: &str, call: Value) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/tasks/{task}")))
            .json(&call)
            .send()
            .await
            .expect("gateway answers")
    }
}

fn text(value: Option<&AMQPValue>) -> Option<String> {
    match value? {
        AMQPValue::LongString(text) => Some(text.to_string()),
        AMQPValue::ShortString(text) => Some(text.to_string()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_is_a_celery_protocol_2_message_and_its_rpc_result_is_its_state() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;

    let call = json!({"args": [1, 2], "kwargs": {"k": "v"}, "queue": queue,
                      "countdown": 30, "priority": 3});
    let answer = gateway.send_task("proj.tasks.add", call).await;
    assert_eq!(answer.status(), 202);
    let sent = json(answer, 202).await;
    let id = sent["id"].as_str().expect("an id").to_owned();
    assert_eq!(sent["state"], "PENDING");

    let message = amqp.get(&queue).await.expect("the task message");
    let properties = &message.delivery.properties;
    let headers = properties.headers().clone().expect("headers");
    let header = |name: &str| text(headers.inner().get(name));
    assert_eq!(header("task").as_deref(), Some("proj.tasks.add"));
    assert_eq!(header("id").as_deref(), Some(id.as_str()));
    assert_eq!(header("root_id").as_deref(), Some(id.as_str()));
    assert_eq!(header("lang").as_deref(), Some("py"));
    assert!(
        header("eta").is_some_and(|eta| eta.ends_with('Z')),
        "a countdown sets eta"
    );
    assert_eq!(
        properties
            .correlation_id()
            .as_ref()
            .map(ToString::to_string),
        Some(id.clone())
    );
    assert_eq!(
        properties.content_type().as_ref().map(ToString::to_string),
        Some("application/json".to_owned())
    );
    assert_eq!(*properties.priority(), Some(3));
    let reply_to = properties
        .reply_to()
        .as_ref()
        .map(ToString::to_string)
        .expect("reply_to");
    let body: Value = serde_json::from_slice(&message.delivery.data).expect("a JSON body");
    assert_eq!(body[0], json!([1, 2]));
    assert_eq!(body[1], json!({"k": "v"}));
    assert_eq!(
        body[2],
        json!({"callbacks": null, "errbacks": null, "chain": null, "chord": null})
    );

    // What a worker with the rpc:// backend sends back.
    let result = json!({"task_id": id, "status": "SUCCESS", "result": 3, "traceback": null,
                        "children": [], "date_done": "2026-12-04T10:00:00.000000+00:00"});
    amqp.channel
        .basic_publish(
            "".into(),
            reply_to.as_str().into(),
            BasicPublishOptions::default(),
            result.to_string().as_bytes(),
            BasicProperties::default()
                .with_content_type("application/json".into())
                .with_correlation_id(id.as_str().into()),
        )
        .await
        .expect("publish the result");
    let until = Instant::now() + DEADLINE;
    let state = loop {
        let state = json(gateway.get(&format!("/tasks/{id}")).await, 200).await;
        if state["state"] != "PENDING" {
            break state;
        }
        assert!(Instant::now() < until, "the result never became the state");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        state,
        json!({"id": id, "state": "SUCCESS", "result": 3, "traceback": null,
               "date_done": "2026-12-04T10:00:00.000000+00:00", "queue": queue})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_task_calls_say_what_to_fix() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;

    let long_name = "t".repeat(256);
    for (task, call, says) in [
        (
            "t",
            json!({"queue": queue, "countdown": 1, "eta": "2026-12-04T10:00:00Z"}),
            "not both",
        ),
        ("t", json!({"queue": queue, "eta": "tomorrow"}), "RFC 3339"),
        ("t", json!({"queue": queue, "expires": "soon"}), "RFC 3339"),
        (
            "t",
            json!({"queue": queue, "expires": [1]}),
            "seconds from now",
        ),
        (
            "t",
            json!({"queue": queue, "countdown": -1}),
            "seconds from 0",
        ),
        ("t", json!({"queue": queue, "args": {"x": 1}}), "args"),
        ("t", json!({"queue": queue, "retries": 3}), "retries"),
        (
            long_name.as_str(),
            json!({"queue": queue}),
            "1 to 255 bytes",
        ),
    ] {
        let refused = problem(
            gateway.send_task(task, call.clone()).await,
            400,
            "invalid_request",
        )
        .await;
        let detail = refused["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(says), "{call}: {detail}");
    }
    assert_eq!(amqp.count(&queue).await, 0, "nothing refused was sent");

    let nobody = gateway
        .send_task("t", json!({"queue": "test.no-such-queue"}))
        .await;
    problem(nobody, 422, "unroutable").await;
    problem(
        gateway.get("/tasks/never-sent").await,
        404,
        "task_not_found",
    )
    .await;
}
