//! Comparing our runs with a reference result: a Pollux-artifact style `summary.json`.
//!
//! The reproduction claims of this project ("tiresias lands on the authors' own simulator
//! result") must be checkable from the command line, workload by workload and job by job,
//! not only from a test. The reference file is `{"jcts": {workload: {job: seconds}},
//! "avgs": {workload: mean_jct}, "mean": mean_of_avgs}`; `avgs` and `mean` may be absent
//! (they are derived from `jcts` then).

use crate::engine::JobRecord;
use crate::error::InputError;
use adaptsched_core::metrics::{mean, percentile};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A parsed reference summary.
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceSummary {
    pub file: PathBuf,
    /// Workload → job name → JCT in seconds.
    pub jcts: BTreeMap<String, BTreeMap<String, f64>>,
    /// Workload → average JCT in seconds, as the file states it (it may cover workloads
    /// without per-job JCTs).
    pub avgs: BTreeMap<String, f64>,
    /// The file's mean of per-workload averages, if stated.
    pub mean: Option<f64>,
}

impl ReferenceSummary {
    /// Every workload the reference has a result for.
    pub fn workloads(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .jcts
            .keys()
            .chain(self.avgs.keys())
            .map(String::as_str)
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The reference's average JCT of a workload: the stated one, else the mean of its jobs.
    pub fn avg(&self, workload: &str) -> Option<f64> {
        self.avgs.get(workload).copied().or_else(|| {
            self.jcts
                .get(workload)
                .filter(|jobs| !jobs.is_empty())
                .map(|jobs| mean(&jobs.values().copied().collect::<Vec<_>>()))
        })
    }
}

fn seconds(file: &Path, key: &str, value: &Value) -> Result<f64, InputError> {
    value
        .as_f64()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| {
            InputError::file(
                file,
                format!("key {key}: expected a number of seconds ≥ 0, got {value}"),
            )
        })
}

fn object<'v>(
    file: &Path,
    key: &str,
    value: &'v Value,
) -> Result<&'v serde_json::Map<String, Value>, InputError> {
    value.as_object().ok_or_else(|| {
        InputError::file(file, format!("key {key}: expected an object, got {value}"))
    })
}

/// Parses the text of a reference summary; `file` only names it in errors.
pub fn parse_reference(text: &str, file: &Path) -> Result<ReferenceSummary, InputError> {
    let root: Value = serde_json::from_str(text)
        .map_err(|e| InputError::file(file, format!("not valid JSON: {e}")))?;
    let root = object(file, "(top level)", &root)?;
    let jcts_value = root.get("jcts").ok_or_else(|| {
        InputError::file(
            file,
            "key \"jcts\" missing: expected {\"jcts\": {workload: {job: seconds}}, ...}",
        )
    })?;
    let mut jcts = BTreeMap::new();
    for (workload, jobs) in object(file, "\"jcts\"", jcts_value)? {
        let key = format!("\"jcts\".{workload:?}");
        let mut parsed = BTreeMap::new();
        for (job, jct) in object(file, &key, jobs)? {
            parsed.insert(job.clone(), seconds(file, &format!("{key}.{job:?}"), jct)?);
        }
        jcts.insert(workload.clone(), parsed);
    }
    let mut avgs = BTreeMap::new();
    if let Some(value) = root.get("avgs") {
        for (workload, avg) in object(file, "\"avgs\"", value)? {
            avgs.insert(
                workload.clone(),
                seconds(file, &format!("\"avgs\".{workload:?}"), avg)?,
            );
        }
    }
    let mean = match root.get("mean") {
        None | Some(Value::Null) => None,
        Some(value) => Some(seconds(file, "\"mean\"", value)?),
    };
    Ok(ReferenceSummary {
        file: file.to_path_buf(),
        jcts,
        avgs,
        mean,
    })
}

