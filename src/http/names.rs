//! Exchange and queue names as they appear in paths, and what declaring them answers.

use crate::model::check_name;

use super::error::ApiError;

/// The default exchange has the empty name, which a path cannot carry.
pub const DEFAULT_EXCHANGE_ALIAS: &str = "amq.default";

/// Validates an exchange name and maps `amq.default` to the default exchange `""`.
pub fn exchange_name(name: &str) -> Result<&str, ApiError> {
    check_name("exchange", name)?;
    Ok(if name == DEFAULT_EXCHANGE_ALIAS {
        ""
    } else {
        name
    })
}

pub fn queue_name(name: &str) -> Result<&str, ApiError> {
    check_name("queue", name)?;
    Ok(name)
}

/// `amq.*` names belong to the broker: they are never declared or deleted through the gateway.
pub fn refuse_reserved(name: &str, what: &str) -> Result<(), ApiError> {
    if crate::model::topology::is_reserved(name) {
        return Err(ApiError::Forbidden(format!(
            "{name:?} is reserved by the broker (amq.* names) and cannot be {what}; \
             choose a name that does not start with amq."
        )));
    }
    Ok(())
}

/// A declare answers 201 when it created the thing, 200 when it was already there alike.
pub fn declared_status(created: bool) -> axum::http::StatusCode {
    if created {
        axum::http::StatusCode::CREATED
    } else {
        axum::http::StatusCode::OK
    }
}
