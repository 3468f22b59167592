//! Reports of simulation runs: the comparison table, `summary.json`, `jobs.csv`, SVG plots
//! and `report.html` (built in [`crate::html`]).

use crate::engine::SimResult;
use crate::html::{ReportMeta, command_line, report_html};
use adaptsched_core::metrics::{mean, percentile};
use plotters::prelude::*;
use serde_json::{Map, Value, json};
use std::fmt::Write as _;
use std::path::Path;

/// Median wall milliseconds of a run's `decide` calls.
pub fn decision_ms_median(result: &SimResult) -> f64 {
    let mut ms: Vec<f64> = result.decision_seconds.iter().map(|s| s * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    percentile(&ms, 50.0)
}

/// `summary.json`: policy → workload → metrics. Wall-clock fields are `null` unless
/// `with_timings`, so that two runs with one seed write identical bytes.
pub fn summary_json(results: &[SimResult], with_timings: bool) -> Value {
    let mut by_policy = Map::new();
    for result in results {
        let m = &result.metrics;
        let entry = json!({
            "avg_jct_s": m.avg_jct_s,
            "median_jct_s": m.median_jct_s,
            "p99_jct_s": m.p99_jct_s,
            "makespan_s": m.makespan_s,
            "avg_queueing_s": m.avg_queueing_s,
            "gpu_utilization": m.gpu_utilization,
            "goodput_utilization": m.goodput_utilization,
            "max_finish_time_fairness": m.max_finish_time_fairness,
            "share_unfair_jobs": m.share_unfair_jobs,
            "restarts_per_job": m.restarts_per_job,
            "jobs_completed": m.jobs_completed,
            "jobs_total": m.jobs_total,
            "balance_max_deviation": m.balance_max_deviation,
            "decision_ms_median": if with_timings { json!(decision_ms_median(result)) } else { Value::Null },
            "rounds": result.rounds,
            "notes": result.notes,
        });
        by_policy
            .entry(result.policy.clone())
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .map(|workloads| workloads.insert(result.workload.clone(), entry));
    }
    Value::Object(by_policy)
}

fn optional(value: Option<f64>) -> String {
    value.map_or_else(String::new, |v| format!("{v:.3}"))
}

/// `jobs.csv`: one row per job and run.
pub fn jobs_csv(results: &[SimResult]) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let header = [
        "policy",
        "workload",
        "name",
        "application",
        "requested_gpus",
        "submit",
        "start",
        "end",
        "jct",
        "restarts",
        "batch_sizes",
        "finish_time_fairness",
    ];
    // Writing to memory cannot fail; quoting keeps names with commas in one column.
    let _ = writer.write_record(header);
    for result in results {
        for job in &result.jobs {
            let batches: Vec<String> = job.batch_sizes.iter().map(u32::to_string).collect();
            let _ = writer.write_record([
                result.policy.clone(),
                result.workload.clone(),
                job.name.clone(),
                job.application.clone(),
                job.requested_gpus.to_string(),
                format!("{:.3}", job.submit),
                optional(job.start),
                optional(job.end),
                optional(job.jct()),
                job.restarts.to_string(),
                batches.join(";"),
                optional(job.finish_time_fairness),
            ]);
        }
    }
    writer
        .into_inner()
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// Distinct values in first-seen order.
pub(crate) fn distinct<'a>(values: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen: Vec<&str> = Vec::new();
    for v in values {
        if !seen.contains(&v) {
            seen.push(v);
        }
    }
    seen
}

/// The comparison table printed after a run: one row per (policy, workload), then the mean
/// of each policy over its workloads.
pub fn comparison_table(results: &[SimResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<22} {:>9} {:>9} {:>9} {:>9} {:>6} {:>7} {:>8} {:>9}",
        "policy",
        "workload",
        "done",
        "avg JCT h",
        "p99 h",
        "makespan",
        "util",
        "max FTF",
        "restarts",
        "decide ms"
    );
    let policies = distinct(results.iter().map(|r| r.policy.as_str()));
    for policy in policies {
        let runs: Vec<&SimResult> = results.iter().filter(|r| r.policy == policy).collect();
        for r in &runs {
            let m = &r.metrics;
            let _ = writeln!(
                out,
                "{:<16} {:<22} {:>9} {:>9.3} {:>9.2} {:>9.2} {:>6.2} {:>7.2} {:>8.2} {:>9.3}",
                policy,
                r.workload,
                format!("{}/{}", m.jobs_completed, m.jobs_total),
                m.avg_jct_s / 3600.0,
                m.p99_jct_s / 3600.0,
                m.makespan_s / 3600.0,
                m.gpu_utilization,
                m.max_finish_time_fairness,
                m.restarts_per_job,
                decision_ms_median(r)
            );
        }
        if runs.len() > 1 {
            let avg =
                |f: fn(&SimResult) -> f64| mean(&runs.iter().map(|r| f(r)).collect::<Vec<_>>());
            let _ = writeln!(
                out,
                "{:<16} {:<22} {:>9} {:>9.3} {:>9.2} {:>9.2} {:>6.2} {:>7.2} {:>8.2} {:>9.3}",
                policy,
                "(mean)",
                "",
                avg(|r| r.metrics.avg_jct_s) / 3600.0,
                avg(|r| r.metrics.p99_jct_s) / 3600.0,
                avg(|r| r.metrics.makespan_s) / 3600.0,
                avg(|r| r.metrics.gpu_utilization),
                avg(|r| r.metrics.max_finish_time_fairness),
                avg(|r| r.metrics.restarts_per_job),
                avg(decision_ms_median)
            );
        }
    }
    out
}

