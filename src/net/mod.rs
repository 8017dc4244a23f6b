//! The HTTP server: accepting connections, TLS, and the limits that protect the process.

mod activity;
mod server;
mod slots;
pub mod tls;
mod tls_accept;

pub use server::{HttpLimits, serve};

/// Descriptors kept for the broker connections, files and outgoing webhooks.
const RESERVED_FILES: u64 = 128;

/// The soft limit on open files, when the system tells.
fn open_files_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// The open-files limit less what the process needs besides client connections.
pub fn default_max_connections() -> usize {
    let limit = open_files_limit().unwrap_or(4096 + RESERVED_FILES);
    limit.saturating_sub(RESERVED_FILES).clamp(16, 25_000) as usize
}

/// Says so at start when client connections could use up the file descriptors.
fn warn_if_over_files_limit(max_connections: usize) {
    if let Some(limit) = open_files_limit()
        && max_connections as u64 + RESERVED_FILES > limit
    {
        tracing::warn!(
            max_connections,
            open_files_limit = limit,
            "max_connections leaves fewer than {RESERVED_FILES} file descriptors for the broker \
             and webhooks; raise the limit (ulimit -n) or lower max_connections"
        );
    }
}
