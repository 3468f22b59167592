//! `report.html`: one self-contained page of a simulation (header, comparison table, JCT CDF,
//! GPUs over time and an allocation Gantt per run), built by a pure function.

use crate::engine::{JobRecord, SimResult};
use crate::report::{decision_ms_median, distinct, gpus_over_time_svg, jct_cdf_svg};
use adaptsched_core::metrics::mean;
use std::fmt::Write as _;

/// Most jobs drawn in one Gantt chart; a larger run shows its longest jobs (by JCT).
pub const GANTT_MAX_ROWS: usize = 60;

/// What the page says about the run beyond the results themselves.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReportMeta {
    /// The command line that produced the results.
    pub command: Option<String>,
    /// The cluster (preset name or file).
    pub cluster: Option<String>,
    /// The seed handed to the policies.
    pub seed: Option<u64>,
    /// Show wall-clock decision times (they differ run to run).
    pub with_timings: bool,
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A command line as one string, arguments with spaces or shell characters single-quoted,
/// the program as its file name.
pub fn command_line(args: impl IntoIterator<Item = String>) -> String {
    let mut words = Vec::new();
    for (i, arg) in args.into_iter().enumerate() {
        let arg = if i == 0 {
            std::path::Path::new(&arg)
                .file_name()
                .map_or(arg.clone(), |n| n.to_string_lossy().into_owned())
        } else {
            arg
        };
        let plain = !arg.is_empty()
            && arg
                .chars()
                .all(|c| c.is_alphanumeric() || "-_./=,:+@%".contains(c));
        words.push(if plain {
            arg
        } else {
            format!("'{}'", arg.replace('\'', r"'\''"))
        });
    }
    words.join(" ")
}

const STYLE: &str = "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;\
color:#222;max-width:1200px;margin:1.5em auto;padding:0 1em}\
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ccc}\
h3{font-size:1.05em;margin:1.2em 0 .3em}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.15em 1em;margin:.8em 0}\
dt{font-weight:600}dd{margin:0}code{font-size:.92em;background:#f3f3f3;padding:0 .25em;\
word-break:break-all}\
.scroll{overflow-x:auto}table{border-collapse:collapse;font-variant-numeric:tabular-nums}\
th,td{padding:.2em .55em;border-bottom:1px solid #e3e3e3;text-align:right;white-space:nowrap}\
th{background:#f6f6f6;position:sticky;top:0}th.l,td.l{text-align:left}\
tr.mean td{font-weight:600;background:#fafafa;border-bottom:2px solid #bbb}\
svg{max-width:100%;height:auto;display:block}figure{margin:.6em 0}\
figcaption,.note{color:#555;font-size:.92em}nav a{margin-right:.8em}";

/// The page: header, comparison table, JCT CDF, and per workload the GPUs allocated over time
/// and one allocation Gantt per policy. Every inserted text is escaped; nothing refers to an
/// external resource.
pub fn report_html(results: &[SimResult], meta: &ReportMeta) -> String {
    let policies = distinct(results.iter().map(|r| r.policy.as_str()));
    let workloads = distinct(results.iter().map(|r| r.workload.as_str()));
    let mut page = String::with_capacity(256 * 1024);
    page.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    page.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(
        page,
        "<title>adaptsched simulation: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>",
        escape(&policies.join(", "))
    );
    page.push_str("<h1>adaptsched simulation report</h1>\n");
    header(&mut page, results, meta, &policies, &workloads);
    let _ = writeln!(
        page,
        "<nav><a href=\"#table\">Comparison</a><a href=\"#cdf\">JCT CDF</a>{}</nav>",
        workloads
            .iter()
            .enumerate()
            .map(|(i, w)| format!("<a href=\"#w{i}\">{}</a>", escape(w)))
            .collect::<String>()
    );
    page.push_str("<h2 id=\"table\">Comparison</h2>\n");
    table(&mut page, results, &policies, meta.with_timings);
    page.push_str("<h2 id=\"cdf\">JCT CDF</h2>\n");
    page.push_str(
        "<p class=\"note\">Completed jobs of all workloads, per policy; log time axis.</p>\n",
    );
    figure(
        &mut page,
        jct_cdf_svg(results),
        "CDF of job completion times",
    );
    for (i, workload) in workloads.iter().enumerate() {
        let _ = writeln!(page, "<h2 id=\"w{i}\">Workload {}</h2>", escape(workload));
        page.push_str("<h3>GPUs allocated over time</h3>\n");
        figure(
            &mut page,
            gpus_over_time_svg(workload, results),
            "GPUs allocated over time, one line per policy",
        );
        for result in results.iter().filter(|r| r.workload == *workload) {
            let _ = writeln!(
                page,
                "<h3>Allocation Gantt: {} on {}</h3>",
                escape(&result.policy),
                escape(workload)
            );
            page.push_str(&gantt(result));
        }
    }
    page.push_str("</body>\n</html>\n");
    page
}

