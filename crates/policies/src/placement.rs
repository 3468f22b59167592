//! Placement helpers shared by policies: free resources per node and gang placement rules.

use adaptsched_core::{Allocation, Cluster, GpuType, JobView, NodeId, Plan};

/// Free GPUs, CPU cores and memory on every node, updated as a policy places jobs.
#[derive(Clone, Debug)]
pub struct FreeResources {
    pub gpus: Vec<u32>,
    pub cpus: Vec<f64>,
    pub memory_gb: Vec<f64>,
    /// Each node's GPU type as an index into `type_names` (cheap to compare).
    gpu_types: Vec<usize>,
    type_names: Vec<GpuType>,
}

impl FreeResources {
    /// Everything free.
    pub fn of(cluster: &Cluster) -> Self {
        let mut type_names: Vec<GpuType> = Vec::new();
        let gpu_types = cluster
            .nodes
            .iter()
            .map(|n| match type_names.iter().position(|t| *t == n.gpu_type) {
                Some(i) => i,
                None => {
                    type_names.push(n.gpu_type.clone());
                    type_names.len() - 1
                }
            })
            .collect();
        FreeResources {
            gpus: cluster.nodes.iter().map(|n| n.gpus).collect(),
            cpus: cluster
                .nodes
                .iter()
                .map(|n| {
                    if n.cpu_cores == 0 {
                        f64::INFINITY
                    } else {
                        f64::from(n.cpu_cores)
                    }
                })
                .collect(),
            memory_gb: cluster
                .nodes
                .iter()
                .map(|n| {
                    if n.memory_gb <= 0.0 {
                        f64::INFINITY
                    } else {
                        n.memory_gb
                    }
                })
                .collect(),
            gpu_types,
            type_names,
        }
    }

    pub fn total_free_gpus(&self) -> u32 {
        self.gpus.iter().sum()
    }

    /// GPUs of `node` that `job` could use, given CPU and memory left there.
    pub fn usable_gpus(&self, job: &JobView, node: usize) -> u32 {
        let mut usable = self.gpus[node];
        if job.cpus_per_gpu > 0.0 {
            usable = usable.min(((self.cpus[node] + 1e-9) / job.cpus_per_gpu).floor() as u32);
        }
        if job.memory_gb_per_gpu > 0.0 {
            usable =
                usable.min(((self.memory_gb[node] + 1e-9) / job.memory_gb_per_gpu).floor() as u32);
        }
        usable
    }

    pub fn take(&mut self, job: &JobView, allocation: &Allocation) {
        for &(node, gpus) in &allocation.parts {
            let i = node.index();
            self.gpus[i] -= gpus.min(self.gpus[i]);
            self.cpus[i] -= job.cpus_per_gpu * f64::from(gpus);
            self.memory_gb[i] -= job.memory_gb_per_gpu * f64::from(gpus);
        }
    }

    /// Undoes `take`: `allocation`'s GPUs, CPU and memory are free again.
    pub fn give_back(&mut self, job: &JobView, allocation: &Allocation) {
        for &(node, gpus) in &allocation.parts {
            let i = node.index();
            self.gpus[i] += gpus;
            self.cpus[i] += job.cpus_per_gpu * f64::from(gpus);
            self.memory_gb[i] += job.memory_gb_per_gpu * f64::from(gpus);
        }
    }

    /// Usable GPUs per allowed GPU type for `job`, in type order.
    fn usable_by_type(&self, job: &JobView) -> Vec<(GpuType, u32)> {
        let allowed: Vec<bool> = self.type_names.iter().map(|t| job.allows(t)).collect();
        let mut usable = vec![0u32; self.type_names.len()];
        for node in 0..self.gpus.len() {
            let t = self.gpu_types[node];
            if allowed[t] && self.gpus[node] > 0 {
                usable[t] += self.usable_gpus(job, node);
            }
        }
        let mut by_type: Vec<(GpuType, u32)> = self
            .type_names
            .iter()
            .zip(usable)
            .zip(allowed)
            .filter(|(_, allowed)| *allowed)
            .map(|((t, u), _)| (t.clone(), u))
            .collect();
        by_type.sort();
        by_type
    }

    /// The allowed GPU type with the most usable GPUs, if it can hold `gpus`.
    fn roomiest_type(&self, job: &JobView, gpus: u32) -> Option<GpuType> {
        self.usable_by_type(job)
            .into_iter()
            .filter(|&(_, usable)| usable >= gpus)
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
            .map(|(t, _)| t)
    }
}

/// Keeps each running job of `jobs` where it is: the plan repeats its allocation and `free`
/// no longer offers those GPUs. Jobs that are not running are skipped.
pub fn keep_running<'a>(
    free: &mut FreeResources,
    plan: &mut Plan,
    jobs: impl IntoIterator<Item = &'a JobView>,
) {
    for job in jobs.into_iter().filter(|j| j.is_running()) {
        free.take(job, &job.allocation);
        plan.allocate(job.id, job.allocation.clone());
    }
}

