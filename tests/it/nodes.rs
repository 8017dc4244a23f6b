//! Several broker URLs: connections spread over the nodes, skip one that does not answer, and
//! move to another node when theirs is lost. The "nodes" are addresses of the one broker here:
//! a TCP relay of the test's own stands for a node that can die. A real cluster is exercised
//! by tests/cluster/run.

use std::collections::BTreeSet;
use std::time::Duration;

use carrot_gateway::config::{AmqpUrls, BrokerConfig, Config};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::outage::Vhost;
use crate::support::{Amqp, DEADLINE, Gateway, connections, unique};

fn node_of(url: &str) -> String {
    let authority = url.split('@').nth(1).unwrap_or(url);
    authority.split('/').next().unwrap_or(authority).to_owned()
}

async fn gateway_on(urls: Vec<String>, connections: usize) -> Gateway {
    let gateway = Gateway::start_with(Config {
        broker: BrokerConfig {
            amqp_url: AmqpUrls(urls),
            amqp_connections: connections,
            broker_timeout: Duration::from_secs(3),
            ..Default::default()
        },
        ..Config::default()
    })
    .await;
    gateway.wait_ready(200).await;
    gateway
}

/// The nodes `/readyz` says the gateway's connections are on, once it has `count` of them.
async fn nodes_when(gateway: &Gateway, count: usize, want: &BTreeSet<String>) -> BTreeSet<String> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let live = connections(gateway).await;
        let nodes: BTreeSet<String> = live
            .iter()
            .filter_map(|connection| connection["node"].as_str().map(str::to_owned))
            .collect();
        if (live.len() == count && &nodes == want) || tokio::time::Instant::now() > deadline {
            return nodes;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn publish_is_confirmed(gateway: &Gateway, queue: &str, id: &str) {
    let answer = gateway
        .publish(
            "amq.default",
            &format!("routing_key={queue}&message_id={id}"),
            None,
            id.to_owned(),
        )
        .await;
    let status = answer.status();
    assert_eq!(status, 200, "{}", answer.text().await.unwrap_or_default());
}

/// Forwards every connection made to its port to the broker, until it is cut.
struct Relay {
    port: u16,
    cut: CancellationToken,
}

impl Relay {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let cut = CancellationToken::new();
        let stop = cut.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut client, _)) = accepted else {
                    continue;
                };
                let stop = stop.clone();
                tokio::spawn(async move {
                    let Ok(mut broker) = TcpStream::connect("127.0.0.1:5672").await else {
                        return;
                    };
                    tokio::select! {
                        () = stop.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut broker) => {}
                    }
                });
            }
        });
        Self { port, cut }
    }

    fn url(&self, vhost: &str) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/{vhost}", self.port)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_are_spread_over_the_nodes_given() {
    let direct = "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned();
    let by_name = "amqp://guest:guest@localhost:5672/%2f".to_owned();
    let want: BTreeSet<String> = [node_of(&direct), node_of(&by_name)].into();
    let gateway = gateway_on(vec![direct, by_name], 2).await;
    assert_eq!(nodes_when(&gateway, 2, &want).await, want);

    let queue = Amqp::connect().await.queue_bound("amq.direct", &[]).await;
    publish_is_confirmed(&gateway, &queue, &unique("m")).await;
    // Metrics are one registry for the whole test process: only this test uses "localhost".
    let metrics = crate::support::metrics_text(&gateway.base).await;
    let series = "carrot_amqp_connections_by_node{node=\"localhost:5672\"} 1";
    assert!(
        metrics.contains(series),
        "{series} missing from:\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_does_not_answer_is_skipped() {
    // Port 1 refuses at once: nothing listens there.
    let dead = "amqp://guest:guest@127.0.0.1:1/%2f".to_owned();
    let alive = "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned();
    let want: BTreeSet<String> = [node_of(&alive)].into();
    let gateway = gateway_on(vec![dead, alive], 2).await;
    assert_eq!(nodes_when(&gateway, 2, &want).await, want);

    let queue = Amqp::connect().await.queue_bound("amq.direct", &[]).await;
    publish_is_confirmed(&gateway, &queue, &unique("m")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_on_a_lost_node_move_to_another() {
    let vhost = Vhost::create().await;
    let relay = Relay::start().await;
    let relayed = relay.url(&vhost.0);
    let direct = vhost.url();
    let gateway = gateway_on(vec![relayed.clone(), direct.clone()], 2).await;
    let both: BTreeSet<String> = [node_of(&relayed), node_of(&direct)].into();
    assert_eq!(nodes_when(&gateway, 2, &both).await, both);

    let amqp = Amqp::connect_to(&vhost.url()).await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    let mut sent = Vec::new();
    for i in 0..20 {
        let id = format!("before-{i}");
        publish_is_confirmed(&gateway, &queue, &id).await;
        sent.push(id);
    }

    relay.cut.cancel();
    let survivor: BTreeSet<String> = [node_of(&direct)].into();
    assert_eq!(
        nodes_when(&gateway, 2, &survivor).await,
        survivor,
        "both connections should be on the node that is left"
    );

    let mut answers = Vec::new();
    for i in 0..20 {
        let id = format!("after-{i}");
        let answer = gateway
            .publish(
                "amq.default",
                &format!("routing_key={queue}&message_id={id}"),
                None,
                id.clone(),
            )
            .await;
        answers.push(answer.status().as_u16());
        if answer.status() == 200 {
            sent.push(id);
        }
    }
    assert!(
        answers.iter().all(|status| *status == 200),
        "every publish after the move is confirmed: {answers:?}"
    );

    let arrived: Vec<String> = amqp
        .drain(&queue)
        .await
        .iter()
        .filter_map(|message| {
            message
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.to_string())
        })
        .collect();
    assert_eq!(arrived, sent);
}
