//! Reader for SenseTime Helios job logs (`<cluster>/cluster_log.csv` from HeliosData, SC'21).
//!
//! Format (one row per Slurm job, read by header name): `job_id, user, vc, gpu_num, cpu_num,
//! node_num, state, submit_time, start_time, end_time, duration, queue`, times as naive
//! `YYYY-MM-DD HH:MM:SS`, `duration` = end − start in seconds. Only `job_id`, `gpu_num`,
//! `submit_time` and either `duration` or both `start_time` and `end_time` are required.
//!
//! The raw logs are **not** in `/work/shared/traces/helios` (`data.zip` was too large to copy),
//! so this reader is tested on small files written in the documented format only. What that
//! folder does hold is not a job trace for this reader:
//! * `helios_cluster_summary.csv`: per-cluster statistics;
//! * `Earth_gpu_number.csv`: daily GPUs per VC;
//! * `earth_vc_sequences/*`: per-minute queue and occupancy counts;
//! * `sia_sosp23_saturn/*`: Sia workloads in the Pollux format, read by the Pollux reader.
//!
//! Decisions: jobs are rigid (`gpu_num` GPUs for the recorded run time); submit times are
//! seconds after the earliest `submit_time`; CPU-only jobs (`gpu_num` 0) and jobs that never
//! started or have no end (empty `start_time`, or empty `duration`/`end_time`) are skipped and
//! counted in `notes`; cancelled, failed, timed-out and node-failed jobs are kept with their run
//! time, because they held their GPUs; a repeated `job_id` keeps its first row and is noted.
//! `user` is set from the `user` column and `application` is `helios:<vc>`.

use super::{CsvTable, Row};
use crate::error::InputError;
use crate::workload::Workload;
use adaptsched_core::JobSpec;
use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

/// Columns whose presence identifies a Helios job log (used by `detect_and_read`).
pub(crate) const HEADER: &[&str] = &["job_id", "gpu_num", "submit_time"];

struct Columns {
    job_id: usize,
    gpu_num: usize,
    submit_time: usize,
    duration: Option<usize>,
    start_time: Option<usize>,
    end_time: Option<usize>,
    user: Option<usize>,
    vc: Option<usize>,
    state: Option<usize>,
}

impl Columns {
    fn find<R: Read>(table: &CsvTable<R>) -> Result<Self, InputError> {
        let cols = Columns {
            job_id: table.require("job_id")?,
            gpu_num: table.require("gpu_num")?,
            submit_time: table.require("submit_time")?,
            duration: table.column("duration"),
            start_time: table.column("start_time"),
            end_time: table.column("end_time"),
            user: table.column("user"),
            vc: table.column("vc"),
            state: table.column("state"),
        };
        let has_span = cols.start_time.is_some() && cols.end_time.is_some();
        if cols.duration.is_none() && !has_span {
            table.require("duration")?; // names the missing column in the error
        }
        Ok(cols)
    }
}

/// One usable job, before submit times are made relative.
struct Parsed {
    job_id: String,
    submit: i64,
    timestamp: String,
    duration: f64,
    gpus: u32,
    user: String,
    vc: String,
    completed: bool,
}

enum Outcome {
    Job(Parsed),
    CpuOnly,
    NotRun,
}

#[derive(Default)]
struct Tally {
    cpu_only: u64,
    not_run: u64,
    duplicates: u64,
    not_completed: u64,
}

/// Reads a Helios `cluster_log.csv` into a workload named after the file stem. See the module
/// docs for what is skipped and why; every skip is counted in `notes`.
pub fn read_helios(path: &Path) -> Result<Workload, InputError> {
    let mut table = CsvTable::open(path)?;
    let cols = Columns::find(&table)?;
    let mut seen = HashSet::new();
    let mut parsed = Vec::new();
    let mut tally = Tally::default();
    table.for_each_row(|row| {
        let outcome = parse_row(row, &cols)?;
        if !seen.insert(row.text(cols.job_id).to_string()) {
            tally.duplicates += 1;
            return Ok(());
        }
        match outcome {
            Outcome::Job(job) => {
                tally.not_completed += u64::from(!job.completed);
                parsed.push(job);
            }
            Outcome::CpuOnly => tally.cpu_only += 1,
            Outcome::NotRun => tally.not_run += 1,
        }
        Ok(())
    })?;
    Ok(super::rebased_workload(
        path,
        parsed,
        tally_notes(&tally),
        "submit_time",
        |p| (p.submit, p.timestamp.as_str()),
        to_job,
    ))
}

