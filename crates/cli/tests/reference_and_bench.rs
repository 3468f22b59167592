//! End-to-end tests of `adaptsched simulate --reference` and `adaptsched bench decide`: the
//! real binary on real files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/pollux");

fn adaptsched(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adaptsched"))
        .args(args)
        .output()
        .expect("runs")
}

fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The whitespace-separated fields of the first line starting with `prefix`.
fn row<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} row in:\n{text}"))
        .split_whitespace()
        .collect()
}

#[test]
fn tiresias_reference_mean_ratio_is_near_one() {
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "../../../shared/anchors/pollux/paper_results/results-jobload/tiresias-1.0/summary.json",
    );
    if !reference.is_file() {
        eprintln!("skipped: {} is absent", reference.display());
        return;
    }
    let workloads = Path::new(DATA).join("workloads/load-1.0");
    let out = stdout_of(&adaptsched(&[
        "simulate",
        "-q",
        "-w",
        &workloads.display().to_string(),
        "-p",
        "tiresias",
        "--rounds",
        "periodic",
        "--reference",
        &reference.display().to_string(),
    ]));
    for n in 1..=8 {
        let fields = row(&out, &format!("workload-{n} "));
        assert!(fields.contains(&"160/160"), "{out}");
    }
    // (mean) matched ours theirs ratio dev-median dev-p90
    let mean = row(&out, "(mean)");
    assert_eq!(mean[1], "1280/1280", "{out}");
    let ratio: f64 = mean[4].parse().expect("ratio");
    assert!((0.9..=1.1).contains(&ratio), "mean ratio {ratio}:\n{out}");
    assert!(out.contains("job by job: 1280 jobs compared"), "{out}");
    assert!(!out.contains("missing"), "{out}");
}

#[test]
fn reference_lists_one_sided_workloads_and_rejects_bad_files() {
    let dir = tempfile::tempdir().expect("temp");
    let good = dir.path().join("summary.json");
    std::fs::write(
        &good,
        r#"{"jcts": {"workload-3": {"ncf-0": 600, "nope-1": 5}, "workload-99": {"x": 1}},
            "avgs": {"workload-3": 302.5, "workload-99": 1}, "mean": 151.75}"#,
    )
    .expect("write");
    let w3: PathBuf = Path::new(DATA).join("workloads/load-1.0/workload-3.csv");
    let w3 = w3.display().to_string();
    let out = stdout_of(&adaptsched(&[
        "simulate",
        "-q",
        "-w",
        &w3,
        "-p",
        "fifo,srtf",
        "--reference",
        &good.display().to_string(),
    ]));
    assert_eq!(out.matches("vs reference").count(), 2, "{out}");
    assert_eq!(row(&out, "workload-3 ")[1], "1/2", "{out}");
    assert_eq!(
        out.matches("missing in our run: workload-99").count(),
        2,
        "{out}"
    );

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"jcts": {"workload-3": {"cifar10-0": "soon"}}}"#).expect("write");
    let output = adaptsched(&[
        "simulate",
        "-q",
        "-w",
        &w3,
        "--reference",
        &bad.display().to_string(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("bad.json") && stderr.contains("\"cifar10-0\""),
        "{stderr}"
    );
}

#[test]
fn bench_decide_prints_a_row_per_policy_with_sane_numbers() {
    let args = [
        "bench",
        "decide",
        "--policy",
        "fifo,tiresias",
        "--gpus",
        "64",
        "--jobs",
        "32",
        "--rounds",
        "3",
    ];
    let out = stdout_of(&adaptsched(&args));
    assert_eq!(
        row(&out, "policy"),
        [
            "policy", "GPUs", "jobs", "median", "ms", "p95", "ms", "max", "ms", "placed"
        ]
    );
    let mut placed = Vec::new();
    for policy in ["fifo", "tiresias"] {
        let fields = row(&out, &format!("{policy} "));
        assert_eq!(&fields[1..3], ["64", "32"], "{out}");
        let ms: Vec<f64> = fields[3..6]
            .iter()
            .map(|f| f.parse().expect("ms"))
            .collect();
        assert!(ms.iter().all(|m| m.is_finite() && *m >= 0.0), "{out}");
        assert!(
            ms[0] <= ms[1] && ms[1] <= ms[2],
            "median ≤ p95 ≤ max: {out}"
        );
        let n: usize = fields[6].parse().expect("placed");
        assert!(n > 0 && n <= 32, "{out}");
        placed.push(n);
    }
    // The input is seeded: another run places the same jobs.
    let again = stdout_of(&adaptsched(&args));
    assert_eq!(row(&again, "fifo ")[6], placed[0].to_string());

    let json: serde_json::Value =
        serde_json::from_str(&stdout_of(&adaptsched(&[&args[..], &["--json"]].concat())))
            .expect("json");
    let rows = json.as_array().expect("array");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["policy"], "tiresias");
    assert!(rows[0]["median_ms"].as_f64().is_some_and(|m| m >= 0.0));
}

#[test]
fn bench_decide_pairs_or_crosses_sizes_and_rejects_bad_input() {
    let out = stdout_of(&adaptsched(&[
        "bench", "decide", "-p", "srtf", "--gpus", "8,16", "--jobs", "4", "--rounds", "1",
    ]));
    assert_eq!(
        out.lines().filter(|l| l.starts_with("srtf ")).count(),
        2,
        "{out}"
    );
    for (args, message) in [
        (&["--gpus", "0", "--jobs", "1"][..], "--gpus"),
        (
            &["--gpus", "8", "--jobs", "1", "--rounds", "0"][..],
            "--rounds",
        ),
        (
            &["--gpus", "8", "--jobs", "1", "--gpu-types", "6"][..],
            "--gpu-types",
        ),
        (&["--gpus", "8", "--jobs", "1", "-p", "nope"][..], "nope"),
    ] {
        let mut all = vec!["bench", "decide", "-p", "fifo"];
        all.extend_from_slice(args);
        let output = adaptsched(&all);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains(message),
            "{args:?}: {stderr}"
        );
    }
}
