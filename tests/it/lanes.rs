//! Single-message publishes coalesce on shared channels; each client still gets its own answer.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use futures_util::future::join_all;
use lapin::ExchangeKind;
use lapin::options::ExchangeDeleteOptions;
use lapin::types::{AMQPValue, FieldTable};

use crate::support::{Amqp, Gateway, connections, json, ready_gateway};

const CLIENTS: usize = 64;

/// Every body read back from `queue`, as text.
async fn bodies(amqp: &Amqp, queue: &str) -> Vec<String> {
    amqp.drain(queue)
        .await
        .into_iter()
        .map(|message| String::from_utf8_lossy(&message.delivery.data).into_owned())
        .collect()
}

/// Channels the gateway opened over its whole life, summed over its connections.
async fn channels_opened(gateway: &Gateway) -> u64 {
    connections(gateway)
        .await
        .iter()
        .filter_map(|connection| connection["channels_opened"].as_u64())
        .sum()
}

/// Publishes `total` messages from `CLIENTS` concurrent clients; `key` and the body are the
/// message's number. Returns each number with its status and answer body.
async fn publish_all(
    gateway: &Arc<Gateway>,
    exchange: &str,
    total: usize,
    key: impl Fn(usize) -> String + Send + Sync + 'static,
) -> Vec<(usize, u16, serde_json::Value)> {
    let key = Arc::new(key);
    let clients = (0..CLIENTS).map(|client| {
        let (gateway, exchange, key) = (gateway.clone(), exchange.to_owned(), key.clone());
        async move {
            let mut answers = Vec::new();
            for n in (client..total).step_by(CLIENTS) {
                let answer = gateway
                    .publish(
                        &exchange,
                        &format!("routing_key={}", key(n)),
                        None,
                        n.to_string(),
                    )
                    .await;
                let status = answer.status().as_u16();
                let body = answer.json().await.unwrap_or_default();
                answers.push((n, status, body));
            }
            answers
        }
    });
    join_all(clients).await.into_iter().flatten().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn routed_is_exact_for_ten_thousand_mixed_publishes_on_shared_channels() {
    let gateway = Arc::new(ready_gateway().await);
    let amqp = Amqp::connect().await;
    let exchange = amqp.exchange(ExchangeKind::Direct).await;
    let queue = amqp.queue_bound(&exchange, &["in"]).await;
    // The gateway shares channels for exchanges that took a publish; a burst of first
    // publishes to a new one each takes a channel of its own.
    let warm = gateway
        .publish(&exchange, "routing_key=out", None, "warm-up")
        .await;
    assert_eq!(json(warm, 200).await["routed"], false);
    let opened_before = channels_opened(&gateway).await;
    // Unroutable in an irregular pattern, so runs of both kinds share confirm batches.
    let unroutable = |n: usize| n % 7 == 3 || n % 11 == 5;
    let answers = publish_all(&gateway, &exchange, 10_000, move |n| {
        if unroutable(n) { "out" } else { "in" }.to_owned()
    })
    .await;

    let mut said_routed = BTreeSet::new();
    for (n, status, body) in &answers {
        assert_eq!(*status, 200, "message {n}: {body}");
        let routed = body["routed"].as_bool().expect("routed is said");
        assert_eq!(routed, !unroutable(*n), "message {n}");
        if routed {
            said_routed.insert(n.to_string());
        }
    }
    let arrived: BTreeSet<String> = bodies(&amqp, &queue).await.into_iter().collect();
    assert_eq!(
        arrived, said_routed,
        "the queue holds exactly the messages said routed"
    );
    // Shared channels: nowhere near one per client.
    let opened = channels_opened(&gateway).await - opened_before;
    assert!(
        opened < CLIENTS as u64 / 4,
        "{opened} channels for {CLIENTS} clients"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nack_among_confirms_fails_only_its_own_message() {
    let gateway = Arc::new(ready_gateway().await);
    let amqp = Amqp::connect().await;
    let exchange = amqp.exchange(ExchangeKind::Direct).await;
    let open = amqp.queue_bound(&exchange, &["open"]).await;
    let mut full = FieldTable::default();
    full.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
    full.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    let _full = amqp.queue_with(&exchange, &["full"], full).await;
    let to_full = |n: usize| n % 5 == 2;
    let answers = publish_all(&gateway, &exchange, 2_000, move |n| {
        if to_full(n) { "full" } else { "open" }.to_owned()
    })
    .await;

    let mut taken = BTreeSet::new();
    for (n, status, body) in &answers {
        if to_full(*n) {
            assert_eq!(
                (*status, body["code"].as_str()),
                (503, Some("publish_nacked")),
                "message {n}: {body}"
            );
        } else {
            assert_eq!(*status, 200, "message {n}: {body}");
            assert_eq!(body["routed"], true, "message {n}");
            taken.insert(n.to_string());
        }
    }
    let arrived: BTreeSet<String> = bodies(&amqp, &open).await.into_iter().collect();
    assert_eq!(arrived, taken);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shared_channel_closed_under_publishes_fails_only_what_it_must() {
    let gateway = Arc::new(ready_gateway().await);
    let amqp = Amqp::connect().await;
    let doomed = amqp.exchange(ExchangeKind::Direct).await;
    let kept = amqp.exchange(ExchangeKind::Direct).await;
    let doomed_queue = amqp.queue_bound(&doomed, &["k"]).await;
    let kept_queue = amqp.queue_bound(&kept, &["k"]).await;

    let publishers = |exchange: &str, from: usize| {
        let gateway = gateway.clone();
        let exchange = exchange.to_owned();
        tokio::spawn(async move {
            let clients = (0..CLIENTS / 2).map(|client| {
                let (gateway, exchange) = (gateway.clone(), exchange.clone());
                async move {
                    let mut answers = Vec::new();
                    for i in 0..60 {
                        let n = from + client * 60 + i;
                        let answer = gateway
                            .publish(&exchange, "routing_key=k", None, n.to_string())
                            .await;
                        let status = answer.status().as_u16();
                        let body: serde_json::Value = answer.json().await.unwrap_or_default();
                        answers.push((n, status, body["code"].as_str().map(str::to_owned)));
                    }
                    answers
                }
            });
            join_all(clients)
                .await
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
        })
    };
    let doomed_answers = publishers(&doomed, 0);
    let kept_answers = publishers(&kept, 100_000);
    // Delete the exchange once publishing to it is under way, from outside the gateway.
    let deadline = tokio::time::Instant::now() + crate::support::DEADLINE;
    while amqp.count(&doomed_queue).await < 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "publishing never got going"
        );
        tokio::task::yield_now().await;
    }
    amqp.channel
        .exchange_delete(doomed.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .expect("delete the exchange");
    let doomed_answers = doomed_answers.await.expect("publishers finish");
    let kept_answers = kept_answers.await.expect("publishers finish");

    let stored: BTreeSet<String> = bodies(&amqp, &doomed_queue)
        .await
        .into_iter()
        .chain(bodies(&amqp, &kept_queue).await)
        .collect();
    let mut tally: HashMap<(u16, Option<String>), usize> = HashMap::new();
    for (n, status, code) in doomed_answers.iter().chain(&kept_answers) {
        let is_kept = *n >= 100_000;
        let present = stored.contains(&n.to_string());
        match (*status, code.as_deref()) {
            (200, _) => assert!(present, "message {n} answered 200 but is not stored"),
            // Not stored: a client may publish it again without making a duplicate.
            (503, _) => assert!(!present, "message {n} answered 503 but is stored"),
            (504, Some("confirm_lost")) => {}
            (404, Some("exchange_not_found")) => {
                assert!(!is_kept, "message {n} to a live exchange answered 404")
            }
            other => panic!("message {n}: unexpected {other:?}"),
        }
        *tally.entry((*status, code.clone())).or_default() += 1;
    }
    assert!(
        doomed_answers.iter().any(|(_, status, _)| *status == 404),
        "publishes after the delete get 404: {tally:?}"
    );
    // The channel that failed was replaced: the live exchange takes publishes as before.
    let answer = json(
        gateway.publish(&kept, "routing_key=k", None, "after").await,
        200,
    )
    .await;
    assert_eq!(answer["routed"], true, "{tally:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_lanes_every_publish_takes_a_channel_of_its_own() {
    let mut config = carrot_gateway::config::Config::default();
    config.broker.publish_lanes = 0;
    let gateway = Arc::new(Gateway::start_with(config).await);
    gateway.wait_ready(200).await;
    let amqp = Amqp::connect().await;
    let exchange = amqp.exchange(ExchangeKind::Direct).await;
    let queue = amqp.queue_bound(&exchange, &["in"]).await;
    let unroutable = |n: usize| n.is_multiple_of(3);
    let answers = publish_all(&gateway, &exchange, 640, move |n| {
        if unroutable(n) { "out" } else { "in" }.to_owned()
    })
    .await;
    for (n, status, body) in &answers {
        assert_eq!(*status, 200, "message {n}: {body}");
        assert_eq!(body["routed"], !unroutable(*n), "message {n}");
    }
    assert_eq!(
        amqp.count(&queue).await as usize,
        640 - 640usize.div_ceil(3)
    );
    // One channel per publish in flight, pooled: far more than the lanes would use.
    let opened = channels_opened(&gateway).await;
    assert!(
        opened >= CLIENTS as u64 / 2,
        "{opened} channels for {CLIENTS} clients"
    );
}
