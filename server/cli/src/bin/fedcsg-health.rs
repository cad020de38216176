//! `fedcsg-health`: a gRPC health-check client for container and orchestrator probes. It asks a
//! `grpc.health.v1.Health` server for one service's status and exits 0 only when that service is
//! SERVING, so the images need no separate grpc_health_probe.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use fedcsg_worker::tls_args::ClientTlsArgs;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[derive(Parser)]
#[command(
    name = "fedcsg-health",
    version,
    about = "Exit 0 when a gRPC server reports a service SERVING (grpc.health.v1)"
)]
struct Cli {
    /// Server URL: http://HOST:PORT, or https://HOST:PORT with --ca-cert.
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    addr: String,
    /// Service to ask about; the empty name is the server as a whole.
    #[arg(long, default_value = "")]
    service: String,
    /// Give up after this many milliseconds (connecting included).
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
    #[command(flatten)]
    tls: ClientTlsArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fedcsg-health: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let timeout = Duration::from_millis(cli.timeout_ms);
    let outcome = runtime.block_on(async {
        tokio::time::timeout(timeout, check(&cli.addr, &cli.tls, &cli.service, timeout)).await
    });
    match outcome {
        Ok(Ok(ServingStatus::Serving)) => {
            println!("{} service {:?}: SERVING", cli.addr, cli.service);
            ExitCode::SUCCESS
        }
        Ok(Ok(status)) => {
            eprintln!(
                "{} service {:?}: {}",
                cli.addr,
                cli.service,
                status.as_str_name()
            );
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("{} service {:?}: {e:#}", cli.addr, cli.service);
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "{} service {:?}: no answer within {} ms",
                cli.addr, cli.service, cli.timeout_ms
            );
            ExitCode::FAILURE
        }
    }
}

async fn check(
    addr: &str,
    tls: &ClientTlsArgs,
    service: &str,
    timeout: Duration,
) -> anyhow::Result<ServingStatus> {
    let endpoint = match tls.resolve(addr.starts_with("https://"))? {
        Some(tls) => tls.endpoint(addr)?,
        None => Channel::from_shared(addr.to_string())
            .with_context(|| format!("server URL {addr:?}"))?,
    };
    let channel = endpoint
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await
        .context("cannot connect")?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await?
        .into_inner();
    Ok(ServingStatus::try_from(response.status).unwrap_or(ServingStatus::Unknown))
}