fn plot_error(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// A line chart of several named series as an SVG document; `log_x` for long-tailed x values.
fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    log_x: bool,
) -> std::io::Result<String> {
    let points = series.iter().flat_map(|(_, s)| s.iter());
    let x_max = points.clone().map(|p| p.0).fold(1e-9, f64::max);
    let x_min = points
        .clone()
        .map(|p| p.0)
        .filter(|&x| x > 0.0)
        .fold(f64::INFINITY, f64::min);
    let y_max = points.map(|p| p.1).fold(1e-9, f64::max);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60);
        if log_x && x_min.is_finite() && x_min < x_max {
            let chart = builder
                .build_cartesian_2d((x_min * 0.9..x_max * 1.1).log_scale(), 0.0..y_max * 1.05)
                .map_err(plot_error)?;
            // A log axis has no zero: points at x = 0 are left out.
            draw_series(chart, x_label, y_label, series, false)?;
        } else {
            let chart = builder
                .build_cartesian_2d(0.0..x_max * 1.02, 0.0..y_max * 1.05)
                .map_err(plot_error)?;
            draw_series(chart, x_label, y_label, series, true)?;
        }
        root.present().map_err(plot_error)?;
    }
    Ok(simplify_polylines(&svg))
}

/// Simplifies the integer `points` of every `<polyline>` without changing what is drawn:
/// consecutive points in one pixel column become first, lowest, highest and last, then
/// repeated points and middle points of straight runs are dropped. A time line of thousands
/// of steps shrinks to at most a few points per pixel column.
fn simplify_polylines(svg: &str) -> String {
    let mut out = String::with_capacity(svg.len());
    let mut rest = svg;
    while let Some(at) = rest.find("<polyline") {
        let (before, tag) = rest.split_at(at);
        out.push_str(before);
        let key = "points=\"";
        let Some(open) = tag.find(key).map(|i| i + key.len()) else {
            out.push_str(tag);
            return out;
        };
        let Some(len) = tag[open..].find('"') else {
            out.push_str(tag);
            return out;
        };
        let text = &tag[open..open + len];
        out.push_str(&tag[..open]);
        match parse_points(text) {
            Some(points) => {
                for (x, y) in simplify_path(&points) {
                    let _ = write!(out, "{x},{y} ");
                }
            }
            None => out.push_str(text),
        }
        rest = &tag[open + len..];
    }
    out.push_str(rest);
    out
}

fn parse_points(text: &str) -> Option<Vec<(i64, i64)>> {
    text.split_whitespace()
        .map(|pair| {
            let (x, y) = pair.split_once(',')?;
            Some((x.parse().ok()?, y.parse().ok()?))
        })
        .collect()
}

/// The pixel path drawn the same with fewer points (see [`simplify_polylines`]).
fn simplify_path(points: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let mut columns: Vec<(i64, i64)> = Vec::with_capacity(points.len());
    let mut i = 0;
    while i < points.len() {
        let x = points[i].0;
        let mut j = i;
        while j < points.len() && points[j].0 == x {
            j += 1;
        }
        let run = &points[i..j];
        let low = run.iter().map(|p| p.1).min().unwrap_or(run[0].1);
        let high = run.iter().map(|p| p.1).max().unwrap_or(run[0].1);
        if run.len() <= 4 {
            columns.extend_from_slice(run);
        } else {
            columns.extend([run[0], (x, low), (x, high), run[run.len() - 1]]);
        }
        i = j;
    }
    let mut kept: Vec<(i64, i64)> = Vec::with_capacity(columns.len());
    for p in columns {
        if kept.last() == Some(&p) {
            continue;
        }
        if let [.., a, b] = kept[..] {
            let (u, v) = ((b.0 - a.0, b.1 - a.1), (p.0 - b.0, p.1 - b.1));
            // b lies on the segment a → p: same line, same direction.
            if u.0 * v.1 == u.1 * v.0 && u.0 * v.0 + u.1 * v.1 >= 0 {
                kept.pop();
            }
        }
        kept.push(p);
    }
    kept
}

/// Mesh, lines and legend of a chart, whatever its x scale.
fn draw_series<'a, X>(
    mut chart: ChartContext<
        'a,
        SVGBackend<'a>,
        Cartesian2d<X, plotters::coord::types::RangedCoordf64>,
    >,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    keep_zero: bool,
) -> std::io::Result<()>
where
    X: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(plot_error)?;
    for (i, (name, data)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                data.iter().copied().filter(|p| p.0 > 0.0 || keep_zero),
                color.stroke_width(2),
            ))
            .map_err(plot_error)?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)
}