/// Takes up to `available(node)` GPUs from each node in `nodes`, in order, until `gpus` are
/// taken; `None` if the nodes run out first.
pub fn fill_in_order(
    nodes: impl IntoIterator<Item = usize>,
    gpus: u32,
    available: impl Fn(usize) -> u32,
) -> Option<Allocation> {
    let mut parts = Vec::new();
    let mut left = gpus;
    for node in nodes {
        if left == 0 {
            break;
        }
        let take = available(node).min(left);
        if take > 0 {
            parts.push((NodeId(node as u32), take));
            left -= take;
        }
    }
    (left == 0).then(|| Allocation::new(parts))
}

/// How a gang is spread over nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlacementRule {
    /// Take GPUs from the node with the most free GPUs first (the Pollux artifact's Tiresias).
    MostFreeFirst,
    /// One node if any can hold the whole gang (the fullest such node), else most free first.
    BestFit,
}

/// Places a gang of `gpus` GPUs of one allowed type for `job`, or `None` if it does not fit.
/// Does not modify `free`; call `FreeResources::take` to commit.
pub fn place_gang(
    free: &FreeResources,
    job: &JobView,
    gpus: u32,
    rule: PlacementRule,
) -> Option<Allocation> {
    if gpus == 0 {
        return None;
    }
    let gpu_type = free.roomiest_type(job, gpus)?;
    let type_index = free.type_names.iter().position(|t| *t == gpu_type)?;
    let nodes: Vec<usize> = (0..free.gpus.len())
        .filter(|&i| free.gpu_types[i] == type_index)
        .collect();
    if rule == PlacementRule::BestFit {
        let best = nodes
            .iter()
            .copied()
            .filter(|&i| free.usable_gpus(job, i) >= gpus)
            .min_by_key(|&i| (free.usable_gpus(job, i), i));
        if let Some(node) = best {
            return Some(Allocation::new(vec![(NodeId(node as u32), gpus)]));
        }
    }
    let mut usable: Vec<(usize, u32)> = nodes
        .iter()
        .map(|&i| (i, free.usable_gpus(job, i)))
        .collect();
    let mut parts = Vec::new();
    let mut remaining = gpus;
    while remaining > 0 {
        // Most usable GPUs first; ties go to the lower node index (stable, like Counter.most_common).
        let (slot, &(node, count)) = usable
            .iter()
            .enumerate()
            .filter(|(_, (_, c))| *c > 0)
            .max_by(|a, b| a.1.1.cmp(&b.1.1).then_with(|| b.1.0.cmp(&a.1.0)))?;
        let take = count.min(remaining);
        parts.push((NodeId(node as u32), take));
        usable[slot].1 -= take;
        remaining -= take;
    }
    Some(Allocation::new(parts))
}

/// Places a gang of `gpus` GPUs of `gpu_type` for `job` on the fewest nodes: the fullest single
/// node that holds it (best fit), else the nodes with the most usable GPUs, the last one chosen
/// best fit for what remains. `None` if the type lacks the GPUs (or the CPU and memory) or
/// `job` does not allow it. Does not modify `free`; call `FreeResources::take` to commit.
pub fn place_gang_on_type(
    free: &FreeResources,
    job: &JobView,
    gpus: u32,
    gpu_type: &GpuType,
) -> Option<Allocation> {
    if gpus == 0 || !job.allows(gpu_type) {
        return None;
    }
    let type_index = free.type_names.iter().position(|t| t == gpu_type)?;
    let mut usable: Vec<(usize, u32)> = (0..free.gpus.len())
        .filter(|&i| free.gpu_types[i] == type_index)
        .map(|i| (i, free.usable_gpus(job, i)))
        .filter(|&(_, u)| u > 0)
        .collect();
    if usable.iter().map(|&(_, u)| u64::from(u)).sum::<u64>() < u64::from(gpus) {
        return None;
    }
    // Most usable first; ties to the lower node index.
    usable.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut parts = Vec::new();
    let mut remaining = gpus;
    let mut next = 0;
    while remaining > 0 {
        let rest = &usable[next..];
        // Best fit: the node with the fewest usable GPUs that still holds all that remains.
        if let Some(&(node, _)) = rest
            .iter()
            .filter(|&&(_, u)| u >= remaining)
            .min_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)))
        {
            parts.push((NodeId(node as u32), remaining));
            break;
        }
        let (node, count) = *rest.first()?;
        parts.push((NodeId(node as u32), count));
        remaining -= count;
        next += 1;
    }
    Some(Allocation::new(parts))
}

/// The GPUs per node of `gpu_type` (its largest node), for packed-placement estimates.
pub fn node_size(cluster: &Cluster, gpu_type: &GpuType) -> u32 {
    cluster
        .nodes
        .iter()
        .filter(|n| &n.gpu_type == gpu_type)
        .map(|n| n.gpus)
        .max()
        .unwrap_or(1)
        .max(1)
}
