//! `adaptsched demo`: the live control plane end to end on this machine, in about a minute.
//!
//! It writes the example trainer and the Python client (embedded in the binary, so it works
//! from any directory) into a temp dir, starts this binary's own `serve` there on CPU slots,
//! submits a handful of real training jobs at staggered times, shows their progress (state,
//! slots, batch, step, loss, the node's balance ratio p_i) and the scheduler's adaptations as
//! they happen, and ends with a summary: each job's JCT, restarts, the batch sizes it trained
//! with and its final loss, and the cluster's utilization. The server is shut down cleanly
//! (its jobs are done by then) and the temp dir removed.

use crate::client::connect::{Client, Endpoint};
use crate::client::{batch_sizes, is_terminal};
use adaptsched_api::{BatchSpec, JobDetail, JobRequest, NodeView, SubmitResponse, data_dir};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Set by the first Ctrl-C.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The trainer and the client package, written into the demo's temp dir.
const FILES: [(&str, &str); 8] = [
    (
        "examples/mlp_trainer.py",
        include_str!("../../../examples/mlp_trainer.py"),
    ),
    (
        "python/adaptsched/__init__.py",
        include_str!("../../../python/adaptsched/__init__.py"),
    ),
    (
        "python/adaptsched/checkpoint.py",
        include_str!("../../../python/adaptsched/checkpoint.py"),
    ),
    (
        "python/adaptsched/env.py",
        include_str!("../../../python/adaptsched/env.py"),
    ),
    (
        "python/adaptsched/gns.py",
        include_str!("../../../python/adaptsched/gns.py"),
    ),
    (
        "python/adaptsched/lifecycle.py",
        include_str!("../../../python/adaptsched/lifecycle.py"),
    ),
    (
        "python/adaptsched/reporter.py",
        include_str!("../../../python/adaptsched/reporter.py"),
    ),
    (
        "python/adaptsched/torch.py",
        include_str!("../../../python/adaptsched/torch.py"),
    ),
];

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Print the final summary as JSON on stdout (progress goes to stderr).
    #[arg(long)]
    json: bool,
    /// CPU slots the demo server offers [default: the machine's cores, at least 4]
    #[arg(long, value_name = "N")]
    slots: Option<u32>,
    /// Scheduling policy of the demo server [default: the server's default, adaptive]
    #[arg(long)]
    policy: Option<String>,
    /// Multiply every job's training length by this (e.g. 0.5 for a quicker run).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Keep the temp dir (data dir, logs, checkpoints) and print where it is.
    #[arg(long)]
    keep: bool,
}

/// One demo job: when it is submitted and what it trains.
struct DemoJob {
    name: &'static str,
    at_s: f64,
    min: u32,
    max: u32,
    initial: u32,
    max_batch: u32,
    dataset: u32,
    epochs: f64,
    seed: u32,
}

/// Staggered arrivals: the first job has the node to itself and grows, later arrivals make
/// it shrink, and the ones still running grow again as others finish.
const JOBS: [DemoJob; 5] = [
    DemoJob {
        name: "mlp-a",
        at_s: 0.0,
        min: 1,
        max: 4,
        initial: 64,
        max_batch: 1024,
        dataset: 4096,
        epochs: 12.0,
        seed: 1,
    },
    DemoJob {
        name: "mlp-b",
        at_s: 4.0,
        min: 1,
        max: 4,
        initial: 32,
        max_batch: 512,
        dataset: 2048,
        epochs: 14.0,
        seed: 2,
    },
    DemoJob {
        name: "mlp-c",
        at_s: 10.0,
        min: 1,
        max: 2,
        initial: 64,
        max_batch: 1024,
        dataset: 4096,
        epochs: 8.0,
        seed: 3,
    },
    DemoJob {
        name: "mlp-d",
        at_s: 16.0,
        min: 1,
        max: 4,
        initial: 128,
        max_batch: 2048,
        dataset: 4096,
        epochs: 9.0,
        seed: 4,
    },
    DemoJob {
        name: "mlp-e",
        at_s: 22.0,
        min: 1,
        max: 1,
        initial: 32,
        max_batch: 256,
        dataset: 2048,
        epochs: 8.0,
        seed: 5,
    },
];

/// The whole run must end within this (the jobs take about a minute).
const DEADLINE: Duration = Duration::from_secs(170);

