//! `/exchanges/{exchange}`: declare, inspect and delete exchanges.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, Problem};
use super::extract::{ApiPath, ApiQuery, Body, parse_json_or_default};
use super::names::{declared_status, exchange_name, refuse_reserved};
use crate::auth::Permission;
use crate::topology::ExchangeSpec;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(declare_exchange, get_exchange, delete_exchange))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExchangeResponse {
    pub name: String,
    /// The settings declared (PUT only).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub settings: Option<ExchangeSpec>,
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
        (status = 400, description = "invalid_request (e.g. unknown type)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden: reserved amq.* name", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "precondition_failed: exists with other settings", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "broker_unavailable", body = Problem, content_type = "application/problem+json"),
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
    let spec: ExchangeSpec = parse_json_or_default(&body)?;
    spec.validate()?;
    let created = state.broker.declare_exchange(&name, &spec).await?;
    let status = declared_status(created);
    Ok((
        status,
        Json(ExchangeResponse {
            name,
            settings: Some(spec),
        }),
    ))
}

/// Whether an exchange exists (a passive declare).
#[utoipa::path(
    get,
    path = "/exchanges/{exchange}",
    tag = "topology",
    params(("exchange" = String, Path, description = "Exchange name; `amq.default` for the default exchange")),
    responses(
        (status = 200, description = "It exists", body = ExchangeResponse),
        (status = 404, description = "exchange_not_found", body = Problem, content_type = "application/problem+json"),
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
        return Ok(Json(ExchangeResponse {
            name,
            settings: None,
        }));
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
        (status = 403, description = "forbidden: reserved amq.* name", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "exchange_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "precondition_failed: if_unused and still bound", body = Problem, content_type = "application/problem+json"),
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
