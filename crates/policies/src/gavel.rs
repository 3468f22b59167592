//! `gavel` and `gavel-throughput`: heterogeneity-aware scheduling of rigid jobs in rounds
//! (Narayanan et al., OSDI'20), as the Gavel and Sia artifacts run it.
//!
//! **Allocation.** A linear program over `X[m][j]`, the fraction of time job `m` should run on
//! GPU type `j`: `X ≥ 0`, `Σ_j X[m][j] ≤ 1` per job, `Σ_m X[m][j]·s_m ≤ GPUs of type j` per
//! type (`s_m` = the job's requested GPU count; it runs with exactly that many GPUs and its
//! requested batch). Variables exist only for the types a job may use (allowed, with a fitted
//! model when the job has one, and with at least `s_m` GPUs); `X` is 0 elsewhere.
//! `T[m][j]` = the job's throughput on `s_m` GPUs of type `j` packed on
//! `⌈s_m / GPUs per node⌉` nodes, from the online-fitted per-type model
//! ([`adaptsched_core::perf::JobModel::throughput_on`]); a job without a model yet counts as
//! equally fast on every allowed type.
//! - `gavel` (LAS, max-min fairness): maximize `t` subject to
//!   `s_m · Σ_j T[m][j]·X[m][j] / Σ_j T[m][j] ≥ t` for every job: effective throughput over
//!   the throughput of an equal time share of every type (the constant 1/M dropped), weighted
//!   by the job's GPUs so that equal throughputs get equal GPU-time.
//! - `gavel-throughput` (max-sum-throughput, the Sia artifact's Gavel): maximize
//!   `Σ_m Σ_j T[m][j]·X[m][j]` with `T` in optimizer steps per second (samples/s ÷ batch), the
//!   unit of the artifacts' throughput tables.
//!
//! The LP is solved with Clarabel (interior point, deterministic) through `good_lp`, and only
//! again when its input changes: the set of active jobs, or a job's throughputs (its model
//! was refitted after a run on a new placement).
//!
//! **Rounds.** One round every 360 s, on a grid from t = 0 (the first `decide` at or after each
//! multiple of 360 s; the plan asks to be woken at the next one). A call between two grid
//! points keeps every allocation as it is, as Gavel does within a round. In a round each
//! (job, type) pair gets priority `X[m][j] ÷ (time m received on j ÷ time all jobs received
//! on j)`, Gavel's rule (a new job starts with half a round of credit on every type); pairs
//! are taken in priority order (then by `X`, type, submission) while the type has `s_m` free
//! GPUs, one type per job; pairs with `X = 0` come last and use what is left. Jobs staying on
//! the type they run on keep their GPUs; the others are placed largest first on the fewest
//! nodes. Time is charged a whole round ahead, for every job scheduled.

use crate::placement::{FreeResources, node_size, place_gang_on_type};
use adaptsched_core::{GpuType, JobId, JobView, Plan, Policy, Snapshot, Time};
use good_lp::{Expression, ProblemVariables, Solution, SolverModel, Variable, clarabel, variable};
use rand::RngCore;
use std::collections::BTreeMap;

/// Gavel's round length in seconds (the paper's and both artifacts').
pub const ROUND_SECONDS: f64 = 360.0;

/// LP values below this are solver noise and count as 0.
const MIN_FRACTION: f64 = 1e-5;

/// Which Gavel policy the LP encodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GavelObjective {
    /// LAS: max-min of GPU-weighted throughput normalized by an equal time share.
    MaxMinFairness,
    /// Max-sum of throughputs in steps per second.
    MaxSumThroughput,
}

/// Gavel settings.
#[derive(Clone, Debug, PartialEq)]
pub struct GavelConfig {
    pub objective: GavelObjective,
    /// Seconds per round.
    pub round_seconds: f64,
}

impl GavelConfig {
    /// `gavel`: max-min fairness (LAS).
    pub fn las() -> Self {
        GavelConfig {
            objective: GavelObjective::MaxMinFairness,
            round_seconds: ROUND_SECONDS,
        }
    }

    /// `gavel-throughput`: max-sum-throughput.
    pub fn max_sum_throughput() -> Self {
        GavelConfig {
            objective: GavelObjective::MaxSumThroughput,
            ..GavelConfig::las()
        }
    }
}

/// One job's row of the LP.
#[derive(Clone, Debug, PartialEq)]
pub struct LpJob {
    pub id: JobId,
    /// Its index in `Snapshot::jobs`.
    pub view: usize,
    /// GPUs it runs with (its request, within its gang bounds).
    pub gpus: u32,
    /// `(type index, samples/s)` for every type it may use; `X` is 0 on the others.
    pub throughputs: Vec<(usize, f64)>,
    /// Samples per optimizer step (its batch), to convert to steps/s; 1 for the fallback.
    pub samples_per_step: f64,
}

/// What the LP sees: GPU types in name order, their GPU counts, and the jobs that fit anywhere.
#[derive(Clone, Debug, PartialEq)]
pub struct LpInput {
    pub types: Vec<GpuType>,
    pub capacity: Vec<u32>,
    pub jobs: Vec<LpJob>,
}

