//! A job's performance model, fitted online from what it reported (ARCHITECTURE §3): the
//! same `JobModel` the simulator gives policies, built from the job's allocation history and
//! its step reports. Pure: the loop reads the store and passes the records in.

use adaptsched_api::{BatchSpec, FittedModelView};
use adaptsched_core::perf::{BatchLimits, GradStats, JobModel, Observation, fit_perf_params};
use adaptsched_store::{AllocationRecord, MetricSample};
use std::collections::BTreeMap;

/// Step reports used for a fit: the most recent ones describe the job as it runs now.
pub const MAX_SAMPLES: usize = 500;

/// Batch limits of a job, or a fixed batch of 1 for jobs that declared none (their batch
/// is their own business; policies then only use their GPU count).
pub fn limits(spec: Option<&BatchSpec>) -> BatchLimits {
    match spec {
        Some(spec) => BatchLimits {
            init_batch: spec.initial,
            max_batch: spec.max,
            min_local: spec.min_local.unwrap_or(1),
            max_local: spec.max_local.unwrap_or(spec.max),
        },
        None => BatchLimits {
            init_batch: 1,
            max_batch: 1,
            min_local: 1,
            max_local: 1,
        },
    }
}

/// One observation per report: the allocation in effect when it was reported gives the
/// replicas and the batch split. Reports made while nothing was allocated are skipped.
pub fn observations(history: &[AllocationRecord], samples: &[MetricSample]) -> Vec<Observation> {
    samples
        .iter()
        .filter_map(|sample| {
            let record = history.iter().rev().find(|r| r.at <= sample.at)?;
            let replicas = record.allocation.total_gpus();
            if replicas == 0 || sample.step_time <= 0.0 {
                return None;
            }
            let accumulation = record.batch.map_or(0, |b| b.accumulation_steps);
            let steps = f64::from(accumulation + 1);
            let local = record.batch.map_or_else(
                || {
                    (sample.samples as f64 / f64::from(replicas))
                        .round()
                        .max(1.0) as u32
                },
                |b| b.local_batch_size,
            );
            // The step's compute is spread over its accumulation steps; the last one also
            // synchronizes gradients.
            let grad_time = ((sample.step_time - sample.sync_time) / steps).max(1e-9);
            // Compute alone is measured on one replica, or in the micro-steps before the last.
            // A multi-replica step without them is taken whole: DDP overlaps its all-reduce
            // with backward (no sync_time to subtract), and replicas sharing a machine's
            // cores slow each other's compute, which the model's per-sample compute does not
            // describe.
            let compute_measured = replicas == 1 || accumulation > 0;
            Some(Observation {
                nodes: 1,
                replicas,
                local_bsz: local,
                accum_step_time: compute_measured.then_some(grad_time),
                optim_step_time: (sample.step_time - f64::from(accumulation) * grad_time).max(1e-9),
            })
        })
        .collect()
}

/// One observation per configuration (nodes, replicas, local batch) with the interquartile
/// mean times of its reports, as Pollux keeps one profile entry per configuration: every
/// configuration the job ran on weighs the same in the fit however long it ran there, and steps
/// slowed by a neighbour on the machine or a checkpoint write do not bend the model.
pub fn per_configuration(observed: &[Observation]) -> Vec<Observation> {
    let mut groups: BTreeMap<(u32, u32, u32), Vec<&Observation>> = BTreeMap::new();
    for observation in observed {
        groups
            .entry((
                observation.nodes,
                observation.replicas,
                observation.local_bsz,
            ))
            .or_default()
            .push(observation);
    }
    groups
        .into_iter()
        .map(|((nodes, replicas, local_bsz), group)| Observation {
            nodes,
            replicas,
            local_bsz,
            accum_step_time: group
                .iter()
                .all(|o| o.accum_step_time.is_some())
                .then(|| interquartile_mean(group.iter().filter_map(|o| o.accum_step_time))),
            optim_step_time: interquartile_mean(group.iter().map(|o| o.optim_step_time)),
        })
        .collect()
}

/// The interquartile mean: the mean of the middle half of `values` (not empty). Robust to
/// outliers like a median (a step stalled by a checkpoint write), and, unlike a median, it
/// moves smoothly when a machine alternates between a fast and a slow spell (as shared VMs
/// do), instead of jumping to whichever spell holds the majority.
pub fn interquartile_mean(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    let quarter = values.len() / 4;
    let middle = &values[quarter..values.len() - quarter];
    middle.iter().sum::<f64>() / middle.len() as f64
}

