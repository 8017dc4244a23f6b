//! Stream queues read by offset: pages from an offset or a time, named readers that go on where
//! they left off, event streams that resume with Last-Event-ID, and the stream-only refusals.
//! Messages are published with an independent AMQP client.

use std::time::{Duration, SystemTime};

use lapin::BasicProperties;
use serde_json::{Value, json};

use crate::streams::EventReader;
use crate::support::{Amqp, Gateway, connection_ids, json, problem, ready_gateway, unique};

/// Declares `queue` as a stream through the gateway, which answers 201 (created).
async fn declare_stream(gateway: &Gateway, queue: &str) {
    let declared = gateway
        .http
        .put(gateway.url(&format!("/queues/{queue}")))
        .json(&json!({"durable": true, "arguments": {"x-queue-type": "stream"}}))
        .send()
        .await
        .expect("answers");
    json(declared, 201).await;
}

/// A stream queue declared through the gateway, holding `count` messages `0`..`count`.
async fn stream_with(gateway: &Gateway, amqp: &Amqp, count: usize) -> String {
    let queue = unique("stream");
    declare_stream(gateway, &queue).await;
    for i in 0..count {
        let properties = BasicProperties::default()
            .with_message_id(i.to_string().into())
            .with_content_type("application/json".into());
        amqp.send(&queue, i.to_string().as_bytes(), properties)
            .await;
    }
    queue
}

