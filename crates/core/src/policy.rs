//! The `Policy` trait and the immutable snapshot a policy decides from.

use crate::cluster::{Cluster, GpuType};
use crate::ids::{JobId, Time};
use crate::job::JobCategory;
use crate::plan::{Allocation, Plan};
use rand::RngCore;

/// What a policy may know about one active (submitted, unfinished) job.
#[derive(Clone, Debug, PartialEq)]
pub struct JobView {
    pub id: JobId,
    pub name: String,
    pub application: String,
    pub category: JobCategory,
    pub submit_time: Time,
    pub requested_gpus: u32,
    pub requested_batch_size: Option<u32>,
    /// Gang bounds: a plan gives this job 0 GPUs or between `min_gpus` and `max_gpus`.
    pub min_gpus: u32,
    pub max_gpus: u32,
    pub allowed_gpu_types: Vec<GpuType>,
    pub cpus_per_gpu: f64,
    pub memory_gb_per_gpu: f64,
    /// GPU-seconds this job has held so far (restart delays included).
    pub attained_gpu_seconds: f64,
    /// The allocation the job holds now (empty when queued or preempted).
    pub allocation: Allocation,
    /// How many times the job was re-allocated after its first start.
    pub restarts: u32,
    /// The oracle's remaining run time on the requested GPUs; given only to policies that
    /// declare `needs_oracle` (the `srtf` lower bound), never to a real scheduler.
    pub oracle_remaining_seconds: Option<f64>,
    /// The driver's online-fitted performance model (profiled jobs), if any.
    pub model: Option<crate::perf::JobModel>,
    /// Seconds one restart (checkpoint, stop, restore) costs this job, as measured.
    pub restart_seconds: f64,
}

impl JobView {
    pub fn allows(&self, gpu_type: &GpuType) -> bool {
        self.allowed_gpu_types.is_empty() || self.allowed_gpu_types.contains(gpu_type)
    }

    pub fn is_running(&self) -> bool {
        !self.allocation.is_empty()
    }
}

/// An immutable view of the world at `now`: the cluster and the active jobs, ordered by
/// submission time then id.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot<'a> {
    pub now: Time,
    pub cluster: &'a Cluster,
    pub jobs: &'a [JobView],
}

/// A scheduling policy: a deterministic function of the snapshot, its own state and the
/// driver's seeded RNG. It never reads a clock, the network or the disk.
pub trait Policy: Send {
    /// The registry name (`fifo`, `tiresias`, ...).
    fn name(&self) -> &'static str;

    /// Decide the desired allocation of every active job.
    fn decide(&mut self, snapshot: &Snapshot<'_>, rng: &mut dyn RngCore) -> Plan;

    /// Whether the driver must fill `oracle_remaining_seconds` (only for oracle baselines).
    fn needs_oracle(&self) -> bool {
        false
    }

    /// Whether a round can change anything while every active job runs. Policies that only
    /// start queued jobs (or preempt for them) say `false`, and drivers skip those rounds.
    fn acts_when_nothing_waits(&self) -> bool {
        true
    }

    /// Whether jobs of category `adaptive` train with the batch size their fitted goodput model
    /// picks (Pollux-style co-adaptation) rather than the batch size they asked for.
    fn adapts_batch_size(&self) -> bool {
        false
    }

    /// Whether the policy reads `JobView::model` (the driver then fits models online).
    fn uses_job_models(&self) -> bool {
        self.adapts_batch_size()
    }

    /// Whether new jobs are profiled briefly on one GPU of each allowed type (Sia).
    fn profiles_each_gpu_type(&self) -> bool {
        false
    }
}
