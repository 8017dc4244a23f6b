//! Busy queues are served from a prefetch window: every message still reaches exactly one
//! reader, leases keep their rules, and the window gives back what it holds once idle.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lapin::options::QueueDeleteOptions;
use serde_json::Value;
use tokio::time::Instant;

use crate::support::{Amqp, DEADLINE, Gateway, json, problem, ready_gateway};

const CLIENTS: usize = 64;

async fn queue_with(amqp: &Amqp, messages: usize) -> String {
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    for n in 0..messages {
        amqp.send_text(&queue, &n.to_string()).await;
    }
    queue
}

/// `CLIENTS` readers take from `queue` until it answers 204; returns every message taken.
async fn drain(gateway: &Arc<Gateway>, queue: &str, query: &str, ack: bool) -> Vec<Value> {
    let readers = (0..CLIENTS).map(|_| {
        let (gateway, path) = (gateway.clone(), format!("/queues/{queue}/next?{query}"));
        let queue = queue.to_owned();
        tokio::spawn(async move {
            let mut taken = Vec::new();
            loop {
                let answer = gateway.get(&path).await;
                if answer.status() == 204 {
                    return taken;
                }
                let message = json(answer, 200).await;
                if ack {
                    let receipt = message["receipt"].as_str().expect("a receipt");
                    let acked = gateway
                        .post(&format!("/queues/{queue}/messages/{receipt}/ack"))
                        .await;
                    assert_eq!(acked.status(), 204, "ack of {message}");
                }
                taken.push(message);
            }
        })
    });
    let mut all = Vec::new();
    for reader in futures_util::future::join_all(readers).await {
        all.extend(reader.expect("reader task"));
    }
    all
}

/// Runs `work` while watching `queue`'s consumers; whether one (the window) was ever seen.
async fn window_seen<T>(amqp: &Amqp, queue: &str, work: impl Future<Output = T>) -> (T, bool) {
    let done = AtomicBool::new(false);
    let watch = async {
        let mut seen = false;
        while !done.load(Ordering::Acquire) && !seen {
            seen = amqp.counts(queue).await.1 > 0;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen
    };
    let work = async {
        let output = work.await;
        done.store(true, Ordering::Release);
        output
    };
    tokio::join!(work, watch)
}

/// Readers lease from `queue` until its window is seen, then take two more each from it and
/// stop, holding what they took.
async fn lease_until_window(
    gateway: &Arc<Gateway>,
    amqp: &Amqp,
    queue: &str,
    lease: u64,
) -> Vec<Value> {
    let seen = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..CLIENTS / 4)
        .map(|_| {
            let (gateway, path) = (
                gateway.clone(),
                format!("/queues/{queue}/next?lease={lease}"),
            );
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut taken = Vec::new();
                while !seen.load(Ordering::Acquire) && taken.len() < 20 {
                    taken.push(json(gateway.get(&path).await, 200).await);
                }
                for _ in 0..2 {
                    taken.push(json(gateway.get(&path).await, 200).await);
                }
                taken
            })
        })
        .collect();
    let until = Instant::now() + DEADLINE;
    while amqp.counts(queue).await.1 == 0 {
        assert!(Instant::now() < until, "no window consumed the busy queue");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    seen.store(true, Ordering::Release);
    let mut taken = Vec::new();
    for reader in readers {
        taken.extend(reader.await.expect("reader task"));
    }
    taken
}

/// Every body, checked to be there once each.
fn exactly_once(taken: &[Value], messages: usize) {
    let mut bodies = HashSet::new();
    for message in taken {
        let body = message["body"].as_str().expect("a text body").to_owned();
        assert!(bodies.insert(body), "{message} was handed out twice");
    }
    let expected: HashSet<String> = (0..messages).map(|n| n.to_string()).collect();
    assert_eq!(bodies, expected, "every message, once");
}

