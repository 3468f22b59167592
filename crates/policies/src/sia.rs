//! `sia` (Jayaram Subramanya et al., SOSP'23): one (GPU type, GPU count) configuration per job,
//! chosen to minimize Σ (normalized goodput × restart factor)^p over allocated jobs plus λ_n per
//! unallocated job, within each GPU type's capacity; jobs adapt their batch size.
//!
//! Sia solves this integer program with CBC. We solve it with a specialised method for its
//! structure (a multiple-choice knapsack with one capacity per GPU type): Lagrangian prices per
//! GPU type, greedy repair to feasibility, and single-job improvement moves. Tests check it
//! against an exact solver on random instances.

use crate::placement::{FreeResources, fill_in_order};
use adaptsched_core::perf::GoodputMemo;
use adaptsched_core::{Allocation, Cluster, GpuType, JobView, NodeId, Plan, Policy, Snapshot};
use rand::RngCore;

/// Sia settings; the defaults are those of the artifact's `run_experiment.sh`.
#[derive(Clone, Debug, PartialEq)]
pub struct SiaConfig {
    /// Fairness exponent (negative: the objective is minimized).
    pub p: f64,
    /// Cost of leaving a job without GPUs.
    pub lambda_unallocated: f64,
    /// Largest cost of one configuration (a zero goodput would be infinite).
    pub cost_clip: f64,
}

impl Default for SiaConfig {
    fn default() -> Self {
        SiaConfig {
            p: -0.5,
            lambda_unallocated: 1.1,
            cost_clip: 1e3,
        }
    }
}

/// A configuration a job may get: `gpus` GPUs of type `gpu_type` (index into the type list).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Choice {
    pub gpu_type: usize,
    pub gpus: u32,
    pub cost: f64,
}

/// One job's options; `None` (no GPUs) always costs `lambda_unallocated`.
#[derive(Clone, Debug, PartialEq)]
pub struct JobOptions {
    pub choices: Vec<Choice>,
}

/// The problem in solver terms: options per job and GPUs per type.
#[derive(Clone, Debug, PartialEq)]
pub struct SiaProblem {
    pub jobs: Vec<JobOptions>,
    pub capacity: Vec<u32>,
    pub lambda_unallocated: f64,
}

impl SiaProblem {
    /// Total cost of an assignment (`None` = unallocated).
    pub fn cost(&self, assignment: &[Option<usize>]) -> f64 {
        self.jobs
            .iter()
            .zip(assignment)
            .map(|(job, a)| a.map_or(self.lambda_unallocated, |c| job.choices[c].cost))
            .sum()
    }

    /// Whether an assignment fits every type's capacity.
    pub fn feasible(&self, assignment: &[Option<usize>]) -> bool {
        self.usage(assignment)
            .iter()
            .zip(&self.capacity)
            .all(|(u, c)| u <= c)
    }

    fn usage(&self, assignment: &[Option<usize>]) -> Vec<u32> {
        let mut used = vec![0u32; self.capacity.len()];
        for (job, a) in self.jobs.iter().zip(assignment) {
            if let Some(c) = a {
                let choice = job.choices[*c];
                used[choice.gpu_type] += choice.gpus;
            }
        }
        used
    }
}

/// Each job's cheapest option under GPU prices `price` (none if that is cheaper).
fn priced_choice(problem: &SiaProblem, price: &[f64]) -> Vec<Option<usize>> {
    problem
        .jobs
        .iter()
        .map(|job| {
            let mut best = (problem.lambda_unallocated, None);
            for (i, c) in job.choices.iter().enumerate() {
                let value = c.cost + price[c.gpu_type] * f64::from(c.gpus);
                if value < best.0 - 1e-12 {
                    best = (value, Some(i));
                }
            }
            best.1
        })
        .collect()
}

/// Makes an assignment feasible: while a type is over capacity, move the job whose move
/// (to a smaller option, another type with room, or none) costs least per GPU freed there.
fn repair(problem: &SiaProblem, assignment: &mut [Option<usize>]) {
    loop {
        let used = problem.usage(assignment);
        let Some(over) = (0..used.len()).find(|&t| used[t] > problem.capacity[t]) else {
            return;
        };
        let mut best: Option<(f64, usize, Option<usize>)> = None;
        for j in 0..problem.jobs.len() {
            if let Some((per_gpu, target)) = cheapest_move_off(problem, assignment, j, over, &used)
                && best.is_none_or(|(b, _, _)| per_gpu < b)
            {
                best = Some((per_gpu, j, target));
            }
        }
        match best {
            Some((_, j, target)) => assignment[j] = target,
            None => return,
        }
    }
}

