//! The OpenAPI document, generated from the handlers, and a self-contained reference page.

use axum::Json;
use axum::response::Html;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "carrot-gateway",
        description = "HTTP/REST gateway putting carrot's Publisher and Consumer in front of RabbitMQ. \
                       Errors are RFC 9457 application/problem+json with a stable `code`.",
    ),
    tags(
        (name = "messages", description = "Publish (carrot's Publisher.send)"),
        (name = "consume", description = "Take messages and settle leases (carrot's Consumer.fetch, message.ack)"),
        (name = "consumer sets", description = "Consumers over several queues (carrot's ConsumerSet)"),
        (name = "topology", description = "Exchanges, queues and bindings (carrot's declare, discard_all)"),
        (name = "operations", description = "Probes and documents"),
    )
)]
struct ApiDoc;

pub fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_openapi))
        .routes(routes!(get_docs))
}

/// The full document, as served at `/openapi.json` and checked in as `openapi/openapi.json`.
pub fn openapi_json() -> String {
    let (_, spec) = super::routes().split_for_parts();
    spec.to_pretty_json()
        .expect("the generated document always serializes")
}

/// This OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
async fn get_openapi() -> Json<serde_json::Value> {
    let (_, spec) = super::routes().split_for_parts();
    Json(serde_json::to_value(spec).unwrap_or_default())
}

/// A readable API reference, built in the browser from `/openapi.json`; needs no network.
#[utoipa::path(get, path = "/docs", tag = "operations",
    responses((status = 200, description = "HTML page", content_type = "text/html")))]
async fn get_docs() -> Html<&'static str> {
    Html(include_str!("docs.html"))
}
