//! End-to-end test of the live control plane on one machine: the real `adaptsched serve`
//! with four CPU slots, real Python jobs submitted through the real CLI, scheduled, logged,
//! finished (one fails on purpose), one cancelled, one rejected.

mod common;

use common::{
    Server, cli, cli_json, cli_ok, explain, is_terminal, show, state_of, submit, wait_for_explained,
};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The job programs. Each records the device slots it was given, waits for the test's `go`
/// file (so the test can see all of them running at once), then does real work.
const JOB_PY: &str = r#"
import os, sys, time
work, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
job = os.environ["ADAPTSCHED_JOB_ID"]
with open(os.path.join(work, "slots-" + job), "w") as f:
    f.write(os.environ.get("ADAPTSCHED_CPU_SLOTS", ""))
with open(os.path.join(work, "pid-" + job), "w") as f:
    f.write(str(os.getpid()))
if mode == "spin":
    # A long job: works until cancelled (bounded so a broken cancel cannot hang CI).
    deadline, x = time.time() + 60, 0
    while time.time() < deadline:
        x = (x * 31 + 7) % 1000003
    sys.exit(0)
gate_deadline = time.time() + 60  # a failed test never opens the gate: do not outlive it
while not os.path.exists(os.path.join(work, "go")):
    if time.time() > gate_deadline:
        sys.exit(124)
    time.sleep(0.02)