fn parse_row(row: &Row<'_>, cols: &Columns) -> Result<Outcome, InputError> {
    let job_id = row.text(cols.job_id);
    if job_id.is_empty() {
        return Err(row.error(cols.job_id, "empty job id"));
    }
    let gpus = row.count(cols.gpu_num)?;
    let submit = row.datetime(cols.submit_time)?;
    let run = run_time(row, cols)?;
    if gpus == 0 {
        return Ok(Outcome::CpuOnly);
    }
    let Some(duration) = run else {
        return Ok(Outcome::NotRun);
    };
    let text = |col: Option<usize>| col.map_or("", |c| row.text(c)).to_string();
    let state = text(cols.state);
    Ok(Outcome::Job(Parsed {
        job_id: job_id.to_string(),
        submit,
        timestamp: row.text(cols.submit_time).to_string(),
        duration,
        gpus,
        user: text(cols.user),
        vc: text(cols.vc),
        completed: state.is_empty() || state.eq_ignore_ascii_case("COMPLETED"),
    }))
}

/// The recorded run time: `duration` if given, else `end_time − start_time`; `None` when the
/// job never started (empty `start_time`) or has no end. Every present field is validated.
fn run_time(row: &Row<'_>, cols: &Columns) -> Result<Option<f64>, InputError> {
    let start = cols.start_time.map(|c| row.opt_datetime(c)).transpose()?;
    let end = cols.end_time.map(|c| row.opt_datetime(c)).transpose()?;
    let duration = cols
        .duration
        .map(|c| row.opt_non_negative(c))
        .transpose()?
        .flatten();
    let span = match (
        cols.start_time.zip(start.flatten()),
        cols.end_time.zip(end.flatten()),
    ) {
        (Some((sc, s)), Some((ec, e))) if e < s => {
            return Err(row.error(
                ec,
                format!("end_time is before start_time ({})", row.text(sc)),
            ));
        }
        (Some((_, s)), Some((_, e))) => Some((e - s) as f64),
        _ => None,
    };
    if matches!(start, Some(None)) {
        return Ok(None); // never started (e.g. cancelled while queued)
    }
    Ok(duration.or(span))
}

fn to_job(p: Parsed, origin: i64) -> JobSpec {
    let application = if p.vc.is_empty() {
        "helios".to_string()
    } else {
        format!("helios:{}", p.vc)
    };
    let mut job = JobSpec::new(p.job_id, (p.submit - origin) as f64, application, p.gpus)
        .with_duration(p.duration);
    job.user = (!p.user.is_empty()).then_some(p.user);
    job
}

