//! Prometheus metrics: names in one place, the recorder installed once per process.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS: &str = "carrot_http_requests_total";
pub const HTTP_DURATION: &str = "carrot_http_request_duration_seconds";
/// Client connections open now.
pub const HTTP_CONNECTIONS: &str = "carrot_http_connections";
/// Connections closed for waiting too long, by `reason`: `header` or `idle`.
pub const HTTP_CONNECTIONS_TIMED_OUT: &str = "carrot_http_connections_timed_out_total";
/// Connections closed to make room for a new one when every slot was taken.
pub const HTTP_CONNECTIONS_EVICTED: &str = "carrot_http_connections_evicted_total";
pub const PUBLISHED: &str = "carrot_messages_published_total";
pub const CONFIRMED: &str = "carrot_messages_confirmed_total";
pub const RETURNED: &str = "carrot_messages_returned_total";
pub const NACKED: &str = "carrot_messages_nacked_total";
pub const DELIVERED: &str = "carrot_messages_delivered_total";
pub const ACKED: &str = "carrot_messages_acked_total";
pub const REJECTED: &str = "carrot_messages_rejected_total";
pub const REQUEUED: &str = "carrot_messages_requeued_total";
pub const LEASES_EXPIRED: &str = "carrot_leases_expired_total";
pub const LEASES_OPEN: &str = "carrot_leases_open";
pub const CONSUMER_SETS: &str = "carrot_consumer_sets";
pub const STREAMS_OPEN: &str = "carrot_streams_open";
pub const CHANNELS: &str = "carrot_publish_channels";
pub const CHANNELS_IN_USE: &str = "carrot_publish_channels_in_use";
pub const CONNECTIONS: &str = "carrot_amqp_connections";
/// Live AMQP connections on each configured broker node, by `node` (host:port).
pub const CONNECTIONS_BY_NODE: &str = "carrot_amqp_connections_by_node";
pub const BROKER_CONNECTED: &str = "carrot_broker_connected";
pub const RECONNECTS: &str = "carrot_broker_reconnects_total";
/// Channels the broker closed (a refused request does that), by AMQP reply name.
pub const CHANNELS_CLOSED: &str = "carrot_broker_channels_closed_total";
/// Connections closed by the broker or broken, by AMQP reply name or `IO_ERROR`/`PARSE_ERROR`.
pub const CONNECTIONS_LOST: &str = "carrot_broker_connections_lost_total";
/// Connections taken out of the pool before lapin would reuse their channel ids.
pub const CONNECTIONS_RETIRED: &str = "carrot_broker_connections_retired_total";
/// Heap bytes in use, and bytes the allocator holds from the system (jemalloc's view).
pub const MEMORY_ALLOCATED: &str = "carrot_memory_allocated_bytes";
pub const MEMORY_RESIDENT: &str = "carrot_memory_resident_bytes";
pub const SUBSCRIPTIONS: &str = "carrot_subscriptions";
pub const PUSH_ATTEMPTS: &str = "carrot_subscription_attempts_total";
pub const PUSH_ATTEMPT_DURATION: &str = "carrot_subscription_attempt_duration_seconds";
pub const PUSH_MESSAGES: &str = "carrot_subscription_messages_total";
pub const PUSH_IN_FLIGHT: &str = "carrot_subscription_in_flight";

/// Latency buckets from well under a millisecond (a confirm on loopback) to long polls.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0,
];

/// The process-wide recorder; every gateway in the process reports into it.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(&BUCKETS)
            .expect("the bucket list is not empty");
        match builder.install_recorder() {
            Ok(handle) => {
                // Shown as 0 from the first scrape, so that a rise is visible from the start.
                metrics::counter!(RECONNECTS).increment(0);
                handle
            }
            // Another recorder is installed (an embedding program): render ours, unreported.
            Err(_) => PrometheusBuilder::new().build_recorder().handle(),
        }
    })
}

/// Counts one message event.
pub fn count(name: &'static str, by: u64) {
    metrics::counter!(name).increment(by);
}

/// Drains histogram samples every second until `stop`: unscraped, they would keep growing.
pub fn spawn_upkeep(stop: tokio_util::sync::CancellationToken) -> tokio::task::JoinHandle<()> {
    crate::upkeep::spawn_every(std::time::Duration::from_secs(1), stop, || {
        handle().run_upkeep();
        std::future::ready(())
    })
}
