//! Reader for Alibaba PAI "openb" pod lists (cluster-trace-gpu-v2023, ATC'23) and node lists.
//!
//! Pod list columns (read by header name): `name, cpu_milli, memory_mib, num_gpu, gpu_milli,
//! gpu_spec, qos, pod_phase, creation_time, deletion_time, scheduled_time`, times in seconds
//! from the trace start. Decisions:
//! * One rigid job per pod with `num_gpu` ≥ 1; CPU-only pods are skipped and counted.
//! * Pods never scheduled (empty `scheduled_time`, the Pending ones) are skipped and counted:
//!   they never ran, so they have no run time to replay.
//! * Run time = `deletion_time − scheduled_time`; submit = `creation_time` (already relative).
//!   Pods still Running at the trace end are cut there (censored); the count is noted.
//! * GPU sharing: a pod with `gpu_milli` < 1000 asks for a fraction of one GPU; we have no
//!   fractional GPUs, so it takes 1 whole GPU (counted in `notes`).
//! * `gpu_spec` (`T4|V100M16`) becomes `allowed_gpu_types`, lowercased, split on `|`, repeats
//!   removed; empty means any type. Node models use the same lowercase names (`v100m16`).
//! * `cpus_per_gpu` = cpu_milli / 1000 / num_gpu; `memory_gb_per_gpu` = memory_mib / 1024 /
//!   num_gpu (GiB, reported as GB).
//! * `application` is `openb:<qos>` (LS, BE, ...); `user` is `None` (the trace has none).

use super::{ASSUMED_NETWORK_GBPS, CsvTable, Row, file_stem};
use crate::error::InputError;
use crate::workload::Workload;
use adaptsched_core::{Cluster, GpuType, JobSpec, Node};
use std::io::Read;
use std::path::Path;

/// Columns whose presence identifies an openb pod list (used by `detect_and_read`).
pub(crate) const HEADER: &[&str] = &[
    "name",
    "num_gpu",
    "creation_time",
    "deletion_time",
    "scheduled_time",
];

struct Columns {
    name: usize,
    cpu_milli: usize,
    memory_mib: usize,
    num_gpu: usize,
    gpu_milli: Option<usize>,
    gpu_spec: Option<usize>,
    qos: Option<usize>,
    pod_phase: Option<usize>,
    creation_time: usize,
    deletion_time: usize,
    scheduled_time: usize,
}

impl Columns {
    fn find<R: Read>(table: &CsvTable<R>) -> Result<Self, InputError> {
        Ok(Columns {
            name: table.require("name")?,
            cpu_milli: table.require("cpu_milli")?,
            memory_mib: table.require("memory_mib")?,
            num_gpu: table.require("num_gpu")?,
            gpu_milli: table.column("gpu_milli"),
            gpu_spec: table.column("gpu_spec"),
            qos: table.column("qos"),
            pod_phase: table.column("pod_phase"),
            creation_time: table.require("creation_time")?,
            deletion_time: table.require("deletion_time")?,
            scheduled_time: table.require("scheduled_time")?,
        })
    }
}

/// What one pod turned into.
enum Outcome {
    Job {
        job: JobSpec,
        fractional: bool,
        running: bool,
    },
    CpuOnly,
    Unscheduled,
}

#[derive(Default)]
struct Tally {
    cpu_only: u64,
    unscheduled: u64,
    fractional: u64,
    running: u64,
}

/// Reads an openb pod list into a workload named after the file stem. See the module docs for
/// what is skipped and approximated; every case is counted in `notes`.
pub fn read_openb(path: &Path) -> Result<Workload, InputError> {
    let mut table = CsvTable::open(path)?;
    let cols = Columns::find(&table)?;
    let mut jobs = Vec::new();
    let mut tally = Tally::default();
    table.for_each_row(|row| {
        match parse_row(row, &cols)? {
            Outcome::Job {
                job,
                fractional,
                running,
            } => {
                tally.fractional += u64::from(fractional);
                tally.running += u64::from(running);
                jobs.push(job);
            }
            Outcome::CpuOnly => tally.cpu_only += 1,
            Outcome::Unscheduled => tally.unscheduled += 1,
        }
        Ok(())
    })?;
    let mut workload = Workload {
        name: file_stem(path),
        jobs,
        notes: tally_notes(&tally),
    };
    workload.sort_by_submit_time();
    Ok(workload)
}

