//! Crash safety of the live control plane: `adaptsched serve` is SIGKILLed while jobs run
//! and submissions keep arriving, then restarted on the same data dir. No accepted job may be
//! lost, none may run twice at once, and the jobs that were running finish with the results
//! they would have had uninterrupted (re-adopted, or restarted from their checkpoint).

mod common;

use common::{
    Server, cli, cli_json, explain, is_terminal, show, state_of, submit, wait_for_explained,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A job that checkpoints every step into $ADAPTSCHED_CHECKPOINT_DIR and resumes from it. It
/// holds an exclusive flock on a per-job lock file while it runs; a second copy of the same
/// job that cannot get the lock records `overlap` and gives up. Every start and end goes to a
/// shared journal opened with O_APPEND (one write per line, so lines never interleave).
const JOB_PY: &str = r#"
import fcntl, os, sys
work, steps = sys.argv[1], int(sys.argv[2])
job, pid = os.environ["ADAPTSCHED_JOB_ID"], os.getpid()
journal = os.open(os.path.join(work, "journal"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
def note(line):
    os.write(journal, (line + "\n").encode())
lock = open(os.path.join(work, "lock-" + job), "w")
try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    note(f"overlap {job} {pid}")
    sys.exit(75)
checkpoint = os.path.join(os.environ["ADAPTSCHED_CHECKPOINT_DIR"], "state")
step, acc = 0, 0
if os.path.exists(checkpoint):
    with open(checkpoint) as f:
        step, acc = map(int, f.read().split())
note(f"start {job} {pid} {step}")
while step < steps:
    for i in range(20000):
        acc = (acc * 31 + i + step) % 1000000007
    step += 1
    with open(checkpoint + ".tmp", "w") as f:
        f.write(f"{step} {acc}")
    os.replace(checkpoint + ".tmp", checkpoint)
with open(os.path.join(work, "result-" + job), "w") as f:
    f.write(str(acc))
note(f"end {job} {pid}")
"#;

/// What the job computes, done here independently.
fn expected(steps: u64) -> u64 {
    let mut acc = 0u64;
    for step in 0..steps {
        for i in 0..20_000 {
            acc = (acc * 31 + i + step) % 1_000_000_007;
        }
    }
    acc
}

/// A policy that keeps running jobs where they are: this test is about crash safety, not
/// about preemption (which, like a crash, restarts jobs and would blur what is measured).
const POLICY: &[&str] = &["--policy", "fifo"];

const LONG_STEPS: u64 = 250;
const SHORT_STEPS: u64 = 10;

fn checkpoint_step(data: &Path, id: u64) -> u64 {
    let path = data.join("checkpoints").join(id.to_string()).join("state");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_killed_server_loses_no_job_and_runs_none_twice() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let work = temp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let script = work.join("job.py");
    std::fs::write(&script, JOB_PY).unwrap();
    let (script_s, work_s) = (
        script.to_str().unwrap().to_string(),
        work.to_str().unwrap().to_string(),
    );
    let mut server = Server::start(&data, POLICY);

    let long: Vec<u64> = (0..3)
        .map(|n| {
            submit(
                &data,
                &["--name", &format!("long-{n}")],
                &["python3", &script_s, &work_s, &LONG_STEPS.to_string()],
            )
        })
        .collect();
    let steps_of: Arc<Mutex<BTreeMap<u64, u64>>> = Arc::new(Mutex::new(
        long.iter().map(|&id| (id, LONG_STEPS)).collect(),
    ));

    // A steady stream of small submissions that goes on through the crash; an id counts as
    // accepted once `submit` printed it.
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicUsize::new(0));
    let submitter = {
        let (data, stop, refused, steps_of) = (
            data.clone(),
            stop.clone(),
            refused.clone(),
            steps_of.clone(),
        );
        let (script_s, work_s) = (script_s.clone(), work_s.clone());
        std::thread::spawn(move || {
            let steps = SHORT_STEPS.to_string();
            while !stop.load(Ordering::SeqCst) {
                let out = cli(
                    &data,
                    &[
                        "submit", "--json", "--name", "short", "--", "python3", &script_s, &work_s,
                        &steps,
                    ],
                );
                let id = serde_json::from_slice::<Value>(&out.stdout)
                    .ok()
                    .and_then(|v| v["id"].as_u64());
                match id {
                    Some(id) if out.status.success() => {
                        steps_of.lock().unwrap().insert(id, SHORT_STEPS);
                    }
                    _ => {
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                }
                // Pace the stream so the four slots can keep up with it.
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };

    // Crash while the long jobs are mid-way (each has checkpointed) and short ones arrive.
    wait_for_explained(
        "the long jobs to checkpoint",
        Duration::from_secs(30),
        || explain(&data),
        || {
            long.iter()
                .all(|&id| checkpoint_step(&data, id) >= 20)
                .then_some(())
        },
    );
    let accepted_before = steps_of.lock().unwrap().len();
    wait_for_explained(
        "short submissions before the crash",
        Duration::from_secs(10),
        || explain(&data),
        || (steps_of.lock().unwrap().len() >= accepted_before + 2).then_some(()),
    );
    let running_at_crash: Vec<u64> = long
        .iter()
        .copied()
        .filter(|&id| state_of(&show(&data, id)) == "running")
        .collect();
    assert_eq!(
        running_at_crash,
        long,
        "the long jobs should run when the server is killed\n{}",
        explain(&data)
    );
    server.kill();
    let refused_at_crash = refused.load(Ordering::SeqCst);
    wait_for_explained(
        "a submission to be refused while the server is down",
        Duration::from_secs(10),
        || explain(&data),
        || (refused.load(Ordering::SeqCst) > refused_at_crash).then_some(()),
    );

    let server = Server::start(&data, POLICY);
    let accepted_at_restart = steps_of.lock().unwrap().len();
    wait_for_explained(
        "short submissions after the restart",
        Duration::from_secs(15),
        || explain(&data),
        || (steps_of.lock().unwrap().len() >= accepted_at_restart + 2).then_some(()),
    );
    stop.store(true, Ordering::SeqCst);
    submitter.join().unwrap();
    let steps_of = steps_of.lock().unwrap().clone();

    // Every accepted job is still known, and all of them finish.
    let jobs = wait_for_explained(
        "every accepted job to finish",
        Duration::from_secs(45),
        || explain(&data),
        || {
            let jobs: Vec<Value> = steps_of.keys().map(|&id| show(&data, id)).collect();
            jobs.iter()
                .all(|j| is_terminal(state_of(j)))
                .then_some(jobs)
        },
    );
    let listed: BTreeSet<u64> = cli_json(&data, &["ls", "--all", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_u64().unwrap())
        .collect();
    let lost: Vec<&u64> = steps_of.keys().filter(|id| !listed.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "accepted jobs missing after the restart: {lost:?}"
    );

    let journal = std::fs::read_to_string(work.join("journal")).unwrap();
    let overlaps: Vec<&str> = journal
        .lines()
        .filter(|l| l.starts_with("overlap"))
        .collect();
    assert!(
        overlaps.is_empty(),
        "jobs ran twice at once: {overlaps:?}\n{}",
        server.log()
    );
    for job in &jobs {
        let id = job["id"].as_u64().unwrap();
        assert_eq!(
            (state_of(job), job["exit_code"].as_i64()),
            ("succeeded", Some(0)),
            "job {id}: {job}"
        );
        let result = std::fs::read_to_string(work.join(format!("result-{id}"))).unwrap();
        assert_eq!(
            result,
            expected(steps_of[&id]).to_string(),
            "job {id} computed a wrong result"
        );
        // Re-adopted (one start) or restarted: then every later start resumed from the
        // checkpoint instead of starting over.
        let starts: Vec<u64> = journal
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[0] == "start" && f[1] == id.to_string()).then(|| f[3].parse().unwrap())
            })
            .collect();
        assert!(!starts.is_empty(), "job {id} never started");
        if running_at_crash.contains(&id) {
            eprintln!(
                "job {id}: runs began at steps {starts:?}, restarts {}",
                job["restarts"]
            );
        }
        if running_at_crash.contains(&id) && starts.len() > 1 {
            assert!(
                starts[1..].iter().all(|&s| s > 0),
                "job {id} started over: {starts:?}"
            );
            assert!(job["restarts"].as_u64().unwrap() >= 1, "job {id}: {job}");
        }
    }
    drop(server);
}
