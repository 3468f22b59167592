//! `adaptsched bench serve`: how fast the live control plane answers. It starts a real
//! `adaptsched serve` (this same binary) on a temp data dir and times, from a client on the
//! same machine: submit to process start, submit throughput and latency while the store fills
//! up to `--jobs` queued jobs, then submit and list latency with them all in the store.

use crate::client::connect::{ConnectArgs, Endpoint, resolve};
use crate::client::{all_pages, connect::Client, is_terminal};
use adaptsched_api::{JobRequest, JobSummary, SubmitResponse};
use adaptsched_core::metrics::percentile;
use anyhow::{Context, Result, bail};
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct ServeBenchArgs {
    /// Queued jobs to put in the store before timing submit and list.
    #[arg(long, default_value_t = 10_000)]
    jobs: usize,
    /// Client threads submitting while the store fills.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Timed calls per measurement once the store is full.
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// Jobs timed from submit to process start (one at a time, on an idle server).
    #[arg(long, default_value_t = 20)]
    launches: usize,
    /// Scheduling policy of the server under test.
    #[arg(long, default_value = "fifo")]
    policy: String,
}

/// One timed measurement: latencies of its calls in milliseconds, and how long all took.
struct Row {
    what: String,
    ms: Vec<f64>,
    wall_s: f64,
}

/// The server under test; SIGKILLed on drop so an error leaves nothing running.
struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(args: ServeBenchArgs) -> Result<()> {
    if args.jobs == 0 || args.clients == 0 || args.samples == 0 || args.launches == 0 {
        bail!("--jobs, --clients, --samples and --launches must be ≥ 1");
    }
    let temp = tempfile::tempdir().context("cannot create a temp dir")?;
    let data = temp.path().join("data");
    let (_server, endpoint) = start_server(&data, &args.policy)?;
    let client = Client::new(endpoint.clone());
    let mut rows = Vec::new();

    rows.push(launch_latency(&client, temp.path(), args.launches)?);

    // One slot, held by a job that never ends: everything submitted after it stays queued,
    // so the store fills without thousands of processes competing with the server for CPU.
    // It watches its parent, the server, and exits once that is gone, so it never outlives
    // the benchmark even when the benchmark stops half-way.
    let blocker = submit(
        &client,
        &[
            "sh",
            "-c",
            "while kill -0 $PPID 2>/dev/null; do sleep 1; done",
        ],
    )?;
    wait(Duration::from_secs(30), "the blocker job to start", || {
        Ok(job(&client, blocker)?.state == "running")
    })?;

    rows.push(fill(&endpoint, args.jobs, args.clients)?);
    let queued = format!("{} queued", args.jobs);
    rows.push(timed(format!("submit ({queued})"), args.samples, || {
        submit(&client, &["true"]).map(drop)
    })?);
    rows.push(timed(
        format!("list limit=100 ({queued})"),
        args.samples,
        || {
            client
                .get::<Vec<JobSummary>>("/jobs", &[("limit", "100".to_string())])
                .map(drop)
        },
    )?);
    let full_list = args.samples.div_ceil(10);
    rows.push(timed(
        format!("list state=queued, every page ({queued})"),
        full_list,
        || all_pages(&client, &[("state", "queued".to_string())], None).map(drop),
    )?);
    client.post::<(), serde_json::Value>(&format!("/jobs/{blocker}/cancel"), None)?;
    wait(Duration::from_secs(30), "the blocker job to stop", || {
        Ok(is_terminal(&job(&client, blocker)?.state))
    })?;
    print!("{}", table(&rows));
    Ok(())
}

