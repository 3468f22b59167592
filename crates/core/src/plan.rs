//! Allocations, plans, and `validate_plan`: the invariants every plan must meet before it is applied.

use crate::cluster::{Cluster, GpuType};
use crate::ids::{JobId, NodeId, Time};
use crate::policy::JobView;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// GPUs per node for one job, in the order the policy placed them (rank order).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub parts: Vec<(NodeId, u32)>,
}

impl Allocation {
    pub fn new(parts: Vec<(NodeId, u32)>) -> Self {
        Allocation { parts }
    }

    pub fn is_empty(&self) -> bool {
        self.total_gpus() == 0
    }

    pub fn total_gpus(&self) -> u32 {
        self.parts.iter().map(|&(_, g)| g).sum()
    }

    /// The GPU type it runs on: its first node's (a job's allocation has one type).
    pub fn gpu_type<'c>(&self, cluster: &'c Cluster) -> Option<&'c GpuType> {
        let &(node, _) = self.parts.first()?;
        Some(&cluster.nodes[node.index()].gpu_type)
    }

    pub fn num_nodes(&self) -> usize {
        self.parts.iter().filter(|&&(_, g)| g > 0).count()
    }

    /// GPUs per node, in placement order, without empty parts (`[4, 2]` for 4 + 2 GPUs).
    pub fn placement(&self) -> Vec<u32> {
        self.parts
            .iter()
            .map(|&(_, g)| g)
            .filter(|&g| g > 0)
            .collect()
    }

    /// Whether two allocations give the same GPUs on the same nodes, whatever the order.
    pub fn same_resources(&self, other: &Allocation) -> bool {
        self.parts == other.parts || self.normalized() == other.normalized()
    }

    fn normalized(&self) -> BTreeMap<NodeId, u32> {
        let mut by_node = BTreeMap::new();
        for &(node, gpus) in &self.parts {
            if gpus > 0 {
                *by_node.entry(node).or_insert(0) += gpus;
            }
        }
        by_node
    }
}

/// Per-job batch decision a policy may attach (adaptive policies); `None` keeps the job's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchDecision {
    pub local_batch_size: u32,
    pub accumulation_steps: u32,
}

/// What a policy returns: the desired allocation of every job it wants running.
/// Jobs absent from `allocations` are to be stopped (or stay queued).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub allocations: BTreeMap<JobId, Allocation>,
    pub batch: BTreeMap<JobId, BatchDecision>,
    /// Why each queued job is not placed, in words a user can read.
    pub waiting: BTreeMap<JobId, String>,
    /// Ask the driver for a round at this time even if nothing else happens.
    pub wake_at: Option<Time>,
}

impl Plan {
    pub fn allocate(&mut self, job: JobId, allocation: Allocation) {
        self.allocations.insert(job, allocation);
    }

    pub fn wait(&mut self, job: JobId, reason: impl Into<String>) {
        self.waiting.insert(job, reason.into());
    }
}

/// A broken invariant; each names the job or node and the offending values.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanViolation {
    #[error("plan allocates unknown job {0}")]
    UnknownJob(JobId),
    #[error("{job} is placed on unknown node {node}")]
    UnknownNode { job: JobId, node: NodeId },
    #[error("{job} lists {node} twice in one allocation")]
    NodeListedTwice { job: JobId, node: NodeId },
    #[error("{node} over-allocated: {used} GPUs used of {capacity}")]
    NodeOverAllocated {
        node: NodeId,
        used: u32,
        capacity: u32,
    },
    #[error("{node} over-allocated: {used:.1} CPU cores used of {capacity}")]
    CpuOverAllocated {
        node: NodeId,
        used: f64,
        capacity: u32,
    },
    #[error("{node} over-allocated: {used:.1} GB memory used of {capacity:.1}")]
    MemoryOverAllocated {
        node: NodeId,
        used: f64,
        capacity: f64,
    },
    #[error("{job} gang broken: {gpus} GPUs allocated, allowed {min}..={max}")]
    GangBroken {
        job: JobId,
        gpus: u32,
        min: u32,
        max: u32,
    },
    #[error("{job} mixes GPU types {first} and {second}")]
    MixedGpuTypes {
        job: JobId,
        first: GpuType,
        second: GpuType,
    },
    #[error("{job} placed on GPU type {gpu_type}, which it does not allow")]
    GpuTypeNotAllowed { job: JobId, gpu_type: GpuType },
}

