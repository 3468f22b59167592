//! Reader for the Microsoft Philly per-job table, and the `philly` cluster preset.
//!
//! The table (`philly_jobs_until_2017-11-30.csv`, from the Pollux/Sia artifacts) has the columns
//! `timestamp,duration,num_gpus,gpu_time,cluster`: arrival time (naive local time), run time in
//! seconds, GPUs, GPU-seconds and the hashed virtual cluster (VC). It has **no** job id, user,
//! final status or end time, which shapes the decisions below:
//!
//! * Jobs are rigid: `num_gpus` GPUs for `duration` seconds. Failed and killed jobs are in the
//!   table indistinguishably and are kept with their run time, because they held GPUs.
//! * Submit times are seconds after the earliest `timestamp` in the file (rows are unsorted).
//! * Duplicates: with no job id, a duplicate is a row whose every column is identical to an
//!   earlier row. We keep the first copy and drop the rest (the real table has 57 such rows).
//!   They could be distinct jobs submitted in the same second with the same run time; the
//!   note says so, and the count is small either way.
//! * Rows with 0 GPUs (none in the real table) give a GPU scheduler nothing to place: skipped
//!   and noted. A row with an empty `duration` has no end time (still running or never ran):
//!   skipped and noted. Anything else malformed is an error.
//! * `cluster` (the VC) becomes the application label `philly:<vc>`; `user` stays `None`.
//! * Job names are `philly-<line>`, the file line of the row, so a job can be traced back.

use super::{ASSUMED_NETWORK_GBPS, CsvTable, Row, file_stem};
use crate::error::InputError;
use crate::workload::Workload;
use adaptsched_core::{Cluster, GpuType, JobSpec, Node};
use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

/// Columns whose presence identifies the Philly table (used by `detect_and_read`).
pub(crate) const HEADER: &[&str] = &["timestamp", "duration", "num_gpus"];

struct Columns {
    timestamp: usize,
    duration: usize,
    num_gpus: usize,
    gpu_time: Option<usize>,
    vc: Option<usize>,
}

impl Columns {
    fn find<R: Read>(table: &CsvTable<R>) -> Result<Self, InputError> {
        Ok(Columns {
            timestamp: table.require("timestamp")?,
            duration: table.require("duration")?,
            num_gpus: table.require("num_gpus")?,
            gpu_time: table.column("gpu_time"),
            vc: table.column("cluster"),
        })
    }
}

/// One usable row, before submit times are made relative.
struct Parsed {
    line: u64,
    submit: i64,
    timestamp: String,
    duration: f64,
    gpus: u32,
    vc: String,
}

/// What one row turned into.
enum Outcome {
    Job(Parsed),
    NoGpus,
    NoDuration,
}

#[derive(Default)]
struct Tally {
    duplicates: u64,
    no_gpus: u64,
    no_duration: u64,
}

/// Reads a Philly per-job table into a workload named after the file stem. See the module
/// docs for what is dropped and why; every drop is counted in `notes`.
pub fn read_philly(path: &Path) -> Result<Workload, InputError> {
    let mut table = CsvTable::open(path)?;
    let cols = Columns::find(&table)?;
    let mut seen = HashSet::new();
    let mut parsed = Vec::new();
    let mut tally = Tally::default();
    table.for_each_row(|row| {
        if !seen.insert(row.fields()) {
            tally.duplicates += 1;
            return Ok(());
        }
        match parse_row(row, &cols)? {
            Outcome::Job(job) => parsed.push(job),
            Outcome::NoGpus => tally.no_gpus += 1,
            Outcome::NoDuration => tally.no_duration += 1,
        }
        Ok(())
    })?;
    Ok(super::rebased_workload(
        path,
        parsed,
        tally_notes(&tally),
        "timestamp",
        |p| (p.submit, p.timestamp.as_str()),
        to_job,
    ))
}

