//! Run metrics, defined once (ARCHITECTURE §4), for every driver (today: the simulator).

use crate::ids::Time;
use serde::{Deserialize, Serialize};

/// What happened to one job in a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobOutcome {
    pub submit: Time,
    pub start: Option<Time>,
    pub end: Option<Time>,
    pub restarts: u32,
    pub requested_gpus: u32,
    /// Run time alone on its requested GPUs, with one start-up delay (no queueing).
    pub isolated_seconds: f64,
    /// GPU-seconds spent training (restart delays excluded), each weighted by the statistical
    /// efficiency of the batch in use (1 for work without a batch model).
    pub useful_gpu_seconds: f64,
}

impl JobOutcome {
    pub fn jct(&self) -> Option<f64> {
        self.end.map(|end| end - self.submit)
    }
}

/// One step of the cluster-usage timeline: from `time` until the next step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsageStep {
    pub time: Time,
    pub allocated_gpus: u32,
    /// max_i |p_i − 1| at this step (0 when nothing is allocated).
    pub balance_spread: f64,
}

/// The summary of one run (one policy on one workload).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunMetrics {
    pub avg_jct_s: f64,
    pub median_jct_s: f64,
    pub p99_jct_s: f64,
    pub makespan_s: f64,
    pub avg_queueing_s: f64,
    pub gpu_utilization: f64,
    /// Efficiency-weighted productive GPU-time ÷ available GPU-time (ARCHITECTURE §4).
    pub goodput_utilization: f64,
    pub max_finish_time_fairness: f64,
    pub share_unfair_jobs: f64,
    pub restarts_per_job: f64,
    pub jobs_completed: usize,
    pub jobs_total: usize,
    pub balance_max_deviation: f64,
}

/// Percentile with linear interpolation between closest ranks (numpy's default).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q / 100.0).clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let low = rank.floor() as usize;
    let high = rank.ceil() as usize;
    sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64)
}

pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// Balance ratio of each node: `p_i = (x_i/Σx)/(y_i/Σy)`; all zero when nothing is loaded.
pub fn balance_ratios(loads: &[f64], capacities: &[f64]) -> Vec<f64> {
    let total_load: f64 = loads.iter().sum();
    let total_capacity: f64 = capacities.iter().sum();
    loads
        .iter()
        .zip(capacities)
        .map(|(&x, &y)| {
            if total_load <= 0.0 || total_capacity <= 0.0 || y <= 0.0 {
                0.0
            } else {
                (x / total_load) / (y / total_capacity)
            }
        })
        .collect()
}

/// max_i |p_i − 1| over nodes with capacity; 0 when nothing is loaded.
pub fn balance_spread(loads: &[f64], capacities: &[f64]) -> f64 {
    if loads.iter().sum::<f64>() <= 0.0 {
        return 0.0;
    }
    balance_ratios(loads, capacities)
        .iter()
        .zip(capacities)
        .filter(|&(_, &y)| y > 0.0)
        .map(|(&p, _)| (p - 1.0).abs())
        .fold(0.0, f64::max)
}

/// Average number of active jobs over `[from, to]`, from a sorted step function of counts.
struct ActiveJobs {
    times: Vec<f64>,
    counts: Vec<f64>,
    /// Integral of the count from `times[0]` to `times[i]`.
    prefix: Vec<f64>,
}

impl ActiveJobs {
    fn new(outcomes: &[JobOutcome]) -> Self {
        let mut changes: Vec<(f64, i64)> = Vec::with_capacity(outcomes.len() * 2);
        for job in outcomes {
            changes.push((job.submit, 1));
            if let Some(end) = job.end {
                changes.push((end, -1));
            }
        }
        changes.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let (mut times, mut counts, mut prefix) = (Vec::new(), Vec::new(), Vec::new());
        let mut count = 0i64;
        let mut integral = 0.0;
        for (time, delta) in changes {
            if let (Some(&last_t), Some(&last_c)) = (times.last(), counts.last()) {
                integral += last_c * (time - last_t);
            }
            count += delta;
            if times.last() == Some(&time) {
                *counts.last_mut().expect("same length") = count as f64;
                *prefix.last_mut().expect("same length") = integral;
            } else {
                times.push(time);
                counts.push(count as f64);
                prefix.push(integral);
            }
        }
        ActiveJobs {
            times,
            counts,
            prefix,
        }
    }

