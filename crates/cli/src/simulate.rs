//! `adaptsched simulate`: policies × workloads on a simulated cluster, a table and reports.

use adaptsched_policies::{POLICY_NAMES, build_policy};
use adaptsched_sim::clusters::{PRESET_NAMES, resolve_cluster};
use adaptsched_sim::engine::{SimConfig, SimResult, Simulation};
use adaptsched_sim::html::{ReportMeta, command_line};
use adaptsched_sim::load::load_workloads;
use adaptsched_sim::profiles::ProfileSet;
use adaptsched_sim::reference::{compare, comparison_text, read_reference};
use adaptsched_sim::report::{comparison_table, write_reports_with};
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

/// The bundled Pollux profiles in this checkout (override with --profiles or ADAPTSCHED_PROFILES).
const BUNDLED_PROFILES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/pollux/profiles");

/// When scheduling rounds happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Rounds {
    /// Every --interval seconds and at every arrival and completion.
    Events,
    /// Only every --interval seconds (as the Pollux artifact's simulator does).
    Periodic,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Workload files or folders of them (*.csv): Pollux/Sia workloads (name,time,application,
    /// num_replicas,batch_size[,category]), or raw Philly, Helios or Alibaba openb traces.
    #[arg(long, short = 'w', required = true, num_args = 1..)]
    workload: Vec<PathBuf>,

    /// A cluster preset (pollux-t4x64, sia-hetero64, sia-physical44, philly) or a TOML file.
    #[arg(long, short = 'c', default_value = "pollux-t4x64")]
    cluster: String,

    /// Policies to compare, comma separated (fifo, srtf, tiresias, tiresias-paper, proportional,
    /// pollux, sia, gavel, gavel-throughput, themis).
    #[arg(
        long,
        short = 'p',
        default_value = "fifo,tiresias",
        value_delimiter = ','
    )]
    policy: Vec<String>,

    /// Seed of the RNG handed to policies (today's policies are deterministic without it);
    /// the same seed and input give byte-identical outputs.
    #[arg(long, default_value_t = 0)]
    seed: u64,

    /// Seconds between periodic scheduling rounds.
    #[arg(long, default_value_t = 60.0, allow_negative_numbers = true)]
    interval: f64,

    /// Also schedule at arrivals and completions (events), or only periodically.
    #[arg(long, value_enum, default_value_t = Rounds::Events)]
    rounds: Rounds,

    /// Checkpoint-restore delay of every restart, in seconds (default: per application from
    /// the profiles; 30 s for Pollux profiles and raw traces).
    #[arg(long, allow_negative_numbers = true)]
    restart_delay: Option<f64>,

    /// Measured profiles folder (Pollux or Sia artifact layout); default: the bundled Pollux
    /// profiles of the source checkout this binary was built from (data/pollux/profiles).
    #[arg(long, env = "ADAPTSCHED_PROFILES")]
    profiles: Option<PathBuf>,

    /// Write summary.json, jobs.csv and SVG plots into this folder.
    #[arg(long, short = 'o')]
    out: Option<PathBuf>,

    /// Put wall-clock decision times into summary.json (they differ run to run).
    #[arg(long, requires = "out")]
    timings: bool,

    /// Compare with a reference result, a Pollux-artifact style summary.json
    /// ({"jcts": {workload: {job: seconds}}, "avgs": {...}, "mean": ...}): prints, per policy,
    /// our average, p99 and makespan against theirs per workload, and job-by-job deviations.
    #[arg(long, value_name = "FILE")]
    reference: Option<PathBuf>,

    /// No progress bar.
    #[arg(long, short = 'q')]
    quiet: bool,
}

pub fn run(args: SimulateArgs) -> Result<()> {
    if !(args.interval.is_finite() && args.interval > 0.0) {
        bail!(
            "--interval: {} must be a positive number of seconds",
            args.interval
        );
    }
    if let Some(delay) = args.restart_delay
        && !(delay.is_finite() && delay >= 0.0)
    {
        bail!("--restart-delay: {delay} must be ≥ 0 seconds");
    }
    for name in &args.policy {
        build_policy(name).with_context(|| format!("--policy {name}"))?;
    }
    let cluster = resolve_cluster(&args.cluster)
        .with_context(|| format!("--cluster (presets: {})", PRESET_NAMES.join(", ")))?;
    let profiles_dir = args
        .profiles
        .clone()
        .unwrap_or_else(|| PathBuf::from(BUNDLED_PROFILES));
    let profiles = ProfileSet::read(&profiles_dir)
        .with_context(|| format!("--profiles {}", profiles_dir.display()))?;
    // Read before the runs, so that a malformed file fails fast.
    let reference = args
        .reference
        .as_deref()
        .map(read_reference)
        .transpose()
        .context("--reference")?;
    let workloads = load_workloads(&args.workload, &profiles)?;
    for workload in &workloads {
        for note in &workload.notes {
            eprintln!("note: {}: {note}", workload.name);
        }
    }
    let config = SimConfig {
        interval_s: args.interval,
        seed: args.seed,
        rounds_on_events: args.rounds == Rounds::Events,
        restart_delay_s: args.restart_delay,
    };
    let runs = (args.policy.len() * workloads.len()) as u64;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(runs * 1000)
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos:>4}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut results: Vec<SimResult> = Vec::new();
    // Wall time and events per policy, for the events/s line (not written to files).
    let mut speed: std::collections::BTreeMap<String, (u64, f64)> =
        std::collections::BTreeMap::new();
    for name in &args.policy {
        for workload in &workloads {
            let mut policy = build_policy(name)
                .with_context(|| format!("--policy {name} (known: {})", POLICY_NAMES.join(", ")))?;
            bar.set_message(format!("{name} on {}", workload.name));
            let base = results.len() as u64 * 1000;
            let sim = Simulation::new(&cluster, workload, &profiles, config.clone())?;
            let started = std::time::Instant::now();
            let result = sim
                .run(policy.as_mut(), &workload.name, &mut |fraction| {
                    bar.set_position(base + (fraction * 1000.0) as u64)
                })
                .with_context(|| format!("{name} on {}", workload.name))?;
            let entry = speed.entry(name.clone()).or_insert((0u64, 0.0f64));
            entry.0 += result.events;
            entry.1 += started.elapsed().as_secs_f64();
            results.push(result);
        }
    }
    bar.finish_and_clear();
    print!("{}", comparison_table(&results));
    for (name, (events, seconds)) in &speed {
        println!(
            "{name}: {events} simulated events in {seconds:.2} s ({:.0} events/s)",
            *events as f64 / seconds.max(1e-9)
        );
    }
    if let Some(reference) = &reference {
        let mut policies: Vec<&str> = Vec::new();
        for name in &args.policy {
            if !policies.contains(&name.as_str()) {
                policies.push(name);
            }
        }
        for policy in policies {
            let runs: Vec<(&str, &[_])> = results
                .iter()
                .filter(|r| r.policy == policy)
                .map(|r| (r.workload.as_str(), r.jobs.as_slice()))
                .collect();
            let comparison = compare(policy, &runs, reference);
            print!("{}", comparison_text(&comparison, &reference.file));
        }
    }
    if let Some(out) = &args.out {
        let meta = ReportMeta {
            command: Some(command_line(std::env::args())),
            cluster: Some(args.cluster.clone()),
            seed: Some(args.seed),
            with_timings: args.timings,
        };
        write_reports_with(out, &results, &meta)
            .with_context(|| format!("writing reports to {}", out.display()))?;
        println!("reports written to {}", out.display());
    }
    Ok(())
}
