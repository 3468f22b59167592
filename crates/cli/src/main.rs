//! The `adaptsched` command line: a thin layer over the library crates.

mod bench;
mod compare;
mod simulate;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// adaptsched: an adaptive scheduler for deep-learning training jobs.
#[derive(Debug, Parser)]
#[command(name = "adaptsched", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replay workloads on a simulated cluster under one or more policies and compare them.
    Simulate(simulate::SimulateArgs),
    /// Benchmarks: time policy decisions on seeded synthetic clusters.
    Bench(bench::BenchArgs),
    /// Run the control plane: HTTP API, scheduling loop and local executor.
    Serve(adaptsched_server::ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Simulate(args) => simulate::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Serve(args) => adaptsched_server::run(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
