//! Exchange and queue names as they appear in paths.

use crate::message::check_name;

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
