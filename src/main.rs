//! The `kafka-dedup-proxy` binary: configuration from flags and the
//! environment, logging, the metrics recorder, the proxy, and a drain on
//! SIGTERM/SIGINT bounded by the grace period.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use kafka_dedup_proxy::config::{Config, LogFormat};
use kafka_dedup_proxy::metrics::install_recorder;
use kafka_dedup_proxy::proxy::Proxy;
use tracing_subscriber::EnvFilter;

fn init_logging(config: &Config) -> Result<(), String> {
    let filter = EnvFilter::try_new(&config.log_level)
        .map_err(|e| format!("--log-level '{}': {e}", config.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        // Colour codes only on a terminal, not in a log collector's files.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn main() -> ExitCode {
    let config = Config::parse();
    if let Err(e) = config.validate() {
        eprintln!("kafka-dedup-proxy: {e}");
        return ExitCode::from(2);
    }
    if let Err(e) = init_logging(&config) {
        eprintln!("kafka-dedup-proxy: {e}");
        return ExitCode::from(2);
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = config.worker_threads {
        runtime.worker_threads(n);
    }
    match runtime.build() {
        Ok(rt) => rt.block_on(run(config)),
        Err(e) => {
            eprintln!("kafka-dedup-proxy: cannot start the runtime: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(config: Config) -> ExitCode {
    let handle = install_recorder();
    let grace = config.shutdown_grace();
    let proxy = match Proxy::start(config, Some(handle)).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("kafka-dedup-proxy: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    shutdown_signal().await;
    tracing::info!("signal received: draining");
    if proxy.shutdown(grace).await {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
