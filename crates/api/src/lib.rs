//! Wire types of the adaptsched HTTP API (v1): what the server accepts and returns, shared by
//! the server, the CLI client and tests so both ends cannot drift apart.
//!
//! Conventions: JSON bodies; every route lives under [`API_PREFIX`]; every call carries
//! `Authorization: Bearer <token>`; errors are [`ErrorBody`] with a 4xx/5xx status. Times are
//! seconds since the Unix epoch (f64). Requests reject unknown fields.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Every route is under this prefix.
pub const API_PREFIX: &str = "/v1";

/// Default listen address of `adaptsched serve`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7400";

/// Files the server writes into its data dir so clients on the same machine can find it.
pub mod data_dir {
    /// The server's base URL (one line, e.g. `http://127.0.0.1:7400`).
    pub const URL_FILE: &str = "server.url";
    /// The admin bearer token (one line), mode 0600.
    pub const TOKEN_FILE: &str = "token";
    /// The SQLite database.
    pub const DATABASE_FILE: &str = "adaptsched.db";
    /// Per-job log files live under `logs/<job id>/{stdout,stderr}.log`.
    pub const LOGS_DIR: &str = "logs";
    /// Per-job checkpoint dirs live under `checkpoints/<job id>/`.
    pub const CHECKPOINTS_DIR: &str = "checkpoints";
}

/// Environment variables: what clients read, and the launch environment of a job
/// (ARCHITECTURE §5).
pub mod env {
    pub const DATA_DIR: &str = "ADAPTSCHED_DATA_DIR";
    pub const URL: &str = "ADAPTSCHED_URL";
    pub const TOKEN: &str = "ADAPTSCHED_TOKEN";
    pub const JOB_ID: &str = "ADAPTSCHED_JOB_ID";
    pub const WORLD_SIZE: &str = "WORLD_SIZE";
    pub const RANK: &str = "RANK";
    pub const LOCAL_RANK: &str = "LOCAL_RANK";
    pub const MASTER_ADDR: &str = "MASTER_ADDR";
    pub const MASTER_PORT: &str = "MASTER_PORT";
    pub const CUDA_VISIBLE_DEVICES: &str = "CUDA_VISIBLE_DEVICES";
    /// Device slots given to the job when the node offers CPU slots instead of GPUs
    /// (comma-separated slot indices), so CPU trainers know their share.
    pub const CPU_SLOTS: &str = "ADAPTSCHED_CPU_SLOTS";
    pub const BATCH_SIZE: &str = "ADAPTSCHED_BATCH_SIZE";
    pub const LOCAL_BATCH_SIZE: &str = "ADAPTSCHED_LOCAL_BATCH_SIZE";
    pub const ACCUMULATION_STEPS: &str = "ADAPTSCHED_ACCUMULATION_STEPS";
    pub const LR_SCALE: &str = "ADAPTSCHED_LR_SCALE";
    pub const CHECKPOINT_DIR: &str = "ADAPTSCHED_CHECKPOINT_DIR";
    pub const RESTARTS: &str = "ADAPTSCHED_RESTARTS";
    /// Number of replicas (GPUs or CPU slots) in the job's allocation.
    pub const REPLICAS: &str = "ADAPTSCHED_REPLICAS";
    /// Number of nodes in the job's allocation.
    pub const NODES: &str = "ADAPTSCHED_NODES";
}

/// A job as submitted (`POST /v1/jobs`, and the contents of `submit -f job.toml|job.yaml`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// Defaults to the program's file name.
    #[serde(default)]
    pub name: Option<String>,
    /// argv, exec'd directly (never through a shell). Must not be empty.
    pub command: Vec<String>,
    /// Must exist on the node. Defaults to the submitting client's current directory.
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Fewest GPUs (or CPU slots) the job can run on. Default 1.
    #[serde(default)]
    pub min_gpus: Option<u32>,
    /// Most GPUs the scheduler may give it. Default `min_gpus` (rigid).
    #[serde(default)]
    pub max_gpus: Option<u32>,
    /// CPU cores per replica. Default 1.
    #[serde(default)]
    pub cpus: Option<f64>,
    /// Memory per replica in GB. Default 0 (no constraint).
    #[serde(default)]
    pub memory_gb: Option<f64>,
    /// Higher runs first among otherwise equal jobs. Default 0, range -1000..=1000.
    #[serde(default)]
    pub priority: Option<i32>,
    /// Failed runs are retried with exponential backoff up to this many times. Default 0.
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// Batch-size limits for adaptive jobs; absent = the job's batch size is its own.
    #[serde(default)]
    pub batch: Option<BatchSpec>,
}