/// Job `j`'s cheapest move off the over-full type `over` (to a smaller option there, another
/// type with room under `used`, or none), as (cost per GPU freed, target); `None` if it does
/// not run there or cannot free any GPU.
fn cheapest_move_off(
    problem: &SiaProblem,
    assignment: &[Option<usize>],
    j: usize,
    over: usize,
    used: &[u32],
) -> Option<(f64, Option<usize>)> {
    let job = &problem.jobs[j];
    let here = job.choices[assignment[j]?];
    if here.gpu_type != over {
        return None;
    }
    let mut best: Option<(f64, Option<usize>)> = None;
    for target in std::iter::once(None).chain((0..job.choices.len()).map(Some)) {
        let (cost, gpus_there, t) = target.map_or((problem.lambda_unallocated, 0, over), |c| {
            let choice = job.choices[c];
            (choice.cost, choice.gpus, choice.gpu_type)
        });
        let freed = if t == over {
            here.gpus.saturating_sub(gpus_there)
        } else {
            here.gpus
        };
        if freed == 0 || (t != over && used[t] + gpus_there > problem.capacity[t]) {
            continue;
        }
        let per_gpu = (cost - here.cost) / f64::from(freed);
        if best.is_none_or(|(b, _)| per_gpu < b) {
            best = Some((per_gpu, target));
        }
    }
    best
}

/// Single-job moves that lower the cost and keep the assignment feasible, until none is left.
fn improve(problem: &SiaProblem, assignment: &mut [Option<usize>]) {
    for _ in 0..4 * problem.jobs.len() + 4 {
        let used = problem.usage(assignment);
        let mut best: Option<(f64, usize, Option<usize>)> = None;
        for (j, job) in problem.jobs.iter().enumerate() {
            let (now_cost, now_type, now_gpus) = match assignment[j] {
                None => (problem.lambda_unallocated, usize::MAX, 0),
                Some(c) => (
                    job.choices[c].cost,
                    job.choices[c].gpu_type,
                    job.choices[c].gpus,
                ),
            };
            for (c, choice) in job.choices.iter().enumerate() {
                let free_there = problem.capacity[choice.gpu_type] - used[choice.gpu_type]
                    + if choice.gpu_type == now_type {
                        now_gpus
                    } else {
                        0
                    };
                let gain = now_cost - choice.cost;
                if choice.gpus <= free_there
                    && gain > 1e-12
                    && best.is_none_or(|(g, _, _)| gain > g)
                {
                    best = Some((gain, j, Some(c)));
                }
            }
        }
        match best {
            Some((_, j, c)) => assignment[j] = c,
            None => return,
        }
    }
}