/// The latest reported gradient statistics.
pub fn gradient_stats(samples: &[MetricSample]) -> Option<GradStats> {
    samples
        .iter()
        .rev()
        .find_map(|s| match (s.grad_sqr, s.grad_var) {
            (Some(sqr), Some(var)) if sqr.is_finite() && var.is_finite() && sqr > 0.0 => {
                Some(GradStats { sqr, var })
            }
            _ => None,
        })
}

/// Reported statistics are per sample (`grad_var` = tr Σ, protocol.md §6); the goodput
/// model (`adaptsched_core::perf`, as Pollux's) wants the variance of a gradient at the
/// job's initial batch, tr Σ / initial, as the simulator's profiles give it.
pub fn at_initial_batch(raw: GradStats, initial: u32) -> GradStats {
    GradStats {
        sqr: raw.sqr,
        var: raw.var / f64::from(initial.max(1)),
    }
}

/// Per-sample statistics back from a model's (see [`at_initial_batch`]).
pub fn per_sample(model: &JobModel) -> Option<GradStats> {
    model.grad.map(|g| GradStats {
        sqr: g.sqr,
        var: g.var * f64::from(model.limits.init_batch.max(1)),
    })
}

/// The model policies see. Throughput parameters are fitted only for jobs with batch limits
/// (goodput needs them); every job reports the most devices it has run on, which bounds how
/// far Pollux-style policies let it grow.
pub fn job_model(
    spec: Option<&BatchSpec>,
    history: &[AllocationRecord],
    samples: &[MetricSample],
) -> (JobModel, usize) {
    let observed = observations(history, samples);
    let perf = spec.and_then(|_| fit_perf_params(&per_configuration(&observed)));
    let limits = limits(spec);
    let model = JobModel {
        perf,
        types: Vec::new(),
        grad: gradient_stats(samples).map(|raw| at_initial_batch(raw, limits.init_batch)),
        limits,
        fixed_batch: None,
        max_replicas_seen: history
            .iter()
            .map(|r| r.allocation.total_gpus())
            .max()
            .unwrap_or(0),
    };
    (model, observed.len())
}

/// Measured restart cost of a job: the mean time from each start (an allocation record
/// with devices) to the first step it reported in that attempt, i.e. process start, imports,
/// checkpoint restore and the first step. `None` before any attempt reported.
pub fn restart_cost(history: &[AllocationRecord], samples: &[MetricSample]) -> Option<f64> {
    let mut costs = Vec::new();
    for (index, record) in history.iter().enumerate() {
        if record.allocation.total_gpus() == 0 {
            continue;
        }
        let until = history.get(index + 1).map_or(f64::INFINITY, |next| next.at);
        let first = samples
            .iter()
            .filter(|s| s.at >= record.at && s.at < until)
            .map(|s| s.at)
            .fold(f64::INFINITY, f64::min);
        if first.is_finite() {
            costs.push(first - record.at);
        }
    }
    (!costs.is_empty()).then(|| costs.iter().sum::<f64>() / costs.len() as f64)
}

/// Goodput (initial-batch samples per second) the model predicts for a job on `replicas`
/// devices of one node with the given batch split; `None` without a fitted model.
pub fn goodput_at(model: &JobModel, replicas: u32, local: u32, accumulation: u32) -> Option<f64> {
    let perf = model.perf.as_ref()?;
    let grad = model.grad.unwrap_or(GradStats { sqr: 1.0, var: 0.0 });
    Some(adaptsched_core::perf::goodput(
        perf,
        &grad,
        model.limits.init_batch,
        1,
        replicas.max(1),
        local.max(1),
        accumulation,
    ))
}

/// Step time (seconds) the model predicts on `replicas` devices of one node with the given
/// batch split; `None` without a fitted model.
pub fn predicted_step_time(
    model: &JobModel,
    replicas: u32,
    local: u32,
    accumulation: u32,
) -> Option<f64> {
    let perf = model.perf.as_ref()?;
    Some(adaptsched_core::perf::iteration_time(
        perf,
        1,
        replicas.max(1),
        f64::from(local.max(1)),
        accumulation,
    ))
}

