//! The records the store keeps: submissions, jobs and their states, events, allocations, metrics.

use crate::error::StoreError;
use adaptsched_core::plan::BatchDecision;
use adaptsched_core::{Allocation, JobCategory, Time};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A job's durable id: assigned once by the store, never reused, stable across restarts.
///
/// Distinct from `adaptsched_core::JobId`, which is a dense index inside one scheduling
/// snapshot; the control plane maps one to the other each round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DurableJobId(pub u64);

impl fmt::Display for DurableJobId {
    /// Just the number: it is what users type (`adaptsched show 42`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for DurableJobId {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .parse()
            .map(DurableJobId)
            .map_err(|_| StoreError::InvalidValue {
                field: "job id",
                value: s.to_string(),
            })
    }
}

/// Where a job is in its life. `Succeeded`, `Failed` and `Cancelled` are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    /// The spelling stored in the database and shown by the CLI and API.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }

    /// Whether a job may move from `self` to `next`.
    ///
    /// Terminal states are final: a retry after a failed attempt goes `running -> queued`
    /// (the control plane decides whether retries are left), never `failed -> queued`, so a
    /// job reported failed stays failed. A state never transitions to itself, so a caller
    /// that thinks it is changing something but is not learns about it.
    pub fn can_become(self, next: JobState) -> bool {
        use JobState::*;
        matches!(
            (self, next),
            (Queued, Running | Failed | Cancelled)
                | (Running, Queued | Succeeded | Failed | Cancelled)
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s.trim())
            .ok_or_else(|| StoreError::UnknownState(s.to_string()))
    }
}

/// What a user asks to run, as accepted by the API. Stored verbatim; the store checks only
/// what would make the record meaningless (the server checks it against the cluster).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSubmission {
    pub name: String,
    /// The owner: only they (or an admin) may see its logs or cancel it.
    pub user: String,
    /// Program and arguments, exec'd directly (never through a shell).
    pub command: Vec<String>,
    /// UTF-8 because it is stored as text and shown in JSON.
    pub working_dir: String,
    pub env: BTreeMap<String, String>,
    pub min_gpus: u32,
    pub max_gpus: u32,
    /// CPU cores for the whole job.
    pub cpus: f64,
    /// Memory in GB for the whole job (0 = no constraint).
    pub memory_gb: f64,
    /// Higher runs first under policies that honour priority.
    pub priority: i32,
    /// How many failed attempts are retried before the job is marked failed.
    pub max_retries: u32,
    pub category: JobCategory,
    /// Anything else the submission carried (a serialized `JobSpec`, batch-size limits):
    /// kept so later versions can read it without a migration.
    pub spec: Option<serde_json::Value>,
}

impl JobSubmission {
    /// A one-GPU, one-CPU job with no retries, run in `/`; adjust with the builder methods.
    pub fn new(
        name: impl Into<String>,
        user: impl Into<String>,
        command: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        JobSubmission {
            name: name.into(),
            user: user.into(),
            command: command.into_iter().map(Into::into).collect(),
            working_dir: "/".to_string(),
            env: BTreeMap::new(),
            min_gpus: 1,
            max_gpus: 1,
            cpus: 1.0,
            memory_gb: 0.0,
            priority: 0,
            max_retries: 0,
            category: JobCategory::Adaptive,
            spec: None,
        }
    }

    pub fn gpus(mut self, min: u32, max: u32) -> Self {
        self.min_gpus = min;
        self.max_gpus = max;
        self
    }