fn parse_row(row: &Row<'_>, cols: &Columns) -> Result<Outcome, InputError> {
    let submit = row.datetime(cols.timestamp)?;
    let duration = row.opt_non_negative(cols.duration)?;
    let gpus = row.count(cols.num_gpus)?;
    if let Some(col) = cols.gpu_time {
        row.opt_non_negative(col)?; // only validated: it is always duration * num_gpus
    }
    let Some(duration) = duration else {
        return Ok(Outcome::NoDuration);
    };
    if gpus == 0 {
        return Ok(Outcome::NoGpus);
    }
    Ok(Outcome::Job(Parsed {
        line: row.line(),
        submit,
        timestamp: row.text(cols.timestamp).to_string(),
        duration,
        gpus,
        vc: cols.vc.map_or("", |c| row.text(c)).to_string(),
    }))
}

fn to_job(p: Parsed, origin: i64) -> JobSpec {
    let application = if p.vc.is_empty() {
        "philly".to_string()
    } else {
        format!("philly:{}", p.vc)
    };
    JobSpec::new(
        format!("philly-{}", p.line),
        (p.submit - origin) as f64,
        application,
        p.gpus,
    )
    .with_duration(p.duration)
}

fn tally_notes(tally: &Tally) -> Vec<String> {
    let mut notes = Vec::new();
    if tally.duplicates > 0 {
        notes.push(format!(
            "dropped {} exact duplicate rows (every column equal to an earlier row; the first copy is kept; \
             the table has no job id, so some may be distinct jobs with identical values)",
            tally.duplicates
        ));
    }
    if tally.no_gpus > 0 {
        notes.push(format!(
            "skipped {} rows with 0 GPUs (nothing for a GPU scheduler to place)",
            tally.no_gpus
        ));
    }
    if tally.no_duration > 0 {
        notes.push(format!(
            "skipped {} rows with an empty duration (no end time: still running or never ran)",
            tally.no_duration
        ));
    }
    notes
}

/// The Philly machine list embedded in the binary: a verbatim copy of
/// `revised_machine_list.csv` (see `crates/sim/data/README.md` for source and license).
const PHILLY_MACHINES: &str = include_str!("../../data/philly_machines.csv");

/// GPU type given to every Philly node. The trace does not name the GPU model; `p100` is our
/// assumed label, used consistently so Philly jobs (which name no type) can run anywhere.
pub const PHILLY_GPU_TYPE: &str = "p100";

/// CPU cores per GPU on preset nodes (assumed: the machine list has no CPU data, and Philly
/// jobs state no CPU demand, so this only has to be large enough never to bind).
pub const PHILLY_CPU_CORES_PER_GPU: u32 = 6;

/// Host memory in GB per GPU on preset nodes (assumed, for the same reason as CPU cores).
pub const PHILLY_MEMORY_GB_PER_GPU: f64 = 64.0;

/// The `philly` cluster preset: 539 nodes with 3,205 GPUs, named by machine id.
///
/// Built from the *revised* machine list (Qinghao Hu's `revised_machine_list.csv`, GPU counts
/// re-inferred from Philly's per-GPU utilisation log), not Microsoft's `cluster_machine_list`.
/// The original list says 321 machines have 2 GPUs and 231 have 8 (2,490 GPUs), but the job
/// log places 8-GPU jobs on "2-GPU" machines (philly-traces issue #8); the revised counts
/// (264×8, 271×4, 1×3, 3×2, 13×0 GPUs) are what the jobs actually used. The 13 machines with
/// no GPUs are left out. Neither list names the GPU model, CPUs or host memory: see
/// [`PHILLY_GPU_TYPE`], [`PHILLY_CPU_CORES_PER_GPU`], [`PHILLY_MEMORY_GB_PER_GPU`] and
/// [`ASSUMED_NETWORK_GBPS`]. To use the original list instead, see [`read_philly_machines`].
pub fn philly_cluster() -> Cluster {
    let label = Path::new("crates/sim/data/philly_machines.csv");
    // The embedded text is a fixed, valid file (a unit test parses it), so this cannot fail.
    parse_machines(label, PHILLY_MACHINES.as_bytes(), "philly")
        .expect("embedded Philly machine list is valid")
}

