//! Job commands: `submit`, `ls`, `show`, `logs`, `cancel`.

use super::connect::{Client, ConnectArgs};
use super::format::{age, now, or_dash, shell_words, table, utc};
use super::spec::{SubmitFlags, build_request, load_job_file};
use super::{STATES, is_terminal, parse_job_id, print_json};
use adaptsched_api::logs as log_api;
use adaptsched_api::{JobDetail, JobSummary, SubmitResponse, job_pages};
use anyhow::{Context, Result, bail};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Job file (.toml, .yaml, .yml or .json) with JobRequest fields; flags override it.
    #[arg(short = 'f', long = "file", value_name = "JOB_FILE")]
    file: Option<PathBuf>,
    /// Job name [default: the program's file name].
    #[arg(long)]
    name: Option<String>,
    /// GPUs (or CPU slots): MIN, or MIN:MAX for an elastic job [default: 1].
    #[arg(long, value_name = "MIN[:MAX]")]
    gpus: Option<String>,
    /// CPU cores per replica [default: 1].
    #[arg(long, value_name = "N")]
    cpus: Option<String>,
    /// Memory per replica: 512M, 4G, 2GiB (G = 10⁹ bytes, GiB = 2³⁰) [default: no limit].
    #[arg(long, value_name = "SIZE")]
    memory: Option<String>,
    /// Priority, -1000..=1000; higher runs first among otherwise equal jobs [default: 0].
    #[arg(long, value_name = "P", allow_hyphen_values = true)]
    priority: Option<String>,
    /// Retries of a failed run, with exponential backoff [default: 0].
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    max_retries: Option<String>,
    /// Working directory of the job [default: the current directory].
    #[arg(long, value_name = "DIR")]
    workdir: Option<PathBuf>,
    /// Environment variable for the job (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Print the server's reply (with `id`) as JSON.
    #[arg(long)]
    json: bool,
    /// The program and its arguments, exec'd directly (no shell), after `--`.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    command: Vec<String>,
}