/// `X`, aligned with `LpInput::jobs[m].throughputs`.
pub type Fractions = Vec<Vec<f64>>;

impl LpInput {
    /// Rows for the jobs of `snapshot` in snapshot order; jobs with no usable type are left out.
    pub fn from_snapshot(snapshot: &Snapshot<'_>) -> Self {
        let by_type = snapshot.cluster.gpus_by_type();
        let types: Vec<GpuType> = by_type.keys().cloned().collect();
        let capacity: Vec<u32> = by_type.values().copied().collect();
        let sizes: Vec<u32> = types
            .iter()
            .map(|t| node_size(snapshot.cluster, t))
            .collect();
        let jobs = snapshot
            .jobs
            .iter()
            .enumerate()
            .filter_map(|(view, job)| lp_job(job, view, &types, &capacity, &sizes))
            .collect();
        LpInput {
            types,
            capacity,
            jobs,
        }
    }

    /// Gavel's isolated allocation: each job gets a 1/M share of every type it may use
    /// (`cap_j / (M·s_m)`), scaled down so that its fractions sum to at most 1. Always feasible.
    pub fn equal_share(&self) -> Fractions {
        let m = self.jobs.len().max(1) as f64;
        self.jobs
            .iter()
            .map(|job| {
                let row: Vec<f64> = job
                    .throughputs
                    .iter()
                    .map(|&(j, _)| f64::from(self.capacity[j]) / (m * f64::from(job.gpus)))
                    .collect();
                let sum: f64 = row.iter().sum();
                let scale = if sum > 1.0 { 1.0 / sum } else { 1.0 };
                row.into_iter().map(|x| x * scale).collect()
            })
            .collect()
    }

    /// Effective throughput `Σ_j T[m][j]·X[m][j]` of every job (samples/s).
    pub fn effective_throughputs(&self, x: &Fractions) -> Vec<f64> {
        self.jobs
            .iter()
            .zip(x)
            .map(|(job, row)| {
                job.throughputs
                    .iter()
                    .zip(row)
                    .map(|(&(_, t), &f)| t * f)
                    .sum()
            })
            .collect()
    }

    /// Whether two inputs would give the same LP (same jobs, GPU counts and throughputs).
    fn same_problem(&self, other: &LpInput) -> bool {
        self.types == other.types
            && self.capacity == other.capacity
            && self.jobs.len() == other.jobs.len()
            && self.jobs.iter().zip(&other.jobs).all(|(a, b)| {
                a.id == b.id
                    && a.gpus == b.gpus
                    && a.throughputs == b.throughputs
                    && a.samples_per_step == b.samples_per_step
            })
    }
}

/// The LP row of `job`, or `None` if no type can hold its gang.
fn lp_job(
    job: &JobView,
    view: usize,
    types: &[GpuType],
    capacity: &[u32],
    sizes: &[u32],
) -> Option<LpJob> {
    let gpus = job
        .requested_gpus
        .clamp(job.min_gpus.max(1), job.max_gpus.max(1));
    let usable: Vec<usize> = (0..types.len())
        .filter(|&j| job.allows(&types[j]) && capacity[j] >= gpus)
        .collect();
    if usable.is_empty() {
        return None;
    }
    let modeled = job.model.as_ref().and_then(|model| {
        let batch = job.requested_batch_size.unwrap_or(model.limits.init_batch);
        let rows: Vec<(usize, f64)> = usable
            .iter()
            .filter_map(|&j| {
                let nodes = gpus.div_ceil(sizes[j]);
                model
                    .throughput_on(&types[j], nodes, gpus, batch)
                    .filter(|t| t.is_finite() && *t > 0.0)
                    .map(|t| (j, t))
            })
            .collect();
        (!rows.is_empty()).then_some((rows, f64::from(batch.max(1))))
    });
    let (throughputs, samples_per_step) =
        modeled.unwrap_or_else(|| (usable.iter().map(|&j| (j, 1.0)).collect(), 1.0));
    Some(LpJob {
        id: job.id,
        view,
        gpus,
        throughputs,
        samples_per_step,
    })
}

/// Adds `X[m][j] ≥ 0` for every usable pair.
fn add_fractions(vars: &mut ProblemVariables, input: &LpInput) -> Vec<Vec<Variable>> {
    input
        .jobs
        .iter()
        .map(|job| {
            job.throughputs
                .iter()
                .map(|_| vars.add(variable().min(0.0)))
                .collect()
        })
        .collect()
}

/// `Σ_j X[m][j] ≤ 1` per job and `Σ_m X[m][j]·s_m ≤ cap_j` per type (scaled by `1/cap_j`).
fn add_base_constraints<M: SolverModel>(problem: &mut M, input: &LpInput, x: &[Vec<Variable>]) {
    let mut per_type: Vec<Expression> = vec![Expression::default(); input.types.len()];
    for (job, vars) in input.jobs.iter().zip(x) {
        let mut time = Expression::with_capacity(vars.len());
        for (&(j, _), &var) in job.throughputs.iter().zip(vars) {
            time.add_mul(1.0, var);
            per_type[j].add_mul(f64::from(job.gpus) / f64::from(input.capacity[j]), var);
        }
        problem.add_constraint(time.leq(1.0));
    }
    for (j, used) in per_type.into_iter().enumerate() {
        if input.capacity[j] > 0 {
            problem.add_constraint(used.leq(1.0));
        }
    }
}

