//! `fedcsg`: the operator CLI. Model inventories, centralised training and benchmarks on this
//! machine; a local federation; and the commands that talk to a running coordinator.

#![forbid(unsafe_code)]

use clap::Parser;
use fedcsg_cli::Cli;

fn main() -> anyhow::Result<()> {
    fedcsg_ml::ops::tune_process_for_training();
    // A FEDCSG_ISA this CPU cannot run is refused before any work starts.
    fedcsg_ml::ops::isa_from_env()?;
    fedcsg_cli::run(Cli::parse())
}
