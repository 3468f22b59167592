//! `themis`: finish-time fairness (Mahajan et al., NSDI'20) in Gavel's LP formulation
//! (Narayanan et al., OSDI'20 §4.1), run with Gavel's round mechanism (see `gavel.rs`).
//!
//! Finish-time fairness `ρ_m` = time in the shared cluster ÷ time alone on a 1/M share. With
//! Gavel's variables `X[m][j]` and throughputs `T[m][j]` (same constraints and model-based
//! throughputs as `gavel`), the LP minimizes `max_m ρ_m(X)` with
//!
//! `ρ_m(X) = (e_m + R_m / thr_m(X)) / ((W_m + R_m) / iso_m)`
//!
//! - `e_m` = `now − submit_time`: time the job has spent in the shared cluster;
//! - `thr_m(X) = Σ_j T[m][j]·X[m][j]`; `iso_m` = its throughput under the equal share
//!   (`cap_j / (M·s_m)` of every type it may use, scaled to at most 1 in all);
//! - `W_m` = work done so far: its attained service (`attained_gpu_seconds ÷ GPUs`, tracked per
//!   GPU type between calls) times its throughput there. Restart delays count as run time, so
//!   this overestimates slightly;
//! - `R_m` = remaining work. A real scheduler does not know it (Gavel's formulation assumes
//!   it does), so we use the elapsed-time estimate: the job is assumed to be half done,
//!   `R_m = W_m`, at least one round of work at its isolated throughput (`R_m ≥ 360 s·iso_m`),
//!   so that a job that never ran still has a finite `ρ`.
//!
//! Writing `w_m = W_m/iso_m`, `r_m = R_m/iso_m` (isolated seconds), `ρ_m = a_m + c_m/g_m(X)`
//! with `a_m = e_m/(w_m + r_m)`, `c_m = r_m/(w_m + r_m)` and `g_m = thr_m/iso_m`. `ρ ≤ ρ*`
//! for all jobs is `g_m ≥ c_m/(ρ* − a_m)`: linear in `X`. We start from the equal share (always
//! feasible), then repeat: solve `max λ s.t. g_m·(ρ* − a_m)/c_m ≥ λ` (a max-min LP; `λ ≥ 1`
//! means `ρ*` is reachable), and set `ρ*` to the max `ρ` of that solution, until it improves by
//! less than 0.1% (at most 8 LPs). Each step keeps a feasible `X` and never increases `ρ*`.

use crate::gavel::{Fractions, LpInput, ROUND_SECONDS, Rounds, max_min_lp};
use adaptsched_core::{GpuType, JobId, Plan, Policy, Snapshot, Time};
use rand::RngCore;
use std::collections::BTreeMap;

/// At most this many LPs per allocation.
const MAX_ITERATIONS: usize = 8;
/// Stop when `max ρ` improves by less than this fraction.
const TOLERANCE: f64 = 1e-3;

/// What a job has done so far, as Themis tracks it.
#[derive(Clone, Debug, Default)]
struct Progress {
    attained_seen: f64,
    /// Seconds run on each GPU type (cluster type order).
    seconds: Vec<f64>,
    /// Seconds run before the policy first saw the job, type unknown.
    unknown_seconds: f64,
}

/// Per-job terms of `ρ_m(X) = a_m + c_m·iso_m/thr_m(X)`, aligned with `LpInput::jobs`.
#[derive(Clone, Debug, PartialEq)]
pub struct RhoTerms {
    pub a: Vec<f64>,
    pub c: Vec<f64>,
    /// Throughput under the equal share (samples/s).
    pub isolated: Vec<f64>,
}

