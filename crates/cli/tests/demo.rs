//! `adaptsched demo --json` end to end: the real binary starts its own server on CPU slots,
//! runs the embedded example trainers (real gradient computation in Python) and prints a
//! summary; every job must have finished, learned, and the cluster must have been used.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_adaptsched");

/// `adaptsched demo` with its temp dir under `tmp` (so a test sees only its own processes)
/// and no server of the environment.
fn demo(tmp: &Path, cwd: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(["demo", "--json"])
        .current_dir(cwd)
        .env("TMPDIR", tmp)
        .env_remove("ADAPTSCHED_URL")
        .env_remove("ADAPTSCHED_TOKEN")
        .env_remove("ADAPTSCHED_DATA_DIR")
        .stdin(Stdio::null());
    command
}

/// Processes whose command line mentions `dir`.
fn processes_under(dir: &Path) -> String {
    Command::new("pgrep")
        .args(["-af", &dir.display().to_string()])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

#[test]
fn demo_runs_real_jobs_to_completion_and_summarizes_them() {
    let started = Instant::now();
    // From a directory with nothing in it: the trainer and client come from the binary.
    let cwd = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = demo(tmp.path(), cwd.path())
        .output()
        .expect("adaptsched demo runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed ({}):\n{stderr}",
        out.status
    );
    let wall = started.elapsed().as_secs_f64();
    assert!(wall < 180.0, "the demo took {wall:.0} s");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let jobs = summary["jobs"].as_array().expect("jobs");
    assert!(jobs.len() >= 4, "{summary}");
    let mut restarts = 0;
    for job in jobs {
        assert_eq!(job["state"], "succeeded", "{job}\n{stderr}");
        assert!(job["name"].as_str().is_some_and(|n| !n.is_empty()), "{job}");
        assert!(job["jct_s"].as_f64().is_some_and(|t| t > 0.0), "{job}");
        restarts += job["restarts"].as_u64().expect("restarts counted");
        let batches = job["batch_sizes"].as_array().expect("batch_sizes");
        assert!(!batches.is_empty(), "{job}");
        assert!(
            batches.iter().all(|b| b.as_u64().is_some_and(|b| b > 0)),
            "{job}"
        );
        let first = job["first_loss"].as_f64().expect("first loss");
        let last = job["final_loss"].as_f64().expect("final loss");
        assert!(last.is_finite() && last < first, "the loss fell: {job}");
        // A restarted job's batch sizes record each attempt; a restart means a new attempt.
        if job["restarts"].as_u64() > Some(0) {
            assert!(
                job["adaptations"].as_array().is_some_and(|a| !a.is_empty()),
                "each restart has a reason: {job}"
            );
        }
    }
    assert!(
        restarts > 0,
        "the scheduler adapted at least one job: {summary}"
    );
    let utilization = summary["gpu_utilization"].as_f64().expect("utilization");
    assert!(utilization > 0.0 && utilization <= 1.0, "{summary}");
    // Its processes and files are gone.
    let leftover = processes_under(tmp.path());
    assert!(leftover.is_empty(), "processes left: {leftover}");
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "temp dir left"
    );
}

/// Ctrl-C (SIGINT) mid-run: the demo stops its server and jobs, removes its temp dir and
/// says it was interrupted.
#[test]
fn an_interrupted_demo_leaves_no_process_or_file_behind() {
    let cwd = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut child = demo(tmp.path(), cwd.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("adaptsched demo starts");
    // Progress lines go to stderr with --json; wait until a job was submitted and a trainer
    // of this demo runs.
    let mut progress = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in progress.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains("submitted") {
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !processes_under(tmp.path()).contains("mlp_trainer.py") {
        assert!(Instant::now() < deadline, "no trainer ran: {seen:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let interrupt = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupt.success());
    let rest: Vec<String> = progress.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(!status.success(), "an interrupted demo fails: {rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("interrupted")),
        "it says so: {rest:?}"
    );
    let leftover = processes_under(tmp.path());
    assert!(leftover.is_empty(), "processes left: {leftover}");
    let files: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(files.is_empty(), "temp dir left: {files:?}");
}