/// `adaptsched demo --json`.
#[derive(Debug, Serialize)]
pub struct DemoSummary {
    pub jobs: Vec<JobOutcome>,
    /// Slot-seconds allocated ÷ slot-seconds available, from the first submission to the
    /// last completion (CPU slots stand in for GPUs here).
    pub gpu_utilization: f64,
    pub slots: u32,
    pub policy: String,
    pub wall_s: f64,
}

#[derive(Debug, Serialize)]
pub struct JobOutcome {
    pub id: u64,
    pub name: String,
    pub state: String,
    pub jct_s: f64,
    pub restarts: u32,
    /// Global batch sizes it trained with, in order.
    pub batch_sizes: Vec<u32>,
    pub first_loss: Option<f64>,
    pub final_loss: Option<f64>,
    /// Adaptation events (resize, rebatch, preempt) with their reasons.
    pub adaptations: Vec<String>,
}

/// The demo server; on drop it is shut down (SIGTERM: it stops its jobs cleanly), SIGKILLed
/// if it does not exit in time.
struct DemoServer {
    child: Child,
}

impl DemoServer {
    fn shutdown(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for DemoServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Where progress goes: stdout, or stderr under `--json`.
struct Out {
    json: bool,
    tty: bool,
}

impl Out {
    fn line(&self, text: &str) {
        if self.json {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }

    fn frame(&self, text: &str) {
        // Redraw in place on a terminal: home, clear, frame.
        let framed = format!("\x1b[H\x1b[2J{text}");
        if self.json {
            let _ = std::io::stderr().write_all(framed.as_bytes());
        } else {
            print!("{framed}");
            let _ = std::io::stdout().flush();
        }
    }
}

pub fn run(args: DemoArgs) -> Result<()> {
    if !(args.scale > 0.0 && args.scale.is_finite()) {
        bail!("invalid --scale {}: must be positive", args.scale);
    }
    let out = Out {
        json: args.json,
        tty: if args.json {
            std::io::stderr().is_terminal()
        } else {
            std::io::stdout().is_terminal()
        },
    };
    // Ctrl-C ends the demo through its normal path (server stopped, temp dir removed); the
    // server, in the same process group, gets the signal too and stops its jobs. A second
    // Ctrl-C exits at once.
    ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    })
    .context("installing the Ctrl-C handler")?;
    let dir = tempfile::Builder::new()
        .prefix("adaptsched-demo-")
        .tempdir()
        .context("creating the demo's temp dir")?;
    let root = dir.path().to_path_buf();
    for (path, text) in FILES {
        let target = root.join(path);
        std::fs::create_dir_all(target.parent().unwrap_or(&root))?;
        std::fs::write(&target, text).with_context(|| format!("writing {}", target.display()))?;
    }
    let slots = args.slots.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map_or(4, |n| n.get() as u32)
            .clamp(4, 16)
    });
    let data = root.join("data");
    let mut server = start_server(&data, slots, args.policy.as_deref())?;
    let client = connect(&data, &mut server)?;
    let summary = drive(&client, &root, &data, slots, args.scale, &out);
    server.shutdown();
    drop(server);
    if args.keep {
        let kept = dir.keep();
        out.line(&format!("kept the demo dir: {}", kept.display()));
    }
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted: the demo server and its jobs were stopped and the temp dir removed");
    }
    let summary = summary?;
    if args.json {
        crate::client::print_json(&summary)?;
    } else {
        print!("{}", summary_table(&summary));
    }
    Ok(())
}

fn start_server(data: &Path, slots: u32, policy: Option<&str>) -> Result<DemoServer> {
    std::fs::create_dir_all(data)?;
    let exe = std::env::current_exe().context("finding the adaptsched binary")?;
    let log = std::fs::File::create(data.join("serve.log"))?;
    let mut command = Command::new(exe);
    command
        .arg("serve")
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", "127.0.0.1:0", "--interval", "1"])
        .args(["--cpu-slots", &slots.to_string(), "--grace-period", "10"])
        .args(["--telemetry-interval", "1"]);
    if let Some(policy) = policy {
        command.args(["--policy", policy]);
    }
    let child = command
        .env_remove(adaptsched_api::env::URL)
        .env_remove(adaptsched_api::env::TOKEN)
        .env_remove(adaptsched_api::env::DATA_DIR)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting `adaptsched serve`")?;
    Ok(DemoServer { child })
}

