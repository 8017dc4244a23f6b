//! What one client may cost: header and idle timeouts, a cap on connections that makes room by
//! closing the longest-waiting one, and limits on header fields and body time.

use std::time::Duration;

use carrot_gateway::config::{Config, HttpConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::{DEADLINE, Gateway, problem};

fn settings(header: u64, idle: u64, max_connections: usize) -> HttpConfig {
    HttpConfig {
        header_timeout: Duration::from_secs(header),
        idle_timeout: Duration::from_secs(idle),
        max_connections: Some(max_connections),
        body_timeout: Duration::from_secs(1),
        ..Default::default()
    }
}

async fn gateway(http: HttpConfig) -> Gateway {
    let gateway = Gateway::start_with(Config {
        http,
        ..Config::default()
    })
    .await;
    gateway.wait_ready(200).await;
    gateway
}

async fn connect(gateway: &Gateway) -> TcpStream {
    let addr = gateway.base.trim_start_matches("http://");
    TcpStream::connect(addr).await.expect("connects")
}

/// Reads until the gateway closes the connection; returns what it sent and when it closed.
async fn until_closed(stream: &mut TcpStream) -> (String, Instant) {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(DEADLINE, stream.read(&mut buffer))
            .await
            .expect("the gateway closes the connection in time");
        match read {
            Ok(0) | Err(_) => return (String::from_utf8_lossy(&seen).into_owned(), Instant::now()),
            Ok(n) => seen.extend_from_slice(&buffer[..n]),
        }
    }
}

/// Reads one whole response (headers and a `content-length` body) off a keep-alive connection.
async fn one_response(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&seen).into_owned();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|n| n.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if seen.len() >= head_end + 4 + length {
                return text;
            }
        }
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut buffer))
            .await
            .expect("a response in time")
            .expect("read");
        assert!(n > 0, "closed before a whole response: {text}");
        seen.extend_from_slice(&buffer[..n]);
    }
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: gateway\r\n\r\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    let gateway = gateway(settings(1, 30, 1000)).await;
    let opened = Instant::now();
    let mut silent = connect(&gateway).await;
    let (_, closed) = until_closed(&mut silent).await;
    let after = closed - opened;
    assert!(
        after >= Duration::from_millis(900),
        "not before its timeout: {after:?}"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_sent_a_byte_at_a_time_is_cut_off() {
    let gateway = gateway(settings(1, 30, 1000)).await;
    let mut slow = connect(&gateway).await;
    let started = Instant::now();
    let mut cut = false;
    for byte in HEALTHZ.iter().cycle().take(200) {
        if slow.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > DEADLINE {
            break;
        }
    }
    let (answer, _) = if cut {
        (String::new(), Instant::now())
    } else {
        until_closed(&mut slow).await
    };
    assert!(
        !answer.contains("200 OK"),
        "a head that took too long was served: {answer}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "cut off near its 1 s timeout"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_alive_waits_for_the_idle_timeout_not_the_header_timeout() {
    let gateway = gateway(settings(1, 3, 1000)).await;
    let mut client = connect(&gateway).await;
    client.write_all(HEALTHZ).await.expect("send");
    assert!(one_response(&mut client).await.starts_with("HTTP/1.1 200"));
    // Longer than the header timeout, shorter than the idle one: still open.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client.write_all(HEALTHZ).await.expect("send again");
    assert!(one_response(&mut client).await.starts_with("HTTP/1.1 200"));
    let idle_from = Instant::now();
    let (_, closed) = until_closed(&mut client).await;
    assert!(
        closed - idle_from >= Duration::from_millis(2900),
        "idle for its whole timeout"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_poll_outlasts_both_timeouts() {
    let gateway = gateway(settings(1, 1, 1000)).await;
    let queue = crate::support::Amqp::connect()
        .await
        .queue_bound("amq.direct", &[])
        .await;
    let answer = gateway
        .http
        .get(gateway.url(&format!("/queues/{queue}/next?wait=3")))
        .send()
        .await
        .expect("answered, not cut");
    assert_eq!(answer.status(), 204);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn when_every_slot_is_taken_the_longest_waiting_connection_makes_room() {
    let gateway = gateway(settings(60, 60, 4)).await;
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(connect(&gateway).await);
    }
    let mut client = connect(&gateway).await;
    client.write_all(HEALTHZ).await.expect("send");
    assert!(one_response(&mut client).await.starts_with("HTTP/1.1 200"));
    let (_, _) = until_closed(&mut silent[0]).await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_or_too_large_header_fields_are_431() {
    let gateway = gateway(HttpConfig::default()).await;
    let mut many = gateway.http.get(gateway.url("/healthz"));
    for i in 0..101 {
        many = many.header(format!("x-h{i}"), "v");
    }
    let answer = many.send().await.expect("answered");
    problem(answer, 431, "headers_too_large").await;
    let answer = gateway
        .http
        .get(gateway.url("/healthz"))
        .header("x-big", "v".repeat(33 * 1024))
        .send()
        .await
        .expect("answered");
    problem(answer, 431, "headers_too_large").await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_stops_coming_is_408() {
    let gateway = gateway(settings(10, 10, 1000)).await;
    let mut client = connect(&gateway).await;
    client
        .write_all(
            b"POST /exchanges/amq.default/messages?routing_key=nobody HTTP/1.1\r\nhost: g\r\n\
              content-length: 10\r\n\r\nx",
        )
        .await
        .expect("send");
    let answer = one_response(&mut client).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
    gateway.stop().await;
}