if mode == "primes":
    sieve = bytearray([1]) * n
    sieve[0:2] = b"\0\0"
    for i in range(2, int(n ** 0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytearray(len(range(i * i, n, i)))
    count = sum(sieve)
    with open(os.path.join(work, "primes.txt"), "w") as f:
        f.write(str(count))
    print(f"primes below {n}: {count}")
elif mode == "collatz":
    total = 0
    for start in range(1, n + 1):
        k = start
        while k != 1:
            k = k // 2 if k % 2 == 0 else 3 * k + 1
            total += 1
    with open(os.path.join(work, "collatz.txt"), "w") as f:
        f.write(str(total))
    print(f"collatz steps 1..{n}: {total}")
elif mode == "fail":
    checksum = sum(i * i for i in range(n)) % 1000003
    print(f"checksum {checksum} is wrong, giving up", file=sys.stderr)
    sys.exit(3)
"#;

fn primes_below(n: usize) -> usize {
    let mut sieve = vec![true; n];
    sieve[0] = false;
    sieve[1] = false;
    let mut i = 2;
    while i * i < n {
        if sieve[i] {
            (i * i..n).step_by(i).for_each(|k| sieve[k] = false);
        }
        i += 1;
    }
    sieve.iter().filter(|&&p| p).count()
}

fn collatz_steps(n: u64) -> u64 {
    (1..=n)
        .map(|mut k| {
            let mut steps = 0;
            while k != 1 {
                k = if k % 2 == 0 { k / 2 } else { 3 * k + 1 };
                steps += 1;
            }
            steps
        })
        .sum()
}

fn checksum(n: u64) -> u64 {
    (0..n).map(|i| i * i).sum::<u64>() % 1_000_003
}

fn allocated(job: &Value) -> u64 {
    job["allocation"]
        .as_array()
        .map(|parts| parts.iter().map(|p| p["gpus"].as_u64().unwrap()).sum())
        .unwrap_or(0)
}

fn slots_of(work: &Path, id: u64) -> Vec<String> {
    let text = std::fs::read_to_string(work.join(format!("slots-{id}"))).unwrap();
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn jobs_run_finish_fail_cancel_and_bad_submits_are_refused() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let work = temp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let script = work.join("job.py");
    std::fs::write(&script, JOB_PY).unwrap();
    let (script_s, work_s) = (script.to_str().unwrap(), work.to_str().unwrap());
    let policy = adaptsched_policies::DEFAULT_POLICY;
    let server = Server::start(&data, &["--policy", policy]);

    let nodes = cli_json(&data, &["nodes", "--json"]);
    let slots: u64 = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["gpus"].as_u64().unwrap())
        .sum();
    assert_eq!(slots, 4, "{nodes}");

    // Three jobs that fit the four slots together: 1 + 2 + 1. The second comes from a job
    // file whose name the --name flag overrides.
    let primes = submit(
        &data,
        &["--name", "primes"],
        &["python3", script_s, work_s, "primes", "300000"],
    );
    let job_file = work.join("collatz.toml");
    std::fs::write(
        &job_file,
        format!(
            "name = \"from-file\"\ncommand = [\"python3\", {script_s:?}, {work_s:?}, \"collatz\", \"30000\"]\nmin_gpus = 2\n[env]\nMODE = \"file\"\n"
        ),
    )
    .unwrap();
    let collatz = submit(
        &data,
        &["-f", job_file.to_str().unwrap(), "--name", "collatz"],
        &[],
    );
    let failing = submit(
        &data,
        &["--name", "failing", "--max-retries", "0"],
        &["python3", script_s, work_s, "fail", "100000"],
    );

    // All three are seen running at once, each with the slots it asked for, and the slots
    // handed to the processes are disjoint.
    let running = wait_for_explained(
        "three running jobs",
        Duration::from_secs(20),
        || explain(&data),
        || {
            let jobs: Vec<Value> = [primes, collatz, failing]
                .iter()
                .map(|&id| show(&data, id))
                .collect();
            jobs.iter()
                .all(|j| {
                    state_of(j) == "running"
                        && allocated(j) > 0
                        && work.join(format!("slots-{}", j["id"])).exists()
                })
                .then_some(jobs)
        },
    );
    assert_eq!(
        running.iter().map(allocated).collect::<Vec<_>>(),
        [1, 2, 1],
        "{running:?}"
    );
    assert_eq!(running[1]["name"], "collatz");
    assert_eq!(running[1]["request"]["env"]["MODE"], "file");
    let mut all_slots: Vec<String> = [primes, collatz, failing]
        .iter()
        .flat_map(|&id| slots_of(&work, id))
        .collect();
    assert_eq!(all_slots.len(), 4, "{all_slots:?}");
    all_slots.sort();
    all_slots.dedup();
    assert_eq!(all_slots.len(), 4, "two jobs were given the same slot");
    let frame = cli_ok(&data, &["top", "--once"]);
    assert!(frame.contains(&format!("policy {policy}")), "{frame}");
    assert!(frame.contains("GPUs 4/4 allocated"), "{frame}");
    let listed = cli_ok(&data, &["ls"]);
    assert_eq!(
        listed.lines().filter(|l| l.contains(" running ")).count(),
        3,
        "{listed}"
    );

    // A follower started while the job runs prints its output as it comes and exits by
    // itself once the job has ended.
    let follower = Command::new(common::BIN)
        .args(["logs", "-f", "--poll", "0.1", &primes.to_string()])
        .env("ADAPTSCHED_DATA_DIR", &data)
        .env_remove("ADAPTSCHED_URL")
        .env_remove("ADAPTSCHED_TOKEN")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::fs::write(work.join("go"), "").unwrap();
    let done = wait_for_explained(
        "the three jobs to finish",
        Duration::from_secs(30),
        || explain(&data),
        || {
            let jobs: Vec<Value> = [primes, collatz, failing]
                .iter()
                .map(|&id| show(&data, id))
                .collect();
            jobs.iter()
                .all(|j| is_terminal(state_of(j)))
                .then_some(jobs)
        },
    );
    let summary: Vec<(&str, Option<i64>)> = done
        .iter()
        .map(|j| (state_of(j), j["exit_code"].as_i64()))
        .collect();
    assert_eq!(
        summary,
        [
            ("succeeded", Some(0)),
            ("succeeded", Some(0)),
            ("failed", Some(3))
        ]
    );
    for job in &done {
        assert!(
            job["restarts"].is_u64() && job["events"].as_array().is_some_and(|e| !e.is_empty()),
            "{job}"
        );
        assert!(job["allocation"].is_array(), "{job}");
    }

    // Results and logs, checked against the same computations done here.
    let expected_primes = primes_below(300_000);
    assert_eq!(
        std::fs::read_to_string(work.join("primes.txt")).unwrap(),
        expected_primes.to_string()
    );
    assert_eq!(
        cli_ok(&data, &["logs", &primes.to_string()]),
        format!("primes below 300000: {expected_primes}\n")
    );
    let mut follower = follower;
    wait_for_explained(
        "`logs -f` to exit after the job ended",
        Duration::from_secs(10),
        || explain(&data),
        || follower.try_wait().unwrap(),
    );
    let followed = follower.wait_with_output().unwrap();
    assert!(followed.status.success());
    assert_eq!(
        String::from_utf8(followed.stdout).unwrap(),
        format!("primes below 300000: {expected_primes}\n")
    );
    let expected_collatz = collatz_steps(30_000);
    assert_eq!(
        std::fs::read_to_string(work.join("collatz.txt")).unwrap(),
        expected_collatz.to_string()
    );
    assert_eq!(
        cli_ok(&data, &["logs", "-f", &collatz.to_string()]),
        format!("collatz steps 1..30000: {expected_collatz}\n")
    );
    let stderr = cli_ok(&data, &["logs", "--stderr", &failing.to_string()]);
    assert_eq!(
        stderr,
        format!("checksum {} is wrong, giving up\n", checksum(100_000))
    );
    let human = cli_ok(&data, &["show", &failing.to_string()]);
    assert!(
        human.contains("state:       failed") && human.contains("exit code:   3"),
        "{human}"
    );

    // Finished jobs leave the default listing and stay in --all.
    let active = cli_json(&data, &["ls", "--json"]);
    assert_eq!(active.as_array().unwrap().len(), 0, "{active}");
    let all = cli_json(&data, &["ls", "--all", "--json"]);
    let ids: Vec<u64> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [primes, collatz, failing]);
    let failed = cli_json(&data, &["ls", "--state", "failed", "--json"]);
    assert_eq!(failed.as_array().unwrap().len(), 1, "{failed}");

    // Cancel a long job: its state says so and its process is gone.
    let long = submit(
        &data,
        &["--name", "long"],
        &["python3", script_s, work_s, "spin", "0"],
    );
    let pid_file = work.join(format!("pid-{long}"));
    wait_for_explained(
        "the long job to run",
        Duration::from_secs(20),
        || explain(&data),
        || (state_of(&show(&data, long)) == "running" && pid_file.exists()).then_some(()),
    );
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let said = cli_ok(&data, &["cancel", &long.to_string()]);
    assert!(said.contains(&format!("job {long}")), "{said}");
    wait_for_explained(
        "the long job to be cancelled",
        Duration::from_secs(15),
        || explain(&data),
        || (state_of(&show(&data, long)) == "cancelled").then_some(()),
    );
    wait_for_explained(
        "the long job's process to end",
        Duration::from_secs(10),
        || explain(&data),
        || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Gone, or a zombie its parent has not reaped yet: either way it no longer runs.
            (stat.is_empty() || stat.contains(") Z ")).then_some(())
        },
    );

    // Refusals: one line on stderr naming the field and the value; nothing was queued.
    let refused = cli(&data, &["submit", "--gpus", "99", "--", "true"]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(message.trim_end().lines().count(), 1, "{message}");
    assert!(
        message.contains("gpus") && message.contains("99"),
        "{message}"
    );
    let refused = cli(&data, &["submit", "--memory", "lots", "--", "true"]);
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && message.contains("--memory") && message.contains("lots"),
        "{message}"
    );
    let missing = cli(&data, &["show", "999999"]);
    assert!(!missing.status.success());
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr)
            .trim_end()
            .lines()
            .count(),
        1
    );
    let all = cli_json(&data, &["ls", "--all", "--json"]);
    assert_eq!(all.as_array().unwrap().len(), 4, "{all}");
    drop(server);
}
