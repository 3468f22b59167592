//! `pollux`: goodput-optimal elastic allocation (Qiao et al., OSDI'21): maximize the power mean
//! (p = −1) of each job's goodput speedup over its fair share, with a restart penalty and no two
//! distributed jobs on one node; jobs pick their own batch size from their fitted model.
//!
//! The artifact searches with NSGA-II (100 × 100). We search the same objective with a greedy
//! marginal-gain allocation of GPU counts, a pairwise exchange pass, and a packing placement;
//! the objective it reaches is reported next to the GA's in `docs/fidelity.md`.

use crate::placement::{FreeResources, fill_in_order};
use adaptsched_core::{Allocation, JobId, JobView, NodeId, Plan, Policy, Snapshot};
use rand::RngCore;
use std::collections::BTreeMap;

/// Pollux settings; the defaults are the artifact's.
#[derive(Clone, Debug, PartialEq)]
pub struct PolluxConfig {
    /// Power-mean exponent (more negative = fairer).
    pub p: f64,
    /// Seconds one restart costs, for the restart penalty.
    pub restart_delay_s: f64,
    /// At most this many nodes per job.
    pub max_nodes_per_job: u32,
}

impl Default for PolluxConfig {
    fn default() -> Self {
        PolluxConfig {
            p: -1.0,
            restart_delay_s: 30.0,
            max_nodes_per_job: 16,
        }
    }
}

/// The Pollux policy.
#[derive(Debug, Default)]
pub struct Pollux {
    config: PolluxConfig,
}

impl Pollux {
    pub fn new(config: PolluxConfig) -> Self {
        Pollux { config }
    }
}

/// Per-job inputs of the search: candidate GPU counts and the objective term at each.
struct JobTerms {
    id: JobId,
    current: u32,
    /// Candidate GPU counts, ascending, starting at 0.
    counts: Vec<u32>,
    /// (s + 1e-3)^p at each candidate count (lower is better for p < 0).
    cost: Vec<f64>,
}

fn nodes_for(gpus: u32, node_size: u32) -> u32 {
    gpus.div_ceil(node_size.max(1))
}

/// Speedup of `job` on `gpus` GPUs packed onto full nodes, over its fair share.
fn speedup(job: &JobView, gpus: u32, node_size: u32, fair: u32) -> f64 {
    speedup_on(job, nodes_for(gpus, node_size), gpus, fair)
}

/// Speedup of `job` on `gpus` GPUs over `nodes` nodes, over its fair share (`fair` GPUs on
/// one node, as the artifact computes it).
fn speedup_on(job: &JobView, nodes: u32, gpus: u32, fair: u32) -> f64 {
    if gpus == 0 {
        return 0.0;
    }
    let Some(model) = job.model.as_ref().filter(|m| m.perf.is_some()) else {
        return f64::from(gpus) / f64::from(fair);
    };
    let base = model.best(1, fair).map_or(0.0, |c| c.goodput);
    let value = model.best(nodes, gpus).map_or(0.0, |c| c.goodput);
    if base > 0.0 { value / base } else { 0.0 }
}

impl Pollux {
    fn terms(
        &self,
        snapshot: &Snapshot<'_>,
        job: &JobView,
        node_size: u32,
        fair: u32,
        scale: f64,
    ) -> JobTerms {
        let seen = job.model.as_ref().map_or(0, |m| m.max_replicas_seen);
        let total = snapshot.cluster.total_gpus();
        // Grow to at most twice the most GPUs seen, but never below the job's gang minimum.
        let limit = job
            .max_gpus
            .min((2 * seen).max(1))
            .min(self.config.max_nodes_per_job * node_size)
            .min(total)
            .max(job.min_gpus);
        let mut counts = vec![0];
        // Within a node, powers of two only: they always pack into nodes without leaving
        // holes that no other job fits (3-GPU jobs on 4-GPU nodes strand a GPU each).
        counts.extend(
            (1..=limit.min(node_size)).filter(|&g| g >= job.min_gpus && g.is_power_of_two()),
        );
        counts.extend(
            (2..)
                .map(|k| k * node_size)
                .take_while(|&g| g <= limit)
                .filter(|&g| g >= job.min_gpus),
        );
        let current = job.allocation.total_gpus();
        for extra in [current, job.min_gpus] {
            if extra > 0 && extra <= limit && extra <= total && !counts.contains(&extra) {
                counts.push(extra);
            }
        }
        counts.sort_unstable();
        let age = (snapshot.now - job.submit_time).max(0.0);
        let delay = self.config.restart_delay_s;
        // A job that never ran pays no restart penalty for its first start (the artifact
        // penalizes it by age/(age + 30), which only matters at age 0 with event rounds).
        let penalty = if job.attained_gpu_seconds > 0.0 || current > 0 {
            (age - f64::from(job.restarts) * delay).max(0.0) / (age + delay)
        } else {
            1.0
        };
        let cost = counts
            .iter()
            .map(|&g| {
                let mut s = speedup(job, g, node_size, fair) * scale;
                if g != current && g > 0 {
                    s *= penalty;
                }
                (s + 1e-3).powf(self.config.p)
            })
            .collect();
        JobTerms {
            id: job.id,
            current,
            counts,
            cost,
        }
    }
}