fn tally_notes(tally: &Tally) -> Vec<String> {
    let mut notes = Vec::new();
    if tally.duplicates > 0 {
        notes.push(format!(
            "dropped {} rows repeating an earlier job_id (the first row is kept)",
            tally.duplicates
        ));
    }
    if tally.cpu_only > 0 {
        notes.push(format!(
            "skipped {} CPU-only jobs (gpu_num 0)",
            tally.cpu_only
        ));
    }
    if tally.not_run > 0 {
        notes.push(format!(
            "skipped {} GPU jobs that never started or have no end time",
            tally.not_run
        ));
    }
    if tally.not_completed > 0 {
        notes.push(format!(
            "kept {} jobs that did not complete (cancelled/failed/timeout/node-fail) with their recorded run time",
            tally.not_completed
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readers::test_support::assert_field_error;
    use adaptsched_core::Work;
    use std::path::PathBuf;

    const HEAD: &str = "job_id,user,vc,gpu_num,cpu_num,node_num,state,submit_time,start_time,end_time,duration,queue\n";

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn read_one(text: &str) -> Result<Workload, InputError> {
        let dir = tempfile::tempdir().unwrap();
        read_helios(&write(&dir, "t.csv", text))
    }

    #[test]
    fn readers_helios_reads_small_file() {
        let text = format!(
            "{HEAD}j2,u2,vcB,8,32,1,FAILED,2020-04-01 00:10:00,2020-04-01 00:10:30,2020-04-01 01:10:30,3600,30\n\
             j1,u1,vcA,1,4,1,COMPLETED,2020-04-01 00:00:00,2020-04-01 00:00:05,2020-04-01 00:01:05,60,5\n\
             j3,u1,vcA,0,4,1,COMPLETED,2020-04-01 00:00:00,2020-04-01 00:00:05,2020-04-01 00:01:05,60,5\n\
             j4,u3,vcA,2,8,1,CANCELLED,2020-04-01 00:20:00,,2020-04-01 00:25:00,0,300\n\
             j1,u1,vcA,1,4,1,COMPLETED,2020-04-01 00:00:00,2020-04-01 00:00:05,2020-04-01 00:01:05,60,5\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let w = read_helios(&write(&dir, "Saturn.csv", &text)).unwrap();
        assert_eq!(w.name, "Saturn");
        let summary: Vec<(&str, f64, u32)> = w
            .jobs
            .iter()
            .map(|j| (j.name.as_str(), j.submit_time, j.requested_gpus))
            .collect();
        assert_eq!(summary, [("j1", 0.0, 1), ("j2", 600.0, 8)]);
        assert_eq!(w.jobs[1].work, Work::Duration { seconds: 3600.0 });
        assert_eq!(w.jobs[1].user.as_deref(), Some("u2"));
        assert_eq!(w.jobs[1].application, "helios:vcB");
        for needle in [
            "dropped 1 rows repeating",
            "skipped 1 CPU-only",
            "skipped 1 GPU jobs that never started",
            "kept 1 jobs that did not complete",
            "sorted",
        ] {
            assert!(
                w.notes.iter().any(|n| n.contains(needle)),
                "{needle} not in {:?}",
                w.notes
            );
        }
    }

    #[test]
    fn readers_helios_uses_start_end_without_duration_column() {
        let text = "job_id,gpu_num,submit_time,start_time,end_time\n\
                    7,4,2020-05-01 10:00:00,2020-05-01 10:00:10,2020-05-01 10:02:10\n\
                    8,4,2020-05-01 10:00:00,2020-05-01 10:00:10,\n";
        let w = read_one(text).unwrap();
        assert_eq!(w.jobs.len(), 1);
        assert_eq!(w.jobs[0].work, Work::Duration { seconds: 120.0 });
        assert!(w.jobs[0].user.is_none());
        assert_eq!(w.jobs[0].application, "helios");
    }

    #[test]
    fn readers_helios_malformed_rows_name_line_column_value() {
        let ok = "j1,u1,vcA,1,4,1,COMPLETED,2020-04-01 00:00:00,2020-04-01 00:00:05,2020-04-01 00:01:05,60,5\n";
        let row = |s: &str| read_one(&format!("{HEAD}{ok}{s}\n"));
        assert_field_error(row("j2,u1,vcA,1,4,1,COMPLETED"), 3, "submit_time", "");
        assert_field_error(
            row("j2,u1,vcA,two,4,1,COMPLETED,2020-04-01 00:00:00,,,,"),
            3,
            "gpu_num",
            "two",
        );
        assert_field_error(
            row("j2,u1,vcA,-1,4,1,COMPLETED,2020-04-01 00:00:00,,,,"),
            3,
            "gpu_num",
            "-1",
        );
        assert_field_error(
            row(
                "j2,u1,vcA,1,4,1,COMPLETED,2020-04-01 00:00:00,2020-04-01 00:00:05,2020-04-01 00:01:05,-60,5",
            ),
            3,
            "duration",
            "-60",
        );
        assert_field_error(
            row(
                "j2,u1,vcA,1,4,1,COMPLETED,2020-04-01 00:00:00,2020-04-01 00:00:05,2020-04-01 00:01:05,nan,5",
            ),
            3,
            "duration",
            "nan",
        );
        assert_field_error(
            row("j2,u1,vcA,1,4,1,COMPLETED,yesterday,,,,"),
            3,
            "submit_time",
            "yesterday",
        );
        assert_field_error(
            row(
                "j2,u1,vcA,1,4,1,COMPLETED,2020-04-01 00:00:00,2020-04-01 00:00:05,2020-04-01 00:00:01,,5",
            ),
            3,
            "end_time",
            "2020-04-01 00:00:01",
        );
        assert_field_error(
            row(",u1,vcA,1,4,1,COMPLETED,2020-04-01 00:00:00,,,,"),
            3,
            "job_id",
            "",
        );
        assert_field_error(
            read_one("job_id,gpu_num,submit_time\n1,1,2020-04-01 00:00:00\n"),
            1,
            "duration",
            "job_id,gpu_num,submit_time",
        );
    }

    #[test]
    fn readers_helios_empty_file_errors() {
        let err = read_one("").unwrap_err();
        assert!(
            matches!(&err, InputError::File { file, .. } if file.ends_with("t.csv")),
            "{err}"
        );
    }

    fn shared(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/traces")
            .join(rel)
    }

    /// The raw Helios logs are not in the shared folder today; read one if it ever appears.
    #[test]
    fn readers_helios_real_log_if_present() {
        let candidates = ["Earth", "Saturn", "Venus", "Uranus"]
            .map(|c| shared(&format!("helios/{c}/cluster_log.csv")));
        let Some(path) = candidates.iter().find(|p| p.exists()) else {
            eprintln!(
                "skipping: no raw Helios cluster_log.csv under {}",
                shared("helios").display()
            );
            return;
        };
        let w = read_helios(path).unwrap();
        assert!(!w.jobs.is_empty());
        eprintln!(
            "helios {}: {} jobs, notes {:?}",
            path.display(),
            w.jobs.len(),
            w.notes
        );
    }

    /// The files that are in the shared Helios folder are not job logs and must not be taken
    /// for one (the Sia Saturn workloads are the Pollux reader's).
    #[test]
    fn readers_helios_shared_files_are_not_detected_as_logs() {
        let files = [
            "helios/helios_cluster_summary.csv",
            "helios/Earth_gpu_number.csv",
            "helios/sia_sosp23_saturn/saturn/workload-1.csv",
        ];
        for rel in files {
            let path = shared(rel);
            if !path.exists() {
                eprintln!("skipping: {} not found", path.display());
                continue;
            }
            assert_eq!(super::super::detect_format(&path).unwrap(), None, "{rel}");
        }
    }
}
