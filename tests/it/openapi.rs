//! The checked-in OpenAPI document is the one the code generates.

use crate::support::{json, ready_gateway};

#[test]
fn checked_in_openapi_matches_the_code() {
    let generated = carrot_gateway::http::openapi_json();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        checked_in.trim_end() == generated.trim_end(),
        "openapi/openapi.json is out of date: run `cargo run -- openapi > openapi/openapi.json`"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn served_document_lists_the_paths() {
    let gateway = ready_gateway().await;
    let spec = json(
        gateway
            .http
            .get(gateway.url("/openapi.json"))
            .send()
            .await
            .expect("answers"),
        200,
    )
    .await;
    assert!(
        spec["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1"))
    );
    // Every operation of the HTTP contract, method and path.
    for (method, path) in [
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
        ("get", "/docs"),
        ("post", "/exchanges/{exchange}/messages"),
        ("put", "/exchanges/{exchange}"),
        ("get", "/exchanges/{exchange}"),
        ("delete", "/exchanges/{exchange}"),
        ("put", "/queues/{queue}"),
        ("get", "/queues/{queue}"),
        ("delete", "/queues/{queue}"),
        ("post", "/queues/{queue}/bindings"),
        ("delete", "/queues/{queue}/bindings"),
        ("delete", "/queues/{queue}/messages"),
        ("get", "/queues/{queue}/messages"),
        ("get", "/queues/{queue}/next"),
        ("get", "/queues/{queue}/next/raw"),
        ("get", "/queues/{queue}/stream"),
        ("post", "/queues/{queue}/messages/{receipt}/ack"),
        ("post", "/queues/{queue}/messages/{receipt}/reject"),
        ("post", "/queues/{queue}/messages/{receipt}/requeue"),
        ("post", "/queues/{queue}/messages/{receipt}/extend"),
        ("post", "/consumers"),
        ("delete", "/consumers/{id}"),
        ("get", "/consumers/{id}/next"),
        ("get", "/consumers/{id}/stream"),
        ("delete", "/consumers/{id}/queues/{queue}"),
        ("post", "/subscriptions"),
        ("get", "/subscriptions"),
        ("get", "/subscriptions/{name}"),
        ("delete", "/subscriptions/{name}"),
    ] {
        assert!(
            spec["paths"][path].get(method).is_some(),
            "{method} {path} missing"
        );
    }
    let docs = gateway
        .http
        .get(gateway.url("/docs"))
        .send()
        .await
        .expect("answers");
    assert_eq!(docs.status(), 200);
    assert!(
        docs.text()
            .await
            .expect("html")
            .contains("id=\"swagger-ui\"")
    );
    let initializer = gateway
        .http
        .get(gateway.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .expect("answers");
    assert_eq!(initializer.status(), 200);
    let script = initializer.text().await.expect("script");
    assert!(script.contains("\"url\": \"openapi.json\""), "{script}");
}