fn header(
    page: &mut String,
    results: &[SimResult],
    meta: &ReportMeta,
    policies: &[&str],
    workloads: &[&str],
) {
    page.push_str("<dl>\n");
    let _ = writeln!(
        page,
        "<dt>Policies</dt><dd>{}</dd>",
        escape(&policies.join(", "))
    );
    let listed: Vec<String> = workloads
        .iter()
        .map(|w| {
            let jobs = results
                .iter()
                .find(|r| r.workload == *w)
                .map_or(0, |r| r.jobs.len());
            format!("{} ({jobs} jobs)", escape(w))
        })
        .collect();
    let _ = writeln!(page, "<dt>Workloads</dt><dd>{}</dd>", listed.join(", "));
    let unknown = "<span class=\"note\">not recorded (see the command line)</span>";
    let _ = writeln!(
        page,
        "<dt>Cluster</dt><dd>{}</dd>",
        meta.cluster.as_deref().map_or(unknown.to_string(), escape)
    );
    let _ = writeln!(
        page,
        "<dt>Seed</dt><dd>{}</dd>",
        meta.seed.map_or(unknown.to_string(), |s| s.to_string())
    );
    if let Some(command) = &meta.command {
        let _ = writeln!(
            page,
            "<dt>Command</dt><dd><code>{}</code></dd>",
            escape(command)
        );
    }
    let notes: Vec<String> = results
        .iter()
        .flat_map(|r| {
            r.notes
                .iter()
                .map(move |n| format!("{} on {}: {n}", r.policy, r.workload))
        })
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(
            page,
            "<dt>Notes</dt><dd>{}</dd>",
            notes
                .iter()
                .map(|n| escape(n))
                .collect::<Vec<_>>()
                .join("<br>")
        );
    }
    page.push_str("</dl>\n");
}

/// The metric columns: header, tooltip, value of one run, decimals (as the printed table).
type Column = (&'static str, &'static str, fn(&SimResult) -> f64, usize);

