//! HTTP behaviour that needs no broker, checked in process: the router is called directly, with
//! no listener, and the broker is never connected.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use carrot_gateway::Services;
use carrot_gateway::auth::{Auth, Token};
use carrot_gateway::config::{AmqpUrls, AuthConfig, BrokerConfig, Config};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Nothing listens here, so a request that did reach the broker would fail instead of passing.
const UNREACHABLE: &str = "amqp://guest:guest@127.0.0.1:1/%2f";
/// Every request in these tests is answered by this deadline.
const DEADLINE: Duration = Duration::from_secs(10);
const SECRET: &str = "app-secret";

/// The gateway's router as `carrot_gateway::run` builds it, without its background tasks: the
/// broker is never connected.
fn gateway(config: &Config) -> Router {
    Services::new(config, &CancellationToken::new())
        .expect("the services start")
        .router
}

fn config() -> Config {
    Config {
        broker: BrokerConfig {
            amqp_url: AmqpUrls::one(UNREACHABLE),
            ..Default::default()
        },
        ..Config::default()
    }
}

/// One token that may do anything to `app.*` names.
fn with_token() -> Config {
    let token = Token::new("app", SECRET, "^app\\.", "^app\\.", "^app\\.").expect("valid token");
    Config {
        auth: AuthConfig {
            tokens: Arc::new(Auth::new(vec![token], false, false)),
            ..Default::default()
        },
        ..config()
    }
}