fn start_server(data: &Path, policy: &str) -> Result<(ServerProcess, Endpoint)> {
    std::fs::create_dir_all(data)?;
    let log = std::fs::File::create(data.join("serve.log"))?;
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let child = Command::new(exe)
        .args(["serve", "--listen", "127.0.0.1:0", "--cpu-slots", "1"])
        .args([
            "--interval",
            "60",
            "--grace-period",
            "1",
            "--policy",
            policy,
        ])
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start adaptsched serve")?;
    let mut server = ServerProcess(child);
    let args = ConnectArgs {
        data_dir: Some(data.to_path_buf()),
        url: None,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = server.0.try_wait()? {
            let log = std::fs::read_to_string(data.join("serve.log")).unwrap_or_default();
            bail!("adaptsched serve exited with {status}: {log}");
        }
        if let Ok(endpoint) = resolve(&args, |_| None, data) {
            let client = Client::new(endpoint.clone());
            if client.get::<serde_json::Value>("/cluster", &[]).is_ok() {
                return Ok((server, endpoint));
            }
        }
        if Instant::now() > deadline {
            bail!("adaptsched serve did not answer within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn submit(client: &Client, argv: &[&str]) -> Result<u64> {
    let request = JobRequest {
        command: argv.iter().map(|s| s.to_string()).collect(),
        working_dir: Some("/".into()),
        ..JobRequest::default()
    };
    Ok(client
        .post::<_, SubmitResponse>("/jobs", Some(&request))?
        .id)
}

fn job(client: &Client, id: u64) -> Result<JobSummary> {
    client.get(&format!("/jobs/{id}"), &[])
}

/// Polls `done` every millisecond: the benchmark measures latencies of a few milliseconds.
fn wait(limit: Duration, what: &str, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !done()? {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn epoch_seconds() -> f64 {
    crate::client::format::now()
}

/// Submit to process start: each job writes its own clock as its first act; the client's
/// clock before the POST is the other end (same machine, same clock).
fn launch_latency(client: &Client, dir: &Path, launches: usize) -> Result<Row> {
    let mut ms = Vec::with_capacity(launches);
    let started = Instant::now();
    for n in 0..launches {
        let stamp = dir.join(format!("start-{n}"));
        let script = format!("date +%s.%N > {}", stamp.display());
        let submitted = epoch_seconds();
        let id = submit(client, &["sh", "-c", &script])?;
        wait(Duration::from_secs(30), "a job to start", || {
            Ok(std::fs::read_to_string(&stamp).is_ok_and(|t| t.ends_with('\n')))
        })?;
        let began: f64 = std::fs::read_to_string(&stamp)?.trim().parse()?;
        ms.push((began - submitted) * 1e3);
        // The next job must find the slot free again.
        wait(Duration::from_secs(30), "a job to finish", || {
            Ok(is_terminal(&job(client, id)?.state))
        })?;
    }
    Ok(Row {
        what: "submit → process start (idle)".into(),
        ms,
        wall_s: started.elapsed().as_secs_f64(),
    })
}

/// Fills the store with `jobs` queued jobs from `clients` threads, timing every submit.
fn fill(endpoint: &Endpoint, jobs: usize, clients: usize) -> Result<Row> {
    let started = Instant::now();
    let per_client: Vec<usize> = (0..clients)
        .map(|c| jobs / clients + usize::from(c < jobs % clients))
        .collect();
    let results: Vec<Result<Vec<f64>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = per_client
            .iter()
            .map(|&count| {
                scope.spawn(move || {
                    let client = Client::new(endpoint.clone());
                    let mut ms = Vec::with_capacity(count);
                    for _ in 0..count {
                        let t = Instant::now();
                        submit(&client, &["true"])?;
                        ms.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    Ok(ms)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    let mut ms = Vec::with_capacity(jobs);
    for result in results {
        ms.extend(result?);
    }
    Ok(Row {
        what: format!("submit, {clients} clients (0 → {jobs} queued)"),
        ms,
        wall_s: started.elapsed().as_secs_f64(),
    })
}

fn timed(what: String, samples: usize, mut call: impl FnMut() -> Result<()>) -> Result<Row> {
    let started = Instant::now();
    let mut ms = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        call()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Row {
        what,
        ms,
        wall_s: started.elapsed().as_secs_f64(),
    })
}

fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<40} {:>6} {:>9} {:>9} {:>9} {:>9}",
        "measurement", "calls", "p50 ms", "p99 ms", "max ms", "calls/s"
    );
    for row in rows {
        let mut ms = row.ms.clone();
        ms.sort_by(f64::total_cmp);
        let _ = writeln!(
            out,
            "{:<40} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.1}",
            row.what,
            ms.len(),
            percentile(&ms, 50.0),
            percentile(&ms, 99.0),
            ms.last().copied().unwrap_or(0.0),
            ms.len() as f64 / row.wall_s.max(1e-9)
        );
    }
    out
}