/// Reads and parses a reference summary file.
pub fn read_reference(path: &Path) -> Result<ReferenceSummary, InputError> {
    // The message, not the source: callers print the whole chain, which would repeat it.
    let text = std::fs::read_to_string(path).map_err(|e| InputError::file(path, e.to_string()))?;
    parse_reference(&text, path)
}

/// One workload, ours against the reference. Our figures cover our completed jobs (as the
/// comparison table does); theirs come from their per-job JCTs, their makespan from the
/// submit times of the jobs we also ran (the file has no submit times).
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadComparison {
    pub workload: String,
    pub ours_avg_s: f64,
    pub theirs_avg_s: f64,
    pub ours_p99_s: f64,
    /// `None` when the reference has only an average for this workload.
    pub theirs_p99_s: Option<f64>,
    pub ours_makespan_s: f64,
    /// `None` when no job of theirs matches one of ours by name.
    pub theirs_makespan_s: Option<f64>,
    pub jobs_ours: usize,
    pub jobs_theirs: usize,
    /// Jobs present on both sides by name.
    pub jobs_matched: usize,
    /// `|ours/theirs − 1|` per matched job that we completed and they report > 0 s.
    pub job_deviations: Vec<f64>,
}

/// One policy's runs against a reference.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    pub policy: String,
    /// Workloads on both sides, in name order.
    pub workloads: Vec<WorkloadComparison>,
    /// Workloads we ran that the reference lacks.
    pub missing_in_reference: Vec<String>,
    /// Workloads the reference has that we did not run.
    pub missing_in_ours: Vec<String>,
}

