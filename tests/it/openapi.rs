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
    for path in [
        "/exchanges/{exchange}/messages",
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/docs",
    ] {
        assert!(spec["paths"].get(path).is_some(), "{path} missing");
    }
    let docs = gateway
        .http
        .get(gateway.url("/docs"))
        .send()
        .await
        .expect("answers");
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.expect("html").contains("/openapi.json"));
}