const COLUMNS: [Column; 12] = [
    (
        "avg JCT h",
        "mean job completion time, hours",
        |r| r.metrics.avg_jct_s / 3600.0,
        3,
    ),
    (
        "median JCT h",
        "median job completion time, hours",
        |r| r.metrics.median_jct_s / 3600.0,
        3,
    ),
    (
        "p99 JCT h",
        "99th percentile of job completion time, hours",
        |r| r.metrics.p99_jct_s / 3600.0,
        2,
    ),
    (
        "makespan h",
        "last completion minus first submission, hours",
        |r| r.metrics.makespan_s / 3600.0,
        2,
    ),
    (
        "queueing h",
        "mean time from submission to first start, hours",
        |r| r.metrics.avg_queueing_s / 3600.0,
        3,
    ),
    (
        "GPU util",
        "allocated GPU-time / (cluster GPUs × makespan)",
        |r| r.metrics.gpu_utilization,
        2,
    ),
    (
        "goodput util",
        "efficiency-weighted training GPU-time / (cluster GPUs × makespan)",
        |r| r.metrics.goodput_utilization,
        2,
    ),
    (
        "max FTF",
        "largest finish-time fairness ρ",
        |r| r.metrics.max_finish_time_fairness,
        2,
    ),
    (
        "FTF>1",
        "share of jobs with finish-time fairness ρ > 1",
        |r| r.metrics.share_unfair_jobs,
        2,
    ),
    (
        "restarts/job",
        "allocation changes after the first start, per job",
        |r| r.metrics.restarts_per_job,
        2,
    ),
    (
        "balance dev",
        "time-weighted mean of max_i |p_i − 1|",
        |r| r.metrics.balance_max_deviation,
        3,
    ),
    (
        "decide ms",
        "median wall milliseconds of a decide call",
        decision_ms_median,
        3,
    ),
];

fn table(page: &mut String, results: &[SimResult], policies: &[&str], with_timings: bool) {
    // Decision times differ run to run: shown only when asked for, as in summary.json.
    let columns = if with_timings {
        &COLUMNS[..]
    } else {
        &COLUMNS[..COLUMNS.len() - 1]
    };
    page.push_str("<div class=\"scroll\"><table>\n<thead><tr><th class=\"l\">policy</th>");
    page.push_str("<th class=\"l\">workload</th><th title=\"jobs completed / jobs\">done</th>");
    for (name, tip, _, _) in columns {
        let _ = write!(page, "<th title=\"{}\">{}</th>", escape(tip), escape(name));
    }
    page.push_str("</tr></thead>\n<tbody>\n");
    for &policy in policies {
        let runs: Vec<&SimResult> = results.iter().filter(|r| r.policy == policy).collect();
        for r in &runs {
            let _ = write!(
                page,
                "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}/{}</td>",
                escape(policy),
                escape(&r.workload),
                r.metrics.jobs_completed,
                r.metrics.jobs_total
            );
            for (_, _, value, decimals) in columns {
                let _ = write!(page, "<td>{:.*}</td>", decimals, value(r));
            }
            page.push_str("</tr>\n");
        }
        if runs.len() > 1 {
            let _ = write!(
                page,
                "<tr class=\"mean\"><td class=\"l\">{}</td><td class=\"l\">(mean)</td><td></td>",
                escape(policy)
            );
            for (_, _, value, decimals) in columns {
                let values: Vec<f64> = runs.iter().map(|r| value(r)).collect();
                let _ = write!(page, "<td>{:.*}</td>", decimals, mean(&values));
            }
            page.push_str("</tr>\n");
        }
    }
    page.push_str("</tbody></table></div>\n");
}

/// An SVG document from plotters, inlined in a `<figure>` without its `xmlns` attribute
/// (HTML knows the namespace), or a note when it could not be drawn.
fn figure(page: &mut String, svg: std::io::Result<String>, label: &str) {
    match svg {
        Ok(svg) => {
            let svg = svg.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1);
            let svg = svg.replacen(
                "<svg ",
                &format!("<svg role=\"img\" aria-label=\"{}\" ", escape(label)),
                1,
            );
            let _ = writeln!(page, "<figure>{}</figure>", svg.trim_end());
        }
        Err(e) => {
            let _ = writeln!(
                page,
                "<p class=\"note\">plot not drawn: {}</p>",
                escape(&e.to_string())
            );
        }
    }
}

/// GPU-count classes of the Gantt bars: upper bound and color (viridis, light to dark).
const GPU_CLASSES: [(u32, &str); 7] = [
    (1, "#fde725"),
    (2, "#90d743"),
    (4, "#35b779"),
    (8, "#21918c"),
    (16, "#31688e"),
    (32, "#443983"),
    (u32::MAX, "#440154"),
];

