//! `/subscriptions`: push delivery of a queue's messages to the app's URL.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{ApiPath, Body, parse_object};
use super::names::declared_status;
use super::state::AppState;
use crate::auth::Permission;
use crate::messaging::push::{
    LiveState, PushError, Subscription, SubscriptionRequest, SubscriptionSpec,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_subscription, list_subscriptions))
        .routes(routes!(get_subscription, delete_subscription))
}

/// A subscription's settings and how it is doing.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionResponse {
    #[serde(flatten)]
    pub spec: SubscriptionSpec,
    #[serde(flatten)]
    pub live: LiveState,
    /// Declared in the config file (started again with every start of the gateway).
    pub configured: bool,
}

impl SubscriptionResponse {
    fn of(subscription: &Subscription) -> Self {
        Self {
            spec: subscription.spec.clone(),
            live: subscription.live.snapshot(),
            configured: subscription.configured,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionList {
    pub subscriptions: Vec<SubscriptionResponse>,
}

/// Start pushing a queue's messages to a URL; 200 if an equal subscription already exists.
#[utoipa::path(
    post,
    path = "/subscriptions",
    tag = "subscriptions",
    request_body = SubscriptionRequest,
    responses(
        (status = 201, description = "Created", body = SubscriptionResponse),
        (status = 200, description = "The same subscription already exists", body = SubscriptionResponse),
    )
)]
pub async fn create_subscription(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body,
) -> Result<(StatusCode, Json<SubscriptionResponse>), ApiError> {
    let spec = parse_object::<SubscriptionRequest>(&body)?.validate()?;
    caller.require(Permission::Read, "queue", &spec.queue)?;
    let (subscription, created) = state.subscriptions.create(spec).await?;
    Ok((
        declared_status(created),
        Json(SubscriptionResponse::of(&subscription)),
    ))
}

/// Every subscription on a queue the caller may read.
#[utoipa::path(
    get,
    path = "/subscriptions",
    tag = "subscriptions",
    responses((status = 200, description = "Every subscription this token may see", body = SubscriptionList))
)]
pub async fn list_subscriptions(
    State(state): State<AppState>,
    caller: Caller,
) -> Json<SubscriptionList> {
    let subscriptions = state
        .subscriptions
        .list()
        .iter()
        .filter(|subscription| {
            caller
                .require(Permission::Read, "queue", &subscription.spec.queue)
                .is_ok()
        })
        .map(|subscription| SubscriptionResponse::of(subscription))
        .collect();
    Json(SubscriptionList { subscriptions })
}

/// A subscription's settings and live state: in flight, delivered, retried, dead-lettered, last error.
#[utoipa::path(
    get,
    path = "/subscriptions/{name}",
    tag = "subscriptions",
    params(("name" = String, Path)),
    responses(
        (status = 200, description = "Its settings and live state", body = SubscriptionResponse),
    )
)]
pub async fn get_subscription(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<SubscriptionResponse>, ApiError> {
    let subscription = readable(&state, &caller, &name)?;
    Ok(Json(SubscriptionResponse::of(&subscription)))
}

/// Stop a subscription; the messages it was delivering go back to the queue.
#[utoipa::path(
    delete,
    path = "/subscriptions/{name}",
    tag = "subscriptions",
    params(("name" = String, Path)),
    responses(
        (status = 204, description = "Stopped and deleted"),
    )
)]
pub async fn delete_subscription(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    readable(&state, &caller, &name)?;
    state.subscriptions.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn readable(
    state: &AppState,
    caller: &Caller,
    name: &str,
) -> Result<std::sync::Arc<Subscription>, ApiError> {
    let subscription = state
        .subscriptions
        .get(name)
        .ok_or_else(|| PushError::NotFound(name.to_owned()))?;
    caller.require(Permission::Read, "queue", &subscription.spec.queue)?;
    Ok(subscription)
}
