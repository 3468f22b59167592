//! Crash recovery: a restarted server stops every process a previous one left behind (recorded
//! or not) before it starts anything, and restarts jobs recorded `running`. Never twice.

mod common;

use adaptsched_server::procinfo;
use adaptsched_store::DurableJobId;
use common::*;
use serde_json::json;
use std::os::unix::process::CommandExt;
use std::time::Duration;

fn gone(pid: u32) -> bool {
    procinfo::stat(pid).is_none_or(|s| !s.is_live())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_left_by_a_crashed_server_is_stopped_then_restarted_once() {
    let dir = tempfile::tempdir().unwrap();
    let starts = dir.path().join("starts");
    let script = format!(
        "echo \"$ADAPTSCHED_RESTARTS $ADAPTSCHED_CHECKPOINT_DIR\" >> {}; exec sleep 60",
        starts.display()
    );
    let first = start(dir.path(), 1).await;
    let token = first.token.clone();
    let id = submit(&first, &token, json!({"command": command(&script)})).await;
    wait_job(&first, id, "running", state_is("running")).await;
    let old_pid = running_pid(&first, id).await;
    assert!(procinfo::group_alive(old_pid));
    first.abandon().await;
    assert!(
        procinfo::group_alive(old_pid),
        "a crash leaves the job running"
    );

    let second = start(dir.path(), 1).await;
    let detail = wait_job(&second, id, "restarted", |d| {
        d.summary.state == "running" && d.summary.restarts == 1
    })
    .await;
    let new_pid = running_pid(&second, id).await;
    assert_ne!(new_pid, old_pid);
    assert!(gone(old_pid), "the old process must be stopped");
    assert!(
        detail
            .events
            .iter()
            .any(|e| e.message.contains("server restarted")),
        "{:?}",
        detail.events
    );
    // Both attempts got the same checkpoint dir; the restart count tells them apart.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let text = std::fs::read_to_string(&starts).unwrap_or_default();
        if text.lines().count() >= 2 || tokio::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let checkpoint = second
        .data_dir
        .join("checkpoints")
        .join(id.to_string())
        .display()
        .to_string();
    assert_eq!(lines, format!("0 {checkpoint}\n1 {checkpoint}\n"));
    second.stop().await;
    assert!(gone(new_pid));
    assert_eq!(job_state_after_stop(dir.path(), id), "queued");
}

fn job_state_after_stop(dir: &std::path::Path, id: u64) -> String {
    use adaptsched_store::Store;
    let store = adaptsched_store::SqliteStore::open(dir.join("adaptsched.db")).unwrap();
    store
        .get_job(DurableJobId(id))
        .unwrap()
        .state
        .as_str()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrecorded_job_process_of_this_data_dir_is_stopped_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let canonical = dir.path().canonicalize().unwrap();
    // What a crash between spawning a job and recording its pid leaves behind.
    let mut orphan = std::process::Command::new("sleep")
        .arg("60")
        .env("ADAPTSCHED_DATA_DIR", &canonical)
        .env("ADAPTSCHED_JOB_ID", "77")
        .process_group(0)
        .spawn()
        .unwrap();
    // An unrelated process with another data dir is left alone.
    let mut bystander = std::process::Command::new("sleep")
        .arg("60")
        .env("ADAPTSCHED_DATA_DIR", "/somewhere/else")
        .env("ADAPTSCHED_JOB_ID", "77")
        .process_group(0)
        .spawn()
        .unwrap();
    let plane = start(dir.path(), 1).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !plane.state.control.status().ready {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = orphan.wait().unwrap();
    assert!(!status.success(), "{status:?}");
    assert!(!gone(bystander.id()));
    bystander.kill().unwrap();
    bystander.wait().unwrap();
    plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path(), 1).await;
    let error = match adaptsched_server::ControlPlane::start(&args(dir.path(), 1), "http://x").await
    {
        Ok(_) => panic!("a second server started on the same data dir"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("in use by another adaptsched serve"),
        "{error}"
    );
    assert!(error.contains(&std::process::id().to_string()), "{error}");
    first.stop().await;
    // Once the first is gone the data dir is free again.
    start(dir.path(), 1).await.stop().await;
}
