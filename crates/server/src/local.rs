//! The local executor: each job is one process, exec'd directly (never through a shell), in
//! its own process group, with stdout/stderr appended to its log files. Stopping sends
//! SIGTERM to the group, waits the grace period, then SIGKILL.

use crate::executor::{Executor, ExecutorError, ExitEvent, ExitStatus, LaunchSpec, StartedProcess};
use crate::procinfo;
use adaptsched_store::DurableJobId;
use rustix::process::Signal;
use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

struct LocalJob {
    pid: u32,
    stopping: bool,
    /// Becomes `true` when the process has exited and been reaped.
    exited: watch::Receiver<bool>,
}

/// Runs jobs as child processes of the server. Needs a tokio runtime (it spawns a task per
/// job that waits for its exit).
pub struct LocalExecutor {
    exits: mpsc::UnboundedSender<ExitEvent>,
    /// Shared with the wait tasks, which remove a job before reporting its exit, so the loop
    /// may start the job again as soon as it hears of the exit.
    jobs: Arc<Mutex<HashMap<DurableJobId, LocalJob>>>,
}

impl LocalExecutor {
    pub fn new(exits: mpsc::UnboundedSender<ExitEvent>) -> Self {
        LocalExecutor {
            exits,
            jobs: Arc::default(),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn open_log(path: &std::path::Path) -> Result<std::fs::File, ExecutorError> {
    let prepare = |source| ExecutorError::Prepare {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(prepare)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(prepare)
}

impl Executor for LocalExecutor {
    fn name(&self) -> &'static str {
        "local"
    }

    fn start(&mut self, launch: LaunchSpec) -> Result<StartedProcess, ExecutorError> {
        if lock(&self.jobs).contains_key(&launch.job) {
            return Err(ExecutorError::AlreadyRunning(launch.job));
        }
        let stdout = open_log(&launch.stdout)?;
        let stderr = open_log(&launch.stderr)?;
        let mut command = tokio::process::Command::new(&launch.command[0]);
        command
            .args(&launch.command[1..])
            .current_dir(&launch.working_dir)
            .envs(&launch.env)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            // Own process group: signals reach the job and everything it spawned, and a
            // Ctrl-C at the server's terminal does not reach the jobs.
            .process_group(0)
            .kill_on_drop(false);
        let mut child = command.spawn().map_err(|source| ExecutorError::Spawn {
            program: launch.command[0].clone(),
            working_dir: launch.working_dir.display().to_string(),
            source,
        })?;
        let pid = child.id().unwrap_or(0);
        let start_ticks = procinfo::stat(pid).map_or(0, |s| s.start_ticks);
        let (exited_tx, exited_rx) = watch::channel(false);
        lock(&self.jobs).insert(
            launch.job,
            LocalJob {
                pid,
                stopping: false,
                exited: exited_rx,
            },
        );
        let jobs = Arc::clone(&self.jobs);
        let exits = self.exits.clone();
        let (job, attempt) = (launch.job, launch.attempt);
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(status) => ExitStatus {
                    code: status.code(),
                    signal: status.signal(),
                },
                Err(error) => {
                    tracing::error!("job {job}: waiting for pid {pid}: {error}");
                    ExitStatus {
                        code: None,
                        signal: None,
                    }
                }
            };
            // A job ends with its leader: helpers it left behind would keep holding its
            // devices after the scheduler gave them to someone else.
            procinfo::signal_group(pid, Signal::KILL);
            let _ = exited_tx.send(true);
            lock(&jobs).remove(&job);
            let _ = exits.send(ExitEvent {
                job,
                attempt,
                status,
            });
        });
        Ok(StartedProcess {
            pid,
            start_ticks,
            boot_id: procinfo::boot_id(),
        })
    }

    fn stop(&mut self, job: DurableJobId, grace: Duration) {
        let mut jobs = lock(&self.jobs);
        let Some(entry) = jobs.get_mut(&job) else {
            return;
        };
        if entry.stopping {
            return;
        }
        entry.stopping = true;
        let pid = entry.pid;
        let mut exited = entry.exited.clone();
        drop(jobs);
        tracing::info!("job {job}: SIGTERM to process group {pid}, SIGKILL after {grace:?}");
        procinfo::signal_group(pid, Signal::TERM);
        tokio::spawn(async move {
            let gone = tokio::time::timeout(grace, exited.wait_for(|&done| done)).await;
            if gone.is_err() {
                tracing::info!("job {job}: still running after {grace:?}; SIGKILL");
                procinfo::signal_group(pid, Signal::KILL);
            }
        });
    }

    fn pids(&self) -> Vec<(DurableJobId, u32)> {
        lock(&self.jobs)
            .iter()
            .map(|(&job, entry)| (job, entry.pid))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn launch(dir: &std::path::Path, job: u64, command: &[&str]) -> LaunchSpec {
        LaunchSpec {
            job: DurableJobId(job),
            attempt: 1,
            command: command.iter().map(|s| s.to_string()).collect(),
            working_dir: dir.to_path_buf(),
            env: BTreeMap::from([("GREETING".to_string(), "hello".to_string())]),
            stdout: dir.join("logs").join(job.to_string()).join("stdout.log"),
            stderr: dir.join("logs").join(job.to_string()).join("stderr.log"),
        }
    }

    #[tokio::test]
    async fn a_process_runs_with_its_env_and_its_exit_code_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut executor = LocalExecutor::new(tx);
        let spec = launch(
            dir.path(),
            1,
            &["sh", "-c", "echo $GREETING; echo oops >&2; exit 3"],
        );
        let started = executor.start(spec.clone()).unwrap();
        assert!(started.pid > 0);
        assert!(matches!(
            executor.start(spec.clone()),
            Err(ExecutorError::AlreadyRunning(_))
        ));
        let exit = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(exit.job, DurableJobId(1));
        assert_eq!(exit.status.exit_code(), 3);
        assert_eq!(std::fs::read_to_string(&spec.stdout).unwrap(), "hello\n");
        assert_eq!(std::fs::read_to_string(&spec.stderr).unwrap(), "oops\n");
        assert!(executor.pids().is_empty());
    }

    #[tokio::test]
    async fn stop_terminates_the_whole_group_and_kills_after_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut executor = LocalExecutor::new(tx);
        // Ignores SIGTERM, so only the SIGKILL after the grace period ends it. It says when
        // the trap is set, so the SIGTERM cannot arrive before.
        let spec = launch(
            dir.path(),
            2,
            &["sh", "-c", "trap '' TERM; sleep 30 & echo ready; wait"],
        );
        let stdout = spec.stdout.clone();
        let started = executor.start(spec).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&stdout).unwrap_or_default() != "ready\n" {
            assert!(
                std::time::Instant::now() < deadline,
                "the job never got ready"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(procinfo::group_alive(started.pid));
        executor.stop(DurableJobId(2), Duration::from_millis(300));
        let exit = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(exit.status.signal, Some(9), "{exit:?}");
        // The backgrounded sleep was in the group and is gone too.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while procinfo::group_alive(started.pid) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!procinfo::group_alive(started.pid));
    }

    #[tokio::test]
    async fn a_missing_program_is_a_start_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut executor = LocalExecutor::new(tx);
        let error = executor
            .start(launch(dir.path(), 3, &["/no/such/program"]))
            .unwrap_err();
        assert!(error.to_string().contains("/no/such/program"), "{error}");
    }
}