/// Reads a Philly machine list: either Microsoft's `machineId, number of GPUs, single GPU mem`
/// or the revised `,machineId,number of GPUs`. Machines with 0 GPUs are left out; an optional
/// `model` column sets the GPU type (else [`PHILLY_GPU_TYPE`]). The cluster is named by stem.
pub fn read_philly_machines(path: &Path) -> Result<Cluster, InputError> {
    let input = std::fs::File::open(path).map_err(|e| InputError::io(path, e))?;
    parse_machines(path, input, &file_stem(path))
}

fn parse_machines<R: Read>(file: &Path, input: R, name: &str) -> Result<Cluster, InputError> {
    let mut table = CsvTable::from_reader(file, input)?;
    let id_col = table.require("machineId")?;
    let gpu_col = table.require("number of GPUs")?;
    let model_col = table.column("model");
    let mut seen = HashSet::new();
    let mut nodes = Vec::new();
    table.for_each_row(|row| {
        let id = row.text(id_col);
        if id.is_empty() {
            return Err(row.error(id_col, "empty machine id"));
        }
        if !seen.insert(id.to_string()) {
            return Err(row.error(id_col, "duplicate machine id"));
        }
        let gpus = row.count(gpu_col)?;
        let model = model_col.map_or("", |c| row.text(c));
        if gpus > 0 {
            nodes.push(philly_node(
                id,
                gpus,
                if model.is_empty() {
                    PHILLY_GPU_TYPE
                } else {
                    model
                },
            ));
        }
        Ok(())
    })?;
    if nodes.is_empty() {
        return Err(InputError::file(table.file(), "no machine has any GPU"));
    }
    Ok(Cluster {
        name: name.to_string(),
        nodes,
    })
}