    fn integral_to(&self, t: f64) -> f64 {
        let idx = self.times.partition_point(|&x| x <= t);
        if idx == 0 {
            return 0.0;
        }
        self.prefix[idx - 1] + self.counts[idx - 1] * (t - self.times[idx - 1])
    }

    fn average(&self, from: f64, to: f64) -> f64 {
        if to <= from {
            return 1.0;
        }
        ((self.integral_to(to) - self.integral_to(from)) / (to - from)).max(1.0)
    }
}

/// Themis finish-time fairness of each completed job: JCT ÷ its time alone on a 1/n share of
/// the cluster, n = jobs active on average during its life.
pub fn finish_time_fairness(outcomes: &[JobOutcome], cluster_gpus: u32) -> Vec<Option<f64>> {
    let active = ActiveJobs::new(outcomes);
    outcomes
        .iter()
        .map(|job| {
            let end = job.end?;
            let jct = end - job.submit;
            let n = active.average(job.submit, end);
            let share = f64::from(cluster_gpus) / n;
            let slowdown = (f64::from(job.requested_gpus.max(1)) / share).max(1.0);
            let alone = job.isolated_seconds * slowdown;
            Some(if alone > 0.0 { jct / alone } else { 1.0 })
        })
        .collect()
}

/// Time-weighted integral of a usage step function over `[from, to]`.
fn integrate_usage(
    timeline: &[UsageStep],
    from: f64,
    to: f64,
    value: impl Fn(&UsageStep) -> f64,
) -> (f64, f64) {
    let (mut integral, mut busy_time) = (0.0, 0.0);
    for (i, step) in timeline.iter().enumerate() {
        let start = step.time.max(from);
        let stop = timeline.get(i + 1).map_or(to, |next| next.time).min(to);
        if stop > start {
            integral += value(step) * (stop - start);
            if step.allocated_gpus > 0 {
                busy_time += stop - start;
            }
        }
    }
    (integral, busy_time)
}