/// `repair` for large problems: each pass prices every job's cheapest move off the
/// over-full type once and applies them cheapest first until the type fits, instead of one
/// move per pass over all jobs (quadratic in the number of jobs).
fn repair_batched(problem: &SiaProblem, assignment: &mut [Option<usize>]) {
    loop {
        let mut used = problem.usage(assignment);
        let Some(over) = (0..used.len()).find(|&t| used[t] > problem.capacity[t]) else {
            return;
        };
        // (cost per GPU freed, job, where it moves)
        let mut moves: Vec<(f64, usize, Option<usize>)> = (0..problem.jobs.len())
            .filter_map(|j| {
                cheapest_move_off(problem, assignment, j, over, &used)
                    .map(|(per_gpu, target)| (per_gpu, j, target))
            })
            .collect();
        moves.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut moved = false;
        for (_, j, target) in moves {
            if used[over] <= problem.capacity[over] {
                break;
            }
            let job = &problem.jobs[j];
            let here = job.choices[assignment[j].expect("allocated")];
            if let Some(c) = target.map(|c| job.choices[c])
                && c.gpu_type != over
                && used[c.gpu_type] + c.gpus > problem.capacity[c.gpu_type]
            {
                continue;
            }
            used[here.gpu_type] -= here.gpus;
            if let Some(c) = target.map(|c| job.choices[c]) {
                used[c.gpu_type] += c.gpus;
            }
            assignment[j] = target;
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

/// `improve` for large problems: each pass finds every job's best improving move once and
/// applies them largest gain first while they still fit, until a pass finds none.
fn improve_batched(problem: &SiaProblem, assignment: &mut [Option<usize>]) {
    let footprint = |j: usize, a: Option<usize>| {
        a.map_or((usize::MAX, 0), |c| {
            (
                problem.jobs[j].choices[c].gpu_type,
                problem.jobs[j].choices[c].gpus,
            )
        })
    };
    let cost_of = |j: usize, a: Option<usize>| {
        a.map_or(problem.lambda_unallocated, |c| {
            problem.jobs[j].choices[c].cost
        })
    };
    let free_for = |used: &[u32], j: usize, now: Option<usize>, choice: &Choice| {
        let (now_type, now_gpus) = footprint(j, now);
        problem.capacity[choice.gpu_type] - used[choice.gpu_type]
            + if choice.gpu_type == now_type {
                now_gpus
            } else {
                0
            }
    };
    for _ in 0..4 * problem.jobs.len() + 4 {
        let mut used = problem.usage(assignment);
        let mut moves: Vec<(f64, usize, usize)> = Vec::new();
        for (j, job) in problem.jobs.iter().enumerate() {
            let now_cost = cost_of(j, assignment[j]);
            let mut best: Option<(f64, usize)> = None;
            for (c, choice) in job.choices.iter().enumerate() {
                let gain = now_cost - choice.cost;
                if gain > 1e-12
                    && choice.gpus <= free_for(&used, j, assignment[j], choice)
                    && best.is_none_or(|(g, _)| gain > g)
                {
                    best = Some((gain, c));
                }
            }
            if let Some((gain, c)) = best {
                moves.push((gain, j, c));
            }
        }
        if moves.is_empty() {
            return;
        }
        moves.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, j, c) in moves {
            let choice = problem.jobs[j].choices[c];
            if choice.gpus > free_for(&used, j, assignment[j], &choice) {
                continue;
            }
            let (now_type, now_gpus) = footprint(j, assignment[j]);
            if now_type != usize::MAX {
                used[now_type] -= now_gpus;
            }
            used[choice.gpu_type] += choice.gpus;
            assignment[j] = Some(c);
        }
    }
}

/// Pair moves: one job changes option (often down or out) so that another can change too,
/// when together they lower the cost. Quadratic, so only for small problems.
fn improve_pairs(problem: &SiaProblem, assignment: &mut [Option<usize>]) {
    let size: usize = problem.jobs.iter().map(|j| j.choices.len() + 1).sum();
    if size > 400 {
        return;
    }
    let cost_of = |j: usize, a: Option<usize>| {
        a.map_or(problem.lambda_unallocated, |c| {
            problem.jobs[j].choices[c].cost
        })
    };
    let footprint = |j: usize, a: Option<usize>| {
        a.map(|c| {
            (
                problem.jobs[j].choices[c].gpu_type,
                problem.jobs[j].choices[c].gpus,
            )
        })
    };
    for _ in 0..8 {
        let used = problem.usage(assignment);
        // (cost change, job a, its new option, job b, its new option)
        type PairMove = (f64, usize, Option<usize>, usize, Option<usize>);
        let mut best: Option<PairMove> = None;
        for a in 0..problem.jobs.len() {
            let options_a =
                std::iter::once(None).chain((0..problem.jobs[a].choices.len()).map(Some));
            for new_a in options_a {
                if new_a == assignment[a] {
                    continue;
                }
                let mut used_a = used.clone();
                if let Some((t, g)) = footprint(a, assignment[a]) {
                    used_a[t] -= g;
                }
                if let Some((t, g)) = footprint(a, new_a) {
                    used_a[t] += g;
                }
                let delta_a = cost_of(a, new_a) - cost_of(a, assignment[a]);
                for b in (0..problem.jobs.len()).filter(|&b| b != a) {
                    let options_b =
                        std::iter::once(None).chain((0..problem.jobs[b].choices.len()).map(Some));
                    for new_b in options_b {
                        if new_b == assignment[b] {
                            continue;
                        }
                        let delta = delta_a + cost_of(b, new_b) - cost_of(b, assignment[b]);
                        if delta > -1e-12 || best.as_ref().is_some_and(|x| delta >= x.0) {
                            continue;
                        }
                        let mut used_b = used_a.clone();
                        if let Some((t, g)) = footprint(b, assignment[b]) {
                            used_b[t] -= g;
                        }
                        if let Some((t, g)) = footprint(b, new_b) {
                            used_b[t] += g;
                        }
                        if used_b.iter().zip(&problem.capacity).all(|(u, c)| u <= c) {
                            best = Some((delta, a, new_a, b, new_b));
                        }
                    }
                }
            }
        }
        match best {
            Some((_, a, new_a, b, new_b)) => {
                assignment[a] = new_a;
                assignment[b] = new_b;
                improve(problem, assignment);
            }
            None => return,
        }
    }
}

/// Solves a Sia problem: Lagrangian prices by subgradient steps; each step's choice is repaired
/// and improved; the cheapest feasible assignment wins.
pub fn solve(problem: &SiaProblem) -> Vec<Option<usize>> {
    solve_from(problem, None)
}

/// Like `solve`, also trying `warm` (e.g. the current allocation) as a starting point, so a
/// re-decision on unchanged state keeps a plan at least as good as the current one.
pub fn solve_from(problem: &SiaProblem, warm: Option<Vec<Option<usize>>>) -> Vec<Option<usize>> {
    solve_with(problem, warm, SolverEffort::default())
}

/// How hard `solve_with` searches: Lagrangian steps, and how many steps without a better
/// assignment end the search early.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SolverEffort {
    pub iterations: usize,
    pub patience: usize,
    /// Above this many options in all, repair and improve in batched passes
    /// (`repair_batched`, `improve_batched`): linear per pass, where the one-move-per-pass
    /// originals are quadratic in the number of jobs. `usize::MAX`: never.
    pub batched_above: usize,
}

impl Default for SolverEffort {
    /// Sia's reproduction: a fixed 40 steps.
    fn default() -> Self {
        SolverEffort {
            iterations: 40,
            patience: usize::MAX,
            batched_above: usize::MAX,
        }
    }
}

/// A repair or improvement pass over an assignment.
type Pass = fn(&SiaProblem, &mut [Option<usize>]);

/// `solve_from` with a chosen effort.
pub fn solve_with(
    problem: &SiaProblem,
    warm: Option<Vec<Option<usize>>>,
    effort: SolverEffort,
) -> Vec<Option<usize>> {
    let types = problem.capacity.len();
    let mut price = vec![0.0; types];
    let mut best: Option<(f64, Vec<Option<usize>>)> = None;
    let options: usize = problem.jobs.iter().map(|j| j.choices.len()).sum();
    let (repair, improve): (Pass, Pass) = if options > effort.batched_above {
        (repair_batched, improve_batched)
    } else {
        (repair, improve)
    };
    if let Some(mut start) = warm.filter(|w| w.len() == problem.jobs.len() && problem.feasible(w)) {
        improve(problem, &mut start);
        best = Some((problem.cost(&start), start));
    }
    let mut step = 0.05;
    let mut stale = 0;
    for _ in 0..effort.iterations {
        let mut assignment = priced_choice(problem, &price);
        let used = problem.usage(&assignment);
        repair(problem, &mut assignment);
        improve(problem, &mut assignment);
        let cost = problem.cost(&assignment);
        if best.as_ref().is_none_or(|(b, _)| cost < *b - 1e-12) {
            best = Some((cost, assignment));
            stale = 0;
        } else {
            stale += 1;
            if stale >= effort.patience {
                break;
            }
        }
        let mut moved = false;
        for t in 0..types {
            let capacity = f64::from(problem.capacity[t].max(1));
            let excess = (f64::from(used[t]) - capacity) / capacity;
            let next = (price[t] + step * excess).max(0.0);
            moved |= (next - price[t]).abs() > 1e-12;
            price[t] = next;
        }
        if !moved {
            break;
        }
        step *= 0.9;
    }
    let mut assignment = best
        .map(|(_, a)| a)
        .unwrap_or_else(|| vec![None; problem.jobs.len()]);
    improve_pairs(problem, &mut assignment);
    assignment
}

/// The Sia policy.
#[derive(Debug, Default)]
pub struct Sia {
    config: SiaConfig,
}

impl Sia {
    pub fn new(config: SiaConfig) -> Self {
        Sia { config }
    }
}

/// Sia's configurations on a type with `node_size`-GPU nodes and `nodes` nodes: powers of two
/// within a node, then whole nodes.
pub(crate) fn type_configs(node_size: u32, nodes: u32) -> Vec<u32> {
    let mut counts: Vec<u32> = (0..)
        .map(|k| 1u32 << k)
        .take_while(|&g| g <= node_size)
        .collect();
    counts.extend((2..=nodes).map(|k| k * node_size));
    counts
}

/// How many GPUs of a type a job could use at once on the empty cluster, given its CPU and
/// memory needs. Counting them takes a pass over every node, and jobs share few distinct
/// needs, so one value per (type, needs) serves a whole round.
pub(crate) struct UsableGpus {
    empty: FreeResources,
    by_needs: std::collections::BTreeMap<(usize, u64, u64), u32>,
}

impl UsableGpus {
    pub(crate) fn new(cluster: &Cluster) -> Self {
        UsableGpus {
            empty: FreeResources::of(cluster),
            by_needs: std::collections::BTreeMap::new(),
        }
    }

    /// GPUs of type `t` (`info`) that `job` could use at once.
    pub(crate) fn of_type(&mut self, job: &JobView, t: usize, info: &TypeInfo) -> u32 {
        // Without CPU or memory needs every GPU of the type is usable (the common case).
        if job.cpus_per_gpu <= 0.0 && job.memory_gb_per_gpu <= 0.0 {
            return info.capacity;
        }
        let needs = (
            t,
            job.cpus_per_gpu.to_bits(),
            job.memory_gb_per_gpu.to_bits(),
        );
        let empty = &self.empty;
        *self
            .by_needs
            .entry(needs)
            .or_insert_with(|| info.nodes.iter().map(|&i| empty.usable_gpus(job, i)).sum())
    }
}

/// The GPU counts of type `t` a job may be given: Sia's configurations (or its one fixed
/// count) from its minimum up to `limit` and to the GPUs of the type it could use.
pub(crate) fn allowed_counts(
    job: &JobView,
    t: usize,
    info: &TypeInfo,
    limit: u32,
    usable: &mut UsableGpus,
) -> Vec<u32> {
    let usable = usable.of_type(job, t, info);
    let counts = if job.min_gpus == job.max_gpus {
        vec![job.min_gpus]
    } else {
        type_configs(
            info.node_size,
            (info.capacity / info.node_size.max(1)).max(1),
        )
    };
    counts
        .into_iter()
        .filter(|&g| g >= job.min_gpus && g <= limit && g <= usable)
        .collect()
}

pub(crate) struct TypeInfo {
    pub(crate) gpu_type: GpuType,
    pub(crate) node_size: u32,
    pub(crate) capacity: u32,
    /// Its nodes, by index into the cluster's.
    pub(crate) nodes: Vec<usize>,
}

pub(crate) fn type_infos(cluster: &Cluster) -> Vec<TypeInfo> {
    let mut infos: Vec<TypeInfo> = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        match infos.iter_mut().find(|t| t.gpu_type == node.gpu_type) {
            Some(t) => {
                t.node_size = t.node_size.max(node.gpus);
                t.capacity += node.gpus;
                t.nodes.push(i);
            }
            None => infos.push(TypeInfo {
                gpu_type: node.gpu_type.clone(),
                node_size: node.gpus,
                capacity: node.gpus,
                nodes: vec![i],
            }),
        }
    }
    infos
}