impl RhoTerms {
    /// Terms from the time each job spent in the cluster (`elapsed`, seconds) and the work it
    /// did (`work_done`, samples), with the remaining work estimated as the work done, at
    /// least `min_remaining_s` seconds at the isolated throughput.
    pub fn new(input: &LpInput, elapsed: &[f64], work_done: &[f64], min_remaining_s: f64) -> Self {
        let isolated = input.effective_throughputs(&input.equal_share());
        let mut a = Vec::with_capacity(input.jobs.len());
        let mut c = Vec::with_capacity(input.jobs.len());
        for m in 0..input.jobs.len() {
            let done = work_done[m].max(0.0) / isolated[m];
            let remaining = done.max(min_remaining_s).max(1e-9);
            a.push(elapsed[m].max(0.0) / (done + remaining));
            c.push(remaining / (done + remaining));
        }
        RhoTerms { a, c, isolated }
    }

    /// `ρ_m(X)` of every job (infinite for a job that gets no throughput).
    pub fn rho(&self, input: &LpInput, x: &Fractions) -> Vec<f64> {
        input
            .effective_throughputs(x)
            .iter()
            .enumerate()
            .map(|(m, &thr)| {
                if thr > 0.0 {
                    self.a[m] + self.c[m] * self.isolated[m] / thr
                } else {
                    f64::INFINITY
                }
            })
            .collect()
    }

    pub fn max_rho(&self, input: &LpInput, x: &Fractions) -> f64 {
        self.rho(input, x).into_iter().fold(0.0, f64::max)
    }
}

/// `X` minimizing `max_m ρ_m(X)` (see the module docs), and that maximum.
pub fn finish_time_fairness(input: &LpInput, terms: &RhoTerms) -> (Fractions, f64) {
    let mut best_x = input.equal_share();
    let mut best = terms.max_rho(input, &best_x);
    for _ in 0..MAX_ITERATIONS {
        if !best.is_finite() {
            break;
        }
        let weights: Vec<f64> = (0..input.jobs.len())
            .map(|m| (best - terms.a[m]).max(1e-12) / (terms.c[m] * terms.isolated[m]))
            .collect();
        let Some((x, _)) = max_min_lp(input, &weights) else {
            break;
        };
        let value = terms.max_rho(input, &x);
        if value < best {
            let gain = (best - value) / best;
            best = value;
            best_x = x;
            if gain < TOLERANCE {
                break;
            }
        } else {
            break;
        }
    }
    (best_x, best)
}

/// The `themis` policy.
#[derive(Debug)]
pub struct Themis {
    rounds: Rounds,
    round_seconds: f64,
    types: Vec<GpuType>,
    progress: BTreeMap<JobId, Progress>,
}

impl Default for Themis {
    fn default() -> Self {
        Themis::new(ROUND_SECONDS)
    }
}

impl Themis {
    /// Themis with rounds of `round_seconds`.
    pub fn new(round_seconds: f64) -> Self {
        Themis {
            rounds: Rounds::new(round_seconds),
            round_seconds,
            types: Vec::new(),
            progress: BTreeMap::new(),
        }
    }

    /// Charges each job's newly attained service to the GPU type it held since the last call.
    fn track(&mut self, snapshot: &Snapshot<'_>) {
        let types: Vec<GpuType> = snapshot.cluster.gpus_by_type().into_keys().collect();
        if types != self.types {
            self.types = types;
            self.progress.clear();
        }
        self.progress
            .retain(|id, _| snapshot.jobs.iter().any(|j| j.id == *id));
        for job in snapshot.jobs {
            let fresh = !self.progress.contains_key(&job.id);
            let entry = self.progress.entry(job.id).or_insert_with(|| Progress {
                attained_seen: 0.0,
                seconds: vec![0.0; self.types.len()],
                unknown_seconds: 0.0,
            });
            let delta = job.attained_gpu_seconds - entry.attained_seen;
            entry.attained_seen = job.attained_gpu_seconds;
            if delta <= 0.0 {
                continue;
            }
            let held = job.allocation.total_gpus();
            let gpus = if held > 0 { held } else { job.requested_gpus };
            let seconds = delta / f64::from(gpus.max(1));
            let current = job
                .allocation
                .parts
                .iter()
                .find(|&&(_, g)| g > 0)
                .and_then(|&(node, _)| snapshot.cluster.node(node))
                .and_then(|n| self.types.iter().position(|t| *t == n.gpu_type));
            match current {
                Some(j) if !fresh => entry.seconds[j] += seconds,
                _ => entry.unknown_seconds += seconds,
            }
        }
    }
}