/// Batch-size limits of an adaptive job (Pollux): the scheduler picks the global batch in
/// `[initial, max]` and the per-replica batch in `[min_local, max_local]`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSpec {
    pub initial: u32,
    pub max: u32,
    #[serde(default)]
    pub min_local: Option<u32>,
    #[serde(default)]
    pub max_local: Option<u32>,
}

/// Reply to a submission, `201 Created`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubmitResponse {
    pub id: u64,
    pub name: String,
    pub state: String,
}

/// One GPU/slot share of an allocation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AllocationPart {
    pub node: String,
    pub gpus: u32,
}

/// Batch decision in effect for a job.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchView {
    pub global_batch_size: u32,
    pub local_batch_size: u32,
    pub accumulation_steps: u32,
    pub lr_scale: f64,
}

/// A row of `GET /v1/jobs` (filters: `?state=queued&user=alice&limit=100`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    pub id: u64,
    pub name: String,
    pub user: String,
    /// One of `queued`, `running`, `succeeded`, `failed`, `cancelled`.
    pub state: String,
    pub priority: i32,
    pub min_gpus: u32,
    pub max_gpus: u32,
    /// GPUs (or slots) held now; 0 when not running.
    pub gpus: u32,
    pub submitted_at: f64,
    pub updated_at: f64,
    pub restarts: u32,
    pub exit_code: Option<i32>,
    /// Why the job is not running (queued jobs), in words a user can read.
    pub waiting_reason: Option<String>,
}

/// `GET /v1/jobs/{id}`: everything about one job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobDetail {
    #[serde(flatten)]
    pub summary: JobSummary,
    pub request: JobRequest,
    /// Current allocation (empty when not running).
    pub allocation: Vec<AllocationPart>,
    pub batch: Option<BatchView>,
    pub allocation_history: Vec<AllocationChange>,
    pub events: Vec<EventView>,
    /// The job's fitted performance model, once it has reported enough steps.
    pub model: Option<FittedModelView>,
    /// Latest reported training step, if any.
    pub last_report: Option<StepReport>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AllocationChange {
    pub at: f64,
    pub allocation: Vec<AllocationPart>,
    pub batch: Option<BatchView>,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventView {
    pub at: f64,
    pub kind: String,
    pub message: String,
}

/// Fitted throughput model (Pollux's α/β/γ form) and gradient noise statistics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FittedModelView {
    /// Named fitted parameters (e.g. `alpha_c`, `beta_c`, `alpha_n`, `beta_n`, `alpha_r`,
    /// `beta_r`, `gamma`).
    pub params: BTreeMap<String, f64>,
    pub grad_sqr: Option<f64>,
    pub grad_var: Option<f64>,
    /// Gradient noise scale (B_noise = grad_var / grad_sqr), when both are known.
    pub noise_scale: Option<f64>,
    pub observations: usize,
}

