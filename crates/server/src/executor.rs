//! The executor seam: what the scheduling loop asks of whatever runs jobs (local processes
//! and Ray: issue 8), and the launch environment every job gets (ARCHITECTURE §5).
//!
//! Executors are driven synchronously by the loop (start, stop) and report exits through a
//! channel, so the trait stays object-safe and a fake executor in tests is a few lines.

use crate::node::NodeInfo;
use adaptsched_api::{BatchView, env};
use adaptsched_store::DurableJobId;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Everything needed to start one attempt of a job.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchSpec {
    pub job: DurableJobId,
    /// 1 for the first start; each start after a stop, crash or failure adds one.
    pub attempt: u32,
    /// argv, exec'd directly (never through a shell).
    pub command: Vec<String>,
    pub working_dir: PathBuf,
    /// The job's own variables with the launch environment laid over them.
    pub env: BTreeMap<String, String>,
    /// Appended to, so the output of every attempt stays in one file.
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

/// A process the executor started: enough to find it again after a server crash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartedProcess {
    /// Process id, also its process group id.
    pub pid: u32,
    pub start_ticks: u64,
    pub boot_id: String,
}

/// How an attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl ExitStatus {
    pub fn success(self) -> bool {
        self.code == Some(0)
    }

    /// The shell's convention: the exit code, or 128 + the signal that killed it.
    pub fn exit_code(self) -> i32 {
        match (self.code, self.signal) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            (None, None) => -1,
        }
    }

    pub fn describe(self) -> String {
        match (self.code, self.signal) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            (None, None) => "unknown exit status".to_string(),
        }
    }
}

/// Reported by an executor when an attempt ends, whatever the cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitEvent {
    pub job: DurableJobId,
    pub attempt: u32,
    pub status: ExitStatus,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecutorError {
    #[error("cannot start {program:?} in {working_dir}: {source}")]
    Spawn {
        program: String,
        working_dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot prepare {path}: {source}")]
    Prepare {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("job {0} is already running on this executor")]
    AlreadyRunning(DurableJobId),
}

/// Runs jobs. Implementations report every attempt's end as an [`ExitEvent`] on the channel
/// they were built with, including attempts that were stopped.
pub trait Executor: Send {
    fn name(&self) -> &'static str;

    /// Starts one attempt. Refuses a job that is already running (a job never runs twice).
    fn start(&mut self, launch: LaunchSpec) -> Result<StartedProcess, ExecutorError>;

    /// Asks the job to stop: SIGTERM (or the engine's equivalent) now, a forced kill after
    /// `grace`. Idempotent; the exit is reported on the channel.
    fn stop(&mut self, job: DurableJobId, grace: Duration);

    /// Process ids of the running jobs (for per-job telemetry).
    fn pids(&self) -> Vec<(DurableJobId, u32)>;

    /// The devices this executor offers now, for executors whose capacity changes while the
    /// server runs (Ray nodes join and leave); the loop reads it at the start of every round.
    /// `None`: fixed at start (the local machine), the loop keeps what it was built with.
    fn pool(&self) -> Option<NodeInfo> {
        None
    }
}

/// How the node's devices are exposed to a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Gpu,
    CpuSlot,
}

/// The launch environment of one attempt: inputs that vary per start.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchContext<'a> {
    pub job: DurableJobId,
    pub attempt: u32,
    pub devices: &'a [u32],
    pub device_kind: DeviceKind,
    pub batch: Option<BatchView>,
    pub url: &'a str,
    pub token: &'a str,
    pub data_dir: &'a str,
    pub checkpoint_dir: &'a str,
    pub master_port: u16,
}

