//! `adaptsched demo --json` end to end: the real binary starts its own server on CPU slots,
//! runs the embedded example trainers (real gradient computation in Python) and prints a
//! summary; every job must have finished, learned, and the cluster must have been used.

use std::process::{Command, Stdio};
use std::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_adaptsched");

#[test]
fn demo_runs_real_jobs_to_completion_and_summarizes_them() {
    let started = Instant::now();
    // From a directory with nothing in it: the trainer and client come from the binary.
    let cwd = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["demo", "--json"])
        .current_dir(cwd.path())
        .env_remove("ADAPTSCHED_URL")
        .env_remove("ADAPTSCHED_TOKEN")
        .env_remove("ADAPTSCHED_DATA_DIR")
        .stdin(Stdio::null())
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
    // Its processes are gone: no trainer of the demo's temp dir is left running.
    let leftover = Command::new("pgrep")
        .args(["-f", "adaptsched-demo-.*/examples/mlp_trainer.py"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    assert!(leftover.is_empty(), "trainer processes left: {leftover}");
}