/// Greedy marginal gain: repeatedly take the move (one job to a larger candidate count) with
/// the largest drop in total cost per GPU, until the GPUs run out or nothing helps.
fn greedy_counts(terms: &[JobTerms], budget: u32) -> Vec<usize> {
    let mut at = vec![0usize; terms.len()];
    let mut left = budget;
    loop {
        let mut best: Option<(f64, usize, usize)> = None;
        for (j, t) in terms.iter().enumerate() {
            let here = t.counts[at[j]];
            for next in at[j] + 1..t.counts.len() {
                let extra = t.counts[next] - here;
                if extra > left {
                    break;
                }
                let gain = (t.cost[at[j]] - t.cost[next]) / f64::from(extra);
                if gain > 1e-12 && best.is_none_or(|(g, _, _)| gain > g) {
                    best = Some((gain, j, next));
                }
            }
        }
        let Some((_, j, next)) = best else { break };
        left -= terms[j].counts[next] - terms[j].counts[at[j]];
        at[j] = next;
    }
    at
}

/// Pairwise exchange: move one job down a step if that lets another go up for less total cost.
fn exchange_pass(terms: &[JobTerms], at: &mut [usize], budget: u32, rounds: usize) {
    let used =
        |at: &[usize]| -> u32 { terms.iter().zip(at.iter()).map(|(t, &i)| t.counts[i]).sum() };
    for _ in 0..rounds {
        let mut improved = false;
        for donor in 0..terms.len() {
            if at[donor] == 0 {
                continue;
            }
            let down = at[donor] - 1;
            let freed = terms[donor].counts[at[donor]] - terms[donor].counts[down];
            let left = budget - used(at) + freed;
            let loss = terms[donor].cost[down] - terms[donor].cost[at[donor]];
            let mut best: Option<(f64, usize, usize)> = None;
            for (j, t) in terms.iter().enumerate() {
                if j == donor {
                    continue;
                }
                for next in at[j] + 1..t.counts.len() {
                    if t.counts[next] - t.counts[at[j]] > left {
                        break;
                    }
                    let net = t.cost[at[j]] - t.cost[next] - loss;
                    if net > 1e-9 && best.is_none_or(|(n, _, _)| net > n) {
                        best = Some((net, j, next));
                    }
                }
            }
            if let Some((_, j, next)) = best {
                at[donor] = down;
                at[j] = next;
                improved = true;
            }
        }
        if !improved {
            break;
        }
    }
}