/// Waits for the server's URL file and health check; returns a client with the admin token.
fn connect(data: &Path, server: &mut DemoServer) -> Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            let log = std::fs::read_to_string(data.join("serve.log")).unwrap_or_default();
            bail!("the demo server exited ({status}):\n{log}");
        }
        let url = std::fs::read_to_string(data.join(data_dir::URL_FILE)).unwrap_or_default();
        let token = std::fs::read_to_string(data.join(data_dir::TOKEN_FILE)).unwrap_or_default();
        if !url.trim().is_empty() && !token.trim().is_empty() {
            let client = Client::new(Endpoint {
                url: url.trim().to_string(),
                url_from: "the demo server".to_string(),
                token: token.trim().to_string(),
                token_from: "the demo server".to_string(),
            });
            if client.get::<serde_json::Value>("/health", &[]).is_ok() {
                return Ok(client);
            }
        }
        if Instant::now() > deadline {
            bail!("the demo server did not come up within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn request(job: &DemoJob, root: &Path, scale: f64) -> JobRequest {
    let script = root.join("examples/mlp_trainer.py");
    let command = vec![
        "python3".to_string(),
        script.display().to_string(),
        "--dataset-size".to_string(),
        job.dataset.to_string(),
        "--epochs".to_string(),
        format!("{}", job.epochs * scale),
        "--seed".to_string(),
        job.seed.to_string(),
        "--batch-size".to_string(),
        job.initial.to_string(),
        "--log-every".to_string(),
        "10".to_string(),
    ];
    JobRequest {
        name: Some(job.name.to_string()),
        command,
        working_dir: Some(root.display().to_string()),
        env: BTreeMap::new(),
        min_gpus: Some(job.min),
        max_gpus: Some(job.max),
        cpus: None,
        memory_gb: None,
        priority: None,
        max_retries: Some(1),
        batch: Some(BatchSpec {
            initial: job.initial,
            max: job.max_batch,
            min_local: Some(8),
            max_local: Some(job.max_batch.min(512)),
        }),
    }
}

/// Submits the jobs on their schedule and shows progress until all have finished.
fn drive(
    client: &Client,
    root: &Path,
    data: &Path,
    slots: u32,
    scale: f64,
    out: &Out,
) -> Result<DemoSummary> {
    let cluster: serde_json::Value = client.get("/cluster", &[])?;
    let policy = cluster["policy"].as_str().unwrap_or("?").to_string();
    let url = std::fs::read_to_string(data.join(data_dir::URL_FILE)).unwrap_or_default();
    out.line(&format!(
        "adaptsched demo: server at {} (API {}/v1, token in {}), policy {policy}, {slots} CPU slots",
        url.trim(),
        url.trim(),
        data.join(data_dir::TOKEN_FILE).display()
    ));
    out.line(&format!(
        "submitting {} example trainers over {:.0} s; the scheduler resizes and re-batches them as load changes",
        JOBS.len(),
        JOBS.iter().map(|j| j.at_s).fold(0.0, f64::max)
    ));
    let started = Instant::now();
    let mut ids: Vec<(usize, u64)> = Vec::new();
    let mut seen_events: BTreeMap<u64, usize> = BTreeMap::new();
    let mut event_lines: Vec<String> = Vec::new();
    let mut last_plain = Instant::now() - Duration::from_secs(10);
    loop {
        let elapsed = started.elapsed().as_secs_f64();
        for (index, job) in JOBS.iter().enumerate() {
            if job.at_s <= elapsed && !ids.iter().any(|(i, _)| *i == index) {
                let reply: SubmitResponse =
                    client.post("/jobs", Some(&request(job, root, scale)))?;
                ids.push((index, reply.id));
                event_lines.push(format!(
                    "{elapsed:5.1}s  submitted {} as job {}",
                    job.name, reply.id
                ));
                if !out.tty {
                    out.line(event_lines.last().map_or("", String::as_str));
                }
            }
        }
        let mut details = Vec::new();
        for (index, id) in &ids {
            let detail: JobDetail = client.get(&format!("/jobs/{id}"), &[])?;
            let seen = seen_events.entry(*id).or_insert(0);
            for event in detail.events.iter().skip(*seen) {
                if matches!(event.kind.as_str(), "resize" | "rebatch" | "preempt") {
                    let line = format!(
                        "{elapsed:5.1}s  {} (job {id}): {}",
                        JOBS[*index].name, event.message
                    );
                    if !out.tty {
                        out.line(&line);
                    }
                    event_lines.push(line);
                }
            }
            *seen = detail.events.len();
            details.push((*index, detail));
        }
        let nodes: Vec<NodeView> = client.get("/nodes", &[]).unwrap_or_default();
        let all_done =
            ids.len() == JOBS.len() && details.iter().all(|(_, d)| is_terminal(&d.summary.state));
        if out.tty {
            out.frame(&progress_frame(
                elapsed,
                &details,
                &nodes,
                &event_lines,
                &url,
            ));
        } else if last_plain.elapsed() >= Duration::from_secs(5) || all_done {
            last_plain = Instant::now();
            out.line(&progress_line(elapsed, &details, &nodes));
        }
        if all_done || INTERRUPTED.load(Ordering::SeqCst) {
            break;
        }
        if started.elapsed() > DEADLINE {
            bail!(
                "the demo jobs did not finish within {} s (server log: {})",
                DEADLINE.as_secs(),
                data.join("serve.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let details: Vec<JobDetail> = ids
        .iter()
        .map(|(_, id)| client.get(&format!("/jobs/{id}"), &[]))
        .collect::<Result<_>>()?;
    Ok(summarize(details, data, slots, policy, started.elapsed()))
}

fn allocated(detail: &JobDetail) -> u32 {
    detail.allocation.iter().map(|p| p.gpus).sum()
}

/// Balance ratio of each node, `p_i = (x_i/Σx)/(y_i/Σy)` with x = devices allocated and
/// y = capacity (ARCHITECTURE §3); 1 is proportional, `None` while nothing runs.
fn balance(nodes: &[NodeView]) -> Vec<(String, Option<f64>)> {
    let x: f64 = nodes.iter().map(|n| f64::from(n.gpus_allocated)).sum();
    let y: f64 = nodes.iter().map(|n| f64::from(n.gpus)).sum();
    nodes
        .iter()
        .map(|n| {
            let p = (x > 0.0 && y > 0.0 && n.gpus > 0)
                .then(|| (f64::from(n.gpus_allocated) / x) / (f64::from(n.gpus) / y));
            (n.name.clone(), p)
        })
        .collect()
}

fn balance_text(nodes: &[NodeView]) -> String {
    balance(nodes)
        .iter()
        .map(|(name, p)| match p {
            Some(p) => format!(
                "{name} {}/{} p={p:.2}",
                used(nodes, name),
                capacity(nodes, name)
            ),
            None => format!("{name} idle"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn used(nodes: &[NodeView], name: &str) -> u32 {
    nodes
        .iter()
        .find(|n| n.name == name)
        .map_or(0, |n| n.gpus_allocated)
}

fn capacity(nodes: &[NodeView], name: &str) -> u32 {
    nodes.iter().find(|n| n.name == name).map_or(0, |n| n.gpus)
}

fn progress_frame(
    elapsed: f64,
    details: &[(usize, JobDetail)],
    nodes: &[NodeView],
    events: &[String],
    url: &str,
) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "adaptsched demo  {elapsed:5.1} s   API {}/v1   node: {}\n",
        url.trim(),
        balance_text(nodes)
    );
    let _ = writeln!(
        text,
        "{:<4} {:<7} {:<10} {:>5} {:>6} {:>7} {:>8} {:>8}",
        "id", "name", "state", "slots", "batch", "step", "loss", "restarts"
    );
    for (index, d) in details {
        let report = d.last_report;
        let _ = writeln!(
            text,
            "{:<4} {:<7} {:<10} {:>5} {:>6} {:>7} {:>8} {:>8}",
            d.summary.id,
            JOBS[*index].name,
            d.summary.state,
            allocated(d),
            d.batch
                .map_or("-".to_string(), |b| b.global_batch_size.to_string()),
            report.map_or("-".to_string(), |r| r.step.to_string()),
            report.map_or("-".to_string(), |r| format!("{:.4}", r.loss)),
            d.summary.restarts
        );
    }
    let _ = writeln!(text, "\nrecent:");
    for line in events.iter().rev().take(12).rev() {
        let _ = writeln!(text, "  {line}");
    }
    text
}

fn progress_line(elapsed: f64, details: &[(usize, JobDetail)], nodes: &[NodeView]) -> String {
    let jobs: Vec<String> = details
        .iter()
        .map(|(index, d)| {
            let loss = d.last_report.map_or(String::new(), |r| {
                format!(" step {} loss {:.3}", r.step, r.loss)
            });
            let batch = d
                .batch
                .map_or(String::new(), |b| format!(" batch {}", b.global_batch_size));
            format!(
                "{} {} {}slot{batch}{loss}",
                JOBS[*index].name,
                d.summary.state,
                allocated(d)
            )
        })
        .collect();
    format!(
        "{elapsed:5.1}s  [{}]  {}",
        balance_text(nodes),
        jobs.join(" | ")
    )
}

/// Losses from the trainer's stdout (`{"event": "step", "loss": ...}` lines): the first.
fn first_loss(data: &Path, id: u64) -> Option<f64> {
    let log = std::fs::read_to_string(
        data.join(data_dir::LOGS_DIR)
            .join(id.to_string())
            .join("stdout.log"),
    )
    .ok()?;
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|v| v["event"] == "step")
        .and_then(|v| v["loss"].as_f64())
}

fn summarize(
    details: Vec<JobDetail>,
    data: &Path,
    slots: u32,
    policy: String,
    wall: Duration,
) -> DemoSummary {
    let start = details
        .iter()
        .map(|d| d.summary.submitted_at)
        .fold(f64::INFINITY, f64::min);
    let end = details
        .iter()
        .map(|d| d.summary.updated_at)
        .fold(f64::NEG_INFINITY, f64::max);
    let mut held = 0.0;
    for d in &details {
        let history = &d.allocation_history;
        for (i, change) in history.iter().enumerate() {
            let until = history.get(i + 1).map_or(end, |next| next.at);
            let devices: u32 = change.allocation.iter().map(|p| p.gpus).sum();
            held += f64::from(devices) * (until - change.at).max(0.0);
        }
    }
    let span = (end - start).max(1e-9);
    let jobs = details
        .iter()
        .map(|d| JobOutcome {
            id: d.summary.id,
            name: d.summary.name.clone(),
            state: d.summary.state.clone(),
            jct_s: d.summary.updated_at - d.summary.submitted_at,
            restarts: d.summary.restarts,
            batch_sizes: batch_sizes(d),
            first_loss: first_loss(data, d.summary.id),
            final_loss: d.last_report.map(|r| r.loss),
            adaptations: d
                .events
                .iter()
                .filter(|e| matches!(e.kind.as_str(), "resize" | "rebatch" | "preempt"))
                .map(|e| e.message.clone())
                .collect(),
        })
        .collect();
    DemoSummary {
        jobs,
        gpu_utilization: (held / (f64::from(slots) * span)).clamp(0.0, 1.0),
        slots,
        policy,
        wall_s: wall.as_secs_f64(),
    }
}

fn summary_table(summary: &DemoSummary) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "\n{:<4} {:<7} {:<10} {:>7} {:>8} {:>10}  batch sizes",
        "id", "name", "state", "JCT s", "restarts", "final loss"
    );
    for job in &summary.jobs {
        let batches: Vec<String> = job.batch_sizes.iter().map(u32::to_string).collect();
        let _ = writeln!(
            text,
            "{:<4} {:<7} {:<10} {:>7.1} {:>8} {:>10}  {}",
            job.id,
            job.name,
            job.state,
            job.jct_s,
            job.restarts,
            job.final_loss
                .map_or("-".to_string(), |l| format!("{l:.4}")),
            batches.join(" → ")
        );
    }
    let mean = summary.jobs.iter().map(|j| j.jct_s).sum::<f64>() / summary.jobs.len().max(1) as f64;
    let _ = writeln!(
        text,
        "\nmean JCT {mean:.1} s; utilization of the {} CPU slots {:.0}%; policy {}; {:.0} s wall",
        summary.slots,
        summary.gpu_utilization * 100.0,
        summary.policy,
        summary.wall_s
    );
    let _ = writeln!(
        text,
        "adaptations: {}",
        summary
            .jobs
            .iter()
            .map(|j| j.adaptations.len())
            .sum::<usize>()
    );
    text
}
