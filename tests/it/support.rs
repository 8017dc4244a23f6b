//! Test harness: the real gateway on an ephemeral port, and an independent AMQP client to check it.

use std::time::Duration;

use carrot_gateway::config::Config;
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, message::BasicGetMessage};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Every wait in these tests ends by this deadline.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!("test.{prefix}.{}", uuid::Uuid::new_v4().simple())
}

pub struct Gateway {
    pub base: String,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Gateway {
    pub async fn start() -> Self {
        Self::start_with(Config::default()).await
    }

    pub async fn start_with(config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        Self::start_on(listener, config)
    }

    /// Serves on `listener`, for a test that needs the address before the gateway starts.
    pub fn start_on(listener: TcpListener, mut config: Config) -> Self {
        let addr = listener.local_addr().expect("bound address");
        config.server.listen = addr;
        let scheme = if config.server.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(carrot_gateway::run(config, listener, shutdown.clone()));
        Gateway {
            base: format!("{scheme}://{addr}"),
            http: reqwest::Client::new(),
            shutdown,
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits until `/readyz` answers `want`.
    pub async fn wait_ready(&self, want: u16) {
        let until = tokio::time::Instant::now() + DEADLINE;
        loop {
            let status = self
                .http
                .get(self.url("/readyz"))
                .send()
                .await
                .map(|r| r.status().as_u16());
            if status.as_ref().ok() == Some(&want) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "/readyz never answered {want}: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// POSTs a raw-mode publish.
    pub async fn publish(
        &self,
        exchange: &str,
        query: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(self.url(&format!("/exchanges/{exchange}/messages?{query}")))
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.send().await.expect("gateway answers")
    }

    pub async fn publish_batch(
        &self,
        exchange: &str,
        batch: &serde_json::Value,
    ) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/exchanges/{exchange}/messages")))
            .header("content-type", "application/vnd.carrot.batch+json")
            .body(batch.to_string())
            .send()
            .await
            .expect("gateway answers")
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(DEADLINE, task)
                .await
                .expect("gateway stops in time")
                .expect("gateway task did not panic")
                .expect("gateway ran cleanly");
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts a gateway and waits until it is connected to the broker.
pub async fn ready_gateway() -> Gateway {
    let gateway = Gateway::start().await;
    gateway.wait_ready(200).await;
    gateway
}

/// An AMQP client of its own, to check what the broker really holds.
pub struct Amqp {
    _connection: Connection,
    pub channel: Channel,
}

impl Amqp {
    pub async fn connect() -> Self {
        Self::connect_to(AMQP_URL).await
    }

    pub async fn connect_to(url: &str) -> Self {
        let connection = tokio::time::timeout(
            DEADLINE,
            Connection::connect(url, ConnectionProperties::default()),
        )
        .await
        .expect("connect in time")
        .expect("test AMQP connection");
        let channel = connection.create_channel().await.expect("test channel");
        // Publishes wait for the broker's confirm: a count right after them sees them all.
        channel
            .confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        Self {
            _connection: connection,
            channel,
        }
    }

    /// A server-named-like queue of our own, bound to `exchange` with each key.
    pub async fn queue_bound(&self, exchange: &str, keys: &[&str]) -> String {
        self.queue_with(exchange, keys, FieldTable::default()).await
    }

    /// Queues expire a while after their last use rather than auto-delete: a long poll is a
    /// consumer, and RabbitMQ deletes an auto-delete queue when its last consumer leaves.
    pub async fn queue_with(
        &self,
        exchange: &str,
        keys: &[&str],
        mut arguments: FieldTable,
    ) -> String {
        let name = unique("q");
        if !arguments.contains_key("x-expires") {
            arguments.insert(
                "x-expires".into(),
                lapin::types::AMQPValue::LongLongInt(300_000),
            );
        }
        self.channel
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions::default(),
                arguments,
            )
            .await
            .expect("declare test queue");
        for key in keys {
            self.channel
                .queue_bind(
                    name.as_str().into(),
                    exchange.into(),
                    (*key).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("bind test queue");
        }
        name
    }

    pub async fn exchange(&self, kind: lapin::ExchangeKind) -> String {
        let name = unique("x");
        self.channel
            .exchange_declare(
                name.as_str().into(),
                kind,
                lapin::options::ExchangeDeclareOptions {
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare test exchange");
        name
    }

    /// Takes the next message, acking it; the gateway answered after the confirm, so it is there.
    pub async fn get(&self, queue: &str) -> Option<BasicGetMessage> {
        self.channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
    }

    pub async fn drain(&self, queue: &str) -> Vec<BasicGetMessage> {
        let mut all = Vec::new();
        while let Some(message) = self.get(queue).await {
            all.push(message);
        }
        all
    }

    pub async fn count(&self, queue: &str) -> u32 {
        self.counts(queue).await.0
    }

    /// Messages ready in the queue, and its consumers.
    pub async fn counts(&self, queue: &str) -> (u32, u32) {
        let queue = self
            .channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("queue exists");
        (queue.message_count(), queue.consumer_count())
    }
}

/// Reads a problem+json answer, checking status, media type and code.
pub async fn problem(response: reqwest::Response, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status, "status of {code}");
    let media = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(media, "application/problem+json");
    let body: serde_json::Value = response.json().await.expect("problem body is JSON");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "problem says what to fix: {body}"
    );
    body
}

pub async fn json(response: reqwest::Response, status: u16) -> serde_json::Value {
    let actual = response.status().as_u16();
    let body = response.text().await.expect("body");
    assert_eq!(actual, status, "unexpected answer: {body}");
    serde_json::from_str(&body).expect("JSON body")
}

/// `/readyz`'s list of the gateway's AMQP connections; empty while it is not ready.
pub async fn connections(gateway: &Gateway) -> Vec<serde_json::Value> {
    let Ok(answer) = gateway.http.get(gateway.url("/readyz")).send().await else {
        return Vec::new();
    };
    let body: serde_json::Value = answer.json().await.unwrap_or_default();
    body["connections"].as_array().cloned().unwrap_or_default()
}

/// The ids of the gateway's live AMQP connections: unchanged means none was lost.
pub async fn connection_ids(gateway: &Gateway) -> Vec<u64> {
    connections(gateway)
        .await
        .iter()
        .filter_map(|connection| connection["id"].as_u64())
        .collect()
}

/// `/metrics` of the gateway at `base`.
pub async fn metrics_text(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .expect("answers")
        .text()
        .await
        .expect("text")
}

/// Reads one sample of `/metrics`, summing the series whose line starts with `prefix`.
pub async fn metric_sum(gateway: &Gateway, prefix: &str) -> f64 {
    metrics_text(&gateway.base)
        .await
        .lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Runs `rabbitmqctl`, failing the test on error.
pub async fn rabbitmqctl(args: &[&str]) {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("rabbitmqctl")
            .args(args)
            .output(),
    )
    .await
    .expect("rabbitmqctl finishes in time")
    .expect("rabbitmqctl runs");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs the binary; returns the child and its base URL once ready.
pub async fn spawn_gateway(args: &[&str]) -> (tokio::process::Child, String) {
    spawn_gateway_with_env(args, &[]).await
}

/// Runs the binary with extra environment variables.
pub async fn spawn_gateway_with_env(
    args: &[&str],
    env: &[(&str, &str)],
) -> (tokio::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_carrot-gateway"))
        .args(["--listen", &listen])
        .args(args)
        .env_remove("CARROT_CONFIG")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("gateway binary starts");
    let base = format!("http://{listen}");
    let http = reqwest::Client::new();
    let until = tokio::time::Instant::now() + DEADLINE;
    while http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .ok()
        != Some(200)
    {
        assert!(
            tokio::time::Instant::now() < until,
            "gateway never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, base)
}