impl Sia {
    /// A job's options: allowed (type, count) configurations within its growth limit, costed
    /// by normalized goodput × restart factor, raised to p.
    fn options(
        &self,
        snapshot: &Snapshot<'_>,
        job: &JobView,
        types: &[TypeInfo],
        usable: &mut UsableGpus,
    ) -> JobOptions {
        let seen = job.model.as_ref().map_or(0, |m| m.max_replicas_seen);
        let limit = job.max_gpus.min((2 * seen).max(1)).max(job.min_gpus);
        let current_type = job.allocation.gpu_type(snapshot.cluster);
        let current_gpus = job.allocation.total_gpus();
        let mut raw: Vec<(usize, u32, f64)> = Vec::new();
        let mut memo = GoodputMemo::default();
        for (t, info) in types.iter().enumerate() {
            if !job.allows(&info.gpu_type) {
                continue;
            }
            let counts = allowed_counts(job, t, info, limit, usable);
            let goodputs: Vec<f64> = match job.model.as_ref() {
                Some(model) => {
                    let configs: Vec<(u32, u32)> = counts
                        .iter()
                        .map(|&g| (g.div_ceil(info.node_size), g))
                        .collect();
                    model
                        .goodputs_on(&info.gpu_type, &configs, &mut memo)
                        .into_iter()
                        .map(|g| g.unwrap_or(0.0))
                        .collect()
                }
                None => counts.iter().map(|&g| f64::from(g)).collect(),
            };
            raw.extend(
                counts
                    .into_iter()
                    .zip(goodputs)
                    .map(|(g, goodput)| (t, g, goodput)),
            );
        }
        let min_positive = raw
            .iter()
            .map(|r| r.2)
            .filter(|&g| g > 0.0)
            .fold(f64::INFINITY, f64::min);
        let age = (snapshot.now - job.submit_time).max(0.0);
        let delay = job.restart_seconds;
        let factor = if age < delay {
            1.0
        } else {
            (age - f64::from(job.restarts) * delay).max(0.0) / (age + delay)
        };
        let choices = raw
            .into_iter()
            .map(|(t, gpus, goodput)| {
                let normalized = if min_positive.is_finite() {
                    goodput / min_positive
                } else {
                    1.0
                };
                let same = current_type == Some(&types[t].gpu_type) && current_gpus == gpus;
                let value = if same || current_gpus == 0 {
                    normalized
                } else {
                    normalized * factor
                };
                let cost = if value > 0.0 {
                    value.powf(self.config.p).min(self.config.cost_clip)
                } else {
                    self.config.cost_clip
                };
                Choice {
                    gpu_type: t,
                    gpus,
                    cost,
                }
            })
            .collect();
        JobOptions { choices }
    }
}