fn parse_row(row: &Row<'_>, cols: &Columns) -> Result<Outcome, InputError> {
    let name = row.text(cols.name);
    if name.is_empty() {
        return Err(row.error(cols.name, "empty pod name"));
    }
    let cpu_milli = row.non_negative(cols.cpu_milli)?;
    let memory_mib = row.non_negative(cols.memory_mib)?;
    let gpus = row.count(cols.num_gpu)?;
    let gpu_milli = gpu_milli(row, cols)?;
    let creation = row.non_negative(cols.creation_time)?;
    let scheduled = row.opt_non_negative(cols.scheduled_time)?;
    let deletion = row.opt_non_negative(cols.deletion_time)?;
    if gpus == 0 {
        return Ok(Outcome::CpuOnly);
    }
    let Some(scheduled) = scheduled else {
        return Ok(Outcome::Unscheduled);
    };
    let deletion = deletion.ok_or_else(|| {
        row.error(
            cols.deletion_time,
            "missing deletion_time for a scheduled pod",
        )
    })?;
    if deletion < scheduled {
        return Err(row.error(
            cols.deletion_time,
            format!("deletion_time is before scheduled_time ({scheduled})"),
        ));
    }
    let qos = cols.qos.map_or("", |c| row.text(c));
    let application = if qos.is_empty() {
        "openb".to_string()
    } else {
        format!("openb:{qos}")
    };
    let mut job =
        JobSpec::new(name, creation, application, gpus).with_duration(deletion - scheduled);
    job.allowed_gpu_types = cols
        .gpu_spec
        .map_or_else(Vec::new, |c| parse_gpu_spec(row.text(c)));
    job.cpus_per_gpu = cpu_milli / 1000.0 / f64::from(gpus);
    job.memory_gb_per_gpu = memory_mib / 1024.0 / f64::from(gpus);
    let running = cols
        .pod_phase
        .is_some_and(|c| row.text(c).eq_ignore_ascii_case("Running"));
    Ok(Outcome::Job {
        job,
        fractional: gpu_milli.is_some_and(|m| m < 1000),
        running,
    })
}

/// `gpu_milli`, if the column is there and filled: thousandths of one GPU, at most 1000.
fn gpu_milli(row: &Row<'_>, cols: &Columns) -> Result<Option<u32>, InputError> {
    let Some(col) = cols.gpu_milli else {
        return Ok(None);
    };
    let milli = row.opt_count(col)?;
    if milli.is_some_and(|m| m > 1000) {
        return Err(row.error(col, "gpu_milli above 1000 (more than one whole GPU)"));
    }
    Ok(milli)
}

/// `T4|V100M16|V100M16` → `[t4, v100m16]`; empty → any type.
fn parse_gpu_spec(spec: &str) -> Vec<GpuType> {
    let mut types: Vec<GpuType> = Vec::new();
    for gpu_type in spec
        .split('|')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(GpuType::new)
    {
        if !types.contains(&gpu_type) {
            types.push(gpu_type);
        }
    }
    types
}

fn tally_notes(tally: &Tally) -> Vec<String> {
    let mut notes = Vec::new();
    if tally.cpu_only > 0 {
        notes.push(format!(
            "skipped {} CPU-only pods (num_gpu 0)",
            tally.cpu_only
        ));
    }
    if tally.unscheduled > 0 {
        notes.push(format!(
            "skipped {} GPU pods that were never scheduled (empty scheduled_time)",
            tally.unscheduled
        ));
    }
    if tally.fractional > 0 {
        notes.push(format!(
            "{} pods ask for a fraction of a GPU (gpu_milli < 1000); each counts as 1 whole GPU",
            tally.fractional
        ));
    }
    if tally.running > 0 {
        notes.push(format!(
            "{} pods were still Running at the trace end; their durations are cut there (censored)",
            tally.running
        ));
    }
    notes
}

