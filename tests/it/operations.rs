//! Operating the gateway: auth, metrics, SIGTERM, refusing anonymous public listeners.

use std::sync::Arc;
use std::time::Duration;

use carrot_gateway::auth::{Auth, Token};
use carrot_gateway::config::{AuthConfig, Config};
use serde_json::json;

use crate::support::{
    Amqp, DEADLINE, Gateway, json, metric_sum, metrics_text, problem, ready_gateway, spawn_gateway,
    unique,
};

fn app_and_reader() -> Arc<Auth> {
    let app = Token::new("app", "app-secret", "^app\\.", "^app\\.", "^app\\.").expect("valid");
    let reader = Token::new("reader", "reader-secret", "", "", ".*").expect("valid");
    Arc::new(Auth::new(vec![app, reader], false, false))
}

async fn call(
    gateway: &Gateway,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> reqwest::Response {
    let mut request = gateway.http.request(method, gateway.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    request.send().await.expect("gateway answers")
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_matrix_on_declare_publish_and_consume() {
    let gateway = Gateway::start_with(Config {
        auth: AuthConfig {
            tokens: app_and_reader(),
            ..Default::default()
        },
        ..Config::default()
    })
    .await;
    gateway.wait_ready(200).await;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let (exchange, queue) = (format!("app.x.{suffix}"), format!("app.q.{suffix}"));
    use reqwest::Method as M;
    let declare = json!({"durable": false, "auto_delete": true});

    // No token, a wrong token: 401 with a challenge, nothing done.
    for token in [None, Some("guess")] {
        let answer = call(
            &gateway,
            M::PUT,
            &format!("/exchanges/{exchange}"),
            token,
            Some(declare.clone()),
        )
        .await;
        assert_eq!(
            answer.headers()["www-authenticate"],
            "Bearer realm=\"carrot-gateway\""
        );
        problem(answer, 401, "unauthorized").await;
        problem(
            call(
                &gateway,
                M::POST,
                &format!("/exchanges/{exchange}/messages"),
                token,
                None,
            )
            .await,
            401,
            "unauthorized",
        )
        .await;
        problem(
            call(
                &gateway,
                M::GET,
                &format!("/queues/{queue}/next"),
                token,
                None,
            )
            .await,
            401,
            "unauthorized",
        )
        .await;
    }

    // A token without the permission: 403, and the broker was never asked.
    let reader = Some("reader-secret");
    problem(
        call(
            &gateway,
            M::PUT,
            &format!("/exchanges/{exchange}"),
            reader,
            Some(declare.clone()),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    problem(
        call(
            &gateway,
            M::PUT,
            &format!("/queues/{queue}"),
            reader,
            Some(json!({})),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    problem(
        call(
            &gateway,
            M::POST,
            &format!("/exchanges/{exchange}/messages"),
            reader,
            None,
        )
        .await,
        403,
        "forbidden",
    )
    .await;

    // The token with the permission.
    let app = Some("app-secret");
    json(
        call(
            &gateway,
            M::PUT,
            &format!("/exchanges/{exchange}"),
            app,
            Some(declare),
        )
        .await,
        201,
    )
    .await;
    let queue_spec =
        json!({"durable": false, "bindings": [{"exchange": exchange, "routing_key": "k"}]});
    json(
        call(
            &gateway,
            M::PUT,
            &format!("/queues/{queue}"),
            app,
            Some(queue_spec),
        )
        .await,
        201,
    )
    .await;
    let published = call(
        &gateway,
        M::POST,
        &format!("/exchanges/{exchange}/messages?routing_key=k"),
        app,
        None,
    )
    .await;
    assert_eq!(json(published, 200).await["routed"], true);
    problem(
        call(
            &gateway,
            M::POST,
            &format!("/exchanges/{}/messages", unique("other")),
            app,
            None,
        )
        .await,
        403,
        "forbidden",
    )
    .await;

    // Reading is the reader's too; queues outside the app's pattern are not the app's.
    let leased = json(
        call(
            &gateway,
            M::GET,
            &format!("/queues/{queue}/next"),
            reader,
            None,
        )
        .await,
        200,
    )
    .await;
    let receipt = leased["receipt"].as_str().expect("receipt");
    let settled = call(
        &gateway,
        M::POST,
        &format!("/queues/{queue}/messages/{receipt}/ack"),
        reader,
        None,
    )
    .await;
    assert_eq!(settled.status(), 204);
    problem(
        call(
            &gateway,
            M::GET,
            &format!("/queues/{}/next", unique("other")),
            app,
            None,
        )
        .await,
        403,
        "forbidden",
    )
    .await;

    // Another token's consumer set does not exist for you.
    let set = call(
        &gateway,
        M::POST,
        "/consumers",
        app,
        Some(json!({"queues": [queue]})),
    )
    .await;
    let id = json(set, 201).await["id"].as_str().expect("id").to_owned();
    problem(
        call(&gateway, M::GET, &format!("/consumers/{id}"), reader, None).await,
        404,
        "consumer_not_found",
    )
    .await;
    assert_eq!(
        call(&gateway, M::DELETE, &format!("/consumers/{id}"), app, None)
            .await
            .status(),
        204
    );

    // Subscriptions need read on their queue, to create and to see.
    let subscription = json!({"name": format!("app-sub-{suffix}"), "queue": queue,
        "url": "http://127.0.0.1:9/hook"});
    let mut elsewhere = subscription.clone();
    elsewhere["queue"] = json!(unique("other"));
    problem(
        call(&gateway, M::POST, "/subscriptions", app, Some(elsewhere)).await,
        403,
        "forbidden",
    )
    .await;
    json(
        call(&gateway, M::POST, "/subscriptions", app, Some(subscription)).await,
        201,
    )
    .await;
    let path = format!("/subscriptions/app-sub-{suffix}");
    assert_eq!(
        call(&gateway, M::GET, &path, reader, None).await.status(),
        200
    );
    assert_eq!(
        call(&gateway, M::DELETE, &path, app, None).await.status(),
        204
    );

    // Probes and documents stay open.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"] {
        assert_eq!(
            call(&gateway, M::GET, path, None, None).await.status(),
            200,
            "{path}"
        );
    }
    json(
        call(&gateway, M::DELETE, &format!("/queues/{queue}"), app, None).await,
        200,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_can_require_a_token() {
    let token = Token::new("ops", "ops-secret", "", "", "").expect("valid");
    let gateway = Gateway::start_with(Config {
        auth: AuthConfig {
            tokens: Arc::new(Auth::new(vec![token], false, true)),
            ..Default::default()
        },
        ..Config::default()
    })
    .await;
    gateway.wait_ready(200).await;
    problem(
        call(&gateway, reqwest::Method::GET, "/metrics", None, None).await,
        401,
        "unauthorized",
    )
    .await;
    assert_eq!(
        call(
            &gateway,
            reqwest::Method::GET,
            "/metrics",
            Some("ops-secret"),
            None
        )
        .await
        .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_move_with_traffic() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    let route = "carrot_http_requests_total{method=\"POST\",route=\"/exchanges/{exchange}/messages\",status=\"200\"}";
    let before = (
        metric_sum(&gateway, route).await,
        metric_sum(&gateway, "carrot_messages_confirmed_total").await,
        metric_sum(&gateway, "carrot_messages_returned_total").await,
        metric_sum(&gateway, "carrot_messages_acked_total").await,
    );
    gateway
        .publish("amq.default", &format!("routing_key={queue}"), None, "m")
        .await;
    gateway
        .publish("amq.default", "routing_key=nobody-here", None, "m")
        .await;
    let leased = json(gateway.get(&format!("/queues/{queue}/next")).await, 200).await;
    assert_eq!(
        gateway
            .post(&format!(
                "/queues/{queue}/messages/{}/ack",
                leased["receipt"].as_str().expect("receipt")
            ))
            .await
            .status(),
        204
    );
    let after = (
        metric_sum(&gateway, route).await,
        metric_sum(&gateway, "carrot_messages_confirmed_total").await,
        metric_sum(&gateway, "carrot_messages_returned_total").await,
        metric_sum(&gateway, "carrot_messages_acked_total").await,
    );
    // Other tests share the process-wide registry, so the counters grow by at least ours.
    assert!(after.0 >= before.0 + 2.0, "{before:?} -> {after:?}");
    assert!(after.1 >= before.1 + 2.0, "{before:?} -> {after:?}");
    assert!(after.2 >= before.2 + 1.0, "{before:?} -> {after:?}");
    assert!(after.3 >= before.3 + 1.0, "{before:?} -> {after:?}");
    let text = metrics_text(&gateway.base).await;
    for name in [
        "carrot_http_request_duration_seconds_bucket",
        "carrot_leases_open",
        "carrot_consumer_sets",
        "carrot_publish_channels",
        "carrot_amqp_connections",
        "carrot_broker_connected 1",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_answers_every_publish_in_flight_and_loses_none() {
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    let (mut child, base) = spawn_gateway(&[]).await;
    let http = reqwest::Client::new();
    let clients = (0..32).map(|client| {
        let (http, base, queue) = (http.clone(), base.clone(), queue.clone());
        tokio::spawn(async move {
            let (mut confirmed, mut failed_by_gateway) = (0u32, 0u32);
            for i in 0..10_000 {
                let sent = http
                    .post(format!(
                        "{base}/exchanges/amq.default/messages?routing_key={queue}"
                    ))
                    .body(format!("{client}-{i}"))
                    .send()
                    .await;
                match sent {
                    Ok(answer) if answer.status() == 200 => confirmed += 1,
                    Ok(_) => failed_by_gateway += 1,
                    // The listener closed: this request never reached the gateway.
                    Err(_) => break,
                }
            }
            (confirmed, failed_by_gateway)
        })
    });
    let clients: Vec<_> = clients.collect();
    // SIGTERM once publishes are flowing, so that some are in flight when it lands.
    let until = tokio::time::Instant::now() + DEADLINE;
    while amqp.count(&queue).await < 100 {
        assert!(
            tokio::time::Instant::now() < until,
            "publishes never flowed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = child.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("exits within the grace period")
        .expect("exit status");
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");

    let (mut confirmed, mut failed) = (0, 0);
    for client in clients {
        let (ok, bad) = tokio::time::timeout(DEADLINE, client)
            .await
            .expect("client ends")
            .expect("client task");
        confirmed += ok;
        failed += bad;
    }
    assert_eq!(
        failed, 0,
        "no request the gateway took was refused or left unanswered"
    );
    assert!(confirmed > 0);
    amqp.wait_count(&queue, confirmed).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_public_listening_is_refused_and_says_so() {
    let output = tokio::time::timeout(
        DEADLINE,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_carrot-gateway"))
            .args(["--listen", "0.0.0.0:0"])
            .env_remove("CARROT_CONFIG")
            .env_remove("CARROT_ALLOW_ANONYMOUS")
            .output(),
    )
    .await
    .expect("exits in time")
    .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--allow-anonymous") && stderr.contains("tokens"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_response_carries_a_request_id() {
    let gateway = ready_gateway().await;
    let echoed = gateway
        .http
        .get(gateway.url("/healthz"))
        .header("x-request-id", "trace-42")
        .send()
        .await
        .expect("answers");
    assert_eq!(echoed.headers()["x-request-id"], "trace-42");
    let fresh = gateway
        .http
        .get(gateway.url("/nowhere"))
        .send()
        .await
        .expect("answers");
    let id = fresh.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        uuid::Uuid::parse_str(&id).is_ok(),
        "{id} is a generated UUID"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_reports_the_memory_its_allocator_holds() {
    let (mut child, base) = spawn_gateway(&[]).await;
    let text = metrics_text(&base).await;
    for name in [
        "carrot_memory_allocated_bytes",
        "carrot_memory_resident_bytes",
    ] {
        let value = text
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics"));
        assert!(value > 0.0, "{name} is {value}");
    }
    child.kill().await.expect("stop the gateway");
}