/// Places the chosen counts: jobs keeping their count stay put; others take whole free nodes
/// (distributed) or the fullest node that fits (single node). A job that cannot be placed
/// drops to its next smaller count.
fn place(
    snapshot: &Snapshot<'_>,
    views: &BTreeMap<JobId, &JobView>,
    terms: &[JobTerms],
    at: &mut [usize],
    node_size: u32,
) -> Plan {
    let cluster = snapshot.cluster;
    let mut free = FreeResources::of(cluster);
    let mut distributed_on = vec![false; cluster.nodes.len()];
    let mut plan = Plan::default();
    let mut pending = Vec::new();
    for (j, t) in terms.iter().enumerate() {
        let job = views[&t.id];
        let target = t.counts[at[j]];
        // A job keeping its GPU count keeps its GPUs, however they are spread (moving it would
        // cost a restart for nothing).
        let keeps = target > 0 && target == t.current;
        if keeps {
            free.take(job, &job.allocation);
            if job.allocation.num_nodes() > 1 {
                for &(n, _) in &job.allocation.parts {
                    distributed_on[n.index()] = true;
                }
            }
            plan.allocate(job.id, job.allocation.clone());
        } else if target > 0 {
            pending.push(j);
        }
    }
    pending.sort_by_key(|&j| std::cmp::Reverse(terms[j].counts[at[j]]));
    for j in pending {
        let job = views[&terms[j].id];
        loop {
            let target = terms[j].counts[at[j]];
            if target == 0 {
                plan.wait(
                    job.id,
                    "no room for even one GPU at this round's goodput-optimal allocation",
                );
                break;
            }
            if let Some(allocation) =
                find_room(cluster, &free, &distributed_on, job, target, node_size)
            {
                free.take(job, &allocation);
                if allocation.num_nodes() > 1 {
                    for &(n, _) in &allocation.parts {
                        distributed_on[n.index()] = true;
                    }
                }
                plan.allocate(job.id, allocation);
                break;
            }
            at[j] -= 1;
        }
    }
    // GPUs left idle by placements that had to shrink go to waiting jobs, smallest first:
    // with p < 0 a job's first GPU is always worth more than nothing.
    for t in terms {
        if plan.allocations.contains_key(&t.id) {
            continue;
        }
        let job = views[&t.id];
        let placed = t.counts.get(1).and_then(|&smallest| {
            find_room(cluster, &free, &distributed_on, job, smallest, node_size)
        });
        match placed {
            Some(allocation) => {
                free.take(job, &allocation);
                plan.waiting.remove(&t.id);
                plan.allocate(t.id, allocation);
            }
            None => plan.wait(
                t.id,
                "all GPUs are in use by jobs with a higher goodput share",
            ),
        }
    }
    plan
}

fn find_room(
    cluster: &adaptsched_core::Cluster,
    free: &FreeResources,
    distributed_on: &[bool],
    job: &JobView,
    gpus: u32,
    node_size: u32,
) -> Option<Allocation> {
    let usable = |i: usize| {
        if job.allows(&cluster.nodes[i].gpu_type) {
            free.usable_gpus(job, i)
        } else {
            0
        }
    };
    if gpus <= node_size {
        if let Some(node) = (0..cluster.nodes.len())
            .filter(|&i| usable(i) >= gpus)
            .min_by_key(|&i| (usable(i), i))
        {
            return Some(Allocation::new(vec![(NodeId(node as u32), gpus)]));
        }
        return spread(cluster, distributed_on, gpus, &usable);
    }
    // Whole, otherwise empty nodes of one GPU type, so distributed jobs never share a node.
    let mut by_type: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let whole = usable(i) == node.gpus && node.gpus > 0 && !distributed_on[i];
        if whole {
            by_type.entry(node.gpu_type.as_str()).or_default().push(i);
        }
    }
    by_type
        .values()
        .find_map(|nodes| fill_in_order(nodes.iter().copied(), gpus, |i| cluster.nodes[i].gpus))
        .or_else(|| spread(cluster, distributed_on, gpus, &usable))
}

/// Last resort when no single node or set of whole nodes fits (CPU or memory bound, mixed node
/// sizes): the fullest usable GPUs of one type on nodes no other distributed job uses.
fn spread(
    cluster: &adaptsched_core::Cluster,
    distributed_on: &[bool],
    gpus: u32,
    usable: &dyn Fn(usize) -> u32,
) -> Option<Allocation> {
    let mut by_type: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        if usable(i) > 0 && !distributed_on[i] {
            by_type.entry(node.gpu_type.as_str()).or_default().push(i);
        }
    }
    by_type.into_values().find_map(|mut nodes| {
        nodes.sort_by_key(|&i| (std::cmp::Reverse(usable(i)), i));
        fill_in_order(nodes, gpus, usable)
    })
}

/// The round's shape: GPUs per node, fair-share GPUs per job, and the speedup scale.
fn round_shape(snapshot: &Snapshot<'_>) -> (u32, u32, f64) {
    let cluster = snapshot.cluster;
    let total = cluster.total_gpus().max(1);
    let node_size = cluster
        .nodes
        .iter()
        .map(|n| n.gpus)
        .max()
        .unwrap_or(1)
        .max(1);
    let fair = total.div_ceil(snapshot.jobs.len().max(1) as u32).max(1);
    (
        node_size,
        fair,
        cluster.nodes.len() as f64 / f64::from(total),
    )
}