fn philly_node(id: &str, gpus: u32, model: &str) -> Node {
    Node {
        name: id.to_string(),
        gpu_type: GpuType::new(model),
        gpus,
        cpu_cores: gpus.saturating_mul(PHILLY_CPU_CORES_PER_GPU),
        memory_gb: f64::from(gpus) * PHILLY_MEMORY_GB_PER_GPU,
        network_gbps: ASSUMED_NETWORK_GBPS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readers::test_support::assert_field_error;
    use adaptsched_core::Work;
    use std::path::PathBuf;

    const HEAD: &str = "timestamp,duration,num_gpus,gpu_time,cluster\n";

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn read_one(text: &str) -> Result<Workload, InputError> {
        let dir = tempfile::tempdir().unwrap();
        read_philly(&write(&dir, "t.csv", text))
    }

    fn duration(job: &JobSpec) -> f64 {
        match job.work {
            Work::Duration { seconds } => seconds,
            Work::Epochs => panic!("expected a duration job"),
        }
    }

    #[test]
    fn readers_philly_reads_small_file() {
        let text = format!(
            "{HEAD}2017-10-01 00:00:10,66.0,1,66.0,11cb48\n2017-10-01 00:01:00,100.5,8,804.0,6214e9\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let w = read_philly(&write(&dir, "small.csv", &text)).unwrap();
        assert_eq!(w.name, "small");
        assert_eq!(w.jobs.len(), 2);
        let (a, b) = (&w.jobs[0], &w.jobs[1]);
        assert_eq!(
            (
                a.name.as_str(),
                a.submit_time,
                a.requested_gpus,
                duration(a)
            ),
            ("philly-2", 0.0, 1, 66.0)
        );
        assert_eq!(
            (
                b.name.as_str(),
                b.submit_time,
                b.requested_gpus,
                duration(b)
            ),
            ("philly-3", 50.0, 8, 100.5)
        );
        assert_eq!(b.application, "philly:6214e9");
        assert_eq!(b.category, adaptsched_core::JobCategory::Rigid);
        assert!(b.user.is_none());
        assert_eq!(
            w.notes,
            vec![
                "submit times are seconds after the earliest timestamp, 2017-10-01 00:00:10"
                    .to_string()
            ]
        );
    }

    #[test]
    fn readers_philly_drops_duplicates_and_sorts() {
        let text = format!(
            "{HEAD}2017-10-02 00:00:00,5.0,1,5.0,a\n2017-10-01 00:00:00,7.0,2,14.0,a\n\
             2017-10-02 00:00:00,5.0,1,5.0,a\n2017-10-02 00:00:00,5.0,1,5.0,b\n2017-10-02 00:00:00,5.0,1,5.0,a\n"
        );
        let w = read_one(&text).unwrap();
        let names: Vec<&str> = w.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["philly-3", "philly-2", "philly-5"]);
        assert_eq!(w.jobs[1].submit_time, 86_400.0);
        assert!(
            w.notes
                .iter()
                .any(|n| n.starts_with("dropped 2 exact duplicate rows")),
            "{:?}",
            w.notes
        );
        assert!(
            w.notes.iter().any(|n| n.contains("sorted")),
            "{:?}",
            w.notes
        );
    }

    #[test]
    fn readers_philly_skips_zero_gpu_and_missing_duration_rows() {
        let text = format!(
            "{HEAD}2017-10-01 00:00:00,5.0,0,0.0,a\n2017-10-01 00:00:01,,1,,a\n2017-10-01 00:00:02,9.0,4,36.0,a\n"
        );
        let w = read_one(&text).unwrap();
        assert_eq!(w.jobs.len(), 1);
        assert_eq!(w.jobs[0].submit_time, 0.0);
        assert!(
            w.notes
                .iter()
                .any(|n| n.starts_with("skipped 1 rows with 0 GPUs")),
            "{:?}",
            w.notes
        );
        assert!(
            w.notes
                .iter()
                .any(|n| n.starts_with("skipped 1 rows with an empty duration")),
            "{:?}",
            w.notes
        );
    }

    #[test]
    fn readers_philly_malformed_rows_name_line_column_value() {
        let ok = "2017-10-01 00:00:00,5.0,1,5.0,a\n";
        assert_field_error(
            read_one(&format!("{HEAD}{ok}2017-10-01 00:00:00,5.0,1\n")),
            3,
            "gpu_time",
            "",
        );
        assert_field_error(
            read_one(&format!("{HEAD}{ok}2017-10-01 00:00:00,abc,1,5.0,a\n")),
            3,
            "duration",
            "abc",
        );
        assert_field_error(
            read_one(&format!("{HEAD}{ok}2017-10-01 00:00:00,NaN,1,5.0,a\n")),
            3,
            "duration",
            "NaN",
        );
        assert_field_error(
            read_one(&format!("{HEAD}{ok}2017-10-01 00:00:00,-5.0,1,5.0,a\n")),
            3,
            "duration",
            "-5.0",
        );
        assert_field_error(
            read_one(&format!("{HEAD}{ok}2017-10-01 00:00:00,5.0,-1,5.0,a\n")),
            3,
            "num_gpus",
            "-1",
        );
        assert_field_error(
            read_one(&format!("{HEAD}{ok}2017-10-01 00:00:00,5.0,1.5,5.0,a\n")),
            3,
            "num_gpus",
            "1.5",
        );
        assert_field_error(
            read_one(&format!("{HEAD}{ok}2017-13-01 00:00:00,5.0,1,5.0,a\n")),
            3,
            "timestamp",
            "2017-13-01 00:00:00",
        );
        assert_field_error(
            read_one(&format!("{HEAD}{ok}2017-10-01 00:00:00,5.0,1,x,a\n")),
            3,
            "gpu_time",
            "x",
        );
        assert_field_error(
            read_one("timestamp,duration\n2017-10-01 00:00:00,5.0\n"),
            1,
            "num_gpus",
            "timestamp,duration",
        );
    }

    #[test]
    fn readers_philly_empty_file_errors() {
        let err = read_one("").unwrap_err();
        assert!(
            matches!(&err, InputError::File { file, .. } if file.ends_with("t.csv")),
            "{err}"
        );
    }

    #[test]
    fn readers_philly_cluster_preset_from_embedded_list() {
        let cluster = philly_cluster();
        assert_eq!(cluster.name, "philly");
        assert_eq!(cluster.nodes.len(), 539);
        assert_eq!(cluster.total_gpus(), 3_205);
        assert!(
            cluster
                .nodes
                .iter()
                .all(|n| n.gpus > 0 && n.gpu_type.as_str() == PHILLY_GPU_TYPE)
        );
        let m0 = &cluster.nodes[0];
        assert_eq!(
            (m0.name.as_str(), m0.gpus, m0.cpu_cores, m0.memory_gb),
            ("m0", 8, 48, 512.0)
        );
    }

    #[test]
    fn readers_philly_machine_list_errors() {
        let dir = tempfile::tempdir().unwrap();
        let bad = write(
            &dir,
            "m.csv",
            "machineId, number of GPUs, single GPU mem\nm0,2, 12GB\nm1,-2, 12GB\n",
        );
        let err = read_philly_machines(&bad).unwrap_err();
        assert!(
            matches!(err, InputError::Field { line: 3, ref value, .. } if value == "-2"),
            "{err}"
        );
        let dup = write(&dir, "d.csv", "machineId,number of GPUs\nm0,2\nm0,4\n");
        assert!(read_philly_machines(&dup).is_err());
        let empty = write(&dir, "e.csv", "");
        assert!(matches!(
            read_philly_machines(&empty),
            Err(InputError::File { .. })
        ));
    }

    fn shared(rel: &str) -> Option<PathBuf> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/traces")
            .join(rel);
        if path.exists() {
            Some(path)
        } else {
            eprintln!("skipping: {} not found", path.display());
            None
        }
    }

    #[test]
    fn readers_philly_real_table() {
        let Some(path) = shared("philly/philly_jobs_until_2017-11-30.csv") else {
            return;
        };
        let w = read_philly(&path).unwrap();
        assert_eq!(w.name, "philly_jobs_until_2017-11-30");
        assert_eq!(w.jobs.len(), 74_167 - 57);
        assert_eq!(w.jobs.first().map(|j| j.submit_time), Some(0.0));
        assert!(
            w.jobs
                .windows(2)
                .all(|p| p[0].submit_time <= p[1].submit_time)
        );
        assert!(
            w.notes
                .iter()
                .any(|n| n.starts_with("dropped 57 exact duplicate rows")),
            "{:?}",
            w.notes
        );
        assert!(
            w.notes.iter().any(|n| n.contains("2017-09-04 10:30:41")),
            "{:?}",
            w.notes
        );
        let multi = w.jobs.iter().filter(|j| j.requested_gpus > 1).count();
        let max_gpus = w.jobs.iter().map(|j| j.requested_gpus).max();
        assert_eq!(max_gpus, Some(32));
        eprintln!(
            "philly: {} jobs, {multi} multi-GPU, notes {:?}",
            w.jobs.len(),
            w.notes
        );
    }

    #[test]
    fn readers_philly_real_machine_lists() {
        let Some(revised) = shared("philly/cluster/revised_machine_list.csv") else {
            return;
        };
        assert_eq!(
            read_philly_machines(&revised).unwrap().nodes,
            philly_cluster().nodes
        );
        let Some(original) = shared("philly/cluster/cluster_machine_list.csv") else {
            return;
        };
        let original = read_philly_machines(&original).unwrap();
        assert_eq!((original.nodes.len(), original.total_gpus()), (552, 2_490));
    }
}
