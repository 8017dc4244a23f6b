//! `/exchanges/{exchange}`: declare, inspect and delete exchanges.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery, Body, parse_object_or_default};
use super::names::{declared_status, exchange_name, refuse_reserved};
use super::state::AppState;
use crate::auth::Permission;
use crate::model::topology::ExchangeSpec;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(declare_exchange, get_exchange, delete_exchange))
}

/// An exchange that exists: `GET` says only that; `PUT` also echoes the settings declared.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExchangeResponse {
    pub name: String,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durable: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_delete: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub arguments: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ExchangeResponse {
    fn exists(name: String) -> Self {
        Self {
            name,
            kind: None,
            durable: None,
            auto_delete: None,
            internal: None,
            arguments: None,
        }
    }

    fn declared(name: String, spec: ExchangeSpec) -> Self {
        Self {
            name,
            kind: Some(spec.kind),
            durable: Some(spec.durable),
            auto_delete: Some(spec.auto_delete),
            internal: Some(spec.internal),
            arguments: Some(spec.arguments),
        }
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteExchangeParams {
    /// Only delete it when no queue or exchange is bound to it (else 409).
    #[serde(default)]
    pub if_unused: bool,
}

/// Declare an exchange (carrot's exchange declare): 201 created, 200 already there alike.
#[utoipa::path(
    put,
    path = "/exchanges/{exchange}",
    tag = "topology",
    params(("exchange" = String, Path, description = "Exchange name")),
    request_body(content = ExchangeSpec, description = "Settings; every field optional"),
    responses(
        (status = 201, description = "Created", body = ExchangeResponse),
        (status = 200, description = "Already there with the same settings", body = ExchangeResponse),
    )
)]
pub async fn declare_exchange(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    Body(body): Body,
) -> Result<(StatusCode, Json<ExchangeResponse>), ApiError> {
    exchange_name(&name)?;
    caller.require(Permission::Configure, "exchange", &name)?;
    refuse_reserved(&name, "declared")?;
    let spec: ExchangeSpec = parse_object_or_default(&body)?;
    spec.validate()?;
    let created = state.broker.declare_exchange(&name, &spec).await?;
    let status = declared_status(created);
    Ok((status, Json(ExchangeResponse::declared(name, spec))))
}

/// Whether an exchange exists (a passive declare).
#[utoipa::path(
    get,
    path = "/exchanges/{exchange}",
    tag = "topology",
    params(("exchange" = String, Path, description = "Exchange name; `amq.default` for the default exchange")),
    responses(
        (status = 200, description = "It exists", body = ExchangeResponse),
    )
)]
pub async fn get_exchange(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<ExchangeResponse>, ApiError> {
    let exchange = exchange_name(&name)?;
    caller.require_any("exchange", &name)?;
    // The broker refuses a passive declare of the default exchange, which always exists.
    if exchange.is_empty() || state.broker.exchange_exists(exchange).await? {
        return Ok(Json(ExchangeResponse::exists(name)));
    }
    Err(ApiError::ExchangeNotFound(format!(
        "no exchange {name:?}; declare it with PUT /exchanges/{name}"
    )))
}

/// Delete an exchange.
#[utoipa::path(
    delete,
    path = "/exchanges/{exchange}",
    tag = "topology",
    params(("exchange" = String, Path, description = "Exchange name"), DeleteExchangeParams),
    responses(
        (status = 204, description = "Deleted"),
    )
)]
pub async fn delete_exchange(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiQuery(params): ApiQuery<DeleteExchangeParams>,
) -> Result<StatusCode, ApiError> {
    exchange_name(&name)?;
    caller.require(Permission::Configure, "exchange", &name)?;
    refuse_reserved(&name, "deleted")?;
    state
        .broker
        .delete_exchange(&name, params.if_unused)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