/// Reads an openb node list (`sn, cpu_milli, memory_mib, gpu, model`) into a cluster named by
/// the file stem, keeping GPU nodes only (a GPU scheduler cannot use the others).
///
/// Nodes are named by `sn`; `model` becomes the lowercase GPU type (`V100M16` → `v100m16`,
/// matching pod `gpu_spec`s); `cpu_cores` = cpu_milli / 1000 rounded down; `memory_gb` =
/// memory_mib / 1024. The list has no network data: [`ASSUMED_NETWORK_GBPS`]. A GPU node
/// with no model, or a list without GPU nodes, is an error.
pub fn openb_cluster(path: &Path) -> Result<Cluster, InputError> {
    let mut table = CsvTable::open(path)?;
    let sn = table.require("sn")?;
    let cpu_milli = table.require("cpu_milli")?;
    let memory_mib = table.require("memory_mib")?;
    let gpu = table.require("gpu")?;
    let model = table.require("model")?;
    let mut nodes = Vec::new();
    table.for_each_row(|row| {
        let name = row.text(sn);
        if name.is_empty() {
            return Err(row.error(sn, "empty node id"));
        }
        let (cpu, memory, gpus) = (
            row.non_negative(cpu_milli)?,
            row.non_negative(memory_mib)?,
            row.count(gpu)?,
        );
        if gpus == 0 {
            return Ok(());
        }
        if row.text(model).is_empty() {
            return Err(row.error(model, "GPU node without a GPU model"));
        }
        nodes.push(Node {
            name: name.to_string(),
            gpu_type: GpuType::new(row.text(model)),
            gpus,
            cpu_cores: (cpu / 1000.0).floor() as u32, // `as` saturates; the value is finite and ≥ 0
            memory_gb: memory / 1024.0,
            network_gbps: ASSUMED_NETWORK_GBPS,
        });
        Ok(())
    })?;
    if nodes.is_empty() {
        return Err(InputError::file(path, "no GPU nodes in the node list"));
    }
    Ok(Cluster {
        name: file_stem(path),
        nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readers::test_support::assert_field_error;
    use adaptsched_core::Work;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    const HEAD: &str = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time\n";

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn read_one(text: &str) -> Result<Workload, InputError> {
        let dir = tempfile::tempdir().unwrap();
        read_openb(&write(&dir, "t.csv", text))
    }

    #[test]
    fn readers_openb_reads_small_file() {
        let text = format!(
            "{HEAD}pod-0,12000,16384,2,1000,T4|V100M16|V100M16,LS,Running,0,1000,10\n\
             pod-1,4000,8192,0,0,,BE,Running,5,100,6\n\
             pod-2,6000,12288,1,460,,BE,Failed,20,200,25\n\
             pod-3,6000,12288,1,1000,,BE,Pending,30,40,\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let w = read_openb(&write(&dir, "pods.csv", &text)).unwrap();
        assert_eq!(w.name, "pods");
        assert_eq!(w.jobs.len(), 2);
        let a = &w.jobs[0];
        assert_eq!(
            (a.name.as_str(), a.submit_time, a.requested_gpus),
            ("pod-0", 0.0, 2)
        );
        assert_eq!(a.work, Work::Duration { seconds: 990.0 });
        assert_eq!(
            a.allowed_gpu_types,
            vec![GpuType::new("t4"), GpuType::new("v100m16")]
        );
        assert_eq!((a.cpus_per_gpu, a.memory_gb_per_gpu), (6.0, 8.0));
        assert_eq!(a.application, "openb:LS");
        let b = &w.jobs[1];
        assert_eq!(
            (b.submit_time, b.requested_gpus, b.work.clone()),
            (20.0, 1, Work::Duration { seconds: 175.0 })
        );
        assert!(b.allowed_gpu_types.is_empty());
        for needle in [
            "skipped 1 CPU-only",
            "skipped 1 GPU pods that were never scheduled",
            "1 pods ask for a fraction",
            "1 pods were still Running",
        ] {
            assert!(
                w.notes.iter().any(|n| n.starts_with(needle)),
                "{needle} not in {:?}",
                w.notes
            );
        }
    }

    #[test]
    fn readers_openb_malformed_rows_name_line_column_value() {
        let ok = "pod-0,12000,16384,1,1000,,LS,Running,0,1000,10\n";
        let row = |s: &str| read_one(&format!("{HEAD}{ok}{s}\n"));
        assert_field_error(row("pod-1,12000,16384,1,1000,,LS"), 3, "pod_phase", "");
        assert_field_error(
            row("pod-1,12000,16384,x,1000,,LS,Running,0,1000,10"),
            3,
            "num_gpu",
            "x",
        );
        assert_field_error(
            row("pod-1,12000,16384,-1,1000,,LS,Running,0,1000,10"),
            3,
            "num_gpu",
            "-1",
        );
        assert_field_error(
            row("pod-1,-5,16384,1,1000,,LS,Running,0,1000,10"),
            3,
            "cpu_milli",
            "-5",
        );
        assert_field_error(
            row("pod-1,12000,NaN,1,1000,,LS,Running,0,1000,10"),
            3,
            "memory_mib",
            "NaN",
        );
        assert_field_error(
            row("pod-1,12000,16384,1,1500,,LS,Running,0,1000,10"),
            3,
            "gpu_milli",
            "1500",
        );
        assert_field_error(
            row("pod-1,12000,16384,1,1000,,LS,Running,0,5,10"),
            3,
            "deletion_time",
            "5",
        );
        assert_field_error(
            row("pod-1,12000,16384,1,1000,,LS,Running,0,,10"),
            3,
            "deletion_time",
            "",
        );
        assert_field_error(
            row("pod-1,12000,16384,1,1000,,LS,Running,,1000,10"),
            3,
            "creation_time",
            "",
        );
    }

    #[test]
    fn readers_openb_empty_file_errors() {
        let err = read_one("").unwrap_err();
        assert!(
            matches!(&err, InputError::File { file, .. } if file.ends_with("t.csv")),
            "{err}"
        );
    }

    #[test]
    fn readers_openb_cluster_keeps_gpu_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let text = "sn,cpu_milli,memory_mib,gpu,model\nn0,32000,262144,0,\nn1,96000,393216,8,V100M32\nn2,8500,1536,1,T4\n";
        let cluster = openb_cluster(&write(&dir, "nodes.csv", text)).unwrap();
        assert_eq!(cluster.name, "nodes");
        assert_eq!(cluster.nodes.len(), 2);
        let n1 = &cluster.nodes[0];
        assert_eq!(
            (
                n1.name.as_str(),
                n1.gpu_type.as_str(),
                n1.gpus,
                n1.cpu_cores,
                n1.memory_gb
            ),
            ("n1", "v100m32", 8, 96, 384.0)
        );
        assert_eq!(
            (cluster.nodes[1].cpu_cores, cluster.nodes[1].memory_gb),
            (8, 1.5)
        );
        let no_model = write(
            &dir,
            "t.csv",
            "sn,cpu_milli,memory_mib,gpu,model\nn0,32000,262144,2,\n",
        );
        assert_field_error(openb_cluster(&no_model), 2, "model", "");
        let bad_gpu = write(
            &dir,
            "t.csv",
            "sn,cpu_milli,memory_mib,gpu,model\nn0,32000,262144,-2,T4\n",
        );
        assert_field_error(openb_cluster(&bad_gpu), 2, "gpu", "-2");
        let cpu_only = write(
            &dir,
            "c.csv",
            "sn,cpu_milli,memory_mib,gpu,model\nn0,32000,262144,0,\n",
        );
        assert!(matches!(
            openb_cluster(&cpu_only),
            Err(InputError::File { .. })
        ));
        let empty = write(&dir, "t.csv", "");
        assert!(matches!(
            openb_cluster(&empty),
            Err(InputError::File { .. })
        ));
    }

    fn shared(rel: &str) -> Option<PathBuf> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/traces/alibaba_openb_v2023")
            .join(rel);
        if path.exists() {
            Some(path)
        } else {
            eprintln!("skipping: {} not found", path.display());
            None
        }
    }

    #[test]
    fn readers_openb_real_pod_lists() {
        for (file, constrained) in [
            ("openb_pod_list_default.csv", 0),
            ("openb_pod_list_gpuspec33.csv", 2_092),
        ] {
            let Some(path) = shared(file) else { return };
            let w = read_openb(&path).unwrap();
            assert_eq!(w.jobs.len(), 8_152 - 1_088 - 861, "{file}");
            for note in [
                "skipped 1088 CPU-only",
                "skipped 861 GPU pods",
                "2573 pods ask for a fraction",
                "4149 pods were still Running",
            ] {
                assert!(
                    w.notes.iter().any(|n| n.starts_with(note)),
                    "{note} not in {:?}",
                    w.notes
                );
            }
            let with_spec = w
                .jobs
                .iter()
                .filter(|j| !j.allowed_gpu_types.is_empty())
                .count();
            assert_eq!(with_spec, constrained, "{file}");
            eprintln!(
                "{file}: {} jobs, {with_spec} with a gpu_spec, notes {:?}",
                w.jobs.len(),
                w.notes
            );
        }
    }

    #[test]
    fn readers_openb_real_node_lists() {
        let Some(gpu_nodes) = shared("openb_node_list_gpu_node.csv") else {
            return;
        };
        let cluster = openb_cluster(&gpu_nodes).unwrap();
        assert_eq!((cluster.nodes.len(), cluster.total_gpus()), (1_213, 6_212));
        let by_type: BTreeMap<String, u32> = cluster
            .gpus_by_type()
            .into_iter()
            .map(|(t, n)| (t.0, n))
            .collect();
        let expected = [
            ("a10", 2),
            ("g2", 4_392),
            ("g3", 312),
            ("p100", 265),
            ("t4", 842),
            ("v100m16", 195),
            ("v100m32", 204),
        ];
        assert_eq!(
            by_type,
            expected
                .into_iter()
                .map(|(t, n)| (t.to_string(), n))
                .collect()
        );
        let Some(all_nodes) = shared("openb_node_list_all_node.csv") else {
            return;
        };
        let all = openb_cluster(&all_nodes).unwrap(); // numbered differently, same GPU nodes
        assert_eq!(
            (all.nodes.len(), all.gpus_by_type()),
            (1_213, cluster.gpus_by_type())
        );
    }
}
