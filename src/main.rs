//! Entry point: parse settings, start logging, bind, serve until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use carrot_gateway::config::{Cli, Command, Config};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    if let Err(error) = carrot_gateway::memory::return_freed_memory() {
        eprintln!("carrot-gateway: freed memory may stay resident: {error}");
    }
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(run()),
        Err(error) => {
            eprintln!("carrot-gateway: cannot start the async runtime: {error}");
            ExitCode::from(1)
        }
    }
}

async fn run() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Openapi) = cli.command {
        println!("{}", carrot_gateway::http::openapi_json());
        return ExitCode::SUCCESS;
    }
    let config = match Config::load(&cli) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("carrot-gateway: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    let otlp = config.server.otlp_endpoint.as_deref();
    if let Err(error) = carrot_gateway::telemetry::init(config.server.log_format, otlp) {
        eprintln!("carrot-gateway: {error}");
        return ExitCode::from(2);
    }

    let listener = match tokio::net::TcpListener::bind(config.server.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!(
                "carrot-gateway: cannot listen on {}: {error}",
                config.server.listen
            );
            return ExitCode::from(1);
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let served = carrot_gateway::run(config, listener, shutdown).await;
    // The exporter's thread blocks while it sends the last spans.
    let _ = tokio::task::spawn_blocking(carrot_gateway::telemetry::shutdown).await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("carrot-gateway: {error}");
            ExitCode::from(1)
        }
    }
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: finishing requests in flight");
    shutdown.cancel();
}
