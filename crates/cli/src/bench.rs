//! `adaptsched bench decide`: wall time of `Policy::decide` on seeded synthetic clusters.
//!
//! A scheduler re-decides every round, so its decision latency at the target scale (tens of
//! thousands of GPUs, thousands of jobs) bounds how often it can act. The bundled traces are
//! far smaller, so this times `decide` on synthetic clusters and job mixes instead. Timing
//! lives here, in the CLI: the core and policy crates never read a clock.

use adaptsched_core::metrics::percentile;
use adaptsched_core::validate_plan;
use adaptsched_policies::{POLICY_NAMES, build_policy};
use adaptsched_sim::synthetic::{GPU_TYPES, SyntheticSpec, policy_rng, scenario};
use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::json;
use std::fmt::Write as _;
use std::time::Instant;

/// Virtual seconds between two timed rounds (the simulator's default interval).
const ROUND_SECONDS: f64 = 60.0;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Time policy decisions on seeded synthetic heterogeneous clusters and job mixes.
    Decide(DecideArgs),
    /// Time the live control plane: submit throughput, submit/list latency with many jobs
    /// stored, submit to process start.
    Serve(crate::bench_serve::ServeBenchArgs),
    /// Judge a policy against pollux and sia on their own workloads (the issue-4 table).
    Compare(crate::compare::CompareArgs),
}

#[derive(Debug, Args)]
struct DecideArgs {
    /// Policies to time, comma separated (any name `simulate --policy` takes).
    #[arg(long, short = 'p', required = true, value_delimiter = ',')]
    policy: Vec<String>,

    /// Cluster sizes in GPUs, comma separated (nodes of 4 or 8 GPUs).
    #[arg(long, required = true, value_delimiter = ',')]
    gpus: Vec<u32>,

    /// Active jobs, comma separated: paired element-wise with --gpus when both lists have the
    /// same length, else every combination.
    #[arg(long, required = true, value_delimiter = ',')]
    jobs: Vec<usize>,

    /// Timed decide calls per (policy, GPUs, jobs); each plan becomes the next round's
    /// allocations.
    #[arg(long, default_value_t = 20)]
    rounds: usize,

    /// Seed of the synthetic clusters, jobs and the policies' RNG.
    #[arg(long, default_value_t = 0)]
    seed: u64,

    /// Share of running jobs whose fitted model changes between two rounds (new gradient
    /// statistics from their reports); every running job also records the GPUs it ran on.
    /// In the simulator 20–50% of jobs have a changed model at each round; 1 is the worst case.
    #[arg(long, default_value_t = 1.0)]
    refit_share: f64,

    /// How many GPU types the clusters mix (1-5: t4, rtx2080ti, a100, v100, quadro6000).
    #[arg(long, default_value_t = 4)]
    gpu_types: usize,

    /// Print the rows as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// One timed (policy, GPUs, jobs) configuration.
#[derive(Clone, Debug, PartialEq)]
struct Row {
    policy: String,
    gpus: u32,
    jobs: usize,
    median_ms: f64,
    p95_ms: f64,
    max_ms: f64,
    /// Jobs holding GPUs after the last plan (a sanity check that the policy acted).
    placed: usize,
}

pub fn run(args: BenchArgs) -> Result<()> {
    match args.what {
        BenchCommand::Decide(args) => decide(args),
        BenchCommand::Serve(args) => crate::bench_serve::run(args),
        BenchCommand::Compare(args) => crate::compare::run(args),
    }
}

/// The (GPUs, jobs) pairs: element-wise for equal lengths, else the cross product.
fn sizes(gpus: &[u32], jobs: &[usize]) -> Vec<(u32, usize)> {
    if gpus.len() == jobs.len() {
        gpus.iter().copied().zip(jobs.iter().copied()).collect()
    } else {
        gpus.iter()
            .flat_map(|&g| jobs.iter().map(move |&j| (g, j)))
            .collect()
    }
}

fn decide(args: DecideArgs) -> Result<()> {
    if args.rounds == 0 {
        bail!("--rounds: must be ≥ 1");
    }
    if !(0.0..=1.0).contains(&args.refit_share) {
        bail!(
            "--refit-share: {} must be between 0 and 1",
            args.refit_share
        );
    }
    if args.gpus.contains(&0) {
        bail!("--gpus: every cluster needs ≥ 1 GPU");
    }
    if !(1..=GPU_TYPES.len()).contains(&args.gpu_types) {
        bail!(
            "--gpu-types: {} must be between 1 and {}",
            args.gpu_types,
            GPU_TYPES.len()
        );
    }
    for name in &args.policy {
        build_policy(name).with_context(|| format!("--policy {name}"))?;
    }
    let mut rows = Vec::new();
    for (gpus, jobs) in sizes(&args.gpus, &args.jobs) {
        let start = scenario(SyntheticSpec {
            gpus,
            jobs,
            gpu_types: args.gpu_types,
            seed: args.seed,
        })?;
        for name in &args.policy {
            let mut policy = build_policy(name)
                .with_context(|| format!("--policy {name} (known: {})", POLICY_NAMES.join(", ")))?;
            let mut rng = policy_rng(args.seed);
            let mut state = start.clone();
            let mut reports = policy_rng(args.seed ^ 0x5eed);
            let mut ms = Vec::with_capacity(args.rounds);
            for round in 0..args.rounds {
                let snapshot = state.snapshot();
                let started = Instant::now();
                let plan = policy.decide(&snapshot, &mut rng);
                ms.push(started.elapsed().as_secs_f64() * 1e3);
                validate_plan(&state.cluster, &state.jobs, &plan).map_err(|violation| {
                    anyhow!(
                        "{name} returned an invalid plan in round {round} \
                         ({gpus} GPUs, {jobs} jobs, seed {}): {violation}",
                        args.seed
                    )
                })?;
                state.apply(&plan, ROUND_SECONDS);
                state.report(args.refit_share, &mut reports);
            }
            ms.sort_by(f64::total_cmp);
            rows.push(Row {
                policy: name.clone(),
                gpus,
                jobs,
                median_ms: percentile(&ms, 50.0),
                p95_ms: percentile(&ms, 95.0),
                max_ms: ms.last().copied().unwrap_or(0.0),
                placed: state.jobs.iter().filter(|j| j.is_running()).count(),
            });
        }
    }
    if args.json {
        let values: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "policy": r.policy,
                    "gpus": r.gpus,
                    "jobs": r.jobs,
                    "rounds": args.rounds,
                    "median_ms": r.median_ms,
                    "p95_ms": r.p95_ms,
                    "max_ms": r.max_ms,
                    "placed": r.placed,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&values)?);
    } else {
        print!("{}", table(&rows));
    }
    Ok(())
}

fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:>7} {:>6} {:>10} {:>10} {:>10} {:>7}",
        "policy", "GPUs", "jobs", "median ms", "p95 ms", "max ms", "placed"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<16} {:>7} {:>6} {:>10.3} {:>10.3} {:>10.3} {:>7}",
            r.policy, r.gpus, r.jobs, r.median_ms, r.p95_ms, r.max_ms, r.placed
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_lists_pair_up_others_cross() {
        assert_eq!(sizes(&[64, 2048], &[32, 500]), [(64, 32), (2048, 500)]);
        assert_eq!(sizes(&[64, 2048], &[32]), [(64, 32), (2048, 32)]);
        assert_eq!(sizes(&[64], &[1, 2]).len(), 2);
    }
}
