//! `fedcsg`: the operator CLI. Model inventories, centralised training and benchmarks on this
//! machine; a local federation; and the commands that talk to a running coordinator.

mod bench_cmd;
mod job_args;
mod local;
mod model_cmd;
mod remote;
mod submit;
mod train_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "fedcsg",
    version,
    about = "Federated training with Convolutional Slice Generators"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a model's parameter inventory: per role, exchanged per round, vs full filters.
    Model(model_cmd::ModelArgs),
    /// Train a model centrally on one machine and report loss, accuracy and images/s.
    Train(train_cmd::TrainArgs),
    /// Measure training-step and evaluation throughput (images/s) and peak memory.
    Bench(bench_cmd::BenchArgs),
    /// Run a whole federation here: a coordinator and N worker processes on loopback.
    Local(local::LocalArgs),
    /// Jobs and workers of a running coordinator.
    Status(remote::StatusArgs),
    /// Follow a job's rounds with a progress bar until it ends.
    Watch(remote::WatchArgs),
    /// Save a job's global model as safetensors.
    Export(remote::ExportArgs),
    /// Create a job on a running coordinator and optionally wait for it.
    Submit(submit::SubmitArgs),
}

fn main() -> anyhow::Result<()> {
    fedcsg_common::ops::tune_process_for_training();
    let cli = Cli::parse();
    match cli.command {
        Command::Model(args) => model_cmd::run(args),
        Command::Train(args) => train_cmd::run(args),
        Command::Bench(args) => bench_cmd::run(args),
        Command::Local(args) => runtime()?.block_on(local::run(args)),
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
