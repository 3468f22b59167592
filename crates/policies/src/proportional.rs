//! `proportional`: the seed's capacity-proportional load balancer. It keeps every node's
//! balance ratio `p_i = (x_i/Σx)/(y_i/Σy)` near 1 by placing each gang where the load
//! fraction `x_i/y_i` stays lowest.

use crate::placement::{FreeResources, keep_running};
use adaptsched_core::{Allocation, Cluster, JobView, NodeId, Plan, Policy, Snapshot};
use rand::RngCore;

/// Non-preemptive, submission order with backfill; placement by lowest load fraction.
#[derive(Debug, Default)]
pub struct Proportional;

/// Load fraction of a node after adding `extra` GPUs of load.
fn load_fraction(cluster: &Cluster, free: &FreeResources, node: usize, extra: u32) -> f64 {
    let capacity = f64::from(cluster.nodes[node].gpus.max(1));
    let load = f64::from(cluster.nodes[node].gpus - free.gpus[node] + extra);
    load / capacity
}

/// One node if one can hold the gang (the one left least loaded); otherwise one GPU at a time
/// onto the least-loaded node, preferring nodes the gang already uses.
pub fn place_proportionally(
    cluster: &Cluster,
    free: &FreeResources,
    job: &JobView,
) -> Option<Allocation> {
    let gpus = job.requested_gpus;
    let types: Vec<_> = {
        let mut t: Vec<_> = cluster
            .nodes
            .iter()
            .map(|n| n.gpu_type.clone())
            .filter(|t| job.allows(t))
            .collect();
        t.sort();
        t.dedup();
        t
    };
    let mut best: Option<(f64, Allocation)> = None;
    for gpu_type in types {
        let nodes: Vec<usize> = (0..cluster.nodes.len())
            .filter(|&i| cluster.nodes[i].gpu_type == gpu_type)
            .collect();
        let candidate = if let Some(node) = nodes
            .iter()
            .copied()
            .filter(|&i| free.usable_gpus(job, i) >= gpus)
            .min_by(|&a, &b| {
                load_fraction(cluster, free, a, gpus)
                    .total_cmp(&load_fraction(cluster, free, b, gpus))
                    .then(a.cmp(&b))
            }) {
            Some(Allocation::new(vec![(NodeId(node as u32), gpus)]))
        } else {
            water_fill(cluster, free, job, &nodes, gpus)
        };
        if let Some(allocation) = candidate {
            let worst = allocation
                .parts
                .iter()
                .map(|&(n, g)| load_fraction(cluster, free, n.index(), g))
                .fold(0.0, f64::max);
            if best.as_ref().is_none_or(|(w, _)| worst < *w) {
                best = Some((worst, allocation));
            }
        }
    }
    best.map(|(_, a)| a)
}

fn water_fill(
    cluster: &Cluster,
    free: &FreeResources,
    job: &JobView,
    nodes: &[usize],
    gpus: u32,
) -> Option<Allocation> {
    let mut taken = vec![0u32; cluster.nodes.len()];
    for _ in 0..gpus {
        let node = nodes
            .iter()
            .copied()
            .filter(|&i| free.usable_gpus(job, i) > taken[i])
            .min_by(|&a, &b| {
                load_fraction(cluster, free, a, taken[a] + 1)
                    .total_cmp(&load_fraction(cluster, free, b, taken[b] + 1))
                    .then((taken[b] > 0).cmp(&(taken[a] > 0)))
                    .then(a.cmp(&b))
            })?;
        taken[node] += 1;
    }
    let parts = nodes
        .iter()
        .filter(|&&i| taken[i] > 0)
        .map(|&i| (NodeId(i as u32), taken[i]))
        .collect();
    Some(Allocation::new(parts))
}

impl Policy for Proportional {
    fn name(&self) -> &'static str {
        "proportional"
    }

    fn acts_when_nothing_waits(&self) -> bool {
        false
    }

    fn decide(&mut self, snapshot: &Snapshot<'_>, _rng: &mut dyn RngCore) -> Plan {
        let mut plan = Plan::default();
        let mut free = FreeResources::of(snapshot.cluster);
        keep_running(&mut free, &mut plan, snapshot.jobs);
        // Kept as a running count: searching nodes for a job that cannot fit anyway is what
        // made large clusters slow.
        let mut free_total = free.total_free_gpus();
        for job in snapshot.jobs.iter().filter(|j| !j.is_running()) {
            let placed = (job.requested_gpus <= free_total)
                .then(|| place_proportionally(snapshot.cluster, &free, job))
                .flatten();
            match placed {
                Some(allocation) => {
                    free.take(job, &allocation);
                    free_total -= allocation.total_gpus();
                    plan.allocate(job.id, allocation);
                }
                None => plan.wait(
                    job.id,
                    format!("needs {} GPUs, {free_total} free", job.requested_gpus),
                ),
            }
        }
        plan
    }
}
