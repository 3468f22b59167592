//! Shared helpers of the end-to-end tests: start the real `adaptsched serve` on a temp data
//! dir, run the real CLI against it, and poll conditions with deadlines.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_adaptsched");

/// A running `adaptsched serve`; killed (SIGKILL) when dropped so a failing test leaves no
/// server behind.
pub struct Server {
    pub child: Child,
    pub data_dir: PathBuf,
    pub url: String,
}

impl Server {
    /// Starts the server on a fresh port of the loopback, and waits until it answers
    /// `/v1/health` at the URL it wrote into its data dir.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        std::fs::create_dir_all(data_dir).unwrap();
        // A URL file left by an earlier (killed) server must not be mistaken for this one's.
        let _ = std::fs::remove_file(data_dir.join("server.url"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("serve.log"))
            .unwrap();
        let mut args = vec![
            "serve",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--cpu-slots",
            "4",
            "--interval",
            "1",
            "--grace-period",
            "3",
        ];
        args.extend_from_slice(extra);
        let child = Command::new(BIN)
            .args(&args)
            .env_remove("ADAPTSCHED_URL")
            .env_remove("ADAPTSCHED_TOKEN")
            .env_remove("ADAPTSCHED_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("adaptsched serve starts");
        let mut server = Server {
            child,
            data_dir: data_dir.to_path_buf(),
            url: String::new(),
        };
        let url = wait_for(
            "the server to answer /v1/health",
            Duration::from_secs(30),
            || {
                if let Ok(Some(status)) = server.child.try_wait() {
                    panic!("adaptsched serve exited with {status}:\n{}", server.log());
                }
                let url = std::fs::read_to_string(data_dir.join("server.url")).ok()?;
                let url = url.trim().to_string();
                health(&url).then_some(url)
            },
        );
        server.url = url;
        server
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("serve.log")).unwrap_or_default()
    }

    /// SIGKILL, as a crash would: no shutdown code runs.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn health(url: &str) -> bool {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    agent
        .get(format!("{url}/v1/health"))
        .call()
        .is_ok_and(|r| r.status().is_success())
}

/// Runs the CLI with the data dir in the environment (as a user would after `export`).
pub fn cli(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("ADAPTSCHED_DATA_DIR", data_dir)
        .env_remove("ADAPTSCHED_URL")
        .env_remove("ADAPTSCHED_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("the CLI runs")
}

/// The CLI's stdout, asserting it succeeded.
pub fn cli_ok(data_dir: &Path, args: &[&str]) -> String {
    let out = cli(data_dir, args);
    assert!(
        out.status.success(),
        "adaptsched {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn cli_json(data_dir: &Path, args: &[&str]) -> serde_json::Value {
    let text = cli_ok(data_dir, args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("adaptsched {args:?}: {e}:\n{text}"))
}

/// `submit --json ... -- argv`, returning the id.
pub fn submit(data_dir: &Path, flags: &[&str], argv: &[&str]) -> u64 {
    let mut args = vec!["submit", "--json"];
    args.extend_from_slice(flags);
    args.push("--");
    args.extend_from_slice(argv);
    let reply = cli_json(data_dir, &args);
    reply["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no id in {reply}"))
}

/// `submit --json -f FILE` with `request` written to `<work>/<name>.json`; returns the id.
pub fn submit_file(data_dir: &Path, work: &Path, request: &serde_json::Value) -> u64 {
    let name = request["name"].as_str().expect("the request has a name");
    let file = work.join(format!("{name}.json"));
    std::fs::write(&file, request.to_string()).unwrap();
    let reply = cli_json(
        data_dir,
        &["submit", "--json", "-f", file.to_str().unwrap()],
    );
    reply["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no id in {reply}"))
}

/// The JSON lines (`{"event": ...}`) a job printed to its log.
pub fn log_events(data_dir: &Path, id: u64) -> Vec<serde_json::Value> {
    cli_ok(data_dir, &["logs", &id.to_string()])
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

pub fn show(data_dir: &Path, id: u64) -> serde_json::Value {
    cli_json(data_dir, &["show", &id.to_string(), "--json"])
}

pub fn state_of(job: &serde_json::Value) -> &str {
    job["state"].as_str().unwrap_or("?")
}

pub fn is_terminal(state: &str) -> bool {
    matches!(state, "succeeded" | "failed" | "cancelled")
}

/// Polls `probe` every 50 ms until it returns a value, panicking with `what` after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, probe: impl FnMut() -> Option<T>) -> T {
    wait_for_explained(what, limit, String::new, probe)
}

/// [`wait_for`], adding `explain()` (e.g. the jobs' states and the server log) to the panic.
pub fn wait_for_explained<T>(
    what: &str,
    limit: Duration,
    explain: impl FnOnce() -> String,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {limit:?} waiting for {what}\n{}",
                explain()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a failed wait should show: every job's row and the server's log.
pub fn explain(data_dir: &Path) -> String {
    let jobs = cli(data_dir, &["ls", "--all"]);
    let log = std::fs::read_to_string(data_dir.join("serve.log")).unwrap_or_default();
    format!(
        "jobs:\n{}{}\nserver log:\n{log}",
        String::from_utf8_lossy(&jobs.stdout),
        String::from_utf8_lossy(&jobs.stderr)
    )
}
