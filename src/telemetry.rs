//! Log output: human-readable lines or JSON, filtered by `CARROT_LOG`.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// lapin logs every basic.return and every channel the broker closes (a passive declare of a
/// missing queue, say); the gateway reports those to the client and logs outages itself.
const DEFAULT_FILTER: &str = "info,lapin=off";

pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_env("CARROT_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
