//! The OpenAPI document, generated from the handlers, and the reference page that shows it.
//!
//! utoipa describes operations, parameters and schemas from the code; `shapes` then says what its
//! macros cannot (binary bodies, security, optional bodies), and `problems` adds every
//! operation's problem responses from one table.

mod docs;
mod problems;
mod shapes;

use std::sync::OnceLock;

use axum::Json;
use axum::response::Html;
use serde_json::Value;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::state::AppState;

pub use docs::assets as docs_assets;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "carrot-gateway",
        description = "HTTP/REST gateway putting carrot's Publisher and Consumer in front of RabbitMQ. \
                       Errors are RFC 9457 application/problem+json with a stable `code`. \
                       With auth tokens configured, every operation but the probes and documents \
                       needs `Authorization: Bearer <token>`.",
    ),
    components(schemas(
        super::error::Problem,
        super::messages::PublishResponse,
        super::messages::BatchResponse,
        super::publish_input::DeliveryModeParam,
        super::publish_input::SerializerParam,
        super::publish_input::ReplyParam,
        super::publish_input::FormatParam,
    )),
    tags(
        (name = "messages", description = "Publish (carrot's Publisher.send)"),
        (name = "consume", description = "Take messages and settle leases (carrot's Consumer.fetch, message.ack)"),
        (name = "consumer sets", description = "Consumers over several queues (carrot's ConsumerSet)"),
        (name = "subscriptions", description = "Push delivery to an HTTP endpoint"),
        (name = "tasks", description = "Celery tasks from any language, and their results"),
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

/// The whole document, built once.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let (_, spec) = super::routes().split_for_parts();
        let mut document =
            serde_json::to_value(spec).expect("the generated document always serializes");
        shapes::complete(&mut document);
        problems::add_responses(&mut document);
        document
    })
}

/// The document as served at `/openapi.json` and checked in as `openapi/openapi.json`.
pub fn openapi_json() -> String {
    serde_json::to_string_pretty(document()).expect("a JSON value always serializes")
}

/// This OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
async fn get_openapi() -> Json<&'static Value> {
    Json(document())
}

/// The API reference (Swagger UI) with "try it out"; shipped inside the binary, needs no network.
#[utoipa::path(get, path = "/docs", tag = "operations",
    responses((status = 200, description = "HTML page", content_type = "text/html")))]
async fn get_docs() -> Result<Html<String>, super::error::ApiError> {
    docs::page()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_its_problems() {
        let document = document();
        for (path, item) in document["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("path item") {
                let responses = operation["responses"].as_object().expect("responses");
                assert!(responses.contains_key("500"), "{method} {path}");
                for (status, response) in responses {
                    assert!(
                        response["description"]
                            .as_str()
                            .is_some_and(|d| !d.is_empty()),
                        "{method} {path} {status} has no description"
                    );
                }
            }
        }
    }
}