/// A name no other test uses, inside the token's permissions.
fn unique(prefix: &str) -> String {
    format!("app.{prefix}.{}", uuid::Uuid::new_v4().simple())
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

async fn send(app: &Router, request: Request<Body>) -> Answer {
    let response = tokio::time::timeout(DEADLINE, app.clone().oneshot(request))
        .await
        .expect("the gateway answers in time")
        .expect("the router is infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = tokio::time::timeout(
        DEADLINE,
        axum::body::to_bytes(response.into_body(), usize::MAX),
    )
    .await
    .expect("the body arrives in time")
    .expect("the body reads")
    .to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

async fn get(app: &Router, uri: &str) -> Answer {
    send(app, request(Method::GET, uri, Body::empty())).await
}

async fn post(app: &Router, uri: &str) -> Answer {
    send(app, request(Method::POST, uri, Body::empty())).await
}

fn request(method: Method, uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(body.into())
        .expect("a valid request")
}

/// With the token when `config` has tokens: without any, a token is refused as unknown.
fn as_app(config: &Config, method: Method, uri: &str, body: impl Into<Body>) -> Request<Body> {
    let mut request = request(method, uri, body);
    if config.auth.tokens.has_tokens() {
        request.headers_mut().insert(
            header::AUTHORIZATION,
            format!("Bearer {SECRET}").parse().expect("a header value"),
        );
    }
    request
}

/// Checks that the answer is the RFC 9457 problem the API promises, and returns its detail.
#[track_caller]
fn problem(answer: &Answer, status: StatusCode, code: &str) -> String {
    let text = String::from_utf8_lossy(&answer.body);
    assert_eq!(answer.status, status, "{text}");
    assert_eq!(
        answer
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok()),
        Some("application/problem+json"),
        "{text}"
    );
    let problem: Value = serde_json::from_slice(&answer.body).expect("the problem is JSON");
    assert_eq!(problem["code"], code, "{text}");
    assert_eq!(
        problem["type"],
        format!("urn:carrot-gateway:problem:{code}"),
        "{text}"
    );
    assert_eq!(problem["status"], status.as_u16(), "{text}");
    let title = problem["title"].as_str().expect("a title");
    assert!(!title.is_empty(), "{text}");
    let detail = problem["detail"].as_str().expect("a detail");
    assert!(detail.len() > 20, "a detail that says what to fix: {text}");
    detail.to_owned()
}

#[track_caller]
fn assert_names(detail: &str, words: &[&str]) {
    for word in words {
        assert!(detail.contains(word), "{word:?} is not in {detail:?}");
    }
}

#[tokio::test]
async fn healthz_answers_without_a_broker_or_a_token() {
    for config in [config(), with_token()] {
        let answer = get(&gateway(&config), "/healthz").await;
        assert_eq!(answer.status, StatusCode::OK);
        let body: Value = serde_json::from_slice(&answer.body).expect("JSON");
        assert_eq!(body["status"], "ok");
    }
}

#[tokio::test]
async fn readyz_says_the_broker_is_unavailable() {
    let answer = get(&gateway(&config()), "/readyz").await;
    let detail = problem(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "broker_unavailable",
    );
    assert_names(&detail, &["broker"]);
    assert!(answer.headers.contains_key(header::RETRY_AFTER));
}

#[tokio::test]
async fn an_unknown_query_parameter_is_named() {
    let app = gateway(&config());
    let queue = unique("typo");
    for path in ["next", "next/raw", "messages"] {
        let answer = get(&app, &format!("/queues/{queue}/{path}?lesae=5")).await;
        let detail = problem(&answer, StatusCode::BAD_REQUEST, "invalid_request");
        assert_names(&detail, &["lesae", "lease"]);
    }
    let answer = post(
        &app,
        &format!("/queues/{queue}/messages/receipt/extend?duration=5"),
    )
    .await;
    let detail = problem(&answer, StatusCode::BAD_REQUEST, "invalid_request");
    assert_names(&detail, &["duration", "lease"]);
}

#[tokio::test]
async fn a_parameter_of_the_wrong_type_is_invalid() {
    let app = gateway(&config());
    let queue = unique("type");
    for query in ["lease=soon", "wait=-1", "decode=maybe", "ack=never"] {
        let answer = get(&app, &format!("/queues/{queue}/next?{query}")).await;
        let detail = problem(&answer, StatusCode::BAD_REQUEST, "invalid_request");
        assert_names(&detail, &[query.split('=').next().expect("a name")]);
    }
}

#[tokio::test]
async fn a_lease_of_zero_or_over_the_maximum_is_invalid() {
    let app = gateway(&config());
    let queue = unique("lease");
    for path in ["next", "next/raw", "messages"] {
        for lease in [0, 901] {
            let answer = get(&app, &format!("/queues/{queue}/{path}?lease={lease}")).await;
            let detail = problem(&answer, StatusCode::BAD_REQUEST, "invalid_request");
            assert_names(&detail, &[&format!("lease={lease}"), "between 1 and 900"]);
        }
    }
    let answer = post(
        &app,
        &format!("/queues/{queue}/messages/receipt/extend?lease=0"),
    )
    .await;
    let detail = problem(&answer, StatusCode::BAD_REQUEST, "invalid_request");
    assert_names(&detail, &["lease=0", "between 1 and 900"]);
}

#[tokio::test]
async fn a_wait_over_the_maximum_is_invalid() {
    let app = gateway(&config());
    let queue = unique("wait");
    for path in ["next", "next/raw", "messages"] {
        let answer = get(&app, &format!("/queues/{queue}/{path}?wait=21")).await;
        let detail = problem(&answer, StatusCode::BAD_REQUEST, "invalid_request");
        assert_names(&detail, &["wait=21", "20 s"]);
    }
}

#[tokio::test]
async fn a_limit_outside_1_to_100_is_invalid() {
    let app = gateway(&config());
    let queue = unique("limit");
    for limit in [0, 101] {
        let answer = get(&app, &format!("/queues/{queue}/messages?limit={limit}")).await;
        let detail = problem(&answer, StatusCode::BAD_REQUEST, "invalid_request");
        assert_names(&detail, &[&format!("limit={limit}"), "between 1 and 100"]);
    }
}

#[tokio::test]
async fn an_unknown_format_is_invalid() {
    let answer = get(
        &gateway(&config()),
        &format!("/queues/{}/next?format=xml", unique("format")),
    )
    .await;
    let detail = problem(&answer, StatusCode::BAD_REQUEST, "invalid_request");
    assert_names(&detail, &["format=xml", "json or raw"]);
}

#[tokio::test]
async fn a_bad_queue_name_is_invalid() {
    let app = gateway(&config());
    let long = "q".repeat(256);
    for uri in [
        format!("/queues/{long}/next"),
        format!("/queues/{long}/messages"),
        format!("/queues/{long}/messages/receipt/ack"),
        format!("/queues/{long}/messages/receipt/extend"),
    ] {
        let method = if uri.contains("/receipt/") {
            Method::POST
        } else {
            Method::GET
        };
        let answer = send(&app, request(method, &uri, Body::empty())).await;
        let detail = problem(&answer, StatusCode::BAD_REQUEST, "invalid_request");
        assert_names(&detail, &["queue name", "256 bytes", "255"]);
    }

    let answer = send(&app, request(Method::PUT, &format!("/queues/{long}"), "{}")).await;
    let detail = problem(&answer, StatusCode::BAD_REQUEST, "invalid_request");
    assert_names(&detail, &["queue name", "256 bytes"]);

    // 170 bytes of two-byte characters: short enough for AMQP, too long to be quoted safely.
    let accented = "%C3%A9".repeat(85);
    let answer = get(&app, &format!("/queues/{accented}/next")).await;
    let detail = problem(&answer, StatusCode::BAD_REQUEST, "invalid_request");
    assert_names(&detail, &["non-ASCII", "170 bytes", "162"]);

    let answer = get(&app, "/queues/%FF/next").await;
    let detail = problem(&answer, StatusCode::BAD_REQUEST, "invalid_request");
    assert_names(&detail, &["bad path", "UTF-8"]);
}

#[tokio::test]
async fn declaring_a_queue_needs_a_json_object() {
    let app = gateway(&config());
    let queue = unique("declare");
    for body in ["durable", "[true]", "42", "\"durable\""] {
        let answer = send(
            &app,
            request(Method::PUT, &format!("/queues/{queue}"), body),
        )
        .await;
        let detail = problem(&answer, StatusCode::BAD_REQUEST, "invalid_request");
        assert_names(&detail, &["JSON object"]);
    }
    let answer = send(
        &app,
        request(Method::PUT, &format!("/queues/{queue}"), "{\"durable\": "),
    )
    .await;
    let detail = problem(&answer, StatusCode::BAD_REQUEST, "invalid_request");
    assert_names(&detail, &["bad JSON body"]);

    let answer = send(
        &app,
        request(
            Method::PUT,
            &format!("/queues/{queue}"),
            "{\"durable\": \"yes\"}",
        ),
    )
    .await;
    let detail = problem(&answer, StatusCode::BAD_REQUEST, "invalid_request");
    assert_names(&detail, &["durable"]);
}

#[tokio::test]
async fn declaring_a_reserved_queue_is_forbidden() {
    let answer = send(
        &gateway(&config()),
        request(Method::PUT, "/queues/amq.gen-in-process", "{}"),
    )
    .await;
    let detail = problem(&answer, StatusCode::FORBIDDEN, "forbidden");
    assert_names(&detail, &["amq."]);
}

#[tokio::test]
async fn creating_a_consumer_set_needs_a_json_object() {
    let app = gateway(&config());
    for body in ["", "queues=a", "[\"a\"]", "null"] {
        let answer = send(&app, request(Method::POST, "/consumers", body)).await;
        let detail = problem(&answer, StatusCode::BAD_REQUEST, "invalid_request");
        assert_names(&detail, &["JSON object"]);
    }
    let answer = send(
        &app,
        request(Method::POST, "/consumers", "{\"queues\": \"a\"}"),
    )
    .await;
    let detail = problem(&answer, StatusCode::BAD_REQUEST, "invalid_request");
    assert_names(&detail, &["queues"]);

    let answer = send(
        &app,
        request(Method::POST, "/consumers", "{\"queues\": []}"),
    )
    .await;
    let detail = problem(&answer, StatusCode::BAD_REQUEST, "invalid_request");
    assert_names(&detail, &["queues is empty"]);

    let queue = unique("twice");
    let answer = send(
        &app,
        request(
            Method::POST,
            "/consumers",
            format!("{{\"queues\": [\"{queue}\", \"{queue}\"]}}"),
        ),
    )
    .await;
    let detail = problem(&answer, StatusCode::BAD_REQUEST, "invalid_request");
    assert_names(&detail, &[&queue, "twice"]);
}

#[tokio::test]
async fn without_a_token_the_gateway_answers_401() {
    let app = gateway(&with_token());
    let queue = unique("auth");
    for (method, uri) in [
        (Method::GET, format!("/queues/{queue}/next")),
        (Method::PUT, format!("/queues/{queue}")),
        (Method::POST, "/consumers".to_owned()),
        (
            Method::POST,
            format!("/queues/{queue}/messages/receipt/ack"),
        ),
    ] {
        let answer = send(&app, request(method, &uri, Body::empty())).await;
        let detail = problem(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
        assert_names(&detail, &["Authorization: Bearer"]);
        assert_eq!(
            answer.headers.get(header::WWW_AUTHENTICATE),
            Some(&"Bearer realm=\"carrot-gateway\"".parse().expect("a value")),
        );
    }

    let mut wrong = request(Method::GET, &format!("/queues/{queue}/next"), Body::empty());
    wrong.headers_mut().insert(
        header::AUTHORIZATION,
        "Bearer not-the-secret".parse().expect("a header value"),
    );
    let detail = problem(
        &send(&app, wrong).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_names(&detail, &["not valid"]);
}

#[tokio::test]
async fn a_token_without_the_permission_is_forbidden() {
    let app = gateway(&with_token());
    let answer = send(
        &app,
        as_app(
            &with_token(),
            Method::GET,
            "/queues/billing/next",
            Body::empty(),
        ),
    )
    .await;
    let detail = problem(&answer, StatusCode::FORBIDDEN, "forbidden");
    assert_names(&detail, &["\"app\"", "read", "\"billing\"", "^app\\\\."]);
}

#[tokio::test]
async fn an_unknown_receipt_is_not_found() {
    for config in [config(), with_token()] {
        let app = gateway(&config);
        let queue = unique("receipt");
        for action in ["ack", "reject", "requeue", "extend"] {
            let uri = format!("/queues/{queue}/messages/0123456789abcdef/{action}");
            let answer = send(&app, as_app(&config, Method::POST, &uri, Body::empty())).await;
            let detail = problem(&answer, StatusCode::NOT_FOUND, "receipt_not_found");
            assert_names(&detail, &["settled, expired", "GET /queues/{queue}/next"]);
        }
    }
}

#[tokio::test]
async fn an_unknown_consumer_set_is_not_found() {
    for config in [config(), with_token()] {
        let app = gateway(&config);
        let id = unique("set");
        for (method, uri) in [
            (Method::GET, format!("/consumers/{id}")),
            (Method::GET, format!("/consumers/{id}/next")),
            (Method::GET, format!("/consumers/{id}/stream")),
            (Method::DELETE, format!("/consumers/{id}")),
            (
                Method::DELETE,
                format!("/consumers/{id}/queues/{}", unique("q")),
            ),
        ] {
            let answer = send(&app, as_app(&config, method, &uri, Body::empty())).await;
            let detail = problem(&answer, StatusCode::NOT_FOUND, "consumer_not_found");
            assert_names(&detail, &[&id, "POST /consumers"]);
        }
    }
}

#[tokio::test]
async fn an_unknown_route_is_404_and_a_wrong_method_405() {
    for config in [config(), with_token()] {
        let app = gateway(&config);
        let answer = get(&app, "/no/such/route").await;
        let detail = problem(&answer, StatusCode::NOT_FOUND, "not_found");
        assert_names(&detail, &["/no/such/route", "/openapi.json"]);

        for (method, uri) in [
            (Method::DELETE, "/healthz".to_owned()),
            (Method::PATCH, format!("/queues/{}", unique("patch"))),
            (
                Method::GET,
                format!("/queues/{}/messages/r/ack", unique("get")),
            ),
        ] {
            let answer = send(&app, as_app(&config, method.clone(), &uri, Body::empty())).await;
            let detail = problem(
                &answer,
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
            );
            assert_names(&detail, &[method.as_str(), &uri]);
        }
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let mut config = config();
    config.http.max_body_bytes = 64;
    let app = gateway(&config);
    let body = format!("{{\"arguments\": {{\"x-note\": \"{}\"}}}}", "n".repeat(100));
    let answer = send(
        &app,
        request(Method::PUT, &format!("/queues/{}", unique("big")), body),
    )
    .await;
    let detail = problem(&answer, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert_names(&detail, &["max_body_bytes"]);
}

#[tokio::test]
async fn too_many_header_fields_are_431() {
    let mut config = config();
    config.http.max_headers = 4;
    let app = gateway(&config);
    let mut request = request(Method::GET, "/healthz", Body::empty());
    for index in 0..5 {
        request.headers_mut().insert(
            header::HeaderName::try_from(format!("x-extra-{index}")).expect("a header name"),
            "1".parse().expect("a header value"),
        );
    }
    let detail = problem(
        &send(&app, request).await,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
    );
    assert_names(
        &detail,
        &["carries 5 header fields", "at most 4", "max_headers"],
    );
}

#[tokio::test]
async fn the_request_id_the_gateway_adds_does_not_count_against_the_limits() {
    let mut config = config();
    config.http.max_headers = 4;
    let app = gateway(&config);
    let with_fields = |count: usize, request_id: Option<String>| {
        let mut request = request(Method::GET, "/healthz", Body::empty());
        for index in 0..count {
            request.headers_mut().insert(
                header::HeaderName::try_from(format!("x-extra-{index}")).expect("a header name"),
                "1".parse().expect("a header value"),
            );
        }
        if let Some(id) = request_id {
            request
                .headers_mut()
                .insert("x-request-id", id.parse().expect("a header value"));
        }
        request
    };
    assert_eq!(
        send(&app, with_fields(4, None)).await.status,
        StatusCode::OK
    );
    let own_id = send(&app, with_fields(4, Some("client-id-1".into()))).await;
    assert_eq!(own_id.status, StatusCode::OK);
    assert_eq!(own_id.headers["x-request-id"], "client-id-1");
    let detail = problem(
        &send(&app, with_fields(0, Some("x".repeat(201)))).await,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
    );
    assert_names(&detail, &["x-request-id", "at most 200"]);
}

#[tokio::test]
async fn a_request_that_needs_the_broker_says_it_is_unavailable() {
    let answer = get(
        &gateway(&config()),
        &format!("/queues/{}/next", unique("down")),
    )
    .await;
    let detail = problem(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "broker_unavailable",
    );
    assert_names(&detail, &["Retry-After"]);
    assert!(answer.headers.contains_key(header::RETRY_AFTER));
}
