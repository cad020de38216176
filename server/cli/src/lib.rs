//! fedcsg-cli: the operator CLI `fedcsg` (and the probe `fedcsg-health`). The binaries only call
//! [`run`]; this library holds every command so its flags and outputs are testable.
//!
//! - [`model_cmd`], [`train_cmd`], [`bench_cmd`]: model inventories, centralised training and
//!   benchmarks on this machine (through `fedcsg-ml`).
//! - [`local`]: a whole federation here: the real `fedcsg-coordinator` and `fedcsg-worker`
//!   processes on loopback, one job, a line per round and a summary JSON.
//! - [`simulate`]: a federation of many virtual clients in one process, with the real
//!   coordinator and worker code and a link model.
//! - [`frontier_cmd`]: accuracy per byte over simulation summaries (table and plot).
//! - [`plot_cmd`]: one job's rounds as a picture (accuracy, loss, bytes, training times).
//! - [`chart`]: what the plots share (the embedded font).
//! - [`remote`], [`submit`], [`job_args`]: talking to a running coordinator over gRPC (status,
//!   watch, export, submit), exactly as any other gRPC client would.
//!
//! It is a binary's crate: errors are `anyhow` with context, printed by `main`.

#![forbid(unsafe_code)]

pub mod bench_cmd;
pub mod chart;
pub mod frontier_cmd;
pub mod job_args;
pub mod loadtest;
pub mod local;
pub mod model_cmd;
pub mod plot_cmd;
pub mod remote;
pub mod simulate;
pub mod submit;
pub mod train_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "fedcsg",
    version,
    about = "Federated training with Convolutional Slice Generators"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Print a model's parameter inventory: per role, exchanged per round, vs full filters.
    Model(model_cmd::ModelArgs),
    /// Train a model centrally on one machine and report loss, accuracy and images/s.
    Train(train_cmd::TrainArgs),
    /// Measure training-step and evaluation throughput (images/s) and peak memory.
    Bench(bench_cmd::BenchArgs),
    /// Run a whole federation here: a coordinator and N worker processes on loopback.
    Local(local::LocalArgs),
    /// Simulate a federation of many clients in one process: the real coordinator and worker
    /// code, K clients training at a time, a link model for transfer times.
    Simulate(simulate::SimulateArgs),
    /// Load-test a coordinator: N synthetic workers over real gRPC, no training; round and
    /// heartbeat latency, coordinator CPU and memory.
    Loadtest(loadtest::LoadtestArgs),
    /// Accuracy per byte from simulation summaries: a markdown table and a PNG plot.
    Frontier(frontier_cmd::FrontierArgs),
    /// Plot a job's rounds (accuracy, loss, bytes, per-worker training time) as PNG or SVG,
    /// from a summary JSON or a running coordinator.
    Plot(plot_cmd::PlotArgs),
    /// Jobs and workers of a running coordinator.
    Status(remote::StatusArgs),
    /// Follow a job's rounds with a progress bar until it ends.
    Watch(remote::WatchArgs),
    /// Save a job's global model as safetensors.
    Export(remote::ExportArgs),
    /// Create a job on a running coordinator and optionally wait for it.
    Submit(submit::SubmitArgs),
}

/// Runs one parsed command to completion.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Model(args) => model_cmd::run(args),
        Command::Train(args) => train_cmd::run(args),
        Command::Bench(args) => bench_cmd::run(args),
        Command::Local(args) => runtime()?.block_on(local::run(args)),
        Command::Simulate(args) => runtime()?.block_on(simulate::run(args)),
        Command::Frontier(args) => frontier_cmd::run(args),
        Command::Plot(args) => runtime()?.block_on(plot_cmd::run(args)),
        Command::Loadtest(args) => runtime()?.block_on(loadtest::run(args)),
        Command::Status(args) => runtime()?.block_on(remote::status(args)),
        Command::Watch(args) => runtime()?.block_on(remote::watch(args)),
        Command::Export(args) => runtime()?.block_on(remote::export(args)),
        Command::Submit(args) => runtime()?.block_on(submit::run(args)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// clap's own consistency checks (duplicate flags, bad defaults) over every subcommand.
    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_of_readme_is_there() {
        let names: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect();
        for name in [
            "model", "train", "bench", "local", "simulate", "plot", "status", "watch", "export",
            "submit",
        ] {
            assert!(
                names.iter().any(|n| n == name),
                "no `fedcsg {name}` in {names:?}"
            );
        }
    }

    #[test]
    fn an_unknown_command_is_refused_with_its_name() {
        let err = Cli::try_parse_from(["fedcsg", "simulte"])
            .err()
            .expect("refused");
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidSubcommand);
        assert!(err.to_string().contains("simulte"), "{err}");
    }
}