fn gpu_color(gpus: u32) -> &'static str {
    GPU_CLASSES
        .iter()
        .find(|(max, _)| gpus <= *max)
        .map_or("#440154", |(_, c)| c)
}

fn class_label(i: usize) -> String {
    let max = GPU_CLASSES[i].0;
    let min = if i == 0 { 1 } else { GPU_CLASSES[i - 1].0 + 1 };
    match (min, max) {
        (min, u32::MAX) => format!("{min}+"),
        (min, max) if min == max => format!("{min}"),
        (min, max) => format!("{min}–{max}"),
    }
}

/// The jobs a Gantt shows: all, or the `GANTT_MAX_ROWS` longest (unfinished first, then by
/// JCT), in submission order.
pub fn gantt_jobs(jobs: &[JobRecord]) -> Vec<&JobRecord> {
    let mut chosen: Vec<&JobRecord> = jobs.iter().collect();
    if chosen.len() > GANTT_MAX_ROWS {
        chosen.sort_by(|a, b| {
            let length = |j: &JobRecord| j.jct().unwrap_or(f64::INFINITY);
            length(b).total_cmp(&length(a)).then(a.name.cmp(&b.name))
        });
        chosen.truncate(GANTT_MAX_ROWS);
    }
    chosen.sort_by(|a, b| a.submit.total_cmp(&b.submit).then(a.name.cmp(&b.name)));
    chosen
}

/// A tick step of about a tenth of `span`: 1, 2 or 5 × 10^k.
fn tick_step(span: f64) -> f64 {
    let raw = (span / 8.0).max(1e-9);
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude)
}

fn hours(seconds: f64) -> String {
    format!("{:.2} h", seconds / 3600.0)
}