/// Places each job's chosen (type, count): unchanged jobs stay; distributed jobs take whole
/// free nodes; single-node jobs the fullest node that fits; otherwise any free GPUs of the type.
pub(crate) fn place(
    snapshot: &Snapshot<'_>,
    types: &[TypeInfo],
    chosen: &[(usize, usize, u32)],
) -> (Plan, FreeResources) {
    let cluster = snapshot.cluster;
    let mut free = FreeResources::of(cluster);
    let mut plan = Plan::default();
    let mut pending = Vec::new();
    for &(j, t, gpus) in chosen {
        let job = &snapshot.jobs[j];
        let same_type = job
            .allocation
            .parts
            .first()
            .is_some_and(|&(n, _)| cluster.nodes[n.index()].gpu_type == types[t].gpu_type);
        if same_type && job.allocation.total_gpus() == gpus {
            free.take(job, &job.allocation);
            plan.allocate(job.id, job.allocation.clone());
        } else {
            pending.push((j, t, gpus));
        }
    }
    pending.sort_by_key(|&(j, _, gpus)| (std::cmp::Reverse(gpus), j));
    for (j, t, gpus) in pending {
        let job = &snapshot.jobs[j];
        match place_on(cluster, &free, job, &types[t].nodes, gpus) {
            Some(allocation) => {
                free.take(job, &allocation);
                plan.allocate(job.id, allocation);
            }
            None => plan.wait(
                job.id,
                format!("{gpus} {} GPUs chosen but fragmented", types[t].gpu_type),
            ),
        }
    }
    (plan, free)
}

