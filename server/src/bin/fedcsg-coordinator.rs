//! `fedcsg-coordinator`: parses configuration, sets up tracing and runs the coordinator until
//! Ctrl-C or SIGTERM.

#![forbid(unsafe_code)]

use clap::Parser;
use fedcsg_server::config::CoordinatorArgs;

#[derive(Parser)]
#[command(
    name = "fedcsg-coordinator",
    version,
    about = "fedcsg federated-training coordinator"
)]
struct Cli {
    #[command(flatten)]
    args: CoordinatorArgs,
    /// text | json.
    #[arg(long, env = "FEDCSG_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

fn main() -> anyhow::Result<()> {
    // Coordinator-side evaluation runs candle: set up its threads before any thread exists.
    fedcsg_ml::ops::tune_process_for_training();
    // A FEDCSG_ISA this CPU cannot run is refused before any work starts.
    fedcsg_ml::ops::isa_from_env()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    let cli = Cli::parse();
    fedcsg_server::telemetry::init(&cli.log_format).map_err(anyhow::Error::msg)?;
    let config = cli.args.resolve()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    fedcsg_server::run(listener, config, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