fn read_fractions<S: Solution>(solution: &S, x: &[Vec<Variable>]) -> Fractions {
    x.iter()
        .map(|row| {
            row.iter()
                .map(|&var| {
                    let value = solution.value(var).clamp(0.0, 1.0);
                    if value < MIN_FRACTION { 0.0 } else { value }
                })
                .collect()
        })
        .collect()
}

/// Maximizes `t` subject to `weights[m] · Σ_j T[m][j]·X[m][j] ≥ t` for every job, under the
/// base constraints. Returns `X` and `t`; `None` if the solver fails.
pub fn max_min_lp(input: &LpInput, weights: &[f64]) -> Option<(Fractions, f64)> {
    if input.jobs.is_empty() {
        return Some((Vec::new(), 0.0));
    }
    // Scale every coefficient into (0, 1]; `t` scales with them, `X` does not change.
    let scale = input
        .jobs
        .iter()
        .zip(weights)
        .flat_map(|(job, &w)| job.throughputs.iter().map(move |&(_, t)| w * t))
        .fold(0.0f64, f64::max);
    if !(scale.is_finite() && scale > 0.0) {
        return None;
    }
    let mut vars = ProblemVariables::new();
    let t = vars.add(variable().min(0.0));
    let x = add_fractions(&mut vars, input);
    let mut problem = vars.maximise(t).using(clarabel);
    add_base_constraints(&mut problem, input, &x);
    for ((job, vars), &w) in input.jobs.iter().zip(&x).zip(weights) {
        let mut rate = Expression::with_capacity(vars.len() + 1);
        for (&(_, thr), &var) in job.throughputs.iter().zip(vars) {
            rate.add_mul(w * thr / scale, var);
        }
        rate.add_mul(-1.0, t);
        problem.add_constraint(rate.geq(0.0));
    }
    let solution = problem.solve().ok()?;
    let value = solution.value(t) * scale;
    Some((read_fractions(&solution, &x), value))
}

/// Maximizes `Σ_m Σ_j values[m][j]·X[m][j]` under the base constraints; `None` if the
/// solver fails.
pub fn max_sum_lp(input: &LpInput, values: &[Vec<f64>]) -> Option<Fractions> {
    if input.jobs.is_empty() {
        return Some(Vec::new());
    }
    let scale = values.iter().flatten().copied().fold(0.0f64, f64::max);
    if !(scale.is_finite() && scale > 0.0) {
        return None;
    }
    let mut vars = ProblemVariables::new();
    let x = add_fractions(&mut vars, input);
    let mut objective = Expression::default();
    for (row, vars) in values.iter().zip(&x) {
        for (&v, &var) in row.iter().zip(vars) {
            objective.add_mul(v / scale, var);
        }
    }
    let mut problem = vars.maximise(objective).using(clarabel);
    add_base_constraints(&mut problem, input, &x);
    let solution = problem.solve().ok()?;
    Some(read_fractions(&solution, &x))
}

/// Gavel's LAS weights: `s_m / Σ_j T[m][j]`.
pub fn las_weights(input: &LpInput) -> Vec<f64> {
    input
        .jobs
        .iter()
        .map(|job| {
            let total: f64 = job.throughputs.iter().map(|&(_, t)| t).sum();
            f64::from(job.gpus) / total
        })
        .collect()
}

/// `X` for `objective`, falling back to the equal share if the solver fails.
pub fn gavel_allocation(objective: GavelObjective, input: &LpInput) -> Fractions {
    let solved = match objective {
        GavelObjective::MaxMinFairness => max_min_lp(input, &las_weights(input)).map(|(x, _)| x),
        GavelObjective::MaxSumThroughput => {
            let values: Vec<Vec<f64>> = input
                .jobs
                .iter()
                .map(|job| {
                    job.throughputs
                        .iter()
                        .map(|&(_, t)| t / job.samples_per_step)
                        .collect()
                })
                .collect();
            max_sum_lp(input, &values)
        }
    };
    solved.unwrap_or_else(|| input.equal_share())
}

/// Gavel's round mechanism, shared by `gavel`, `gavel-throughput` and `themis`: target
/// fractions from an LP, priorities from the time each job received, greedy assignment.
#[derive(Debug)]
pub(crate) struct Rounds {
    round_seconds: f64,
    types: Vec<GpuType>,
    last_call: Option<Time>,
    /// Seconds each active job was scheduled on each type (with the initial half round).
    received: BTreeMap<JobId, Vec<f64>>,
    /// Seconds scheduled on each type, over every job so far (with the initial half rounds).
    delivered: Vec<f64>,
    /// The last LP's input and solution.
    solved: Option<(LpInput, Fractions)>,
}

