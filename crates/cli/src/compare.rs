//! `adaptsched bench compare`: the issue-4 judgement in one command. Runs `adaptive` against
//! `pollux` and `sia` on the peers' own workloads (Pollux at four loads on `pollux-t4x64`; Sia's
//! Philly and Saturn sets on `sia-hetero64` and `sia-physical44` with Sia's profiles), reports
//! tuning (odd-numbered) and held-out (even-numbered) workloads separately, and prints each
//! bar with its ratio. Simulations run in parallel, one per core.

use adaptsched_policies::build_policy;
use adaptsched_sim::clusters::resolve_cluster;
use adaptsched_sim::engine::{SimConfig, Simulation};
use adaptsched_sim::load::load_workloads;
use adaptsched_sim::profiles::ProfileSet;
use adaptsched_sim::workload::Workload;
use anyhow::{Context, Result, anyhow};
use clap::Args;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// `../shared` beside the checkout (the peers' workloads and profiles live there).
const DEFAULT_SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared");
const BUNDLED_PROFILES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/pollux/profiles");

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The shared data folder (anchors/pollux, anchors/sia).
    #[arg(long, default_value = DEFAULT_SHARED)]
    shared: PathBuf,
    /// Only sets whose name contains one of these (comma separated), e.g. `pollux-1.0,philly`.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The candidate policy (any name `simulate --policy` takes).
    #[arg(long, default_value = "adaptive")]
    candidate: String,
    /// Parallel simulations (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// One workload set of the judgement and what it is compared against.
struct Set {
    name: String,
    workloads: PathBuf,
    cluster: &'static str,
    profiles: PathBuf,
    /// The peer whose average JCT the candidate must beat by 15%.
    rival: &'static str,
    /// Whether p99 JCT must also be no worse than the rival's.
    p99_bar: bool,
}

fn sets(shared: &Path) -> Vec<Set> {
    let pollux = shared.join("anchors/pollux/workloads");
    let sia_profiles = shared.join("anchors/sia/throughput_profiles");
    let mut sets: Vec<Set> = [
        ("0.5", "workloads-0.5"),
        ("1.0", "workloads"),
        ("1.5", "workloads-1.5"),
        ("2.0", "workloads-2.0"),
    ]
    .into_iter()
    .map(|(load, dir)| Set {
        name: format!("pollux-{load}"),
        workloads: pollux.join(dir),
        cluster: "pollux-t4x64",
        profiles: PathBuf::from(BUNDLED_PROFILES),
        rival: "pollux",
        p99_bar: true,
    })
    .collect();
    for trace in ["philly", "saturn"] {
        for cluster in ["sia-hetero64", "sia-physical44"] {
            sets.push(Set {
                name: format!("{trace}@{cluster}"),
                workloads: shared.join("anchors/sia/workloads").join(trace),
                cluster,
                profiles: sia_profiles.clone(),
                rival: "sia",
                p99_bar: false,
            });
        }
    }
    sets
}

/// Per-workload outcome of one policy.
#[derive(Clone, Copy, Debug)]
struct Outcome {
    avg_jct_s: f64,
    p99_jct_s: f64,
    makespan_s: f64,
    max_ftf: f64,
}

/// Whether a workload file name (`workload-7`) is odd-numbered (tuning) or even (held out).
fn is_odd(workload: &str) -> bool {
    workload
        .rsplit('-')
        .next()
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| n % 2 == 1)
}

struct Task<'a> {
    set: usize,
    policy: &'a str,
    workload: &'a Workload,
}

pub fn run(args: CompareArgs) -> Result<()> {
    let started = Instant::now();
    build_policy(&args.candidate).with_context(|| format!("--candidate {}", args.candidate))?;
    let sets: Vec<Set> = sets(&args.shared)
        .into_iter()
        .filter(|s| args.only.is_empty() || args.only.iter().any(|o| s.name.contains(o)))
        .collect();
    if sets.is_empty() {
        return Err(anyhow!("--only {:?} matches no set", args.only));
    }
    let mut inputs = Vec::new();
    for set in &sets {
        let profiles = ProfileSet::read(&set.profiles)
            .with_context(|| format!("{}: profiles {}", set.name, set.profiles.display()))?;
        let workloads = load_workloads(std::slice::from_ref(&set.workloads), &profiles)
            .with_context(|| format!("{}: workloads {}", set.name, set.workloads.display()))?;
        let cluster = resolve_cluster(set.cluster)?;
        inputs.push((cluster, profiles, workloads));
    }
    let policies = ["pollux", "sia", args.candidate.as_str()];
    let tasks: Vec<Task> = inputs
        .iter()
        .enumerate()
        .flat_map(|(set, (_, _, workloads))| {
            policies.iter().flat_map(move |&policy| {
                workloads.iter().map(move |workload| Task {
                    set,
                    policy,
                    workload,
                })
            })
        })
        .collect();
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let config = SimConfig {
        seed: args.seed,
        ..SimConfig::default()
    };
    let queue = Mutex::new(tasks.iter().collect::<Vec<_>>());
    let results: Mutex<BTreeMap<(usize, String, String), Outcome>> = Mutex::new(BTreeMap::new());
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let Some(task) = queue.lock().expect("queue").pop() else {
                        return;
                    };
                    let (cluster, profiles, _) = &inputs[task.set];
                    let outcome = simulate(cluster, profiles, task, &config);
                    match outcome {
                        Ok(o) => {
                            results.lock().expect("results").insert(
                                (
                                    task.set,
                                    task.policy.to_string(),
                                    task.workload.name.clone(),
                                ),
                                o,
                            );
                        }
                        Err(e) => {
                            *failure.lock().expect("failure") = Some(e);
                            queue.lock().expect("queue").clear();
                        }
                    }
                }
            });
        }
    });
    if let Some(error) = failure.into_inner().expect("failure") {
        return Err(error);
    }
    let results = results.into_inner().expect("results");
    print!(
        "{}",
        table(
            &sets,
            &results,
            &args.candidate,
            started.elapsed().as_secs_f64(),
            threads
        )
    );
    Ok(())
}