/// The API's view of a model.
pub fn view(model: &JobModel, observations: usize) -> FittedModelView {
    let mut params = BTreeMap::new();
    if let Some(p) = &model.perf {
        for (name, value) in [
            ("alpha_c", p.alpha_c),
            ("beta_c", p.beta_c),
            ("alpha_n", p.alpha_n),
            ("beta_n", p.beta_n),
            ("alpha_r", p.alpha_r),
            ("beta_r", p.beta_r),
            ("gamma", p.gamma),
        ] {
            params.insert(name.to_string(), value);
        }
    }
    let grad = per_sample(model);
    FittedModelView {
        params,
        grad_sqr: grad.map(|g| g.sqr),
        grad_var: grad.map(|g| g.var),
        noise_scale: grad.filter(|g| g.sqr > 0.0).map(|g| g.var / g.sqr),
        observations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adaptsched_core::plan::BatchDecision;
    use adaptsched_core::{Allocation, NodeId};
    use adaptsched_store::DurableJobId;

    fn record(at: f64, gpus: u32, batch: Option<(u32, u32)>) -> AllocationRecord {
        AllocationRecord {
            seq: 0,
            job: DurableJobId(1),
            at,
            allocation: if gpus == 0 {
                Allocation::default()
            } else {
                Allocation::new(vec![(NodeId(0), gpus)])
            },
            batch: batch.map(|(local, accum)| BatchDecision {
                local_batch_size: local,
                accumulation_steps: accum,
            }),
            reason: String::new(),
        }
    }

    fn sample(at: f64, step_time: f64, sync: f64) -> MetricSample {
        MetricSample {
            step: at as u64,
            samples: 128,
            loss: 1.0,
            step_time,
            sync_time: sync,
            grad_sqr: Some(2.0),
            grad_var: Some(6.0),
            at,
        }
    }

    #[test]
    fn reports_take_the_allocation_in_effect_when_they_were_made() {
        let history = vec![
            record(0.0, 1, Some((64, 1))),
            record(10.0, 0, None),
            record(20.0, 2, Some((64, 0))),
        ];
        let samples = vec![
            sample(5.0, 1.0, 0.0),
            sample(15.0, 1.0, 0.0),
            sample(25.0, 0.6, 0.2),
        ];
        let observed = observations(&history, &samples);
        assert_eq!(
            observed.len(),
            2,
            "the report made while stopped is skipped"
        );
        assert_eq!((observed[0].replicas, observed[0].local_bsz), (1, 64));
        assert!((observed[0].accum_step_time.unwrap() - 0.5).abs() < 1e-9);
        assert!((observed[0].optim_step_time - 0.5).abs() < 1e-9);
        assert_eq!((observed[1].replicas, observed[1].local_bsz), (2, 64));
        assert_eq!(
            observed[1].accum_step_time, None,
            "two replicas, no accumulation: only the whole step is measured"
        );
        assert!((observed[1].optim_step_time - 0.6).abs() < 1e-9);
    }

    #[test]
    fn a_job_with_batch_limits_gets_a_fitted_model_and_noise_scale() {
        let spec = BatchSpec {
            initial: 64,
            max: 1024,
            min_local: None,
            max_local: Some(256),
        };
        let history = vec![
            record(0.0, 1, Some((64, 0))),
            record(50.0, 2, Some((64, 0))),
        ];
        let samples: Vec<MetricSample> = (0..40)
            .map(|i| {
                let at = f64::from(i) * 2.5;
                if at < 50.0 {
                    sample(at, 0.5, 0.0)
                } else {
                    sample(at, 0.6, 0.1)
                }
            })
            .collect();
        let (model, count) = job_model(Some(&spec), &history, &samples);
        assert_eq!(count, 40);
        assert_eq!(model.max_replicas_seen, 2);
        assert!(model.perf.is_some());
        assert!(model.best(1, 2).is_some());
        let view = view(&model, count);
        assert_eq!(view.noise_scale, Some(3.0));
        assert!(view.params.contains_key("gamma"));
        let (rigid, _) = job_model(None, &history, &samples);
        assert!(rigid.perf.is_none(), "no batch limits, no goodput model");
        assert_eq!(rigid.max_replicas_seen, 2);
    }

    #[test]
    fn each_configuration_is_fitted_from_the_interquartile_mean_of_its_steps() {
        let step = |replicas, local_bsz, time: f64| Observation {
            nodes: 1,
            replicas,
            local_bsz,
            accum_step_time: (replicas == 1).then_some(time),
            optim_step_time: time + 0.5,
        };
        let observed = [
            step(1, 32, 1.0),
            step(2, 16, 3.0),
            step(1, 32, 9.0), // a step slowed by a neighbour
            step(1, 32, 2.0),
            step(2, 16, 5.0),
            step(1, 32, 2.0),
        ];
        let summary = per_configuration(&observed);
        assert_eq!(summary.len(), 2);
        assert_eq!(
            (
                summary[0].replicas,
                summary[0].accum_step_time,
                summary[0].optim_step_time
            ),
            (1, Some(2.0), 2.5)
        );
        assert_eq!(
            (
                summary[1].replicas,
                summary[1].accum_step_time,
                summary[1].optim_step_time
            ),
            (2, None, 4.5)
        );
        let spells = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 80.0];
        assert_eq!(interquartile_mean(spells.into_iter()), 4.5);
    }
}