/// The CDF of JCT (hours) per policy, pooled over workloads, as an SVG document.
pub fn jct_cdf_svg(results: &[SimResult]) -> std::io::Result<String> {
    let policies = distinct(results.iter().map(|r| r.policy.as_str()));
    let series: Vec<(String, Vec<(f64, f64)>)> = policies
        .iter()
        .map(|&policy| {
            let mut jcts: Vec<f64> = results
                .iter()
                .filter(|r| r.policy == policy)
                .flat_map(|r| r.jobs.iter().filter_map(|j| j.jct()))
                .map(|s| s / 3600.0)
                .collect();
            jcts.sort_by(f64::total_cmp);
            let n = jcts.len().max(1) as f64;
            let cdf = jcts
                .iter()
                .enumerate()
                .map(|(i, &x)| (x, (i + 1) as f64 / n))
                .collect();
            (policy.to_string(), cdf)
        })
        .collect();
    line_chart(
        "JCT CDF",
        "job completion time (h)",
        "fraction of jobs",
        &series,
        true,
    )
}

/// `jct_cdf.svg`: the CDF of JCT (hours) per policy, pooled over workloads.
pub fn plot_jct_cdf(path: &Path, results: &[SimResult]) -> std::io::Result<()> {
    std::fs::write(path, jct_cdf_svg(results)?)
}

/// GPUs allocated over time in one workload, one line per policy, as an SVG document.
pub fn gpus_over_time_svg(workload: &str, results: &[SimResult]) -> std::io::Result<String> {
    let series: Vec<(String, Vec<(f64, f64)>)> = results
        .iter()
        .filter(|r| r.workload == workload)
        .map(|r| {
            let mut steps = Vec::with_capacity(r.timeline.len() * 2);
            for (i, step) in r.timeline.iter().enumerate() {
                let y = f64::from(step.allocated_gpus);
                if i > 0 {
                    steps.push((
                        step.time / 3600.0,
                        f64::from(r.timeline[i - 1].allocated_gpus),
                    ));
                }
                steps.push((step.time / 3600.0, y));
            }
            (r.policy.clone(), steps)
        })
        .collect();
    line_chart(
        &format!("GPUs allocated: {workload}"),
        "time (h)",
        "GPUs",
        &series,
        false,
    )
}

/// `gpus_<workload>.svg`: GPUs allocated over time, one line per policy.
pub fn plot_gpus_over_time(
    path: &Path,
    workload: &str,
    results: &[SimResult],
) -> std::io::Result<()> {
    std::fs::write(path, gpus_over_time_svg(workload, results)?)
}

/// Writes `summary.json`, `jobs.csv`, the plots and `report.html` into `dir`; the page's
/// header shows this process's command line.
pub fn write_reports(dir: &Path, results: &[SimResult], with_timings: bool) -> std::io::Result<()> {
    let meta = ReportMeta {
        command: Some(command_line(std::env::args())),
        with_timings,
        ..ReportMeta::default()
    };
    write_reports_with(dir, results, &meta)
}

/// [`write_reports`] with the page's header given (cluster, seed, command line).
pub fn write_reports_with(
    dir: &Path,
    results: &[SimResult],
    meta: &ReportMeta,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let summary = serde_json::to_string_pretty(&summary_json(results, meta.with_timings))
        .map_err(std::io::Error::other)?;
    std::fs::write(dir.join("summary.json"), summary + "\n")?;
    std::fs::write(dir.join("jobs.csv"), jobs_csv(results))?;
    plot_jct_cdf(&dir.join("jct_cdf.svg"), results)?;
    let mut workloads: Vec<&str> = results.iter().map(|r| r.workload.as_str()).collect();
    workloads.sort();
    workloads.dedup();
    for workload in workloads {
        plot_gpus_over_time(&dir.join(format!("gpus_{workload}.svg")), workload, results)?;
    }
    std::fs::write(dir.join("report.html"), report_html(results, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_polylines_lose_only_points_that_draw_nothing() {
        let column = [(2, 0), (2, 5), (2, 1), (2, 4), (2, 3)];
        let mut path = vec![(0, 0), (1, 0), (1, 0)];
        path.extend(column);
        path.push((3, 3));
        // (1,0) lies on (0,0)→(2,0); the column keeps first, highest and last; the spike
        // up to 5 and back stays.
        assert_eq!(
            simplify_path(&path),
            vec![(0, 0), (2, 0), (2, 5), (2, 3), (3, 3)]
        );
        let svg = "<svg>\n<polyline fill=\"none\" points=\"0,0 1,1 2,2 2,7 \"/>\n<text>a</text>";
        assert_eq!(
            simplify_polylines(svg),
            "<svg>\n<polyline fill=\"none\" points=\"0,0 2,2 2,7 \"/>\n<text>a</text>"
        );
        // Anything unparsable is left as it is.
        let odd = "<polyline points=\"1.5,2 3,4\"/>";
        assert_eq!(simplify_polylines(odd), odd);
    }
}