/// `ours / theirs`, or `None` when theirs is 0.
pub fn ratio(ours: f64, theirs: f64) -> Option<f64> {
    (theirs != 0.0).then(|| ours / theirs)
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

/// Median and p90 of a set of deviations, `None` when empty.
pub fn median_p90(values: &[f64]) -> Option<(f64, f64)> {
    let values = sorted(values.to_vec());
    (!values.is_empty()).then(|| (percentile(&values, 50.0), percentile(&values, 90.0)))
}

impl Comparison {
    /// Mean over the compared workloads of (our, their) average JCTs.
    pub fn means(&self) -> Option<(f64, f64)> {
        (!self.workloads.is_empty()).then(|| {
            let ours: Vec<f64> = self.workloads.iter().map(|w| w.ours_avg_s).collect();
            let theirs: Vec<f64> = self.workloads.iter().map(|w| w.theirs_avg_s).collect();
            (mean(&ours), mean(&theirs))
        })
    }

    /// Every matched job's `|ours/theirs − 1|`, over all workloads.
    pub fn job_deviations(&self) -> Vec<f64> {
        self.workloads
            .iter()
            .flat_map(|w| w.job_deviations.iter().copied())
            .collect()
    }
}

fn compare_workload(
    workload: &str,
    jobs: &[JobRecord],
    reference: &ReferenceSummary,
) -> Option<WorkloadComparison> {
    let theirs_avg_s = reference.avg(workload)?;
    let empty = BTreeMap::new();
    let theirs = reference.jcts.get(workload).unwrap_or(&empty);
    let ours_jcts = sorted(jobs.iter().filter_map(JobRecord::jct).collect());
    let first_submit = jobs.iter().map(|j| j.submit).fold(f64::INFINITY, f64::min);
    let last_end = jobs
        .iter()
        .filter_map(|j| j.end)
        .fold(f64::NEG_INFINITY, f64::max);
    let mut by_name: BTreeMap<&str, &JobRecord> = BTreeMap::new();
    for job in jobs {
        by_name.entry(job.name.as_str()).or_insert(job);
    }
    let mut matched = 0;
    let mut deviations = Vec::new();
    let (mut their_first, mut their_last) = (f64::INFINITY, f64::NEG_INFINITY);
    for (name, &jct) in theirs {
        let Some(job) = by_name.get(name.as_str()) else {
            continue;
        };
        matched += 1;
        their_first = their_first.min(job.submit);
        their_last = their_last.max(job.submit + jct);
        if let Some(ours) = job.jct()
            && jct > 0.0
        {
            deviations.push((ours / jct - 1.0).abs());
        }
    }
    Some(WorkloadComparison {
        workload: workload.to_string(),
        ours_avg_s: mean(&ours_jcts),
        theirs_avg_s,
        ours_p99_s: percentile(&ours_jcts, 99.0),
        theirs_p99_s: (!theirs.is_empty())
            .then(|| percentile(&sorted(theirs.values().copied().collect()), 99.0)),
        ours_makespan_s: if ours_jcts.is_empty() {
            0.0
        } else {
            last_end - first_submit
        },
        theirs_makespan_s: (matched > 0).then_some(their_last - their_first),
        jobs_ours: jobs.len(),
        jobs_theirs: theirs.len(),
        jobs_matched: matched,
        job_deviations: deviations,
    })
}

/// Compares one policy's runs, `(workload name, job records)`, with a reference. A workload
/// run twice counts once (the first run).
pub fn compare(
    policy: &str,
    runs: &[(&str, &[JobRecord])],
    reference: &ReferenceSummary,
) -> Comparison {
    let mut ours: BTreeMap<&str, &[JobRecord]> = BTreeMap::new();
    for &(workload, jobs) in runs {
        ours.entry(workload).or_insert(jobs);
    }
    let mut comparison = Comparison {
        policy: policy.to_string(),
        workloads: Vec::new(),
        missing_in_reference: Vec::new(),
        missing_in_ours: Vec::new(),
    };
    for (&workload, jobs) in &ours {
        match compare_workload(workload, jobs, reference) {
            Some(w) => comparison.workloads.push(w),
            None => comparison.missing_in_reference.push(workload.to_string()),
        }
    }
    comparison.missing_in_ours = reference
        .workloads()
        .into_iter()
        .filter(|w| !ours.contains_key(w))
        .map(str::to_string)
        .collect();
    comparison
}

fn hours(seconds: Option<f64>) -> String {
    seconds.map_or_else(|| "-".to_string(), |s| format!("{:.3}", s / 3600.0))
}

fn ratio_text(ours: f64, theirs: Option<f64>) -> String {
    theirs
        .and_then(|t| ratio(ours, t))
        .map_or_else(|| "-".to_string(), |r| format!("{r:.3}"))
}

fn deviation_text(values: &[f64]) -> (String, String) {
    median_p90(values).map_or_else(
        || ("-".to_string(), "-".to_string()),
        |(m, p)| (format!("{m:.3}"), format!("{p:.3}")),
    )
}

/// The side-by-side table printed by `simulate --reference`: per workload our average, p99
/// and makespan (hours) against theirs with the ratio ours/theirs, jobs matched/theirs, and
/// the median and p90 of the per-job `|ours/theirs − 1|`; then the mean row and the
/// workloads only one side has.
pub fn comparison_text(comparison: &Comparison, reference_file: &Path) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{} vs reference {} (hours; ratio = ours/theirs; dev = |ours/theirs − 1| per job)",
        comparison.policy,
        reference_file.display()
    );
    let _ = writeln!(
        out,
        "{:<22} {:>9} {:>8} {:>8} {:>6} {:>8} {:>8} {:>6} {:>9} {:>8} {:>6} {:>7} {:>7}",
        "workload",
        "matched",
        "avg ours",
        "theirs",
        "ratio",
        "p99 ours",
        "theirs",
        "ratio",
        "mksp ours",
        "theirs",
        "ratio",
        "dev med",
        "dev p90"
    );
    for w in &comparison.workloads {
        let (dev_median, dev_p90) = deviation_text(&w.job_deviations);
        let _ = writeln!(
            out,
            "{:<22} {:>9} {:>8} {:>8} {:>6} {:>8} {:>8} {:>6} {:>9} {:>8} {:>6} {:>7} {:>7}",
            w.workload,
            format!("{}/{}", w.jobs_matched, w.jobs_theirs),
            hours(Some(w.ours_avg_s)),
            hours(Some(w.theirs_avg_s)),
            ratio_text(w.ours_avg_s, Some(w.theirs_avg_s)),
            hours(Some(w.ours_p99_s)),
            hours(w.theirs_p99_s),
            ratio_text(w.ours_p99_s, w.theirs_p99_s),
            hours(Some(w.ours_makespan_s)),
            hours(w.theirs_makespan_s),
            ratio_text(w.ours_makespan_s, w.theirs_makespan_s),
            dev_median,
            dev_p90
        );
    }
    let deviations = comparison.job_deviations();
    if let Some((ours, theirs)) = comparison.means() {
        let (dev_median, dev_p90) = deviation_text(&deviations);
        let matched: usize = comparison.workloads.iter().map(|w| w.jobs_matched).sum();
        let total: usize = comparison.workloads.iter().map(|w| w.jobs_theirs).sum();
        let _ = writeln!(
            out,
            "{:<22} {:>9} {:>8} {:>8} {:>6} {:>8} {:>8} {:>6} {:>9} {:>8} {:>6} {:>7} {:>7}",
            "(mean)",
            format!("{matched}/{total}"),
            hours(Some(ours)),
            hours(Some(theirs)),
            ratio_text(ours, Some(theirs)),
            "",
            "",
            "",
            "",
            "",
            "",
            dev_median,
            dev_p90
        );
    }
    match median_p90(&deviations) {
        Some((median, p90)) => {
            let _ = writeln!(
                out,
                "job by job: {} jobs compared, |ours/theirs − 1| median {median:.3}, p90 {p90:.3}",
                deviations.len()
            );
        }
        None => {
            let _ = writeln!(out, "job by job: no job matched by name");
        }
    }
    if !comparison.missing_in_reference.is_empty() {
        let _ = writeln!(
            out,
            "missing in the reference: {}",
            comparison.missing_in_reference.join(", ")
        );
    }
    if !comparison.missing_in_ours.is_empty() {
        let _ = writeln!(
            out,
            "missing in our run: {}",
            comparison.missing_in_ours.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: &str = r#"{
        "jcts": {"w1": {"a": 100, "b": 300}, "w2": {"c": 50}, "w3": {"d": 10}},
        "avgs": {"w1": 200.0, "w2": 50, "w3": 10},
        "mean": 86.67
    }"#;

    fn job(name: &str, submit: f64, end: Option<f64>) -> JobRecord {
        JobRecord {
            name: name.to_string(),
            application: "cifar10".to_string(),
            submit,
            start: Some(submit),
            end,
            restarts: 0,
            requested_gpus: 1,
            isolated_seconds: 0.0,
            batch_sizes: Vec::new(),
            finish_time_fairness: None,
        }
    }

    fn tiny() -> ReferenceSummary {
        parse_reference(TINY, Path::new("tiny.json")).expect("valid")
    }

    #[test]
    fn parses_a_summary() {
        let r = tiny();
        assert_eq!(r.jcts["w1"]["b"], 300.0);
        assert_eq!(r.avgs["w2"], 50.0);
        assert_eq!(r.mean, Some(86.67));
        assert_eq!(r.workloads(), ["w1", "w2", "w3"]);
        let only_jcts = parse_reference(r#"{"jcts": {"w": {"x": 2, "y": 4}}}"#, Path::new("f"))
            .expect("avgs and mean are optional");
        assert_eq!(only_jcts.avg("w"), Some(3.0));
        assert_eq!(only_jcts.mean, None);
    }

    #[test]
    fn malformed_files_name_the_file_and_the_key() {
        for (text, key) in [
            ("[1]", "(top level)"),
            ("{}", "\"jcts\""),
            (r#"{"jcts": 3}"#, "\"jcts\""),
            (r#"{"jcts": {"w1": []}}"#, "\"jcts\".\"w1\""),
            (r#"{"jcts": {"w1": {"a": "x"}}}"#, "\"jcts\".\"w1\".\"a\""),
            (r#"{"jcts": {"w1": {"a": -1}}}"#, "\"jcts\".\"w1\".\"a\""),
            (r#"{"jcts": {}, "avgs": {"w1": null}}"#, "\"avgs\".\"w1\""),
            (r#"{"jcts": {}, "mean": "1"}"#, "\"mean\""),
        ] {
            let err = parse_reference(text, Path::new("bad/summary.json"))
                .expect_err(text)
                .to_string();
            assert!(
                err.contains("bad/summary.json") && err.contains(key),
                "{text}: {err}"
            );
        }
        let err = parse_reference("{", Path::new("x.json")).expect_err("not JSON");
        assert!(err.to_string().contains("x.json"), "{err}");
    }

    #[test]
    fn compares_workloads_jobs_and_means() {
        // w1: a runs 100 → 110 s (dev 0.1), b 300 → 240 s (dev 0.2); our extra job z is
        // unmatched. w4 is ours only; w3 theirs only.
        let w1 = vec![
            job("a", 0.0, Some(110.0)),
            job("b", 50.0, Some(290.0)),
            job("z", 10.0, None),
        ];
        let w2 = vec![job("c", 1000.0, Some(1100.0))];
        let w4 = vec![job("e", 0.0, Some(1.0))];
        let runs: Vec<(&str, &[JobRecord])> = vec![("w1", &w1), ("w2", &w2), ("w4", &w4)];
        let c = compare("fifo", &runs, &tiny());
        assert_eq!(c.missing_in_reference, ["w4"]);
        assert_eq!(c.missing_in_ours, ["w3"]);
        let first = &c.workloads[0];
        assert_eq!(
            (first.jobs_matched, first.jobs_theirs, first.jobs_ours),
            (2, 2, 3)
        );
        assert_eq!(first.ours_avg_s, 175.0);
        assert_eq!(first.theirs_avg_s, 200.0);
        // Their makespan: submits 0 and 50 from our records, ends 0+100 and 50+300.
        assert_eq!(first.theirs_makespan_s, Some(350.0));
        assert_eq!(first.ours_makespan_s, 290.0);
        // numpy's p99 of [100, 300] = 100 + 0.99 × 200.
        assert!((first.theirs_p99_s.expect("jcts") - 298.0).abs() < 1e-9);
        let devs = sorted(first.job_deviations.clone());
        assert!((devs[0] - 0.1).abs() < 1e-9 && (devs[1] - 0.2).abs() < 1e-9);
        // Means over w1 and w2: ours (175 + 100)/2, theirs (200 + 50)/2.
        let (ours, theirs) = c.means().expect("two workloads");
        assert_eq!((ours, theirs), (137.5, 125.0));
        assert_eq!(ratio(ours, theirs), Some(1.1));
        // Deviations 0.1, 0.2 and w2's c: 100/50 − 1 = 1.
        let (median, p90) = median_p90(&c.job_deviations()).expect("three");
        assert!((median - 0.2).abs() < 1e-9 && (p90 - 0.84).abs() < 1e-9);

        let text = comparison_text(&c, Path::new("tiny.json"));
        let mean_row = text
            .lines()
            .find(|l| l.starts_with("(mean)"))
            .expect("mean row");
        assert_eq!(
            mean_row.split_whitespace().collect::<Vec<_>>(),
            ["(mean)", "3/3", "0.038", "0.035", "1.100", "0.200", "0.840"]
        );
        assert!(text.contains("missing in the reference: w4"), "{text}");
        assert!(text.contains("missing in our run: w3"), "{text}");
        assert!(text.contains("3 jobs compared"), "{text}");
    }

    #[test]
    fn nothing_in_common_is_not_an_error() {
        let w = vec![job("a", 0.0, Some(1.0))];
        let c = compare("fifo", &[("other", &w)], &tiny());
        assert!(c.workloads.is_empty() && c.means().is_none());
        let text = comparison_text(&c, Path::new("tiny.json"));
        assert!(text.contains("no job matched"), "{text}");
        assert_eq!(ratio(1.0, 0.0), None);
    }
}