impl Pollux {
    /// Pollux's objective for a plan: the power mean of scaled goodput speedups, each job that
    /// changes allocation discounted by the restart penalty. Higher is better.
    pub fn objective(&self, snapshot: &Snapshot<'_>, plan: &Plan) -> f64 {
        let (_, fair, scale) = round_shape(snapshot);
        let delay = self.config.restart_delay_s;
        let sum: f64 = snapshot
            .jobs
            .iter()
            .map(|job| {
                let alloc = plan.allocations.get(&job.id).cloned().unwrap_or_default();
                let gpus = alloc.total_gpus();
                let mut s = speedup_on(job, alloc.num_nodes() as u32, gpus, fair) * scale;
                let changed = !alloc.same_resources(&job.allocation);
                if changed && gpus > 0 && (job.attained_gpu_seconds > 0.0 || job.is_running()) {
                    let age = (snapshot.now - job.submit_time).max(0.0);
                    s *= (age - f64::from(job.restarts) * delay).max(0.0) / (age + delay);
                }
                (s + 1e-3).powf(self.config.p)
            })
            .sum();
        (sum / snapshot.jobs.len().max(1) as f64).powf(1.0 / self.config.p)
    }
}

impl Policy for Pollux {
    fn name(&self) -> &'static str {
        "pollux"
    }

    fn adapts_batch_size(&self) -> bool {
        true
    }

    fn decide(&mut self, snapshot: &Snapshot<'_>, _rng: &mut dyn RngCore) -> Plan {
        let cluster = snapshot.cluster;
        let total = cluster.total_gpus();
        if snapshot.jobs.is_empty() || total == 0 {
            return Plan::default();
        }
        let node_size = cluster
            .nodes
            .iter()
            .map(|n| n.gpus)
            .max()
            .unwrap_or(1)
            .max(1);
        let fair = total.div_ceil(snapshot.jobs.len() as u32).max(1);
        // Scale so that one node's share of the cluster is a speedup of 1 (as the artifact).
        let scale = cluster.nodes.len() as f64 / f64::from(total);
        let mut order: Vec<&JobView> = snapshot.jobs.iter().collect();
        order.sort_by(|a, b| {
            a.attained_gpu_seconds
                .total_cmp(&b.attained_gpu_seconds)
                .then(a.submit_time.total_cmp(&b.submit_time))
                .then(a.id.cmp(&b.id))
        });
        let terms: Vec<JobTerms> = order
            .iter()
            .map(|job| self.terms(snapshot, job, node_size, fair, scale))
            .collect();
        let mut at = greedy_counts(&terms, total);
        exchange_pass(&terms, &mut at, total, 4);
        let views: BTreeMap<JobId, &JobView> = snapshot.jobs.iter().map(|j| (j.id, j)).collect();
        place(snapshot, &views, &terms, &mut at, node_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adaptsched_core::perf::{BatchLimits, GradStats, JobModel, PerfParams};
    use adaptsched_core::{Cluster, GpuType, JobCategory, Node};
    use rand::{Rng, SeedableRng};

    fn cluster(nodes: u32) -> Cluster {
        let node = |i: u32| Node {
            name: format!("n{i}"),
            gpu_type: GpuType::new("t4"),
            gpus: 4,
            cpu_cores: 0,
            memory_gb: 0.0,
            network_gbps: 0.0,
        };
        Cluster {
            name: "c".into(),
            nodes: (0..nodes).map(node).collect(),
        }
    }

    fn job(rng: &mut impl Rng, id: u32, allocation: Allocation) -> JobView {
        let limits = BatchLimits {
            init_batch: 64,
            max_batch: 2048,
            min_local: 16,
            max_local: 256,
        };
        let perf = PerfParams {
            alpha_c: rng.random_range(0.01..0.1),
            beta_c: rng.random_range(0.0001..0.001),
            alpha_n: rng.random_range(0.05..0.5),
            beta_n: rng.random_range(0.001..0.05),
            alpha_r: rng.random_range(0.005..0.05),
            beta_r: rng.random_range(0.0005..0.005),
            gamma: rng.random_range(1.0..2.0),
        };
        JobView {
            id: JobId(id),
            name: format!("j{id}"),
            application: "synthetic".into(),
            category: JobCategory::Adaptive,
            submit_time: 0.0,
            requested_gpus: 1,
            requested_batch_size: None,
            min_gpus: 1,
            max_gpus: 8,
            allowed_gpu_types: Vec::new(),
            cpus_per_gpu: 0.0,
            memory_gb_per_gpu: 0.0,
            attained_gpu_seconds: if allocation.is_empty() { 0.0 } else { 3600.0 },
            restarts: rng.random_range(0..3),
            oracle_remaining_seconds: None,
            model: Some(JobModel {
                perf: Some(perf),
                types: Vec::new(),
                grad: Some(GradStats {
                    sqr: 1.0,
                    var: rng.random_range(0.1..50.0),
                }),
                limits,
                fixed_batch: None,
                max_replicas_seen: 4,
            }),
            restart_seconds: 30.0,
            allocation,
        }
    }

    /// Every allocation a job could get on two 4-GPU nodes: nothing, one node, or a split.
    fn candidate_allocations() -> Vec<Allocation> {
        let mut all = vec![Allocation::default()];
        for node in 0..2 {
            for g in 1..=4 {
                all.push(Allocation::new(vec![(NodeId(node), g)]));
            }
        }
        for a in 1..=4 {
            for b in 1..=4 {
                all.push(Allocation::new(vec![(NodeId(0), a), (NodeId(1), b)]));
            }
        }
        all
    }

    /// The best objective over every feasible plan (capacity, at most one distributed job per
    /// node, growth limit), by exhaustive search.
    fn exhaustive_best(policy: &Pollux, snapshot: &Snapshot<'_>) -> f64 {
        let options = candidate_allocations();
        let n = snapshot.jobs.len();
        let mut best = f64::NEG_INFINITY;
        let mut pick = vec![0usize; n];
        loop {
            let mut used = [0u32; 2];
            let mut distributed = [0u32; 2];
            let mut plan = Plan::default();
            let mut ok = true;
            for (j, &o) in pick.iter().enumerate() {
                let alloc = &options[o];
                ok &= alloc.total_gpus() <= 8;
                for &(node, g) in &alloc.parts {
                    used[node.index()] += g;
                    if alloc.num_nodes() > 1 {
                        distributed[node.index()] += 1;
                    }
                }
                if !alloc.is_empty() {
                    plan.allocate(snapshot.jobs[j].id, alloc.clone());
                }
            }
            ok &= used.iter().all(|&u| u <= 4) && distributed.iter().all(|&d| d <= 1);
            if ok {
                best = best.max(policy.objective(snapshot, &plan));
            }
            let mut k = 0;
            while k < n {
                pick[k] += 1;
                if pick[k] < options.len() {
                    break;
                }
                pick[k] = 0;
                k += 1;
            }
            if k == n {
                return best;
            }
        }
    }

    #[test]
    fn reaches_the_exhaustive_optimum_of_its_objective_on_small_instances() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let c = cluster(2);
        let mut ratios = Vec::new();
        for _ in 0..12 {
            let jobs: Vec<JobView> = (0..3)
                .map(|i| {
                    let current = match rng.random_range(0..3) {
                        0 => Allocation::default(),
                        _ => Allocation::new(vec![(NodeId(i % 2), 1)]),
                    };
                    job(&mut rng, i, current)
                })
                .collect();
            // Keep the current allocations feasible: at most 4 GPUs per node.
            let snapshot = Snapshot {
                now: 7200.0,
                cluster: &c,
                jobs: &jobs,
            };
            let mut policy = Pollux::default();
            let plan = policy.decide(&snapshot, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
            adaptsched_core::validate_plan(&c, &jobs, &plan).expect("valid");
            let ours = policy.objective(&snapshot, &plan);
            let best = exhaustive_best(&policy, &snapshot);
            assert!(
                ours <= best + 1e-9,
                "objective above the exhaustive optimum: {ours} > {best}"
            );
            ratios.push(ours / best);
        }
        let worst = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let exact = ratios.iter().filter(|&&r| r > 1.0 - 1e-9).count();
        // The search space includes split placements our search never uses; it still reaches
        // the optimum on most instances and comes close on all.
        // Measured: optimal on 10 of 12, worst 0.986.
        assert!(worst > 0.95, "worst ratio {worst}: {ratios:?}");
        assert!(
            exact * 3 >= ratios.len() * 2,
            "optimal on {exact} of {}: {ratios:?}",
            ratios.len()
        );
    }
}
