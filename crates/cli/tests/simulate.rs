//! End-to-end tests of `adaptsched simulate`: the real binary on real files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/pollux");

fn adaptsched(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adaptsched"))
        .args(args)
        .output()
        .expect("runs")
}

fn workload(n: u32) -> PathBuf {
    Path::new(DATA).join(format!("workloads/load-1.0/workload-{n}.csv"))
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

#[test]
fn same_seed_same_bytes() {
    let dir = tempfile::tempdir().expect("temp");
    let w = workload(3).display().to_string();
    let run = |out: &str| {
        let output = adaptsched(&[
            "simulate",
            "-q",
            "-w",
            &w,
            "-p",
            "fifo,tiresias,srtf,proportional",
            "--seed",
            "7",
            "-o",
            out,
        ]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    };
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    run(&a.display().to_string());
    run(&b.display().to_string());
    for file in ["summary.json", "jobs.csv"] {
        let first = std::fs::read(a.join(file)).expect("written");
        assert!(!first.is_empty());
        assert_eq!(
            first,
            std::fs::read(b.join(file)).expect("written"),
            "{file} differs between runs"
        );
    }
    for plot in ["jct_cdf.svg", "gpus_workload-3.svg"] {
        let svg = std::fs::read_to_string(a.join(plot)).expect("plot written");
        assert!(
            svg.starts_with("<svg") && svg.contains("tiresias"),
            "{plot}"
        );
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("summary.json")).expect("summary"))
            .expect("json");
    let entry = &summary["tiresias"]["workload-3"];
    for key in [
        "avg_jct_s",
        "median_jct_s",
        "p99_jct_s",
        "makespan_s",
        "gpu_utilization",
        "max_finish_time_fairness",
        "restarts_per_job",
        "jobs_completed",
        "jobs_total",
        "decision_ms_median",
        "balance_max_deviation",
    ] {
        assert!(entry.get(key).is_some(), "summary.json lacks {key}");
    }
    assert_eq!(entry["jobs_completed"], 160);
    let jobs = std::fs::read_to_string(a.join("jobs.csv")).expect("jobs");
    assert_eq!(jobs.lines().count(), 1 + 4 * 160);
    assert!(jobs.starts_with(
        "policy,workload,name,application,requested_gpus,submit,start,end,jct,restarts"
    ));
}

#[test]
fn folders_expand_to_their_workloads_and_the_table_has_a_mean() {
    let w = Path::new(DATA)
        .join("workloads/load-1.0")
        .display()
        .to_string();
    let output = adaptsched(&[
        "simulate", "-q", "-w", &w, "-p", "tiresias", "--rounds", "periodic",
    ]);
    assert!(output.status.success());
    let table = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        table.lines().filter(|l| l.contains("workload-")).count(),
        8,
        "{table}"
    );
    let mean_line = table
        .lines()
        .find(|l| l.contains("(mean)"))
        .expect("mean row");
    let avg_h: f64 = mean_line
        .split_whitespace()
        .nth(2)
        .expect("avg column")
        .parse()
        .expect("number");
    assert!((avg_h / 1.122 - 1.0).abs() < 0.15, "{mean_line}");
}

#[test]
fn bad_inputs_get_one_clear_error_each() {
    let dir = tempfile::tempdir().expect("temp");
    let header = "name,time,application,num_replicas,batch_size\n";
    let sub = dir.path().join("other");
    std::fs::create_dir(&sub).expect("mkdir");
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (
            vec!["-w".into(), write(dir.path(), "empty.csv", "")],
            vec!["empty.csv", "empty"],
        ),
        (
            vec![
                "-w".into(),
                write(dir.path(), "trunc.csv", &format!("{header}a,1,cifar10\n")),
            ],
            vec!["trunc.csv:2", "num_replicas"],
        ),
        (
            vec![
                "-w".into(),
                write(
                    dir.path(),
                    "neg.csv",
                    &format!("{header}a,1,cifar10,-2,128\n"),
                ),
            ],
            vec!["neg.csv:2", "num_replicas", "-2"],
        ),
        (
            vec![
                "-w".into(),
                write(
                    dir.path(),
                    "text.csv",
                    &format!("{header}a,soon,cifar10,2,128\n"),
                ),
            ],
            vec!["text.csv:2", "time", "soon"],
        ),
        (
            vec![
                "-w".into(),
                write(dir.path(), "app.csv", &format!("{header}a,1,gpt5,2,128\n")),
            ],
            vec!["app.csv:2", "application", "gpt5"],
        ),
        (
            vec![
                "-w".into(),
                workload(1).display().to_string(),
                "-c".into(),
                "moon-base".into(),
            ],
            vec!["moon-base", "pollux-t4x64"],
        ),
        (
            vec![
                "-w".into(),
                workload(1).display().to_string(),
                "-p".into(),
                "magic".into(),
            ],
            vec!["magic", "tiresias"],
        ),
        (
            vec![
                "-w".into(),
                dir.path().join("nope.csv").display().to_string(),
            ],
            vec!["nope.csv", "no such file"],
        ),
        (
            vec![
                "-w".into(),
                workload(1).display().to_string(),
                "--interval".into(),
                "-5".into(),
            ],
            vec!["--interval", "-5"],
        ),
    ];
    for (args, needles) in cases {
        let mut full = vec!["simulate".to_string(), "-q".to_string()];
        full.extend(args.clone());
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        let output = adaptsched(&refs);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} should fail");
        assert_eq!(
            stderr.lines().filter(|l| l.starts_with("error")).count(),
            1,
            "{args:?}: {stderr}"
        );
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "{args:?}: {needle:?} not in {stderr}"
            );
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn help_explains_every_flag() {
    let output = adaptsched(&["simulate", "--help"]);
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--workload",
        "--cluster",
        "--policy",
        "--seed",
        "--interval",
        "--out",
        "--profiles",
        "--rounds",
        "--restart-delay",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}
