//! Log output (human-readable lines or JSON, filtered by `CARROT_LOG`) and, when an OTLP
//! endpoint is configured, the gateway's own spans exported to it.

pub mod spans;

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

/// lapin logs every basic.return and every channel the broker closes (a passive declare of a
/// missing queue, say); the gateway reports those to the client and logs outages itself.
const DEFAULT_FILTER: &str = "info,lapin=off";
/// How often finished spans are sent.
const EXPORT_EVERY: Duration = Duration::from_secs(2);

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Installs logging, and span export to `otlp` (an OTLP/HTTP base URL such as
/// `http://collector:4318`) when given.
pub fn init(format: LogFormat, otlp: Option<&str>) -> Result<(), String> {
    let filter =
        EnvFilter::try_from_env("CARROT_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer().boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer().json().boxed(),
    };
    let spans = otlp.map(exporting_layer).transpose()?;
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(spans)
        .init();
    Ok(())
}

/// Whether spans are exported: without an endpoint none are even made, as they cost CPU.
pub fn exporting() -> bool {
    PROVIDER.get().is_some()
}

/// Sends the spans not sent yet; called once serving has stopped.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.shutdown();
    }
}

fn exporting_layer<S>(endpoint: &str) -> Result<impl Layer<S>, String>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let traces = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(traces)
        .with_timeout(Duration::from_secs(10))
        .build()
        .map_err(|error| format!("the OTLP exporter to {endpoint}: {error}"))?;
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(EXPORT_EVERY)
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(
            Resource::builder()
                .with_service_name("carrot-gateway")
                .build(),
        )
        .build();
    let tracer = provider.tracer("carrot-gateway");
    let _ = PROVIDER.set(provider);
    // Only the gateway's own spans: no log event becomes a span event, nothing of lapin's.
    let only_ours = tracing_subscriber::filter::filter_fn(|metadata| {
        metadata.is_span() && metadata.target().starts_with(spans::TARGET)
    });
    // The conventions' attributes only: no source locations, threads, targets or busy times.
    Ok(tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_filter(only_ours))
}