/// Checks a plan against the cluster and the jobs it was made for.
///
/// No node over-allocated (GPUs, and CPU/memory where jobs ask for them), every gang all or
/// nothing within its bounds, no job placed twice or on a node twice, one allowed GPU type
/// per job. An empty allocation counts as "not placed".
pub fn validate_plan(
    cluster: &Cluster,
    jobs: &[JobView],
    plan: &Plan,
) -> Result<(), PlanViolation> {
    let by_id: BTreeMap<JobId, &JobView> = jobs.iter().map(|j| (j.id, j)).collect();
    let num_nodes = cluster.nodes.len();
    let mut gpus_used = vec![0u32; num_nodes];
    let mut cpus_used = vec![0f64; num_nodes];
    let mut memory_used = vec![0f64; num_nodes];
    for (&job_id, alloc) in &plan.allocations {
        let job = by_id
            .get(&job_id)
            .ok_or(PlanViolation::UnknownJob(job_id))?;
        let total = alloc.total_gpus();
        if total == 0 {
            continue;
        }
        if total < job.min_gpus.max(1) || total > job.max_gpus {
            return Err(PlanViolation::GangBroken {
                job: job_id,
                gpus: total,
                min: job.min_gpus,
                max: job.max_gpus,
            });
        }
        let mut seen = BTreeSet::new();
        let mut job_type: Option<&GpuType> = None;
        for &(node_id, gpus) in &alloc.parts {
            let node = cluster.node(node_id).ok_or(PlanViolation::UnknownNode {
                job: job_id,
                node: node_id,
            })?;
            if !seen.insert(node_id) {
                return Err(PlanViolation::NodeListedTwice {
                    job: job_id,
                    node: node_id,
                });
            }
            if gpus == 0 {
                continue;
            }
            match job_type {
                None => job_type = Some(&node.gpu_type),
                Some(first) if *first != node.gpu_type => {
                    return Err(PlanViolation::MixedGpuTypes {
                        job: job_id,
                        first: first.clone(),
                        second: node.gpu_type.clone(),
                    });
                }
                Some(_) => {}
            }
            if !job.allows(&node.gpu_type) {
                return Err(PlanViolation::GpuTypeNotAllowed {
                    job: job_id,
                    gpu_type: node.gpu_type.clone(),
                });
            }
            gpus_used[node_id.index()] += gpus;
            cpus_used[node_id.index()] += job.cpus_per_gpu * f64::from(gpus);
            memory_used[node_id.index()] += job.memory_gb_per_gpu * f64::from(gpus);
        }
    }
    for (index, node) in cluster.nodes.iter().enumerate() {
        let node_id = NodeId(index as u32);
        if gpus_used[index] > node.gpus {
            return Err(PlanViolation::NodeOverAllocated {
                node: node_id,
                used: gpus_used[index],
                capacity: node.gpus,
            });
        }
        if node.cpu_cores > 0 && cpus_used[index] > f64::from(node.cpu_cores) + 1e-9 {
            return Err(PlanViolation::CpuOverAllocated {
                node: node_id,
                used: cpus_used[index],
                capacity: node.cpu_cores,
            });
        }
        if node.memory_gb > 0.0 && memory_used[index] > node.memory_gb + 1e-9 {
            return Err(PlanViolation::MemoryOverAllocated {
                node: node_id,
                used: memory_used[index],
                capacity: node.memory_gb,
            });
        }
    }
    Ok(())
}