pub fn submit(args: SubmitArgs) -> Result<()> {
    let file = args.file.as_deref().map(load_job_file).transpose()?;
    let flags = SubmitFlags {
        name: args.name,
        gpus: args.gpus,
        cpus: args.cpus,
        memory: args.memory,
        priority: args.priority,
        max_retries: args.max_retries,
        workdir: args.workdir,
        env: args.env,
        command: args.command,
    };
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let request = build_request(file, &flags, &cwd)?;
    let client = Client::connect(&args.connect)?;
    let reply: serde_json::Value = client.post("/jobs", Some(&request))?;
    if args.json {
        return print_json(&reply);
    }
    let reply: SubmitResponse =
        serde_json::from_value(reply).context("unexpected reply to POST /v1/jobs")?;
    println!(
        "submitted job {} ({}, {})",
        reply.id, reply.name, reply.state
    );
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Only jobs in these states (comma separated: queued, running, succeeded, failed,
    /// cancelled) [default: queued,running].
    #[arg(long, short = 's', value_delimiter = ',', value_name = "STATE")]
    state: Vec<String>,
    /// Only this user's jobs.
    #[arg(long, short = 'u')]
    user: Option<String>,
    /// Jobs in every state, finished ones included.
    #[arg(long, short = 'a', conflicts_with = "state")]
    all: bool,
    /// At most this many jobs per state asked for.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Print the rows (JobSummary) as JSON.
    #[arg(long)]
    json: bool,
}

/// The state filters `ls` sends, one request each; `None` means no filter.
fn ls_states(states: &[String], all: bool) -> Result<Vec<Option<String>>> {
    if all {
        return Ok(vec![None]);
    }
    if states.is_empty() {
        return Ok(vec![Some("queued".into()), Some("running".into())]);
    }
    states
        .iter()
        .map(|state| {
            if STATES.contains(&state.as_str()) {
                Ok(Some(state.clone()))
            } else {
                bail!(
                    "--state: unknown state `{state}` (one of {})",
                    STATES.join(", ")
                )
            }
        })
        .collect()
}

pub fn list_jobs(
    client: &Client,
    states: &[Option<String>],
    user: Option<&str>,
    limit: Option<usize>,
) -> Result<Vec<JobSummary>> {
    let mut jobs = Vec::new();
    for state in states {
        let mut query = Vec::new();
        if let Some(state) = state {
            query.push(("state", state.clone()));
        }
        if let Some(user) = user {
            query.push(("user", user.to_string()));
        }
        jobs.extend(all_pages(client, &query, limit)?);
    }
    jobs.sort_by_key(|j| j.id);
    jobs.dedup_by_key(|j| j.id);
    Ok(jobs)
}

/// The jobs `query` matches, oldest first, up to `limit`, a page at a time.
pub fn all_pages(
    client: &Client,
    query: &[(&str, String)],
    limit: Option<usize>,
) -> Result<Vec<JobSummary>> {
    collect_pages(limit, job_pages::DEFAULT_LIMIT as usize, |size, after| {
        let mut page_query = query.to_vec();
        page_query.push(("limit", size.to_string()));
        if let Some(after) = after {
            page_query.push(("after", after.to_string()));
        }
        client.get::<Vec<JobSummary>>("/jobs", &page_query)
    })
}

/// Asks `fetch(page size, after id)` for one page after the other until a short page says
/// there are no more, or `limit` jobs are in.
fn collect_pages(
    limit: Option<usize>,
    page_size: usize,
    mut fetch: impl FnMut(usize, Option<u64>) -> Result<Vec<JobSummary>>,
) -> Result<Vec<JobSummary>> {
    let limit = limit.unwrap_or(usize::MAX);
    let mut jobs: Vec<JobSummary> = Vec::new();
    while jobs.len() < limit {
        let size = page_size.min(limit - jobs.len());
        let page = fetch(size, jobs.last().map(|j| j.id))?;
        let full = page.len() >= size;
        jobs.extend(page);
        if !full {
            break;
        }
    }
    Ok(jobs)
}

pub fn ls(args: LsArgs) -> Result<()> {
    let states = ls_states(&args.state, args.all)?;
    let client = Client::connect(&args.connect)?;
    let jobs = list_jobs(&client, &states, args.user.as_deref(), args.limit)?;
    if args.json {
        return print_json(&jobs);
    }
    print!("{}", jobs_table(&jobs, now()));
    Ok(())
}

/// GPUs of a job for a table: held now, then the range it may use.
fn gpus_cell(job: &JobSummary) -> String {
    let range = if job.min_gpus == job.max_gpus {
        job.min_gpus.to_string()
    } else {
        format!("{}-{}", job.min_gpus, job.max_gpus)
    };
    format!("{}/{range}", job.gpus)
}

pub fn jobs_table(jobs: &[JobSummary], now: f64) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.to_string(),
                j.name.clone(),
                j.user.clone(),
                j.state.clone(),
                gpus_cell(j),
                j.priority.to_string(),
                j.restarts.to_string(),
                // A running or queued job's exit code is its last attempt's: shown by `show`.
                or_dash(j.exit_code.filter(|_| is_terminal(&j.state))),
                age(now - j.submitted_at),
                j.waiting_reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "ID", "NAME", "USER", "STATE", "GPUS", "PRIO", "RESTARTS", "EXIT", "AGE", "REASON",
        ],
        &rows,
    )
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Job id.
    job: String,
    /// Print everything the server knows (JobDetail) as JSON.
    #[arg(long)]
    json: bool,
}

pub fn show(args: ShowArgs) -> Result<()> {
    let id = parse_job_id(&args.job)?;
    let client = Client::connect(&args.connect)?;
    // Kept as a generic value for --json so nothing the server sends is dropped.
    let detail: serde_json::Value = client.get(&format!("/jobs/{id}"), &[])?;
    if args.json {
        return print_json(&detail);
    }
    let detail: JobDetail =
        serde_json::from_value(detail).context("unexpected reply to GET /v1/jobs/{id}")?;
    print!("{}", describe(&detail));
    Ok(())
}

