//! `/docs`: Swagger UI, shipped inside the binary, reading `/openapi.json` and sending its
//! "try it out" requests with the token entered under "Authorize".

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use utoipa_swagger_ui::Config;

use super::super::error::ApiError;
use crate::http::state::AppState;

/// The page's assets, under `/docs/`; `/docs` itself is an operation of the document.
pub fn assets() -> Router<AppState> {
    Router::new().route("/docs/{*file}", get(asset))
}

fn config() -> Arc<Config<'static>> {
    static CONFIG: OnceLock<Arc<Config<'static>>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            // Relative to the page, so the reference works behind a path prefix too.
            Arc::new(
                Config::new(["openapi.json"])
                    .try_it_out_enabled(true)
                    .persist_authorization(true)
                    .display_operation_id(true),
            )
        })
        .clone()
}

/// The page at `/docs`, its asset links made relative to that URL (no trailing slash).
pub fn page() -> Result<Html<String>, ApiError> {
    static PAGE: OnceLock<Option<String>> = OnceLock::new();
    PAGE.get_or_init(|| {
        let index = utoipa_swagger_ui::serve("index.html", config()).ok()??;
        let html = String::from_utf8(index.bytes.to_vec()).ok()?;
        Some(
            html.replace("\"./", "\"docs/")
                .replace("href=\"index.css\"", "href=\"docs/index.css\"")
                .replace(
                    "<title>Swagger UI</title>",
                    "<title>carrot-gateway API</title>",
                ),
        )
    })
    .clone()
    .map(Html)
    .ok_or_else(|| ApiError::Internal("the embedded Swagger UI has no index.html".into()))
}

async fn asset(Path(file): Path<String>) -> Response {
    match utoipa_swagger_ui::serve(&file, config()) {
        Ok(Some(found)) => {
            let media = HeaderValue::from_str(&found.content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            let mut response = (StatusCode::OK, found.bytes.into_owned()).into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, media);
            response
        }
        Ok(None) => ApiError::RouteNotFound(format!(
            "no file {file:?} in the documentation page; open /docs"
        ))
        .into_response(),
        Err(error) => ApiError::Internal(format!("Swagger UI: {error}")).into_response(),
    }
}