/// The variables a job is launched with (ARCHITECTURE §5), laid over the job's own `env`.
///
/// One process per job: `WORLD_SIZE=1`, `RANK=0`, and `ADAPTSCHED_REPLICAS=k` with all k
/// devices visible; a trainer that wants one process per device spawns them itself (e.g.
/// `torchrun --nproc-per-node $ADAPTSCHED_REPLICAS`), using `MASTER_ADDR`/`MASTER_PORT`.
pub fn launch_env(
    user_env: &BTreeMap<String, String>,
    context: &LaunchContext<'_>,
) -> BTreeMap<String, String> {
    let mut vars = user_env.clone();
    let mut set = |key: &str, value: String| {
        vars.insert(key.to_string(), value);
    };
    let device_list = context
        .devices
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    set(env::JOB_ID, context.job.to_string());
    set(env::URL, context.url.to_string());
    set(env::TOKEN, context.token.to_string());
    set(env::DATA_DIR, context.data_dir.to_string());
    set(env::WORLD_SIZE, "1".to_string());
    set(env::RANK, "0".to_string());
    set(env::LOCAL_RANK, "0".to_string());
    set(env::MASTER_ADDR, "127.0.0.1".to_string());
    set(env::MASTER_PORT, context.master_port.to_string());
    set(env::REPLICAS, context.devices.len().to_string());
    set(env::NODES, "1".to_string());
    match context.device_kind {
        DeviceKind::Gpu => set(env::CUDA_VISIBLE_DEVICES, device_list),
        DeviceKind::CpuSlot => {
            set(env::CPU_SLOTS, device_list);
            // Hide any GPU so a job given CPU slots cannot take a GPU by accident.
            set(env::CUDA_VISIBLE_DEVICES, String::new());
        }
    }
    if let Some(batch) = context.batch {
        set(env::BATCH_SIZE, batch.global_batch_size.to_string());
        set(env::LOCAL_BATCH_SIZE, batch.local_batch_size.to_string());
        set(
            env::ACCUMULATION_STEPS,
            batch.accumulation_steps.to_string(),
        );
        set(env::LR_SCALE, batch.lr_scale.to_string());
    }
    set(env::CHECKPOINT_DIR, context.checkpoint_dir.to_string());
    set(env::RESTARTS, context.attempt.saturating_sub(1).to_string());
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(devices: &[u32], kind: DeviceKind) -> LaunchContext<'_> {
        LaunchContext {
            job: DurableJobId(7),
            attempt: 3,
            devices,
            device_kind: kind,
            batch: Some(BatchView {
                global_batch_size: 256,
                local_batch_size: 64,
                accumulation_steps: 1,
                lr_scale: 2.0,
            }),
            url: "http://127.0.0.1:7400",
            token: "secret",
            data_dir: "/data",
            checkpoint_dir: "/data/checkpoints/7",
            master_port: 29500,
        }
    }

    #[test]
    fn launch_env_overrides_the_users_and_describes_the_allocation() {
        let user = BTreeMap::from([
            ("WORLD_SIZE".to_string(), "99".to_string()),
            ("MINE".to_string(), "x".to_string()),
        ]);
        let vars = launch_env(&user, &context(&[1, 2], DeviceKind::Gpu));
        assert_eq!(vars["MINE"], "x");
        assert_eq!(vars["WORLD_SIZE"], "1");
        assert_eq!(vars["ADAPTSCHED_REPLICAS"], "2");
        assert_eq!(vars["CUDA_VISIBLE_DEVICES"], "1,2");
        assert_eq!(vars["ADAPTSCHED_JOB_ID"], "7");
        assert_eq!(vars["ADAPTSCHED_RESTARTS"], "2");
        assert_eq!(vars["ADAPTSCHED_BATCH_SIZE"], "256");
        assert_eq!(vars["ADAPTSCHED_LOCAL_BATCH_SIZE"], "64");
        assert_eq!(vars["ADAPTSCHED_ACCUMULATION_STEPS"], "1");
        assert_eq!(vars["ADAPTSCHED_CHECKPOINT_DIR"], "/data/checkpoints/7");
        assert_eq!(vars["MASTER_PORT"], "29500");
        assert!(!vars.contains_key("ADAPTSCHED_CPU_SLOTS"));
    }

    #[test]
    fn cpu_slots_hide_gpus() {
        let vars = launch_env(&BTreeMap::new(), &context(&[0, 3], DeviceKind::CpuSlot));
        assert_eq!(vars["ADAPTSCHED_CPU_SLOTS"], "0,3");
        assert_eq!(vars["CUDA_VISIBLE_DEVICES"], "");
    }

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        let signalled = ExitStatus {
            code: None,
            signal: Some(15),
        };
        assert_eq!(signalled.exit_code(), 143);
        assert!(!signalled.success());
        let ok = ExitStatus {
            code: Some(0),
            signal: None,
        };
        assert!(ok.success());
        assert_eq!(ok.describe(), "exit code 0");
    }
}