    pub fn working_dir(mut self, dir: impl Into<String>) -> Self {
        self.working_dir = dir.into();
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Rejects a record that could never run whatever the cluster: empty name, user or
    /// command, an inverted GPU range, negative or non-finite resources, env keys that
    /// cannot be passed to a process. Errors name the field and the value.
    pub fn validate(&self) -> Result<(), StoreError> {
        let invalid =
            |field: &'static str, value: String| Err(StoreError::InvalidValue { field, value });
        if self.name.trim().is_empty() {
            return invalid("name", format!("{:?} (must not be empty)", self.name));
        }
        if self.user.trim().is_empty() {
            return invalid("user", format!("{:?} (must not be empty)", self.user));
        }
        match self.command.first() {
            None => return invalid("command", "[] (must not be empty)".to_string()),
            Some(program) if program.is_empty() => {
                return invalid("command", format!("{:?} (program is empty)", self.command));
            }
            Some(_) => {}
        }
        if let Some(arg) = self.command.iter().find(|arg| arg.contains('\0')) {
            return invalid("command", format!("{arg:?} (contains a NUL byte)"));
        }
        if self.min_gpus > self.max_gpus {
            return invalid(
                "gpus",
                format!("{}:{} (min above max)", self.min_gpus, self.max_gpus),
            );
        }
        if !self.cpus.is_finite() || self.cpus < 0.0 {
            return invalid("cpus", self.cpus.to_string());
        }
        if !self.memory_gb.is_finite() || self.memory_gb < 0.0 {
            return invalid("memory_gb", self.memory_gb.to_string());
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return invalid("env", format!("{key:?} (not a valid variable name)"));
            }
            if value.contains('\0') {
                return invalid("env", format!("{key}={value:?} (contains a NUL byte)"));
            }
        }
        Ok(())
    }
}

/// A job as the store holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredJob {
    pub id: DurableJobId,
    pub submission: JobSubmission,
    pub state: JobState,
    /// Why the job is in its state, in words a user can read ("waiting: 8 GPUs busy").
    pub state_reason: String,
    pub created_at: Time,
    pub updated_at: Time,
    /// How many times the job has entered `running` (first start included).
    pub attempts: u32,
    /// Exit code of the last attempt that ended (128 + signal when killed by one).
    pub exit_code: Option<i32>,
}

/// One thing that happened to a job, in the order it was recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    /// Position in the store's global event sequence; orders events even when `at` ties.
    pub seq: i64,
    pub job: DurableJobId,
    pub at: Time,
    /// A short machine-readable word (`submitted`, `state`, `exit`, ...).
    pub kind: String,
    pub message: String,
}

/// One allocation a job was given (an empty one records that it was stopped).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AllocationRecord {
    pub seq: i64,
    pub job: DurableJobId,
    pub at: Time,
    pub allocation: Allocation,
    pub batch: Option<BatchDecision>,
    pub reason: String,
}

/// One training step as the job reported it (ARCHITECTURE §5).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricSample {
    pub step: u64,
    /// Samples processed in this step (global batch size).
    pub samples: u64,
    /// NaN when the job reported a diverged loss (stored as NULL).
    pub loss: f64,
    /// Seconds for the whole step.
    pub step_time: f64,
    /// Seconds of it spent synchronizing gradients.
    pub sync_time: f64,
    pub grad_sqr: Option<f64>,
    pub grad_var: Option<f64>,
    pub at: Time,
}

/// Which jobs `Store::list_jobs` returns; unset fields match everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub user: Option<String>,
    /// Only jobs with a higher id (the cursor of the next page).
    pub after: Option<DurableJobId>,
    /// At most this many jobs, lowest ids first.
    pub limit: Option<u32>,
}

impl JobFilter {
    pub fn all() -> Self {
        JobFilter::default()
    }

    pub fn state(mut self, state: JobState) -> Self {
        self.state = Some(state);
        self
    }

    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    pub fn after(mut self, id: DurableJobId) -> Self {
        self.after = Some(id);
        self
    }

    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }
}

/// The live process of a running job, as the control plane started it: enough to find it
/// again after a server crash and to tell it from an unrelated process that reused its pid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub job: DurableJobId,
    /// The process id, which is also its process group id (jobs run in their own group).
    pub pid: u32,
    /// The kernel's start time of the process (`/proc/<pid>/stat` field 22, clock ticks
    /// since boot): together with `boot_id` it identifies the process even if `pid` is reused.
    pub start_ticks: u64,
    /// `/proc/sys/kernel/random/boot_id` when it started: after a reboot nothing survives.
    pub boot_id: String,
    /// Which attempt of the job this process is (1 = first start).
    pub attempt: u32,
    /// Seconds on the control plane's clock when it was started.
    pub started_at: Time,
}

/// Who a bearer token belongs to. The store keys tokens by their SHA-256 (hex), never the
/// token itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub user: String,
    pub admin: bool,
    /// Set for the token a job gets in its launch environment: it acts for the job's owner.
    pub job: Option<DurableJobId>,
}