/// Waits until `queue` holds `ready` messages and no consumer: the window is gone.
async fn wait_returned(amqp: &Amqp, queue: &str, ready: u32) {
    let until = Instant::now() + DEADLINE;
    loop {
        let counts = amqp.counts(queue).await;
        if counts == (ready, 0) {
            return;
        }
        assert!(
            Instant::now() < until,
            "queue {queue} holds {counts:?} (ready, consumers), never ({ready}, 0)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_auto_readers_get_every_message_once_from_the_window() {
    let gateway = Arc::new(ready_gateway().await);
    let amqp = Amqp::connect().await;
    let queue = queue_with(&amqp, 3000).await;

    let (taken, seen) =
        window_seen(&amqp, &queue, drain(&gateway, &queue, "ack=auto", false)).await;
    assert!(seen, "no window consumed the busy queue");
    exactly_once(&taken, 3000);
    for message in &taken {
        assert!(message.get("receipt").is_none(), "auto has no receipt");
    }
    wait_returned(&amqp, &queue, 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_leases_acked_take_every_message_once_from_the_window() {
    let gateway = Arc::new(ready_gateway().await);
    let amqp = Amqp::connect().await;
    let queue = queue_with(&amqp, 2000).await;

    let (taken, seen) = window_seen(&amqp, &queue, drain(&gateway, &queue, "lease=60", true)).await;
    assert!(seen, "no window consumed the busy queue");
    exactly_once(&taken, 2000);
    wait_returned(&amqp, &queue, 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_window_gives_back_what_it_holds_and_its_leases_stay_valid() {
    let gateway = Arc::new(ready_gateway().await);
    let amqp = Amqp::connect().await;
    let queue = queue_with(&amqp, 500).await;

    let receipts: Vec<String> = lease_until_window(&gateway, &amqp, &queue, 60)
        .await
        .iter()
        .map(|message| message["receipt"].as_str().expect("receipt").to_owned())
        .collect();
    let leased = receipts.len() as u32;

    wait_returned(&amqp, &queue, 500 - leased).await;
    for receipt in &receipts {
        let acked = gateway
            .post(&format!("/queues/{queue}/messages/{receipt}/ack"))
            .await;
        assert_eq!(acked.status(), 204, "a lease outlives its window");
    }
    let remaining = amqp.drain(&queue).await;
    assert_eq!(remaining.len() as u32, 500 - leased);
}

#[tokio::test(flavor = "multi_thread")]
async fn leases_from_the_window_expire_back_into_the_queue() {
    let gateway = Arc::new(ready_gateway().await);
    let amqp = Amqp::connect().await;
    let queue = queue_with(&amqp, 500).await;

    let taken = lease_until_window(&gateway, &amqp, &queue, 2).await;
    let bodies: HashSet<&str> = taken
        .iter()
        .map(|message| message["body"].as_str().expect("a text body"))
        .collect();
    assert_eq!(bodies.len(), taken.len(), "a message was handed out twice");
    // Nothing acked: every lease ends, the idle window returns the rest, all are back.
    wait_returned(&amqp, &queue, 500).await;
    let back = amqp.drain(&queue).await;
    assert_eq!(back.len(), 500);
    let redelivered = back
        .iter()
        .filter(|message| message.delivery.redelivered)
        .count();
    assert!(redelivered >= taken.len(), "{redelivered} redelivered");
    let receipt = taken[0]["receipt"].as_str().expect("receipt");
    let late = gateway
        .post(&format!("/queues/{queue}/messages/{receipt}/ack"))
        .await;
    problem(late, 404, "receipt_not_found").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queue_deleted_under_its_window_answers_not_found() {
    let gateway = Arc::new(ready_gateway().await);
    let amqp = Amqp::connect().await;
    let queue = queue_with(&amqp, 2000).await;

    // Readers keep the window busy while the queue goes.
    let readers = (0..CLIENTS / 4).map(|_| {
        let (gateway, path) = (gateway.clone(), format!("/queues/{queue}/next?ack=auto"));
        tokio::spawn(async move {
            loop {
                let answer = gateway.get(&path).await;
                match answer.status().as_u16() {
                    200 => continue,
                    status => return (status, answer.text().await.unwrap_or_default()),
                }
            }
        })
    });
    let readers: Vec<_> = readers.collect();
    let until = Instant::now() + DEADLINE;
    while amqp.counts(&queue).await.1 == 0 {
        assert!(Instant::now() < until, "no window consumed the busy queue");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    amqp.channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete the queue");

    for reader in readers {
        let (status, body) = tokio::time::timeout(DEADLINE, reader)
            .await
            .expect("readers stop in time")
            .expect("reader task");
        assert!(
            status == 404 || status == 204,
            "a deleted queue answers 404 (or 204 for the get the delete crossed): {status} {body}"
        );
    }
    problem(
        gateway.get(&format!("/queues/{queue}/next?ack=auto")).await,
        404,
        "queue_not_found",
    )
    .await;
}