impl Rounds {
    pub(crate) fn new(round_seconds: f64) -> Self {
        Rounds {
            round_seconds: round_seconds.max(1e-3),
            types: Vec::new(),
            last_call: None,
            received: BTreeMap::new(),
            delivered: Vec::new(),
            solved: None,
        }
    }

    fn period(&self, t: Time) -> f64 {
        (t / self.round_seconds + 1e-9).floor()
    }

    /// The start of the next round after `now`.
    fn next_round(&self, now: Time) -> Time {
        (self.period(now) + 1.0) * self.round_seconds
    }

    /// The target fractions in force (the last LP's), by job and type index.
    #[cfg(test)]
    pub(crate) fn targets(&self) -> BTreeMap<JobId, Vec<(usize, f64)>> {
        let mut out = BTreeMap::new();
        if let Some((input, x)) = &self.solved {
            for (job, row) in input.jobs.iter().zip(x) {
                let pairs = job
                    .throughputs
                    .iter()
                    .zip(row)
                    .map(|(&(j, _), &f)| (j, f))
                    .collect();
                out.insert(job.id, pairs);
            }
        }
        out
    }

    /// One call: a round if a round boundary passed since the last call, else the current
    /// allocations unchanged. `solve` computes `X` when the LP input changed.
    pub(crate) fn decide(
        &mut self,
        snapshot: &Snapshot<'_>,
        solve: &mut dyn FnMut(&LpInput) -> Fractions,
    ) -> Plan {
        let types: Vec<GpuType> = snapshot.cluster.gpus_by_type().into_keys().collect();
        if types != self.types {
            *self = Rounds::new(self.round_seconds);
            self.types = types;
            self.delivered = vec![0.0; self.types.len()];
        }
        self.received
            .retain(|id, _| snapshot.jobs.iter().any(|j| j.id == *id));
        let half = self.round_seconds / 2.0;
        for job in snapshot.jobs {
            if !self.received.contains_key(&job.id) {
                self.received.insert(job.id, vec![half; self.types.len()]);
                self.delivered.iter_mut().for_each(|d| *d += half);
            }
        }
        let now = snapshot.now;
        let new_round = self
            .last_call
            .is_none_or(|last| self.period(now) > self.period(last));
        self.last_call = Some(now);
        let input = LpInput::from_snapshot(snapshot);
        let mut plan = if new_round {
            self.round(snapshot, input, solve)
        } else {
            keep(snapshot, &input)
        };
        plan.wake_at = (!snapshot.jobs.is_empty()).then(|| self.next_round(now));
        plan
    }

    fn round(
        &mut self,
        snapshot: &Snapshot<'_>,
        input: LpInput,
        solve: &mut dyn FnMut(&LpInput) -> Fractions,
    ) -> Plan {
        let x = match &self.solved {
            Some((previous, x)) if previous.same_problem(&input) => x.clone(),
            _ => {
                let x = solve(&input);
                self.solved = Some((input.clone(), x.clone()));
                x
            }
        };
        let input = &input;
        // Priorities of every usable (job, type) pair.
        let mut entries: Vec<(f64, f64, usize, usize)> = Vec::new();
        for (m, (job, row)) in input.jobs.iter().zip(&x).enumerate() {
            let received = &self.received[&job.id];
            for (&(j, _), &f) in job.throughputs.iter().zip(row) {
                let priority = if f > 0.0 {
                    f * self.delivered[j] / received[j]
                } else {
                    0.0
                };
                entries.push((priority, f, j, m));
            }
        }
        entries.sort_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then(b.1.total_cmp(&a.1))
                .then(a.2.cmp(&b.2))
                .then(a.3.cmp(&b.3))
        });
        // Greedy: one type per job, while the type has the job's GPUs free.
        let mut free_count: Vec<u32> = input.capacity.clone();
        let mut chosen: Vec<Option<usize>> = vec![None; input.jobs.len()];
        for &(_, _, j, m) in &entries {
            let gpus = input.jobs[m].gpus;
            if chosen[m].is_none() && free_count[j] >= gpus {
                free_count[j] -= gpus;
                chosen[m] = Some(j);
            }
        }
        let mut plan = Plan::default();
        let mut free = FreeResources::of(snapshot.cluster);
        let mut placed: Vec<Option<usize>> = vec![None; input.jobs.len()];
        // Jobs staying on their type keep their GPUs.
        for (m, job) in input.jobs.iter().enumerate() {
            let view = &snapshot.jobs[job.view];
            let Some(j) = chosen[m] else { continue };
            let current = current_type(snapshot, view);
            if current == Some(&input.types[j]) && view.allocation.total_gpus() == job.gpus {
                free.take(view, &view.allocation);
                plan.allocate(job.id, view.allocation.clone());
                placed[m] = Some(j);
            }
        }
        // The others, largest gang first, on the fewest nodes.
        let mut moving: Vec<usize> = (0..input.jobs.len())
            .filter(|&m| chosen[m].is_some() && placed[m].is_none())
            .collect();
        moving.sort_by_key(|&m| std::cmp::Reverse(input.jobs[m].gpus));
        for m in moving {
            let j = chosen[m].expect("chosen");
            let job = &input.jobs[m];
            let view = &snapshot.jobs[job.view];
            if let Some(allocation) = place_gang_on_type(&free, view, job.gpus, &input.types[j]) {
                free.take(view, &allocation);
                plan.allocate(job.id, allocation);
                placed[m] = Some(j);
            }
        }
        // CPU or memory may leave a chosen job unplaced: fill what is left in priority order.
        for &(_, _, j, m) in &entries {
            let job = &input.jobs[m];
            if placed[m].is_some() {
                continue;
            }
            let view = &snapshot.jobs[job.view];
            if let Some(allocation) = place_gang_on_type(&free, view, job.gpus, &input.types[j]) {
                free.take(view, &allocation);
                plan.allocate(job.id, allocation);
                placed[m] = Some(j);
            }
        }
        for (m, job) in input.jobs.iter().enumerate() {
            match placed[m] {
                Some(j) => {
                    let received = self.received.get_mut(&job.id).expect("registered");
                    received[j] += self.round_seconds;
                    self.delivered[j] += self.round_seconds;
                }
                None => plan.wait(
                    job.id,
                    format!(
                        "round at t={:.0}: jobs with higher priority hold the GPUs",
                        snapshot.now
                    ),
                ),
            }
        }
        wait_unschedulable(snapshot, input, &mut plan);
        plan
    }
}

