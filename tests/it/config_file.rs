//! The config file's topology and named consumer sets, declared at start and after reconnects.

use carrot_gateway::config::{Cli, Config};
use clap::Parser as _;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde_json::json;

use crate::outage::Vhost;
use crate::support::{Amqp, DEADLINE, Gateway, json, rabbitmqctl};

fn config_file(text: &str) -> tempfile_path::TempFile {
    tempfile_path::TempFile::with(text)
}

mod tempfile_path {
    pub struct TempFile(pub std::path::PathBuf);
    impl TempFile {
        pub fn with(text: &str) -> Self {
            let path = std::env::temp_dir()
                .join(format!("carrot-it-{}.yaml", uuid::Uuid::new_v4().simple()));
            std::fs::write(&path, text).expect("temp dir is writable");
            Self(path)
        }
        pub fn path(&self) -> &str {
            self.0.to_str().expect("utf-8 path")
        }
    }
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

async fn queue_exists(url: &str, queue: &str) -> bool {
    let amqp = Amqp::connect_to(url).await;
    amqp.channel
        .queue_declare(
            queue.into(),
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
async fn configured_topology_comes_back_after_the_broker_lost_it() {
    let vhost = Vhost::create().await;
    let file = config_file(
        "exchanges:\n  - {name: link_exchange, type: topic, durable: true}\n\
         queues:\n  - name: webshot\n    durable: true\n    arguments: {x-max-priority: 9}\n    \
         bindings: [{exchange: link_exchange, routing_key: links.webshot}]\n  \
         - {name: retrieve, bindings: [{exchange: link_exchange, routing_key: links.retrieve}]}\n\
         consumers:\n  - {name: links, queues: [webshot, retrieve], prefetch: 10, ack: auto}\n",
    );
    let cli = Cli::parse_from([
        "carrot-gateway",
        "--config",
        file.path(),
        "--amqp-url",
        &vhost.url(),
    ]);
    let gateway = Gateway::start_with(Config::load(&cli).expect("valid config")).await;
    gateway.wait_ready(200).await;

    assert!(queue_exists(&vhost.url(), "webshot").await);
    let routed = gateway
        .publish(
            "link_exchange",
            "routing_key=links.webshot",
            Some("text/plain"),
            "first",
        )
        .await;
    assert_eq!(json(routed, 200).await["routed"], true);
    let message = json(gateway.get("/consumers/links/next?wait=5").await, 200).await;
    assert_eq!(
        (message["queue"].as_str(), message["body"].as_str()),
        (Some("webshot"), Some("first"))
    );

    // The broker loses the topology and the connection.
    let amqp = Amqp::connect_to(&vhost.url()).await;
    amqp.channel
        .queue_delete("webshot".into(), Default::default())
        .await
        .expect("deleted");
    amqp.channel
        .queue_delete("retrieve".into(), Default::default())
        .await
        .expect("deleted");
    amqp.channel
        .exchange_delete("link_exchange".into(), Default::default())
        .await
        .expect("deleted");
    drop(amqp);
    rabbitmqctl(&[
        "close_all_connections",
        "-p",
        &vhost.0,
        "test: topology lost",
    ])
    .await;

    let until = tokio::time::Instant::now() + DEADLINE;
    while !queue_exists(&vhost.url(), "webshot").await {
        assert!(
            tokio::time::Instant::now() < until,
            "the configured queue never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The declarations run in order; the last binding routes once all of them are back.
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let answer = gateway
            .publish(
                "link_exchange",
                "routing_key=links.retrieve",
                Some("text/plain"),
                "again",
            )
            .await;
        if answer.status() == 200 && json(answer, 200).await["routed"] == true {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the configured binding never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The named set subscribes again on its own.
    let message = json(gateway.get("/consumers/links/next?wait=5").await, 200).await;
    assert_eq!(message["queue"], "retrieve");
    assert_eq!(message["body"], json!("again"));
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_config_file_stops_start_up_naming_the_key() {
    let cases = [
        (
            "exchanges:\n  - {name: x, type: topicc}\n",
            "exchanges: entry 0",
        ),
        ("queues:\n  - {name: q, durabel: true}\n", "durabel"),
        ("listen: nowhere\n", "listen"),
        ("colour: red\n", "colour"),
    ];
    for (text, needle) in cases {
        let file = config_file(text);
        let output = tokio::time::timeout(
            DEADLINE,
            tokio::process::Command::new(env!("CARGO_BIN_EXE_carrot-gateway"))
                .args(["--config", file.path(), "--listen", "127.0.0.1:0"])
                .output(),
        )
        .await
        .expect("exits in time")
        .expect("runs");
        assert_eq!(output.status.code(), Some(2), "{text}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{stderr} does not name {needle}");
    }
}

/// Runs the binary with `args` and `env` (and no other `CARROT_*` variable) until it refuses to
/// start, and returns what it said.
async fn refusal(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_carrot-gateway"));
    for (variable, _) in std::env::vars_os() {
        if variable.to_string_lossy().starts_with("CARROT_") {
            command.env_remove(variable);
        }
    }
    let output = tokio::time::timeout(
        DEADLINE,
        command
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("exits in time")
    .expect("runs");
    assert_eq!(output.status.code(), Some(2), "{args:?} {env:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_variable_wins_over_the_file_and_loses_to_a_flag() {
    // A lease_max under the default lease_default is refused, naming the lease_max in force.
    let file = config_file("lease_max: 7\n");
    let with_file = ["--config", file.path()];
    let with_flag = [&with_file[..], &["--lease-max", "9"]].concat();
    let variable = [("CARROT_LEASE_MAX", "8s")];
    for (args, env, want) in [
        (&with_file[..], &[][..], "lease_max (7 s)"),
        (&with_file[..], &variable[..], "lease_max (8 s)"),
        (&with_flag[..], &variable[..], "lease_max (9 s)"),
    ] {
        let said = refusal(args, env).await;
        assert!(said.contains(want), "{said} does not name {want}");
    }
}