fn simulate(
    cluster: &adaptsched_core::Cluster,
    profiles: &ProfileSet,
    task: &Task<'_>,
    config: &SimConfig,
) -> Result<Outcome> {
    let mut policy = build_policy(task.policy)?;
    let sim = Simulation::new(cluster, task.workload, profiles, config.clone())?;
    let result = sim
        .run(policy.as_mut(), &task.workload.name, &mut |_| {})
        .with_context(|| format!("{} on {}", task.policy, task.workload.name))?;
    let m = result.metrics;
    Ok(Outcome {
        avg_jct_s: m.avg_jct_s,
        p99_jct_s: m.p99_jct_s,
        makespan_s: m.makespan_s,
        max_ftf: m.max_finish_time_fairness,
    })
}

/// Mean of per-workload averages (as the peers report), and the largest FTF over the set.
fn aggregate(outcomes: &[Outcome]) -> Outcome {
    let n = outcomes.len().max(1) as f64;
    Outcome {
        avg_jct_s: outcomes.iter().map(|o| o.avg_jct_s).sum::<f64>() / n,
        p99_jct_s: outcomes.iter().map(|o| o.p99_jct_s).sum::<f64>() / n,
        makespan_s: outcomes.iter().map(|o| o.makespan_s).sum::<f64>() / n,
        max_ftf: outcomes.iter().map(|o| o.max_ftf).fold(0.0, f64::max),
    }
}

fn table(
    sets: &[Set],
    results: &BTreeMap<(usize, String, String), Outcome>,
    candidate: &str,
    wall_s: f64,
    threads: usize,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<5} {:>16} {:>22} {:>9} {:>15} {:>16} {:>18}",
        "set",
        "half",
        "rival avg JCT h",
        format!("{candidate} avg JCT h"),
        "ratio",
        "p99 h (c/r)",
        "makespan h (c/r)",
        "max FTF c/pollux/sia"
    );
    let mut passed = 0;
    let mut judged = 0;
    for (s, set) in sets.iter().enumerate() {
        for (half, keep) in [("odd", true), ("even", false)] {
            let pick = |policy: &str| -> Vec<Outcome> {
                results
                    .iter()
                    .filter(|((i, p, w), _)| *i == s && p == policy && is_odd(w) == keep)
                    .map(|(_, o)| *o)
                    .collect()
            };
            let (c, r, pollux, sia) = (
                pick(candidate),
                pick(set.rival),
                pick("pollux"),
                pick("sia"),
            );
            if c.is_empty() || r.is_empty() {
                continue;
            }
            let (c, r) = (aggregate(&c), aggregate(&r));
            let fair_bar = aggregate(&pollux).max_ftf.min(aggregate(&sia).max_ftf);
            let ratio = c.avg_jct_s / r.avg_jct_s;
            let ok = ratio <= 0.85
                && c.makespan_s <= r.makespan_s
                && (!set.p99_bar || c.p99_jct_s <= r.p99_jct_s)
                && c.max_ftf <= fair_bar;
            judged += 1;
            passed += usize::from(ok);
            let _ = writeln!(
                out,
                "{:<24} {:<5} {:>16.3} {:>22.3} {:>9.3} {:>15} {:>16} {:>18} {}",
                format!("{} vs {}", set.name, set.rival),
                half,
                r.avg_jct_s / 3600.0,
                c.avg_jct_s / 3600.0,
                ratio,
                format!("{:.2}/{:.2}", c.p99_jct_s / 3600.0, r.p99_jct_s / 3600.0),
                format!("{:.2}/{:.2}", c.makespan_s / 3600.0, r.makespan_s / 3600.0),
                format!(
                    "{:.2}/{:.2}/{:.2}",
                    c.max_ftf,
                    aggregate(&pollux).max_ftf,
                    aggregate(&sia).max_ftf
                ),
                if ok { "pass" } else { "FAIL" }
            );
        }
    }
    let _ = writeln!(
        out,
        "{passed}/{judged} rows meet every bar (avg JCT ≤ 0.85 × rival, makespan and p99 (Pollux \
         sets) ≤ rival, max FTF ≤ min(pollux, sia)); wall time {wall_s:.0} s on {threads} threads"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_split_by_the_parity_of_their_number() {
        assert!(is_odd("workload-7"));
        assert!(!is_odd("workload-10"));
        assert!(!is_odd("trace"));
    }

    #[test]
    fn a_set_keeps_the_largest_ftf_and_averages_the_rest() {
        let o = |jct: f64, ftf: f64| Outcome {
            avg_jct_s: jct,
            p99_jct_s: jct,
            makespan_s: jct,
            max_ftf: ftf,
        };
        let a = aggregate(&[o(1.0, 3.0), o(3.0, 1.0)]);
        assert_eq!((a.avg_jct_s, a.max_ftf), (2.0, 3.0));
    }
}