/// One reported training step (`POST /v1/jobs/{id}/metrics` carries a list).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepReport {
    pub step: u64,
    /// Samples processed by this step (global batch).
    pub samples: u64,
    pub loss: f64,
    /// Seconds per optimizer step.
    pub step_time: f64,
    #[serde(default)]
    pub sync_time: Option<f64>,
    #[serde(default)]
    pub grad_sqr: Option<f64>,
    #[serde(default)]
    pub grad_var: Option<f64>,
    /// Global batch size the step used; defaults to the one in effect.
    #[serde(default)]
    pub batch_size: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsReport {
    pub steps: Vec<StepReport>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsAccepted {
    pub accepted: usize,
}

/// `GET /v1/nodes`: a node, its capacity, what is allocated, its latest telemetry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub name: String,
    /// GPU model (e.g. `NVIDIA H200`) or `cpu-slot` when the node offers CPU device slots.
    pub gpu_type: String,
    pub gpus: u32,
    pub gpus_allocated: u32,
    pub cpu_cores: f64,
    pub memory_gb: f64,
    /// Capacity-proportional balance p_i = (x_i/Σx)/(y_i/Σy) (ARCHITECTURE §4); absent while
    /// nothing is allocated.
    pub balance_ratio: Option<f64>,
    pub telemetry: Option<NodeTelemetry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeTelemetry {
    pub at: f64,
    /// Percent of all cores, 0..=100.
    pub cpu_percent: f64,
    pub memory_used_gb: f64,
    pub memory_total_gb: f64,
    pub network: Vec<InterfaceRate>,
    /// Absent when the node has no NVIDIA driver; `gpu_note` says why.
    pub gpus: Option<Vec<GpuTelemetry>>,
    pub gpu_note: Option<String>,
    pub jobs: Vec<JobUsage>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InterfaceRate {
    pub interface: String,
    pub rx_bytes_per_s: f64,
    pub tx_bytes_per_s: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuTelemetry {
    pub index: u32,
    pub name: String,
    pub utilization_percent: f64,
    pub memory_used_gb: f64,
    pub memory_total_gb: f64,
    pub temperature_c: Option<f64>,
    pub power_w: Option<f64>,
}

/// Per-job resource use on a node (summed over the job's process group).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobUsage {
    pub job: u64,
    pub cpu_percent: f64,
    pub memory_gb: f64,
}

/// `GET /v1/cluster`: one-screen summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterSummary {
    pub policy: String,
    pub interval_s: f64,
    pub nodes: usize,
    pub gpus_total: u32,
    pub gpus_allocated: u32,
    pub jobs_by_state: BTreeMap<String, usize>,
    /// Wall time of the last scheduling round's `decide`, milliseconds.
    pub last_round_ms: Option<f64>,
    pub rounds: u64,
}

/// `GET /v1/health` (the only route that needs no token).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub version: String,
}

/// Every error reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// The offending field, when the error is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `POST /v1/tokens` (admin only): create a bearer token for a user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The user the token acts for; jobs submitted with it are theirs.
    pub user: String,
    /// Whether the token may act for every user (create tokens, cancel anyone's jobs).
    #[serde(default)]
    pub admin: bool,
}

/// Reply to `POST /v1/tokens`, `201 Created`. The token is shown once; the server keeps only
/// its SHA-256.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenResponse {
    pub user: String,
    pub admin: bool,
    pub token: String,
}

/// `GET /v1/whoami`: who the presented token acts for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WhoAmI {
    pub user: String,
    pub admin: bool,
}

/// Response headers of `GET /v1/jobs/{id}/logs?stream=stdout|stderr&offset=N&limit=BYTES`.
///
/// The body is the log bytes from `offset` (at most `limit`, default 1 MiB). To follow a log,
/// poll again from [`logs::OFFSET_HEADER`] until [`logs::STATE_HEADER`] is a final state and
/// a poll returns no bytes.
pub mod logs {
    /// Offset just past the returned bytes: where the next poll starts.
    pub const OFFSET_HEADER: &str = "x-log-offset";
    /// The job's state when the bytes were read (`queued`, `running`, `succeeded`, ...).
    pub const STATE_HEADER: &str = "x-job-state";
    /// Largest chunk one call returns, and the default `limit`.
    pub const MAX_CHUNK: u64 = 1 << 20;
}

/// Paging of `GET /v1/jobs`: jobs come oldest first, at most `limit` per call; a full page
/// may have more behind it, which `after=<the page's last id>` returns.
pub mod job_pages {
    /// Jobs per page when the caller sets no `limit`.
    pub const DEFAULT_LIMIT: u32 = 1000;
    /// Largest `limit` accepted (a larger one is refused, not cut, so a short page always
    /// means the end).
    pub const MAX_LIMIT: u32 = 10_000;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_request_rejects_unknown_fields_naming_them() {
        let error = serde_json::from_str::<JobRequest>(r#"{"command":["true"],"gpu":2}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown field `gpu`"), "{error}");
    }

    #[test]
    fn job_request_defaults_everything_but_the_command() {
        let request: JobRequest = serde_json::from_str(r#"{"command":["sleep","1"]}"#).unwrap();
        assert_eq!(request.command, ["sleep", "1"]);
        assert_eq!((request.min_gpus, request.max_gpus), (None, None));
    }
}