/// Elapsed time and work done of every LP job at `now`.
fn estimates(
    progress: &BTreeMap<JobId, Progress>,
    input: &LpInput,
    snapshot: &Snapshot<'_>,
) -> (Vec<f64>, Vec<f64>) {
    let now: Time = snapshot.now;
    let mut elapsed = Vec::with_capacity(input.jobs.len());
    let mut work = Vec::with_capacity(input.jobs.len());
    for job in &input.jobs {
        let view = &snapshot.jobs[job.view];
        elapsed.push(now - view.submit_time);
        let mean = job.throughputs.iter().map(|&(_, t)| t).sum::<f64>()
            / job.throughputs.len().max(1) as f64;
        let done = progress.get(&job.id).map_or(0.0, |p| {
            let known: f64 = p
                .seconds
                .iter()
                .enumerate()
                .map(|(j, &s)| {
                    let thr = job
                        .throughputs
                        .iter()
                        .find(|&&(k, _)| k == j)
                        .map_or(mean, |&(_, t)| t);
                    s * thr
                })
                .sum();
            known + p.unknown_seconds * mean
        });
        work.push(done);
    }
    (elapsed, work)
}

impl Policy for Themis {
    fn name(&self) -> &'static str {
        "themis"
    }

    fn decide(&mut self, snapshot: &Snapshot<'_>, _rng: &mut dyn RngCore) -> Plan {
        self.track(snapshot);
        let Themis {
            rounds,
            round_seconds,
            progress,
            ..
        } = self;
        let mut solve = |input: &LpInput| {
            let (elapsed, work) = estimates(progress, input, snapshot);
            let terms = RhoTerms::new(input, &elapsed, &work, *round_seconds);
            finish_time_fairness(input, &terms).0
        };
        rounds.decide(snapshot, &mut solve)
    }

    fn acts_when_nothing_waits(&self) -> bool {
        true
    }

    fn uses_job_models(&self) -> bool {
        true
    }

    fn profiles_each_gpu_type(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gavel::tests::{cluster, fraction, job, run_rounds};
    use adaptsched_core::JobView;

    fn input(cluster: &adaptsched_core::Cluster, jobs: &[JobView]) -> LpInput {
        LpInput::from_snapshot(&Snapshot {
            now: 0.0,
            cluster,
            jobs,
        })
    }

    /// One job alone, 1 GPU of one type, on a 1-GPU cluster: its equal share is the whole
    /// GPU, so `iso` = its throughput. It waited 1000 s and did 500 isolated seconds of work:
    /// remaining = 500 s, ρ(X = 1) = (1000 + 500)/(500 + 500) = 1.5.
    #[test]
    fn rho_by_hand() {
        let cluster = cluster(&[("a", 1, 1)]);
        let jobs = [job(0, 1, 0.0, &[("a", 2.0)])];
        let input = input(&cluster, &jobs);
        let thr = input.jobs[0].throughputs[0].1;
        let terms = RhoTerms::new(&input, &[1000.0], &[500.0 * thr], 360.0);
        assert!((terms.a[0] - 1.0).abs() < 1e-9, "{terms:?}");
        assert!((terms.c[0] - 0.5).abs() < 1e-9, "{terms:?}");
        assert!((terms.max_rho(&input, &vec![vec![1.0]]) - 1.5).abs() < 1e-9);
        assert!((terms.max_rho(&input, &vec![vec![0.5]]) - 2.0).abs() < 1e-9);
        // A job that never ran: remaining = one round of isolated work.
        let fresh = RhoTerms::new(&input, &[720.0], &[0.0], 360.0);
        assert!((fresh.max_rho(&input, &vec![vec![1.0]]) - 3.0).abs() < 1e-9);
        let (x, rho) = finish_time_fairness(&input, &terms);
        assert!(
            (x[0][0] - 1.0).abs() < 1e-4 && (rho - 1.5).abs() < 1e-3,
            "{x:?} {rho}"
        );
    }

    /// Job 0 is 3× faster on a and has waited longest; job 2 is 2× faster on b; job 1 is new
    /// and equally fast everywhere. The equal split wastes job 0's time on b; the LP does not.
    #[test]
    fn themis_lowers_the_worst_rho_below_the_equal_split() {
        let cluster = cluster(&[("a", 1, 4), ("b", 1, 4)]);
        let jobs = [
            job(0, 4, 0.0, &[("a", 3.0), ("b", 1.0)]),
            job(1, 4, 0.0, &[("a", 1.0), ("b", 1.0)]),
            job(2, 4, 0.0, &[("a", 1.0), ("b", 2.0)]),
        ];
        let input = input(&cluster, &jobs);
        let iso = input.effective_throughputs(&input.equal_share());
        let elapsed = [1800.0, 0.0, 3600.0];
        let work = [600.0 * iso[0], 0.0, 1800.0 * iso[2]];
        let terms = RhoTerms::new(&input, &elapsed, &work, 360.0);
        let equal = terms.max_rho(&input, &input.equal_share());
        let (x, best) = finish_time_fairness(&input, &terms);
        // Equal split: job 0 has ρ = 1800/1200 + 0.5/1 = 2; alone on a it would reach
        // 1.5 + 0.5·(4/3)/3 = 1.72, and the others still fit below that.
        assert!((equal - 2.0).abs() < 1e-9, "{equal}");
        assert!(
            (best - (1.5 + 2.0 / 9.0)).abs() < 0.01,
            "LP {best:.4} vs equal split {equal:.3}"
        );
        assert!((terms.max_rho(&input, &x) - best).abs() < 1e-9);
        // The long-waiting job gets its fast type, none of the slow one.
        assert!(fraction(&input, &x, 0, "a") > 0.5, "{x:?}");
        assert!(fraction(&input, &x, 0, "b") < 0.05, "{x:?}");
        // Feasible.
        for t in ["a", "b"] {
            let used: f64 = (0..3).map(|m| fraction(&input, &x, m, t)).sum();
            assert!(used <= 1.0 + 1e-6, "{t}: {used}");
        }
        // Deterministic.
        assert_eq!(finish_time_fairness(&input, &terms).0, x);
    }

    #[test]
    fn themis_plans_are_valid_and_keep_restricted_jobs_on_their_type() {
        let cluster = cluster(&[("a", 2, 4), ("b", 2, 4)]);
        let mut jobs: Vec<JobView> = (0..7)
            .map(|i| {
                let submit = -f64::from(i) * 600.0;
                if i % 3 == 0 {
                    job(i, 4, submit, &[("a", 1.0)])
                } else {
                    job(
                        i,
                        1 + i % 4,
                        submit,
                        &[("a", 1.0 + f64::from(i)), ("b", 2.0)],
                    )
                }
            })
            .collect();
        let mut policy = Themis::default();
        let counts = run_rounds(&mut policy, &cluster, &mut jobs, 30);
        for (id, t) in counts.keys() {
            if id.0 % 3 == 0 {
                assert_eq!(t, "a", "{id} ran on {t}");
            }
        }
        // Everyone ran at some point.
        for job in &jobs {
            assert!(
                counts.keys().any(|(id, _)| *id == job.id),
                "{} never ran: {counts:?}",
                job.id
            );
        }
        // Attained service was charged to the types the jobs ran on.
        let tracked: f64 = policy
            .progress
            .values()
            .map(|p| p.seconds.iter().sum::<f64>() + p.unknown_seconds)
            .sum();
        let rounds_run: usize = counts.values().sum();
        // The last round's service is not seen yet (no call after it).
        assert!(tracked > 0.0 && tracked <= rounds_run as f64 * 360.0 + 1e-6);
    }
}