/// Computes every run metric from job outcomes, the usage timeline and each outcome's
/// [`finish_time_fairness`] (computed by the caller, which also reports it per job).
pub fn summarize(
    outcomes: &[JobOutcome],
    timeline: &[UsageStep],
    cluster_gpus: u32,
    fairness: &[Option<f64>],
) -> RunMetrics {
    let mut jcts: Vec<f64> = outcomes.iter().filter_map(JobOutcome::jct).collect();
    jcts.sort_by(f64::total_cmp);
    let queueing: Vec<f64> = outcomes
        .iter()
        .filter_map(|j| j.start.map(|s| s - j.submit))
        .collect();
    let first_submit = outcomes
        .iter()
        .map(|j| j.submit)
        .fold(f64::INFINITY, f64::min);
    let last_end = outcomes
        .iter()
        .filter_map(|j| j.end)
        .fold(f64::NEG_INFINITY, f64::max);
    let makespan = if jcts.is_empty() {
        0.0
    } else {
        last_end - first_submit
    };
    let (allocated_gpu_seconds, busy_seconds) =
        integrate_usage(timeline, first_submit, last_end, |s| {
            f64::from(s.allocated_gpus)
        });
    let (spread_integral, _) =
        integrate_usage(timeline, first_submit, last_end, |s| s.balance_spread);
    let fairness: Vec<f64> = fairness.iter().flatten().copied().collect();
    let unfair = fairness.iter().filter(|&&rho| rho > 1.0).count();
    RunMetrics {
        avg_jct_s: mean(&jcts),
        median_jct_s: percentile(&jcts, 50.0),
        p99_jct_s: percentile(&jcts, 99.0),
        makespan_s: makespan,
        avg_queueing_s: mean(&queueing),
        gpu_utilization: if makespan > 0.0 && cluster_gpus > 0 {
            allocated_gpu_seconds / (makespan * f64::from(cluster_gpus))
        } else {
            0.0
        },
        goodput_utilization: if makespan > 0.0 && cluster_gpus > 0 {
            outcomes.iter().map(|j| j.useful_gpu_seconds).sum::<f64>()
                / (makespan * f64::from(cluster_gpus))
        } else {
            0.0
        },
        max_finish_time_fairness: fairness.iter().copied().fold(0.0, f64::max),
        share_unfair_jobs: if fairness.is_empty() {
            0.0
        } else {
            unfair as f64 / fairness.len() as f64
        },
        restarts_per_job: if outcomes.is_empty() {
            0.0
        } else {
            outcomes.iter().map(|j| f64::from(j.restarts)).sum::<f64>() / outcomes.len() as f64
        },
        jobs_completed: jcts.len(),
        jobs_total: outcomes.len(),
        balance_max_deviation: if busy_seconds > 0.0 {
            spread_integral / busy_seconds
        } else {
            0.0
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(submit: f64, start: f64, end: f64, gpus: u32, alone: f64) -> JobOutcome {
        JobOutcome {
            submit,
            start: Some(start),
            end: Some(end),
            restarts: 0,
            requested_gpus: gpus,
            isolated_seconds: alone,
            useful_gpu_seconds: f64::from(gpus) * (end - start) / 2.0,
        }
    }

    #[test]
    fn percentile_interpolates_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), 2.5);
        assert!((percentile(&v, 99.0) - 3.97).abs() < 1e-12);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn balance_ratio_is_one_when_load_follows_capacity() {
        let p = balance_ratios(&[2.0, 4.0], &[4.0, 8.0]);
        assert_eq!(p, vec![1.0, 1.0]);
        let p = balance_ratios(&[4.0, 0.0], &[4.0, 4.0]);
        assert_eq!(p, vec![2.0, 0.0]);
        assert_eq!(balance_spread(&[4.0, 0.0], &[4.0, 4.0]), 1.0);
        assert_eq!(balance_spread(&[0.0, 0.0], &[4.0, 4.0]), 0.0);
    }

    #[test]
    fn fairness_compares_with_a_fair_share() {
        // Two 4-GPU jobs on a 4-GPU cluster, both always active: share = 2 GPUs, so alone on
        // the share each takes 2 × 100 s. The first ends at 100 s (ρ = 0.5), the second at 200 s.
        let jobs = [
            done(0.0, 0.0, 100.0, 4, 100.0),
            done(0.0, 100.0, 200.0, 4, 100.0),
        ];
        let rho = finish_time_fairness(&jobs, 4);
        // Job 0: active on average 2 jobs over [0, 100] → share 2 → alone 200 s → ρ 0.5.
        assert!((rho[0].unwrap() - 0.5).abs() < 1e-12);
        // Job 1: 2 jobs over [0,100], 1 over [100,200] → n = 1.5 → share 2.67 → alone 150 s.
        assert!((rho[1].unwrap() - 200.0 / 150.0).abs() < 1e-12);
    }

    #[test]
    fn summary_of_a_tiny_run() {
        let jobs = [
            done(0.0, 0.0, 100.0, 2, 100.0),
            done(50.0, 60.0, 160.0, 2, 100.0),
        ];
        let timeline = [
            UsageStep {
                time: 0.0,
                allocated_gpus: 2,
                balance_spread: 1.0,
            },
            UsageStep {
                time: 60.0,
                allocated_gpus: 4,
                balance_spread: 0.0,
            },
            UsageStep {
                time: 100.0,
                allocated_gpus: 2,
                balance_spread: 1.0,
            },
            UsageStep {
                time: 160.0,
                allocated_gpus: 0,
                balance_spread: 0.0,
            },
        ];
        let m = summarize(&jobs, &timeline, 4, &finish_time_fairness(&jobs, 4));
        assert_eq!(m.avg_jct_s, 105.0);
        assert_eq!(m.makespan_s, 160.0);
        assert_eq!(m.avg_queueing_s, 5.0);
        // 2·60 + 4·40 + 2·60 = 400 GPU-s of 4·160 = 640.
        assert!((m.gpu_utilization - 400.0 / 640.0).abs() < 1e-12);
        // Half of each job's GPU time counted as useful: (2·100/2 + 2·100/2) / 640.
        assert!((m.goodput_utilization - 200.0 / 640.0).abs() < 1e-12);
        // spread 1 for 120 s of 160 busy seconds.
        assert!((m.balance_max_deviation - 0.75).abs() < 1e-12);
        assert_eq!(m.jobs_completed, 2);
    }
}