/// `show`'s human view: the fields a user asks about first, then the event history.
pub fn describe(job: &JobDetail) -> String {
    let s = &job.summary;
    let r = &job.request;
    let mut out = String::new();
    let mut field = |name: &str, value: String| {
        let _ = writeln!(out, "{:<13}{value}", format!("{name}:"));
    };
    field("id", s.id.to_string());
    field("name", s.name.clone());
    field("user", s.user.clone());
    field("state", s.state.clone());
    if let Some(reason) = &s.waiting_reason {
        field("waiting", reason.clone());
    }
    match (is_terminal(&s.state), s.exit_code) {
        (true, code) => field("exit code", or_dash(code)),
        (false, Some(code)) => field("last exit", format!("{code} (previous attempt)")),
        (false, None) => {}
    }
    field("restarts", s.restarts.to_string());
    field("command", shell_words(&r.command));
    field("working dir", or_dash(r.working_dir.clone()));
    field(
        "gpus",
        format!("{} held (min {}, max {})", s.gpus, s.min_gpus, s.max_gpus),
    );
    field("cpus", format!("{} per replica", r.cpus.unwrap_or(1.0)));
    if let Some(memory) = r.memory_gb.filter(|&gb| gb > 0.0) {
        field("memory", format!("{memory} GB per replica"));
    }
    field("priority", s.priority.to_string());
    let allocation = if job.allocation.is_empty() {
        "-".to_string()
    } else {
        job.allocation
            .iter()
            .map(|p| format!("{}:{}", p.node, p.gpus))
            .collect::<Vec<_>>()
            .join(", ")
    };
    field("allocation", allocation);
    if let Some(b) = &job.batch {
        field(
            "batch",
            format!(
                "global {} = local {} × {} accumulation step(s), lr × {:.3}",
                b.global_batch_size, b.local_batch_size, b.accumulation_steps, b.lr_scale
            ),
        );
    }
    if let Some(report) = &job.last_report {
        field(
            "last step",
            format!(
                "{} (loss {:.4}, {:.3} s/step)",
                report.step, report.loss, report.step_time
            ),
        );
    }
    if let Some(model) = &job.model {
        let params = if model.params.is_empty() {
            "not fitted yet".to_string()
        } else {
            model
                .params
                .iter()
                .map(|(name, value)| format!("{name} {value:.4}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        field(
            "model",
            format!("{params} ({} observations)", model.observations),
        );
        match model.noise_scale {
            Some(noise) => field(
                "noise scale",
                format!(
                    "{noise:.3} per sample (grad_sqr {:.4}, grad_var {:.4})",
                    model.grad_sqr.unwrap_or(f64::NAN),
                    model.grad_var.unwrap_or(f64::NAN)
                ),
            ),
            None => field("noise scale", "-".to_string()),
        }
    }
    let batches = batch_sizes(job);
    if !batches.is_empty() {
        field(
            "batch sizes",
            batches
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" → "),
        );
    }
    field("submitted", utc(s.submitted_at));
    field("updated", utc(s.updated_at));
    let starts: Vec<&adaptsched_api::AllocationChange> = job
        .allocation_history
        .iter()
        .filter(|c| !c.allocation.is_empty())
        .collect();
    if !starts.is_empty() {
        let _ = writeln!(out, "allocations:");
        for change in starts {
            let devices: u32 = change.allocation.iter().map(|p| p.gpus).sum();
            let batch = change
                .batch
                .map_or_else(|| "-".to_string(), |b| b.global_batch_size.to_string());
            let _ = writeln!(
                out,
                "  {}  {devices} device(s), batch {batch}",
                utc(change.at)
            );
        }
    }
    if !job.events.is_empty() {
        let _ = writeln!(out, "events:");
        for event in &job.events {
            let _ = writeln!(
                out,
                "  {}  {:<12} {}",
                utc(event.at),
                event.kind,
                event.message
            );
        }
    }
    out
}

/// The global batch sizes a job trained with, in order, without repeats in a row.
pub fn batch_sizes(job: &JobDetail) -> Vec<u32> {
    let mut sizes: Vec<u32> = Vec::new();
    for change in &job.allocation_history {
        if let Some(b) = change.batch.filter(|_| !change.allocation.is_empty())
            && sizes.last() != Some(&b.global_batch_size)
        {
            sizes.push(b.global_batch_size);
        }
    }
    sizes
}

#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Job id.
    job: String,
    /// Print the server's reply as JSON.
    #[arg(long)]
    json: bool,
}