async fn page(gateway: &Gateway, queue: &str, query: &str) -> Vec<Value> {
    let answer = gateway
        .http
        .get(gateway.url(&format!("/queues/{queue}/messages?{query}")))
        .send()
        .await
        .expect("answers");
    json(answer, 200).await["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn bodies(messages: &[Value]) -> Vec<i64> {
    messages.iter().filter_map(|m| m["body"].as_i64()).collect()
}

fn offsets(messages: &[Value]) -> Vec<u64> {
    messages
        .iter()
        .filter_map(|m| m["offset"].as_u64())
        .collect()
}

async fn delete(gateway: &Gateway, queue: &str) {
    let _ = gateway
        .http
        .delete(gateway.url(&format!("/queues/{queue}")))
        .send()
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_go_on_from_the_last_offset_plus_one() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let before = connection_ids(&gateway).await;
    let queue = stream_with(&gateway, &amqp, 10).await;

    let first = page(&gateway, &queue, "offset=first&limit=4").await;
    assert_eq!(bodies(&first), [0, 1, 2, 3]);
    let seen = offsets(&first);
    assert_eq!(seen.len(), 4);
    assert!(
        seen.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "{seen:?}"
    );
    assert_eq!(first[0]["queue"], queue.as_str());
    assert!(first[0].get("receipt").is_none(), "nothing to settle");

    let next = seen[3] + 1;
    let rest = page(&gateway, &queue, &format!("offset={next}&limit=100")).await;
    assert_eq!(bodies(&rest), [4, 5, 6, 7, 8, 9]);
    // A stream keeps what it delivered: the same page reads again.
    let again = page(&gateway, &queue, "offset=first&limit=4").await;
    assert_eq!(offsets(&again), seen);
    // Nothing new since: an empty page after its short wait.
    assert!(page(&gateway, &queue, "offset=next").await.is_empty());

    // Reading ends its consumers cleanly: no connection was lost on the way.
    assert_eq!(connection_ids(&gateway).await, before);
    delete(&gateway, &queue).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_time_offset_starts_at_the_first_message_stored_since() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = stream_with(&gateway, &amqp, 3).await;
    let earlier = humantime::format_rfc3339_seconds(SystemTime::now() - Duration::from_secs(3600));
    let later = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(3600));
    assert_eq!(
        bodies(&page(&gateway, &queue, &format!("offset={earlier}")).await),
        [0, 1, 2]
    );
    assert!(
        page(&gateway, &queue, &format!("offset={later}"))
            .await
            .is_empty()
    );
    delete(&gateway, &queue).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_named_consumer_goes_on_where_it_left_off_on_any_gateway() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = stream_with(&gateway, &amqp, 7).await;

    let first = page(&gateway, &queue, "consumer=billing&offset=first&limit=3").await;
    assert_eq!(bodies(&first), [0, 1, 2]);
    let second = page(&gateway, &queue, "consumer=billing&limit=3").await;
    assert_eq!(bodies(&second), [3, 4, 5]);

    // The offset lives on the broker: another gateway goes on from it.
    let other = ready_gateway().await;
    assert_eq!(bodies(&page(&other, &queue, "consumer=billing").await), [6]);
    assert!(page(&other, &queue, "consumer=billing").await.is_empty());
    // Another name has a place of its own; a new one starts at the stream's first message.
    assert_eq!(
        bodies(&page(&gateway, &queue, "consumer=audit&limit=100").await),
        [0, 1, 2, 3, 4, 5, 6]
    );
    let properties = BasicProperties::default().with_content_type("application/json".into());
    amqp.send(&queue, b"7", properties).await;
    assert_eq!(
        bodies(&page(&gateway, &queue, "consumer=audit&wait=5").await),
        [7]
    );
    assert_eq!(
        bodies(&page(&gateway, &queue, "consumer=billing&wait=5").await),
        [7]
    );
    delete(&gateway, &queue).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_named_consumer_starts_over_on_a_stream_declared_again() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = stream_with(&gateway, &amqp, 4).await;
    assert_eq!(
        bodies(&page(&gateway, &queue, "consumer=replay").await),
        [0, 1, 2, 3]
    );
    // Caught up: an empty page, the stored place kept.
    assert!(page(&gateway, &queue, "consumer=replay").await.is_empty());

    delete(&gateway, &queue).await;
    declare_stream(&gateway, &queue).await;
    // Empty and declared again: the old place means nothing, and is forgotten.
    assert!(page(&gateway, &queue, "consumer=replay").await.is_empty());
    for i in 0..2 {
        let properties = BasicProperties::default().with_content_type("application/json".into());
        amqp.send(&queue, format!("{}", 10 + i).as_bytes(), properties)
            .await;
    }
    assert_eq!(
        bodies(&page(&gateway, &queue, "consumer=replay").await),
        [10, 11]
    );
    assert!(page(&gateway, &queue, "consumer=replay").await.is_empty());
    delete(&gateway, &queue).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events_carry_their_offset_as_id_and_resume_after_last_event_id() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = stream_with(&gateway, &amqp, 5).await;

    let mut events =
        EventReader::open(&gateway, &format!("/queues/{queue}/stream?offset=first")).await;
    let mut last_id = String::new();
    for expected in 0..3 {
        let event = loop {
            let event = events.next().await;
            if !event.comment {
                break event;
            }
        };
        let message: Value = serde_json::from_str(&event.data).expect("JSON");
        assert_eq!(message["body"], expected);
        let id = event.id.expect("an id");
        assert_eq!(id, message["offset"].to_string());
        last_id = id;
    }
    drop(events);

    let mut resumed = EventReader::open_with(
        &gateway,
        &format!("/queues/{queue}/stream"),
        &[("last-event-id", &last_id)],
    )
    .await;
    assert_eq!(resumed.message().await["body"], 3);
    assert_eq!(resumed.message().await["body"], 4);
    drop(resumed);
    delete(&gateway, &queue).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_only_rules_are_refused_with_what_to_do() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let stream = stream_with(&gateway, &amqp, 1).await;
    let base = format!("/queues/{stream}/messages");
    let get = |query: String| {
        gateway
            .http
            .get(gateway.url(&format!("{base}?{query}")))
            .send()
    };

    for query in [
        "offset=first&ack=lease",
        "offset=first&lease=30",
        "consumer=a&ack=lease",
    ] {
        let refused = problem(
            get(query.into()).await.expect("answers"),
            400,
            "invalid_request",
        )
        .await;
        assert!(
            refused["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("not leased"),
            "{refused}"
        );
    }
    for query in ["offset=yesterday", "offset=-1", "consumer=a%20b"] {
        problem(
            get(query.into()).await.expect("answers"),
            400,
            "invalid_request",
        )
        .await;
    }
    let refused = gateway
        .http
        .get(gateway.url(&format!("/queues/{stream}/stream?offset=first&ack=lease")))
        .send()
        .await
        .expect("answers");
    problem(refused, 400, "invalid_request").await;

    // Once read as a stream, a take without an offset is refused before it reaches the broker.
    assert_eq!(page(&gateway, &stream, "offset=first").await.len(), 1);
    let before = connection_ids(&gateway).await;
    let refused = problem(
        get("ack=auto".into()).await.expect("answers"),
        400,
        "invalid_request",
    )
    .await;
    assert!(
        refused["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("offset=first"),
        "{refused}"
    );
    assert_eq!(connection_ids(&gateway).await, before);
    delete(&gateway, &stream).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn offsets_on_a_queue_that_is_not_a_stream_are_refused_and_leave_it_whole() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    amqp.send_text(&queue, "stays").await;

    let refused = gateway
        .http
        .get(gateway.url(&format!("/queues/{queue}/messages?offset=first")))
        .send()
        .await
        .expect("answers");
    let refused = problem(refused, 400, "invalid_request").await;
    assert!(
        refused["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("not a stream"),
        "{refused}"
    );
    let stays = tokio::time::timeout(crate::support::DEADLINE, async {
        loop {
            if let Some(message) = amqp.get(&queue).await {
                return message;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the message is back in time");
    assert_eq!(stays.data, b"stays");
}