/// One run's allocation Gantt: one row per job (see [`gantt_jobs`]), a thin grey bar while it
/// waits, a bar colored by its GPUs while it holds them; a `<title>` per row for details.
///
/// `JobRecord` keeps a job's first start and completion, not its per-round allocations, so a
/// running bar spans first start to completion and is colored by the requested GPUs; the page
/// says so.
pub fn gantt(result: &SimResult) -> String {
    let jobs = gantt_jobs(&result.jobs);
    let mut out = String::new();
    if jobs.is_empty() {
        out.push_str("<p class=\"note\">No jobs.</p>\n");
        return out;
    }
    let t0 = result
        .jobs
        .iter()
        .map(|j| j.submit)
        .fold(f64::INFINITY, f64::min);
    let last_event = result.timeline.last().map_or(t0, |s| s.time);
    let t1 = result
        .jobs
        .iter()
        .filter_map(|j| j.end)
        .fold(last_event, f64::max)
        .max(t0 + 1.0);
    let (left, right, top, row, bar) = (170.0, 20.0, 10.0, 10.0, 8.0);
    let width = 900.0;
    let plot_w = width - left - right;
    let height = top + row * jobs.len() as f64 + 34.0;
    let x = |t: f64| left + (t - t0) / (t1 - t0) * plot_w;
    let _ = writeln!(
        out,
        "<figure><svg width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" \
         role=\"img\" aria-label=\"allocation Gantt of {} on {}\" font-family=\"sans-serif\" \
         font-size=\"9\">",
        escape(&result.policy),
        escape(&result.workload)
    );
    // Time axis: grid lines and labels in hours.
    let step = tick_step((t1 - t0) / 3600.0);
    let axis_y = top + row * jobs.len() as f64;
    let mut tick = (t0 / 3600.0 / step).ceil() * step;
    while tick * 3600.0 <= t1 + 1e-6 {
        let tx = x(tick * 3600.0);
        let _ = writeln!(
            out,
            "<line x1=\"{tx:.1}\" y1=\"{top}\" x2=\"{tx:.1}\" y2=\"{axis_y}\" stroke=\"#e5e5e5\"/>\
             <text x=\"{tx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            axis_y + 12.0,
            format_tick(tick, step)
        );
        tick += step;
    }
    let _ = writeln!(
        out,
        "<line x1=\"{left}\" y1=\"{axis_y}\" x2=\"{:.1}\" y2=\"{axis_y}\" stroke=\"#888\"/>",
        left + plot_w
    );
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">time (h)</text>",
        left + plot_w / 2.0,
        axis_y + 26.0
    );
    for (i, job) in jobs.iter().enumerate() {
        let y = top + row * i as f64;
        let label: String = if job.name.chars().count() > 28 {
            job.name.chars().take(27).chain(['…']).collect()
        } else {
            job.name.clone()
        };
        let run_end = job.end.unwrap_or(t1);
        let _ = write!(
            out,
            "<g><title>{} ({}, {} GPUs requested): submitted {}, started {}, {}, JCT {}, {} \
             restarts</title><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            escape(&job.name),
            escape(&job.application),
            job.requested_gpus,
            hours(job.submit),
            job.start.map_or("never".to_string(), hours),
            job.end.map_or("not finished".to_string(), |e| format!(
                "finished {}",
                hours(e)
            )),
            job.jct().map_or("–".to_string(), hours),
            job.restarts,
            left - 4.0,
            y + bar,
            escape(&label)
        );
        let wait_end = job.start.unwrap_or(run_end);
        if wait_end > job.submit {
            let _ = write!(
                out,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"2\" fill=\"#bbb\"/>",
                x(job.submit),
                y + bar / 2.0,
                (x(wait_end) - x(job.submit)).max(0.5)
            );
        }
        if let Some(start) = job.start {
            let _ = write!(
                out,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bar}\" fill=\"{}\"{}/>",
                x(start),
                y + 1.0,
                (x(run_end) - x(start)).max(0.5),
                gpu_color(job.requested_gpus),
                if job.end.is_none() {
                    " opacity=\"0.5\""
                } else {
                    ""
                }
            );
        }
        out.push_str("</g>\n");
    }
    out.push_str("</svg>\n<figcaption>");
    let total = result.jobs.len();
    if jobs.len() < total {
        let _ = write!(
            out,
            "The {} longest of {total} jobs (by JCT; unfinished first), in submission order. ",
            jobs.len()
        );
    } else {
        let _ = write!(out, "All {total} jobs, in submission order. ");
    }
    out.push_str(
        "Grey: waiting; bar: first start to completion (faded: not finished), colored by GPUs \
         requested (per-round allocations are not recorded). Hover a row for details. GPUs: ",
    );
    let used: Vec<u32> = jobs.iter().map(|j| j.requested_gpus).collect();
    for (i, (_, color)) in GPU_CLASSES.iter().enumerate() {
        if used.iter().any(|&g| gpu_color(g) == *color) {
            let _ = write!(
                out,
                "<span style=\"display:inline-block;width:.9em;height:.9em;background:{color};\
                 vertical-align:middle;margin:0 .25em 0 .5em\"></span>{}",
                class_label(i)
            );
        }
    }
    out.push_str("</figcaption></figure>\n");
    out
}