pub fn cancel(args: CancelArgs) -> Result<()> {
    let id = parse_job_id(&args.job)?;
    let client = Client::connect(&args.connect)?;
    let reply: serde_json::Value = client.post::<(), _>(&format!("/jobs/{id}/cancel"), None)?;
    if args.json {
        return print_json(&reply);
    }
    match reply.get("state").and_then(|s| s.as_str()) {
        Some(state) => println!("cancelled job {id} (now {state})"),
        None => println!("cancelled job {id}"),
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Job id.
    job: String,
    /// Keep printing new output until the job ends.
    #[arg(long, short = 'f')]
    follow: bool,
    /// The job's stderr instead of its stdout.
    #[arg(long)]
    stderr: bool,
    /// Seconds between polls when following.
    #[arg(long, default_value_t = 0.5, value_name = "SECS")]
    poll: f64,
}

/// Where the next read starts: the server's offset header when it sends one, else just past
/// the bytes received.
fn next_offset(offset: u64, received: usize, header: Option<&str>) -> u64 {
    header
        .and_then(|h| h.trim().parse().ok())
        .unwrap_or(offset + received as u64)
}

pub fn logs(args: LogsArgs) -> Result<()> {
    let id = parse_job_id(&args.job)?;
    if !(args.poll.is_finite() && args.poll > 0.0) {
        bail!(
            "--poll: invalid value `{}` (expected seconds > 0)",
            args.poll
        );
    }
    let client = Client::connect(&args.connect)?;
    let stream = if args.stderr { "stderr" } else { "stdout" };
    let path = format!("/jobs/{id}/logs");
    let mut stdout = std::io::stdout().lock();
    let mut offset = 0u64;
    let mut final_seen = false;
    loop {
        let reply = client.get_raw(
            &path,
            &[
                ("stream", stream.to_string()),
                ("offset", offset.to_string()),
            ],
        )?;
        stdout.write_all(&reply.body)?;
        stdout.flush()?;
        let next = next_offset(
            offset,
            reply.body.len(),
            reply.header(log_api::OFFSET_HEADER),
        );
        let progressed = next > offset;
        offset = next;
        if progressed {
            // The server returns at most a chunk per call: read on until it has no more.
            continue;
        }
        if !args.follow {
            return Ok(());
        }
        // The server reads the state together with the bytes, so a final state with nothing
        // new means the log is complete. Without that header the state is asked separately,
        // and one more read drains what the job wrote in between.
        match reply.header(log_api::STATE_HEADER) {
            Some(state) if is_terminal(state) => return Ok(()),
            Some(_) => {}
            None if final_seen => return Ok(()),
            None => {
                let state = client.get::<JobSummary>(&format!("/jobs/{id}"), &[])?.state;
                if is_terminal(&state) {
                    final_seen = true;
                    continue;
                }
            }
        }
        std::thread::sleep(Duration::from_secs_f64(args.poll));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server stand-in: `stored` jobs, pages of at most the asked size after an id.
    fn pages_of(
        stored: &[u64],
        calls: &mut Vec<(usize, Option<u64>)>,
    ) -> impl FnMut(usize, Option<u64>) -> Result<Vec<JobSummary>> {
        move |size, after| {
            calls.push((size, after));
            Ok(stored
                .iter()
                .filter(|&&id| after.is_none_or(|a| id > a))
                .take(size)
                .map(|&id| summary(id, "queued"))
                .collect())
        }
    }

    #[test]
    fn every_page_is_fetched_once_and_a_limit_stops_early() {
        let stored: Vec<u64> = (1..=7).collect();
        let ids = |jobs: Vec<JobSummary>| jobs.iter().map(|j| j.id).collect::<Vec<_>>();
        let mut calls = Vec::new();
        let all = collect_pages(None, 3, pages_of(&stored, &mut calls)).unwrap();
        assert_eq!(ids(all), stored);
        assert_eq!(calls, [(3, None), (3, Some(3)), (3, Some(6))]);

        // A last page that happens to be full costs one more (empty) call.
        let mut calls = Vec::new();
        let all = collect_pages(None, 7, pages_of(&stored, &mut calls)).unwrap();
        assert_eq!(ids(all), stored);
        assert_eq!(calls, [(7, None), (7, Some(7))]);

        let mut calls = Vec::new();
        let first = collect_pages(Some(4), 3, pages_of(&stored, &mut calls)).unwrap();
        assert_eq!(ids(first), [1, 2, 3, 4]);
        assert_eq!(calls, [(3, None), (1, Some(3))]);

        let mut calls = Vec::new();
        assert!(
            collect_pages(Some(0), 3, pages_of(&stored, &mut calls))
                .unwrap()
                .is_empty()
        );
        assert!(calls.is_empty(), "no call for nothing");
    }

    fn summary(id: u64, state: &str) -> JobSummary {
        JobSummary {
            id,
            name: format!("job{id}"),
            user: "alice".into(),
            state: state.into(),
            priority: 0,
            min_gpus: 1,
            max_gpus: 4,
            gpus: 2,
            submitted_at: 1000.0,
            updated_at: 1000.0,
            restarts: 1,
            exit_code: None,
            waiting_reason: None,
        }
    }

    #[test]
    fn ls_asks_for_active_jobs_unless_told() {
        assert_eq!(
            ls_states(&[], false).unwrap(),
            [Some("queued".to_string()), Some("running".to_string())]
        );
        assert_eq!(ls_states(&[], true).unwrap(), [None]);
        assert_eq!(
            ls_states(&["failed".into()], false).unwrap(),
            [Some("failed".to_string())]
        );
        let error = ls_states(&["done".into()], false).unwrap_err().to_string();
        assert!(
            error.contains("--state") && error.contains("`done`"),
            "{error}"
        );
    }

    #[test]
    fn job_rows_show_held_and_range_of_gpus() {
        let mut rigid = summary(2, "failed");
        (rigid.min_gpus, rigid.max_gpus, rigid.gpus, rigid.exit_code) = (2, 2, 0, Some(3));
        let mut retried = summary(1, "running");
        retried.exit_code = Some(143);
        let out = jobs_table(&[retried, rigid], 1090.0);
        let lines: Vec<Vec<&str>> = out
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            lines[1],
            [
                "1", "job1", "alice", "running", "2/1-4", "0", "1", "-", "1m"
            ]
        );
        assert_eq!(
            lines[2],
            ["2", "job2", "alice", "failed", "0/2", "0", "1", "3", "1m"]
        );
    }

    #[test]
    fn log_offsets_follow_the_header_else_the_bytes() {
        assert_eq!(next_offset(10, 5, None), 15);
        assert_eq!(next_offset(10, 5, Some("40")), 40);
        assert_eq!(next_offset(10, 0, Some("junk")), 10);
    }

    #[test]
    fn describe_names_state_exit_code_and_allocation() {
        let detail = JobDetail {
            summary: summary(3, "running"),
            request: adaptsched_api::JobRequest {
                command: vec!["python3".into(), "-c".into(), "print(1)".into()],
                ..Default::default()
            },
            allocation: vec![adaptsched_api::AllocationPart {
                node: "local".into(),
                gpus: 2,
            }],
            batch: None,
            allocation_history: vec![],
            events: vec![adaptsched_api::EventView {
                at: 0.0,
                kind: "started".into(),
                message: "pid 42".into(),
            }],
            model: None,
            last_report: None,
        };
        let out = describe(&detail);
        for needle in [
            "state:       running",
            "allocation:  local:2",
            "command:     python3 -c 'print(1)'",
            "1970-01-01 00:00:00  started      pid 42",
        ] {
            assert!(out.contains(needle), "{needle:?} not in\n{out}");
        }
    }

    #[test]
    fn describe_shows_the_fitted_model_noise_scale_and_batch_sizes() {
        let batch = |global| adaptsched_api::BatchView {
            global_batch_size: global,
            local_batch_size: global,
            accumulation_steps: 0,
            lr_scale: 1.0,
        };
        let change = |at, gpus, global: Option<u32>| adaptsched_api::AllocationChange {
            at,
            allocation: if gpus == 0 {
                vec![]
            } else {
                vec![adaptsched_api::AllocationPart {
                    node: "local".into(),
                    gpus,
                }]
            },
            batch: global.map(batch),
            reason: String::new(),
        };
        let detail = JobDetail {
            summary: summary(4, "running"),
            request: adaptsched_api::JobRequest {
                command: vec!["train".into()],
                ..Default::default()
            },
            allocation: vec![],
            batch: None,
            allocation_history: vec![
                change(0.0, 1, Some(64)),
                change(5.0, 0, None),
                change(6.0, 2, Some(256)),
            ],
            events: vec![],
            model: Some(adaptsched_api::FittedModelView {
                params: [("alpha_c".to_string(), 0.01), ("gamma".to_string(), 1.5)]
                    .into_iter()
                    .collect(),
                grad_sqr: Some(0.5),
                grad_var: Some(100.0),
                noise_scale: Some(200.0),
                observations: 42,
            }),
            last_report: None,
        };
        let out = describe(&detail);
        for needle in [
            "model:       alpha_c 0.0100, gamma 1.5000 (42 observations)",
            "noise scale: 200.000 per sample",
            "batch sizes: 64 → 256",
            "2 device(s), batch 256",
        ] {
            assert!(out.contains(needle), "{needle:?} not in\n{out}");
        }
    }
}
