//! `/tasks`: Celery tasks from any language (protocol 2), and their results when the worker uses
//! the `rpc://` result backend.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{ApiPath, Body, parse_object_or_default};
use super::state::AppState;
use crate::auth::Permission;
use crate::messaging::tasks::{TaskCall, TaskState};

pub fn router() -> OpenApiRouter<AppState> {
    // One path, one name for its segment: a task's name to send it, its id to read it.
    OpenApiRouter::new().routes(routes!(send_task, get_task))
}

/// Send a Celery task (apply_async): a protocol-2 message to its queue, which a Celery worker
/// runs; answered once the broker confirmed it.
#[utoipa::path(
    post,
    path = "/tasks/{task}",
    tag = "tasks",
    params(("task" = String, Path, description = "The task's registered name, e.g. `proj.tasks.add`")),
    request_body(content = Option<TaskCall>, description = "Its arguments and options; none for a call without arguments"),
    responses(
        (status = 202, description = "Sent; its state is PENDING until the worker's result comes back", body = TaskState),
    )
)]
pub async fn send_task(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(task): ApiPath<String>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let call: TaskCall = if body.trim_ascii() == b"null" {
        TaskCall::default()
    } else {
        parse_object_or_default(&body)?
    };
    let queue = call.queue.as_deref().unwrap_or("celery");
    caller.require(Permission::Write, "queue", queue)?;
    let sent = state.tasks.send(&task, &call).await?;
    let location = format!("/tasks/{}", sent.id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(sent),
    )
        .into_response())
}

/// A task's state and result, for tasks this gateway sent (Celery's AsyncResult with the rpc
/// backend: only the sender learns the result).
#[utoipa::path(
    get,
    path = "/tasks/{task}",
    tag = "tasks",
    params(("task" = String, Path, description = "The task's id, as `POST /tasks/{task}` answered it")),
    responses(
        (status = 200, description = "Its state; PENDING until the worker's result came back", body = TaskState),
    )
)]
pub async fn get_task(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TaskState>, ApiError> {
    let Some(task) = state.tasks.state(&id) else {
        return Err(ApiError::TaskNotFound(format!(
            "this gateway sent no task {id:?} (or it was among the oldest of the 10000 it keeps); \
             results come back only to the gateway that sent the task"
        )));
    };
    caller.require(Permission::Read, "queue", &task.queue)?;
    Ok(Json(task))
}