fn format_tick(value: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    format!("{value:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use adaptsched_core::metrics::{RunMetrics, UsageStep};

    fn job(name: &str, submit: f64, start: f64, end: Option<f64>, gpus: u32) -> JobRecord {
        JobRecord {
            name: name.to_string(),
            application: "cifar10".to_string(),
            submit,
            start: Some(start),
            end,
            restarts: 1,
            requested_gpus: gpus,
            isolated_seconds: 100.0,
            batch_sizes: vec![128],
            finish_time_fairness: Some(1.0),
        }
    }

    fn run(policy: &str, workload: &str, avg_jct_h: f64) -> SimResult {
        SimResult {
            policy: policy.to_string(),
            workload: workload.to_string(),
            jobs: vec![
                job("job-a", 0.0, 0.0, Some(3600.0), 1),
                job("job-<b>", 600.0, 1200.0, Some(7200.0), 4),
                job("job-c", 900.0, 7200.0, None, 16),
            ],
            timeline: vec![
                UsageStep {
                    time: 0.0,
                    allocated_gpus: 1,
                    balance_spread: 0.0,
                },
                UsageStep {
                    time: 1200.0,
                    allocated_gpus: 5,
                    balance_spread: 0.0,
                },
                UsageStep {
                    time: 7200.0,
                    allocated_gpus: 16,
                    balance_spread: 0.0,
                },
                UsageStep {
                    time: 9000.0,
                    allocated_gpus: 0,
                    balance_spread: 0.0,
                },
            ],
            metrics: RunMetrics {
                avg_jct_s: avg_jct_h * 3600.0,
                median_jct_s: 5400.0,
                p99_jct_s: 6588.0,
                makespan_s: 7200.0,
                avg_queueing_s: 1800.0,
                gpu_utilization: 0.4567,
                goodput_utilization: 0.321,
                max_finish_time_fairness: 2.346,
                share_unfair_jobs: 0.5,
                restarts_per_job: 1.0,
                jobs_completed: 2,
                jobs_total: 3,
                balance_max_deviation: 0.125,
            },
            decision_seconds: vec![0.001],
            rounds: 10,
            events: 20,
            notes: vec![],
        }
    }

    fn two_policies() -> Vec<SimResult> {
        vec![
            run("fifo", "w1", 1.5),
            run("fifo", "<b>x", 2.5),
            run("pollux", "w1", 1.0),
            run("pollux", "<b>x", 1.25),
        ]
    }

    #[test]
    fn report_html_has_the_table_rows_with_their_numbers() {
        let page = report_html(&two_policies(), &ReportMeta::default());
        assert!(page.contains(
            "<tr><td class=\"l\">fifo</td><td class=\"l\">w1</td><td>2/3</td>\
             <td>1.500</td><td>1.500</td><td>1.83</td><td>2.00</td><td>0.500</td>\
             <td>0.46</td><td>0.32</td><td>2.35</td><td>0.50</td><td>1.00</td><td>0.125</td></tr>"
        ));
        assert!(page.contains(
            "<td class=\"l\">pollux</td><td class=\"l\">&lt;b&gt;x</td><td>2/3</td><td>1.250</td>"
        ));
        // Means: fifo (1.5 + 2.5) / 2, pollux (1.0 + 1.25) / 2.
        assert!(page.contains(
            "<tr class=\"mean\"><td class=\"l\">fifo</td><td class=\"l\">(mean)</td><td></td>\
             <td>2.000</td>"
        ));
        assert!(page.contains(
            "<tr class=\"mean\"><td class=\"l\">pollux</td><td class=\"l\">(mean)</td><td></td>\
             <td>1.125</td>"
        ));
        assert_eq!(page.matches("<tr class=\"mean\">").count(), 2);
        // No decision times without timings; with them, one more column.
        assert!(!page.contains("decide ms"));
        let timed = report_html(
            &two_policies(),
            &ReportMeta {
                with_timings: true,
                ..ReportMeta::default()
            },
        );
        assert!(timed.contains("decide ms") && timed.contains("<td>0.125</td><td>1.000</td>"));
    }

    #[test]
    fn report_html_is_self_contained_with_inline_svgs() {
        let meta = ReportMeta {
            command: Some("adaptsched simulate -w 'a b' -o out".to_string()),
            cluster: Some("pollux-t4x64".to_string()),
            seed: Some(7),
            with_timings: false,
        };
        let page = report_html(&two_policies(), &meta);
        assert!(page.starts_with("<!DOCTYPE html>") && page.ends_with("</html>\n"));
        // JCT CDF, GPUs over time for two workloads, a Gantt per run.
        assert_eq!(page.matches("<svg").count(), 1 + 2 + 4, "{page}");
        assert_eq!(page.matches("</svg>").count(), 7);
        assert!(page.contains("Allocation Gantt: pollux on &lt;b&gt;x"));
        for external in ["http://", "https://", "<script", "<link", "src=", "url("] {
            assert!(!page.contains(external), "{external} in the page");
        }
        assert!(page.contains("<dd>pollux-t4x64</dd>") && page.contains("<dd>7</dd>"));
        assert!(page.contains("<code>adaptsched simulate -w &#39;a b&#39; -o out</code>"));
    }

    #[test]
    fn report_html_escapes_names_everywhere() {
        let page = report_html(&two_policies(), &ReportMeta::default());
        assert!(page.contains("&lt;b&gt;x"));
        assert!(!page.contains("<b>"), "an unescaped name");
        // The job name in the Gantt and the plot caption drawn by plotters.
        assert!(page.contains("job-&lt;b&gt;"));
        assert!(page.contains("GPUs allocated: &lt;b&gt;x"));
    }

    #[test]
    fn report_html_gantt_caps_rows_at_the_longest_jobs() {
        let mut result = run("fifo", "big", 1.0);
        result.jobs = (0..200)
            .map(|i| {
                let submit = f64::from(i) * 10.0;
                job(
                    &format!("j{i:03}"),
                    submit,
                    submit,
                    Some(submit + f64::from(i)),
                    1,
                )
            })
            .collect();
        let chosen = gantt_jobs(&result.jobs);
        assert_eq!(chosen.len(), GANTT_MAX_ROWS);
        // The longest are j140..j199, in submission order.
        assert_eq!(chosen[0].name, "j140");
        assert_eq!(chosen[GANTT_MAX_ROWS - 1].name, "j199");
        let svg = gantt(&result);
        assert_eq!(svg.matches("<g><title>").count(), GANTT_MAX_ROWS);
        assert!(svg.contains("The 60 longest of 200 jobs"));
        // A small run shows every job; an unfinished one comes out faded.
        let small = gantt(&run("fifo", "w", 1.0));
        assert!(small.contains("All 3 jobs") && small.contains("opacity=\"0.5\""));
    }

    #[test]
    fn report_html_command_lines_are_quoted() {
        let args = [
            "/x/target/release/adaptsched",
            "simulate",
            "-w",
            "my dir",
            "it's",
        ];
        assert_eq!(
            command_line(args.map(String::from)),
            r"adaptsched simulate -w 'my dir' 'it'\''s'"
        );
    }

    #[test]
    fn write_reports_writes_report_html() {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("out");
        crate::report::write_reports(&out, &two_policies(), false).expect("written");
        let page = std::fs::read_to_string(out.join("report.html")).expect("report.html");
        assert_eq!(
            page,
            report_html(
                &two_policies(),
                &ReportMeta {
                    command: Some(command_line(std::env::args())),
                    ..ReportMeta::default()
                }
            )
        );
        for file in ["summary.json", "jobs.csv", "jct_cdf.svg", "gpus_w1.svg"] {
            assert!(out.join(file).is_file(), "{file}");
        }
        // The standalone plots keep their namespace; the page drops it.
        let cdf = std::fs::read_to_string(out.join("jct_cdf.svg")).expect("plot");
        assert!(cdf.starts_with("<svg") && cdf.contains("xmlns=\"http://www.w3.org/2000/svg\""));
        let meta = ReportMeta {
            cluster: Some("c<1>".to_string()),
            seed: Some(3),
            ..ReportMeta::default()
        };
        crate::report::write_reports_with(&out, &two_policies(), &meta).expect("written");
        let page = std::fs::read_to_string(out.join("report.html")).expect("report.html");
        assert!(page.contains("<dd>c&lt;1&gt;</dd>") && page.contains("<dd>3</dd>"));
    }
}