pub(crate) fn place_on(
    cluster: &Cluster,
    free: &FreeResources,
    job: &JobView,
    nodes: &[usize],
    gpus: u32,
) -> Option<Allocation> {
    let usable = |i: usize| free.usable_gpus(job, i);
    if let Some(node) = nodes
        .iter()
        .copied()
        .filter(|&i| usable(i) >= gpus)
        .min_by_key(|&i| (usable(i), i))
    {
        return Some(Allocation::new(vec![(NodeId(node as u32), gpus)]));
    }
    // Whole free nodes first, then the fullest partial nodes.
    let mut order: Vec<usize> = nodes.iter().copied().filter(|&i| usable(i) > 0).collect();
    order.sort_by_key(|&i| {
        (
            usable(i) != cluster.nodes[i].gpus,
            std::cmp::Reverse(usable(i)),
            i,
        )
    });
    fill_in_order(order, gpus, usable)
}

/// Each job's current allocation in option terms (`None` when it holds no GPUs or its
/// configuration is not an option any more): the solver's warm start.
pub(crate) fn current_choices(
    snapshot: &Snapshot<'_>,
    types: &[TypeInfo],
    problem: &SiaProblem,
) -> Vec<Option<usize>> {
    snapshot
        .jobs
        .iter()
        .zip(&problem.jobs)
        .map(|(job, options)| {
            let gpus = job.allocation.total_gpus();
            let gpu_type = job.allocation.gpu_type(snapshot.cluster)?;
            options
                .choices
                .iter()
                .position(|c| c.gpus == gpus && &types[c.gpu_type].gpu_type == gpu_type)
        })
        .collect()
}

/// Turns a solved assignment into a plan: places the chosen configurations, then gives GPUs
/// left idle (a configuration that could not be placed, CPU- or memory-bound nodes) to jobs
/// still without any, each in the cheapest option that can still be placed.
pub(crate) fn plan_from(
    snapshot: &Snapshot<'_>,
    types: &[TypeInfo],
    problem: &SiaProblem,
    assignment: &[Option<usize>],
    waiting_reason: &str,
) -> Plan {
    let (mut plan, mut free) = place(snapshot, types, &chosen_configurations(problem, assignment));
    fill_idle_gpus(
        snapshot,
        types,
        problem,
        &mut plan,
        &mut free,
        waiting_reason,
    );
    plan
}

/// (job index, type index, GPUs) of every job the assignment gives GPUs.
pub(crate) fn chosen_configurations(
    problem: &SiaProblem,
    assignment: &[Option<usize>],
) -> Vec<(usize, usize, u32)> {
    assignment
        .iter()
        .enumerate()
        .filter_map(|(j, a)| {
            a.map(|c| {
                let choice = problem.jobs[j].choices[c];
                (j, choice.gpu_type, choice.gpus)
            })
        })
        .collect()
}

