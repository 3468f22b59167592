//! The `adaptsched` command line: a thin layer over the library crates.

mod bench;
mod bench_serve;
mod client;
mod compare;
mod demo;
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
    /// Benchmarks: policy decisions on synthetic clusters (decide), the live server (serve).
    Bench(bench::BenchArgs),
    /// Run the control plane: HTTP API, scheduling loop and local executor.
    Serve(adaptsched_server::ServeArgs),
    /// Submit a job: `adaptsched submit --gpus 1:4 -- python3 train.py`.
    Submit(client::SubmitArgs),
    /// List jobs (queued and running unless --all or --state).
    Ls(client::LsArgs),
    /// Show one job: state, exit code, allocation, events.
    Show(client::ShowArgs),
    /// Print a job's output (stdout, or --stderr); -f follows it until the job ends.
    Logs(client::LogsArgs),
    /// Cancel a job (stops it if running).
    Cancel(client::CancelArgs),
    /// List nodes: capacity, allocation, telemetry.
    Nodes(client::NodesArgs),
    /// Live view of the cluster, nodes and active jobs (--once for one frame).
    Top(client::TopArgs),
    /// Run a live demo: a local server, a handful of real training jobs, their adaptation.
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Simulate(args) => simulate::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Serve(args) => adaptsched_server::run(args),
        Command::Submit(args) => client::submit(args),
        Command::Ls(args) => client::ls(args),
        Command::Show(args) => client::show(args),
        Command::Logs(args) => client::logs(args),
        Command::Cancel(args) => client::cancel(args),
        Command::Nodes(args) => client::nodes(args),
        Command::Top(args) => client::top(args),
        Command::Demo(args) => demo::run(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