/// The GPU type of the nodes `job` runs on now.
fn current_type<'a>(snapshot: &Snapshot<'a>, job: &JobView) -> Option<&'a GpuType> {
    job.allocation
        .parts
        .iter()
        .find(|&&(_, g)| g > 0)
        .and_then(|&(node, _)| snapshot.cluster.node(node))
        .map(|n| &n.gpu_type)
}

/// Between rounds: every job keeps what it holds.
fn keep(snapshot: &Snapshot<'_>, input: &LpInput) -> Plan {
    let mut plan = Plan::default();
    for job in snapshot.jobs {
        if job.is_running() {
            plan.allocate(job.id, job.allocation.clone());
        } else {
            plan.wait(job.id, "waiting for the next round");
        }
    }
    wait_unschedulable(snapshot, input, &mut plan);
    plan
}

fn wait_unschedulable(snapshot: &Snapshot<'_>, input: &LpInput, plan: &mut Plan) {
    for job in snapshot.jobs {
        if !input.jobs.iter().any(|r| r.id == job.id) {
            plan.wait(
                job.id,
                format!(
                    "needs {} GPUs of one type; no allowed type has that many",
                    job.requested_gpus
                ),
            );
        }
    }
}

/// The `gavel` and `gavel-throughput` policies.
#[derive(Debug)]
pub struct Gavel {
    name: &'static str,
    config: GavelConfig,
    rounds: Rounds,
}

impl Gavel {
    /// A Gavel policy registered as `name`.
    pub fn new(name: &'static str, config: GavelConfig) -> Self {
        let rounds = Rounds::new(config.round_seconds);
        Gavel {
            name,
            config,
            rounds,
        }
    }
}

