//! fedcsg-worker: parses flags, sets up logging, and runs the worker until done or signalled.

#![forbid(unsafe_code)]

use std::time::Duration;

use clap::{CommandFactory, Parser};
use fedcsg_worker::{LogFormat, WorkerArgs, WorkerConfig};
use tracing_subscriber::EnvFilter;

/// How long an evaluation still running on a blocking thread may delay the exit after shutdown
/// (training stops by itself; evaluation and data loading cannot be interrupted).
const EXIT_GRACE: Duration = Duration::from_secs(2);

fn main() -> anyhow::Result<()> {
    fedcsg_ml::ops::tune_process_for_training();
    // A FEDCSG_ISA this CPU cannot run is refused before any work starts.
    fedcsg_ml::ops::isa_from_env()?;
    let args = WorkerArgs::parse();
    // Values clap cannot check itself are reported like clap's own errors (usage, exit code 2).
    let config = WorkerConfig::from_args(args).unwrap_or_else(|e| {
        WorkerArgs::command()
            .error(clap::error::ErrorKind::ValueValidation, e)
            .exit()
    });
    init_tracing(config.log_format);
    if let Some(threads) = config.threads {
        fedcsg_ml::ops::set_kernel_threads(threads)?;
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(fedcsg_worker::run(config, shutdown_signal()));
    runtime.shutdown_timeout(EXIT_GRACE);
    Ok(result?)
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
