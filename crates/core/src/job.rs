//! Job specifications: what a user or a trace row asks for and how much work it is.

use crate::cluster::GpuType;
use crate::ids::Time;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How much freedom the scheduler has over a job (the Sia workload categories).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum JobCategory {
    /// GPU count and batch size are the scheduler's to choose.
    #[default]
    Adaptive,
    /// Fixed batch size; the GPU count is free.
    ScaleGpus,
    /// Fixed batch size and GPU count; only the GPU type is free.
    Rigid,
}

impl JobCategory {
    pub fn as_str(self) -> &'static str {
        match self {
            JobCategory::Adaptive => "adaptive",
            JobCategory::ScaleGpus => "scale-gpus",
            JobCategory::Rigid => "rigid",
        }
    }
}

impl fmt::Display for JobCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobCategory {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "adaptive" | "" => Ok(JobCategory::Adaptive),
            "scale-gpus" | "scale_gpus" => Ok(JobCategory::ScaleGpus),
            "rigid" => Ok(JobCategory::Rigid),
            other => Err(format!(
                "unknown category {other:?} (expected adaptive, scale-gpus or rigid)"
            )),
        }
    }
}

/// The amount of work a job carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Work {
    /// Train until the application's completion rule (epochs from measured profiles).
    Epochs,
    /// Run for a recorded duration on the requested GPUs (raw traces: Philly, Helios, openb).
    Duration { seconds: f64 },
}

/// One job as submitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub name: String,
    pub submit_time: Time,
    /// Application (model) key, e.g. `cifar10`; for raw traces a free label.
    pub application: String,
    pub requested_gpus: u32,
    /// Total batch size the user asked for, if any.
    pub requested_batch_size: Option<u32>,
    pub category: JobCategory,
    pub work: Work,
    /// GPU types the job may run on; empty means any.
    pub allowed_gpu_types: Vec<GpuType>,
    /// CPU cores needed per GPU (0 = no CPU constraint).
    pub cpus_per_gpu: f64,
    /// Memory in GB needed per GPU (0 = no memory constraint).
    pub memory_gb_per_gpu: f64,
    pub user: Option<String>,
}

impl JobSpec {
    /// A job with the given name, submit time, application and GPU count; the rest default.
    pub fn new(
        name: impl Into<String>,
        submit_time: Time,
        application: impl Into<String>,
        gpus: u32,
    ) -> Self {
        JobSpec {
            name: name.into(),
            submit_time,
            application: application.into(),
            requested_gpus: gpus,
            requested_batch_size: None,
            category: JobCategory::Adaptive,
            work: Work::Epochs,
            allowed_gpu_types: Vec::new(),
            cpus_per_gpu: 0.0,
            memory_gb_per_gpu: 0.0,
            user: None,
        }
    }

    pub fn with_duration(mut self, seconds: f64) -> Self {
        self.work = Work::Duration { seconds };
        self.category = JobCategory::Rigid;
        self
    }

    pub fn with_category(mut self, category: JobCategory) -> Self {
        self.category = category;
        self
    }

    pub fn with_batch_size(mut self, batch: u32) -> Self {
        self.requested_batch_size = Some(batch);
        self
    }

    pub fn allows(&self, gpu_type: &GpuType) -> bool {
        self.allowed_gpu_types.is_empty() || self.allowed_gpu_types.contains(gpu_type)
    }
}