/// Gives GPUs left idle in `free` to jobs the plan leaves without any, each in its cheapest
/// option that can still be placed; the rest wait for `waiting_reason`.
pub(crate) fn fill_idle_gpus(
    snapshot: &Snapshot<'_>,
    types: &[TypeInfo],
    problem: &SiaProblem,
    plan: &mut Plan,
    free: &mut FreeResources,
    waiting_reason: &str,
) {
    for (j, job) in snapshot.jobs.iter().enumerate() {
        if plan.allocations.contains_key(&job.id) {
            continue;
        }
        let mut options: Vec<&Choice> = problem.jobs[j].choices.iter().collect();
        options.sort_by(|a, b| a.cost.total_cmp(&b.cost).then(a.gpus.cmp(&b.gpus)));
        let placed = options.into_iter().find_map(|c| {
            place_on(
                snapshot.cluster,
                free,
                job,
                &types[c.gpu_type].nodes,
                c.gpus,
            )
        });
        match placed {
            Some(allocation) => {
                free.take(job, &allocation);
                plan.waiting.remove(&job.id);
                plan.allocate(job.id, allocation);
            }
            None => plan.wait(job.id, waiting_reason),
        }
    }
}

impl Policy for Sia {
    fn name(&self) -> &'static str {
        "sia"
    }

    fn adapts_batch_size(&self) -> bool {
        true
    }

    fn profiles_each_gpu_type(&self) -> bool {
        true
    }

    fn decide(&mut self, snapshot: &Snapshot<'_>, _rng: &mut dyn RngCore) -> Plan {
        let types = type_infos(snapshot.cluster);
        let mut usable = UsableGpus::new(snapshot.cluster);
        let jobs: Vec<JobOptions> = snapshot
            .jobs
            .iter()
            .map(|job| self.options(snapshot, job, &types, &mut usable))
            .collect();
        let problem = SiaProblem {
            jobs,
            capacity: types.iter().map(|t| t.capacity).collect(),
            lambda_unallocated: self.config.lambda_unallocated,
        };
        let warm = current_choices(snapshot, &types, &problem);
        let assignment = solve_from(&problem, Some(warm));
        plan_from(
            snapshot,
            &types,
            &problem,
            &assignment,
            "the GPU types this job can use are taken by configurations with more goodput",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Exhaustive search: the exact optimum of a small problem.
    fn brute_force(problem: &SiaProblem) -> f64 {
        fn go(problem: &SiaProblem, j: usize, assignment: &mut Vec<Option<usize>>, best: &mut f64) {
            if j == problem.jobs.len() {
                if problem.feasible(assignment) {
                    *best = best.min(problem.cost(assignment));
                }
                return;
            }
            for option in std::iter::once(None).chain((0..problem.jobs[j].choices.len()).map(Some))
            {
                assignment.push(option);
                go(problem, j + 1, assignment, best);
                assignment.pop();
            }
        }
        let mut best = f64::INFINITY;
        go(problem, 0, &mut Vec::new(), &mut best);
        best
    }

    fn random_problem(rng: &mut rand_chacha::ChaCha8Rng) -> SiaProblem {
        let types = rng.random_range(1..=3);
        let capacity: Vec<u32> = (0..types).map(|_| rng.random_range(2..=8)).collect();
        let jobs = (0..rng.random_range(1..=6))
            .map(|_| {
                let mut choices = Vec::new();
                for (t, &cap) in capacity.iter().enumerate() {
                    let speed = rng.random_range(0.5..3.0);
                    let mut g = 1;
                    while g <= cap && choices.len() < 6 {
                        let scaling: f64 = rng.random_range(0.5..1.0);
                        let goodput = speed * f64::from(g).powf(scaling);
                        choices.push(Choice {
                            gpu_type: t,
                            gpus: g,
                            cost: goodput.powf(-0.5),
                        });
                        g *= 2;
                    }
                }
                JobOptions { choices }
            })
            .collect();
        SiaProblem {
            jobs,
            capacity,
            lambda_unallocated: 1.1,
        }
    }

    #[test]
    fn reaches_the_exact_optimum_on_random_instances() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let (mut exact, mut total) = (0, 0);
        let mut worst_gap: f64 = 0.0;
        for _ in 0..300 {
            let problem = random_problem(&mut rng);
            let ours = solve(&problem);
            assert!(problem.feasible(&ours), "infeasible: {problem:?}");
            let optimum = brute_force(&problem);
            let gap = (problem.cost(&ours) - optimum) / optimum;
            worst_gap = worst_gap.max(gap);
            total += 1;
            if gap < 1e-9 {
                exact += 1;
            }
        }
        assert!(
            exact as f64 / total as f64 >= 0.95,
            "optimal on {exact}/{total}, worst gap {worst_gap}"
        );
        assert!(worst_gap < 0.03, "worst gap {worst_gap}");
    }

    /// A Sia-shaped problem of `jobs` jobs over types of `capacity` GPUs; `p` > 0 gives
    /// adaptive's (negative, maximizing) costs.
    fn large_problem(rng: &mut rand_chacha::ChaCha8Rng, jobs: usize, p: f64) -> SiaProblem {
        let capacity: Vec<u32> = (0..3).map(|_| rng.random_range(32..=256)).collect();
        let jobs = (0..jobs)
            .map(|_| {
                let mut choices = Vec::new();
                for (t, &cap) in capacity.iter().enumerate() {
                    let speed = rng.random_range(0.5..3.0);
                    let scaling: f64 = rng.random_range(0.3..1.0);
                    let mut g = 1;
                    while g <= cap.min(64) {
                        let value = (speed * f64::from(g).powf(scaling)).powf(p);
                        let cost = if p > 0.0 { -value } else { value };
                        choices.push(Choice {
                            gpu_type: t,
                            gpus: g,
                            cost,
                        });
                        g *= 2;
                    }
                }
                JobOptions { choices }
            })
            .collect();
        SiaProblem {
            jobs,
            capacity,
            lambda_unallocated: if p > 0.0 { 1e3 } else { 1.1 },
        }
    }

    #[test]
    fn batched_passes_solve_about_as_well_as_one_move_passes() {
        let batched = SolverEffort {
            iterations: 40,
            patience: 4,
            batched_above: 0,
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let (mut exact, mut worst_gap) = (0, 0.0f64);
        for _ in 0..300 {
            let problem = random_problem(&mut rng);
            let ours = solve_with(&problem, None, batched);
            assert!(problem.feasible(&ours), "infeasible: {problem:?}");
            let gap = (problem.cost(&ours) - brute_force(&problem)) / brute_force(&problem);
            exact += usize::from(gap < 1e-9);
            worst_gap = worst_gap.max(gap);
        }
        assert!(
            exact >= 270,
            "optimal on {exact}/300, worst gap {worst_gap}"
        );
        assert!(worst_gap < 0.05, "worst gap {worst_gap}");
        let sequential = SolverEffort {
            batched_above: usize::MAX,
            ..batched
        };
        for (p, jobs) in [(-0.5, 60), (0.5, 60), (-0.5, 400), (0.5, 400)] {
            let problem = large_problem(&mut rng, jobs, p);
            let warm = vec![None; jobs];
            let fast = solve_with(&problem, Some(warm.clone()), batched);
            let slow = solve_with(&problem, Some(warm), sequential);
            assert!(problem.feasible(&fast));
            let (fast, slow) = (problem.cost(&fast), problem.cost(&slow));
            assert!(
                fast <= slow + 0.01 * slow.abs(),
                "p {p}, {jobs} jobs: {fast} vs {slow}"
            );
        }
    }

    #[test]
    fn configurations_are_powers_of_two_then_whole_nodes() {
        assert_eq!(type_configs(4, 3), vec![1, 2, 4, 8, 12]);
        assert_eq!(type_configs(8, 2), vec![1, 2, 4, 8, 16]);
    }

    #[test]
    fn a_hand_solved_instance() {
        // Two linearly scaling jobs (normalized goodput = GPUs), two GPUs. One GPU each costs
        // 1 + 1 = 2; one job on both GPUs and the other waiting costs 2^-0.5 + 1.1 ≈ 1.807.
        let job = || JobOptions {
            choices: [1u32, 2]
                .iter()
                .map(|&g| Choice {
                    gpu_type: 0,
                    gpus: g,
                    cost: f64::from(g).powf(-0.5),
                })
                .collect(),
        };
        let problem = SiaProblem {
            jobs: vec![job(), job()],
            capacity: vec![2],
            lambda_unallocated: 1.1,
        };
        let assignment = solve(&problem);
        assert!(
            (problem.cost(&assignment) - (0.5f64.sqrt() + 1.1)).abs() < 1e-12,
            "{assignment:?}"
        );
        // With four GPUs: both jobs on two GPUs each.
        let roomy = SiaProblem {
            capacity: vec![4],
            ..problem
        };
        let assignment = solve(&roomy);
        assert!(
            (roomy.cost(&assignment) - 2.0 * 0.5f64.sqrt()).abs() < 1e-12,
            "{assignment:?}"
        );
    }
}