impl Policy for Gavel {
    fn name(&self) -> &'static str {
        self.name
    }

    fn decide(&mut self, snapshot: &Snapshot<'_>, _rng: &mut dyn RngCore) -> Plan {
        let objective = self.config.objective;
        self.rounds
            .decide(snapshot, &mut |input| gavel_allocation(objective, input))
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
pub(crate) mod tests {
    use super::*;
    use adaptsched_core::perf::{BatchLimits, JobModel, PerfParams, TypeModel};
    use adaptsched_core::{Allocation, Cluster, JobCategory, Node, validate_plan};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    pub(crate) const LIMITS: BatchLimits = BatchLimits {
        init_batch: 64,
        max_batch: 4096,
        min_local: 1,
        max_local: 4096,
    };

    /// `count` nodes of `gpus` GPUs of each `(type, count, gpus)`.
    pub(crate) fn cluster(groups: &[(&str, u32, u32)]) -> Cluster {
        let mut nodes = Vec::new();
        for &(gpu_type, count, gpus) in groups {
            for _ in 0..count {
                nodes.push(Node {
                    name: format!("{gpu_type}-{}", nodes.len()),
                    gpu_type: GpuType::new(gpu_type),
                    gpus,
                    cpu_cores: 0,
                    memory_gb: 0.0,
                    network_gbps: 10.0,
                });
            }
        }
        Cluster {
            name: "test".to_string(),
            nodes,
        }
    }

    /// A model in which one step at batch 64 takes `1/speed` s on each listed type, so the
    /// throughput there is `64·speed` samples/s on any GPU count (sync at its floor).
    pub(crate) fn model(speeds: &[(&str, f64)]) -> JobModel {
        let perf = |speed: f64| PerfParams {
            alpha_c: 1.0 / speed,
            beta_c: 0.0,
            alpha_n: 1e-8,
            beta_n: 1e-8,
            alpha_r: 1e-8,
            beta_r: 1e-8,
            gamma: 1.0,
        };
        JobModel {
            perf: Some(perf(speeds[0].1)),
            types: speeds
                .iter()
                .map(|&(t, s)| TypeModel {
                    gpu_type: GpuType::new(t),
                    perf: Some(perf(s)),
                    multi_gpu_observed: true,
                    limits: LIMITS,
                })
                .collect(),
            grad: None,
            limits: LIMITS,
            fixed_batch: None,
            max_replicas_seen: 1,
        }
    }

    /// A rigid job of `gpus` GPUs submitted at `submit`, with per-type speeds (steps/s); its
    /// allowed types are those it has speeds for.
    pub(crate) fn job(id: u32, gpus: u32, submit: Time, speeds: &[(&str, f64)]) -> JobView {
        JobView {
            id: JobId(id),
            name: format!("job{id}"),
            application: "test".to_string(),
            category: JobCategory::Rigid,
            submit_time: submit,
            requested_gpus: gpus,
            requested_batch_size: Some(64),
            min_gpus: gpus,
            max_gpus: gpus,
            allowed_gpu_types: speeds.iter().map(|&(t, _)| GpuType::new(t)).collect(),
            cpus_per_gpu: 0.0,
            memory_gb_per_gpu: 0.0,
            attained_gpu_seconds: 0.0,
            allocation: Allocation::default(),
            restarts: 0,
            oracle_remaining_seconds: None,
            model: Some(model(speeds)),
            restart_seconds: 30.0,
        }
    }

    fn input(cluster: &Cluster, jobs: &[JobView]) -> LpInput {
        LpInput::from_snapshot(&Snapshot {
            now: 0.0,
            cluster,
            jobs,
        })
    }

    /// `X` of job `m` on the type named `t` (0 when it has no variable there).
    pub(crate) fn fraction(input: &LpInput, x: &Fractions, m: usize, t: &str) -> f64 {
        let j = input
            .types
            .iter()
            .position(|g| g.as_str() == t)
            .expect("type");
        input.jobs[m]
            .throughputs
            .iter()
            .zip(&x[m])
            .find(|&(&(k, _), _)| k == j)
            .map_or(0.0, |(_, &f)| f)
    }

    /// Feeds each plan back as the jobs' allocations for `rounds` rounds of 360 s (counting
    /// restarts and attained service as the simulator would), validating every plan; returns
    /// the rounds each job spent on each type.
    pub(crate) fn run_rounds(
        policy: &mut dyn Policy,
        cluster: &Cluster,
        jobs: &mut [JobView],
        rounds: usize,
    ) -> BTreeMap<(JobId, String), usize> {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut counts = BTreeMap::new();
        for round in 0..rounds {
            let now = round as f64 * ROUND_SECONDS;
            let plan = policy.decide(&Snapshot { now, cluster, jobs }, &mut rng);
            validate_plan(cluster, jobs, &plan).expect("valid plan");
            // A replay at the same time changes nothing.
            let replay = policy.decide(&Snapshot { now, cluster, jobs }, &mut rng);
            for job in jobs.iter() {
                assert_eq!(
                    job.allocation.is_empty(),
                    replay
                        .allocations
                        .get(&job.id)
                        .is_none_or(Allocation::is_empty)
                );
            }
            for job in jobs.iter_mut() {
                let desired = plan.allocations.get(&job.id).cloned().unwrap_or_default();
                if !desired.is_empty() {
                    if !job.allocation.is_empty() && !desired.same_resources(&job.allocation) {
                        job.restarts += 1;
                    }
                    job.attained_gpu_seconds += f64::from(desired.total_gpus()) * ROUND_SECONDS;
                    let node = cluster.node(desired.parts[0].0).expect("node");
                    *counts
                        .entry((job.id, node.gpu_type.as_str().to_string()))
                        .or_insert(0) += 1;
                }
                job.allocation = desired;
            }
        }
        counts
    }

    #[test]
    fn throughputs_come_from_the_fitted_models() {
        let cluster = cluster(&[("a", 1, 4), ("b", 1, 4)]);
        let jobs = [
            job(0, 2, 0.0, &[("a", 3.0), ("b", 1.0)]),
            job(1, 1, 0.0, &[("b", 2.0)]),
            job(2, 8, 0.0, &[("a", 1.0), ("b", 1.0)]),
        ];
        let input = input(&cluster, &jobs);
        // Job 2 needs 8 GPUs of one type: no row. Job 1 may only use b.
        assert_eq!(input.jobs.len(), 2);
        let [a, b] = [input.jobs[0].throughputs[0], input.jobs[0].throughputs[1]];
        assert_eq!((a.0, b.0), (0, 1));
        assert!((a.1 / b.1 - 3.0).abs() < 1e-6, "{a:?} {b:?}");
        // A fixed total batch of 64 over 2 GPUs: 3 steps/s of 64 samples.
        assert!((a.1 - 64.0 * 3.0).abs() < 1e-3, "{a:?}");
        assert_eq!(input.jobs[1].throughputs.len(), 1);
        assert_eq!(input.jobs[1].throughputs[0].0, 1);
    }

    /// Types a and b have one GPU each; job 0 is 3× faster on a, jobs 1 and 2 are equally fast
    /// on both. Normalized throughputs: n0 = (3·x0a + x0b)/4, n_k = (x_ka + x_kb)/2 (k = 1, 2).
    /// Giving a to job 0 is worth 3× more to it, so it gets no b; with x0a = α, jobs 1 and 2
    /// share the rest (2 − α): 3α/4 = (2 − α)/4 ⇒ α = 1/2, t = 3/8, and each of jobs 1, 2 gets
    /// 3/4 of the time.
    #[test]
    fn max_min_split_by_hand() {
        let cluster = cluster(&[("a", 1, 1), ("b", 1, 1)]);
        let jobs = [
            job(0, 1, 0.0, &[("a", 3.0), ("b", 1.0)]),
            job(1, 1, 0.0, &[("a", 1.0), ("b", 1.0)]),
            job(2, 1, 0.0, &[("a", 1.0), ("b", 1.0)]),
        ];
        let input = input(&cluster, &jobs);
        let (x, t) = max_min_lp(&input, &las_weights(&input)).expect("solves");
        // t is in the scaled units of the weights: weights·T = 3·64/(4·64)... compare ratios.
        let n = input.effective_throughputs(&x);
        let normalized: Vec<f64> = n
            .iter()
            .zip(las_weights(&input))
            .map(|(thr, w)| thr * w)
            .collect();
        for value in &normalized {
            assert!((value - 3.0 / 8.0).abs() < 1e-4, "{normalized:?}");
        }
        assert!((t - 3.0 / 8.0).abs() < 1e-4, "t = {t}");
        assert!((fraction(&input, &x, 0, "a") - 0.5).abs() < 1e-4, "{x:?}");
        assert!(fraction(&input, &x, 0, "b") < 1e-4, "{x:?}");
        for m in [1, 2] {
            let total = fraction(&input, &x, m, "a") + fraction(&input, &x, m, "b");
            assert!((total - 0.75).abs() < 1e-4, "{x:?}");
        }
        // Capacity holds.
        for t in ["a", "b"] {
            let used: f64 = (0..3).map(|m| fraction(&input, &x, m, t)).sum();
            assert!(used <= 1.0 + 1e-6, "{t}: {used}");
        }
    }

    /// Max-sum-throughput on the same cluster with two jobs: a is worth 3 steps/s to job 0 and
    /// 1 to job 1, b is worth 1 to both: job 0 gets all of a, job 1 all of b (total 4).
    #[test]
    fn max_sum_split_by_hand() {
        let cluster = cluster(&[("a", 1, 1), ("b", 1, 1)]);
        let jobs = [
            job(0, 1, 0.0, &[("a", 3.0), ("b", 1.0)]),
            job(1, 1, 0.0, &[("a", 1.0), ("b", 1.0)]),
        ];
        let input = input(&cluster, &jobs);
        let x = gavel_allocation(GavelObjective::MaxSumThroughput, &input);
        assert!((fraction(&input, &x, 0, "a") - 1.0).abs() < 1e-4, "{x:?}");
        assert!(fraction(&input, &x, 0, "b") < 1e-4, "{x:?}");
        assert!(fraction(&input, &x, 1, "a") < 1e-4, "{x:?}");
        assert!((fraction(&input, &x, 1, "b") - 1.0).abs() < 1e-4, "{x:?}");
    }

    #[test]
    fn the_lp_is_deterministic() {
        let cluster = cluster(&[("a", 3, 4), ("b", 2, 8)]);
        let jobs: Vec<JobView> = (0..40)
            .map(|i| {
                let speed = 1.0 + f64::from(i % 7);
                job(
                    i,
                    1 + i % 4,
                    f64::from(i),
                    &[("a", speed), ("b", 8.0 - speed)],
                )
            })
            .collect();
        let input = input(&cluster, &jobs);
        for objective in [
            GavelObjective::MaxMinFairness,
            GavelObjective::MaxSumThroughput,
        ] {
            let first = gavel_allocation(objective, &input);
            let second = gavel_allocation(objective, &input);
            assert_eq!(first, second);
            // Feasible.
            for (m, row) in first.iter().enumerate() {
                assert!(row.iter().sum::<f64>() <= 1.0 + 1e-6, "job {m}: {row:?}");
            }
            for t in ["a", "b"] {
                let j = input.types.iter().position(|g| g.as_str() == t).unwrap();
                let used: f64 = (0..input.jobs.len())
                    .map(|m| fraction(&input, &first, m, t) * f64::from(input.jobs[m].gpus))
                    .sum();
                assert!(used <= f64::from(input.capacity[j]) + 1e-4, "{t}: {used}");
            }
        }
    }

    /// Over 50 rounds, the share of rounds each job spends on each type approaches `X` (within
    /// 0.1: time `X` leaves unused is handed out too, and a round is indivisible).
    #[test]
    fn rounds_converge_to_the_target_fractions() {
        let cluster = cluster(&[("a", 2, 4), ("b", 1, 4)]);
        let mut jobs = vec![
            job(0, 4, 0.0, &[("a", 3.0), ("b", 1.0)]),
            job(1, 2, 0.0, &[("a", 1.0), ("b", 1.0)]),
            job(2, 4, 0.0, &[("a", 1.0), ("b", 2.0)]),
            job(3, 2, 0.0, &[("a", 2.0), ("b", 1.0)]),
            job(4, 4, 0.0, &[("b", 1.0)]),
        ];
        for name in ["gavel", "gavel-throughput"] {
            let config = if name == "gavel" {
                GavelConfig::las()
            } else {
                GavelConfig::max_sum_throughput()
            };
            let mut policy = Gavel::new(name, config);
            let rounds = 50;
            let counts = run_rounds(&mut policy, &cluster, &mut jobs.clone(), rounds);
            let targets = policy.rounds.targets();
            let types = ["a", "b"];
            for job in &mut jobs {
                for (j, t) in types.iter().enumerate() {
                    let target = targets[&job.id]
                        .iter()
                        .find(|&&(k, _)| k == j)
                        .map_or(0.0, |&(_, f)| f);
                    let realized = counts
                        .get(&(job.id, t.to_string()))
                        .map_or(0.0, |&c| c as f64 / rounds as f64);
                    assert!(
                        (realized - target).abs() <= 0.1,
                        "{name}: {} on {t}: X = {target:.3}, realized {realized:.3}",
                        job.id
                    );
                }
            }
        }
    }

    #[test]
    fn restricted_jobs_never_land_elsewhere_and_staying_jobs_keep_their_gpus() {
        let cluster = cluster(&[("a", 2, 4), ("b", 2, 4)]);
        let mut jobs: Vec<JobView> = (0..6)
            .map(|i| {
                if i % 2 == 0 {
                    job(i, 2 + i % 3, 0.0, &[("b", 1.0)])
                } else {
                    job(i, 1 + i % 4, 0.0, &[("a", 2.0), ("b", 1.0)])
                }
            })
            .collect();
        for name in ["gavel", "gavel-throughput"] {
            let mut policy = crate::build_policy(name).expect("registered");
            let counts = run_rounds(policy.as_mut(), &cluster, &mut jobs, 30);
            for (id, t) in counts.keys() {
                if id.0 % 2 == 0 {
                    assert_eq!(t, "b", "{name}: {id} ran on {t}");
                }
            }
        }
        // Enough room for everyone: nobody ever moves.
        let mut few: Vec<JobView> = (0..4)
            .map(|i| job(i, 2, 0.0, &[("a", 2.0), ("b", 1.0)]))
            .collect();
        let mut policy = Gavel::new("gavel", GavelConfig::las());
        run_rounds(&mut policy, &cluster, &mut few, 20);
        for job in &few {
            assert!(job.is_running());
            assert_eq!(job.restarts, 0, "{}", job.id);
        }
    }

    #[test]
    fn calls_between_rounds_keep_everything_and_wake_at_the_next_round() {
        let cluster = cluster(&[("a", 1, 4)]);
        let jobs = vec![
            job(0, 4, 0.0, &[("a", 1.0)]),
            job(1, 4, 10.0, &[("a", 1.0)]),
        ];
        let mut policy = Gavel::new("gavel", GavelConfig::las());
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let first = policy.decide(
            &Snapshot {
                now: 100.0,
                cluster: &cluster,
                jobs: &jobs,
            },
            &mut rng,
        );
        assert_eq!(first.wake_at, Some(360.0));
        let running: Vec<JobId> = first.allocations.keys().copied().collect();
        assert_eq!(running.len(), 1);
        let mut jobs = jobs;
        for job in &mut jobs {
            job.allocation = first.allocations.get(&job.id).cloned().unwrap_or_default();
        }
        // Mid-round: the same job keeps the GPUs.
        let mid = policy.decide(
            &Snapshot {
                now: 300.0,
                cluster: &cluster,
                jobs: &jobs,
            },
            &mut rng,
        );
        assert_eq!(mid.allocations.keys().copied().collect::<Vec<_>>(), running);
        // Next round: the other job's turn (it has received less).
        let next = policy.decide(
            &Snapshot {
                now: 360.0,
                cluster: &cluster,
                jobs: &jobs,
            },
            &mut rng,
        );
        assert_eq!(next.allocations.len(), 1);
        assert!(!next.allocations.contains_key(&running[0]), "{next:?}");
        assert_eq!(next.wake_at, Some(720.0));
    }

    #[test]
    fn jobs_without_models_share_equally() {
        let cluster = cluster(&[("a", 1, 2), ("b", 1, 2)]);
        let mut jobs: Vec<JobView> = (0..4)
            .map(|i| {
                let mut j = job(i, 1, 0.0, &[("a", 1.0), ("b", 1.0)]);
                j.model = None;
                j.allowed_gpu_types.clear();
                j
            })
            .collect();
        let mut policy = Gavel::new("gavel", GavelConfig::las());
        let counts = run_rounds(&mut policy, &cluster, &mut jobs, 4);
        let total: usize = counts.values().sum();
        assert_eq!(total, 16, "every GPU busy every round: {counts:?}");
    }
}
