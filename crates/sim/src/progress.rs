//! Ground-truth job progress: how fast a job advances on a placement, from measured profiles
//! (epochs of statistical progress) or from a recorded duration.

use crate::profiles::{AppProfile, SpeedTable};

/// How a running job is configured: where it runs and with what batch.
#[derive(Clone, Debug)]
pub struct RunConfig<'a> {
    pub table: Option<&'a SpeedTable>,
    /// GPUs per node in placement order.
    pub placement: Vec<u32>,
    pub atomic_bsz: u32,
    pub accum_steps: u32,
}

impl RunConfig<'_> {
    pub fn replicas(&self) -> u32 {
        self.placement.iter().sum()
    }

    /// Total batch per optimizer step.
    pub fn total_batch(&self) -> u32 {
        self.replicas() * self.atomic_bsz * (self.accum_steps + 1)
    }
}

/// A job's true remaining work.
#[derive(Clone, Debug)]
pub enum Truth<'a> {
    Profiled {
        app: &'a AppProfile,
        epoch: usize,
        progress: f64,
    },
    Duration {
        remaining: f64,
    },
}

/// The Pollux artifact's rule for a fixed total batch on `replicas` GPUs: split it per GPU,
/// accumulate when a GPU cannot hold its share, and never exceed the app's largest batch.
/// `None` as the batch means the artifact's default, max(M0, min_local × replicas).
pub fn fixed_batch_config(
    app: &AppProfile,
    table: &SpeedTable,
    replicas: u32,
    batch: Option<u32>,
) -> (u32, u32) {
    let replicas = replicas.max(1);
    let batch = batch.unwrap_or_else(|| app.init_batch_size.max(table.min_local_bsz * replicas));
    let local = (f64::from(batch) / f64::from(replicas) - 1e-8)
        .ceil()
        .max(1.0);
    let mut accum =
        ((local / f64::from(table.max_local_bsz.max(1)) - 1e-8).ceil() - 1.0).max(0.0) as u32;
    if replicas == 1 && batch > app.init_batch_size {
        accum = accum.max(1);
    }
    let mut atomic = (local / f64::from(accum + 1) - 1e-8).ceil().max(1.0) as u32;
    let count = replicas * (accum + 1);
    atomic = atomic.min(app.max_batch_size / count).max(1);
    (atomic, accum)
}

/// Progress per second (in initial-batch steps) during `epoch`.
fn profiled_rate(app: &AppProfile, config: &RunConfig<'_>, epoch: usize) -> f64 {
    let Some(table) = config.table else {
        return 0.0;
    };
    let Some((step, sync)) = table.step_time(&config.placement, f64::from(config.atomic_bsz))
    else {
        return 0.0;
    };
    let accum_time = (step - sync).max(0.0);
    let iteration = step + accum_time * f64::from(config.accum_steps);
    if iteration <= 0.0 {
        return 0.0;
    }
    app.gain(f64::from(config.total_batch()), epoch) / (iteration * app.calibration_slowdown)
}

impl Truth<'_> {
    pub fn is_done(&self) -> bool {
        match self {
            Truth::Profiled { app, epoch, .. } => *epoch >= app.max_epochs,
            Truth::Duration { remaining } => *remaining <= 0.0,
        }
    }

    /// Runs for `seconds` of productive time; returns the seconds used if the job finished.
    pub fn advance(&mut self, config: &RunConfig<'_>, seconds: f64) -> Option<f64> {
        match self {
            Truth::Duration { remaining } => {
                if seconds >= *remaining {
                    let used = *remaining;
                    *remaining = 0.0;
                    Some(used)
                } else {
                    *remaining -= seconds;
                    None
                }
            }
            Truth::Profiled {
                app,
                epoch,
                progress,
            } => {
                let mut left = seconds;
                let mut used = 0.0;
                loop {
                    if *epoch >= app.max_epochs {
                        return Some(used);
                    }
                    let rate = profiled_rate(app, config, *epoch);
                    let next = app.progress_at_epoch(*epoch + 1);
                    let need = (next - *progress).max(0.0);
                    if rate <= 0.0 {
                        return None;
                    }
                    if rate * left < need {
                        *progress += rate * left;
                        return None;
                    }
                    let crossing = need / rate;
                    used += crossing;
                    left -= crossing;
                    *epoch += 1;
                    *progress = next;
                }
            }
        }
    }

    /// Productive seconds to the next milestone on `config`: the end of the current epoch
    /// (profiled jobs, whose batch may change between epochs) or the end of the job.
    pub fn time_to_milestone(&self, config: &RunConfig<'_>) -> f64 {
        match self {
            Truth::Duration { remaining } => *remaining,
            Truth::Profiled {
                app,
                epoch,
                progress,
            } => {
                let rate = profiled_rate(app, config, *epoch);
                if rate <= 0.0 {
                    return f64::INFINITY;
                }
                (app.progress_at_epoch(*epoch + 1) - progress).max(0.0) / rate
            }
        }
    }

    /// Snaps to the end of epoch `target` (or of the job, for duration work), which
    /// `time_to_milestone` predicted; only floating-point drift can leave it short.
    pub fn reach_milestone(&mut self, target: usize) {
        match self {
            Truth::Duration { remaining } => *remaining = 0.0,
            Truth::Profiled {
                app,
                epoch,
                progress,
            } => {
                if *epoch < target {
                    *epoch = target;
                    *progress = app.progress_at_epoch(target);
                }
            }
        }
    }

    /// Statistical efficiency of a step on `config` now: AdaScale gain ÷ batch scale (1 for
    /// duration work), so GPU time at a wasteful batch counts for less.
    pub fn efficiency(&self, config: &RunConfig<'_>) -> f64 {
        match self {
            Truth::Duration { .. } => 1.0,
            Truth::Profiled { app, epoch, .. } => {
                let batch = f64::from(config.total_batch());
                let scale = batch / f64::from(app.init_batch_size);
                if scale > 0.0 {
                    app.gain(batch, *epoch) / scale
                } else {
                    0.0
                }
            }
        }
    }

    /// The epoch being trained (0 for duration work).
    pub fn epoch(&self) -> usize {
        match self {
            Truth::Profiled { epoch, .. } => *epoch,
            Truth::Duration { .. } => 0,
        }
    }

    /// Productive seconds left on `config`, or infinity if it can make no progress there.
    pub fn time_to_finish(&self, config: &RunConfig<'_>) -> f64 {
        self.clone()
            .advance(config, f64::INFINITY)
            .unwrap_or(f64::INFINITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profiles::ProfileSet;
    use std::path::Path;

    fn bundled() -> ProfileSet {
        ProfileSet::read(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/pollux/profiles"
        )))
        .expect("bundled")
    }

    #[test]
    fn fixed_batches_split_per_gpu_and_accumulate_like_the_artifact() {
        let set = bundled();
        let cifar = set.app("cifar10").expect("cifar10");
        let table = &cifar.speed["aws"];
        // 2048 over 6 GPUs: ceil(341.33) = 342 per GPU, fits in one step (max local 1024).
        assert_eq!(fixed_batch_config(cifar, table, 6, Some(2048)), (342, 0));
        // One GPU above M0: the artifact forces one accumulation step.
        assert_eq!(fixed_batch_config(cifar, table, 1, Some(256)), (128, 1));
        // Never past the largest batch: 4096 / (16 × 1) = 256 per GPU.
        assert_eq!(fixed_batch_config(cifar, table, 16, Some(8192)), (256, 0));
        // Default batch: max(M0, min_local × replicas) = max(128, 32 × 8) = 256 → 32 each.
        assert_eq!(fixed_batch_config(cifar, table, 8, None), (32, 0));
    }

    #[test]
    fn duration_work_advances_and_finishes() {
        let config = RunConfig {
            table: None,
            placement: vec![1],
            atomic_bsz: 0,
            accum_steps: 0,
        };
        let mut truth = Truth::Duration { remaining: 100.0 };
        assert_eq!(truth.advance(&config, 40.0), None);
        assert_eq!(truth.time_to_finish(&config), 60.0);
        assert_eq!(truth.advance(&config, 100.0), Some(60.0));
        assert!(truth.is_done());
    }

    #[test]
    fn profiled_work_advances_epoch_by_epoch() {
        let set = bundled();
        let ncf = set.app("ncf").expect("ncf");
        let table = &ncf.speed["aws"];
        let (atomic_bsz, accum_steps) = fixed_batch_config(ncf, table, 1, Some(256));
        let config = RunConfig {
            table: Some(table),
            placement: vec![1],
            atomic_bsz,
            accum_steps,
        };
        let fresh = Truth::Profiled {
            app: ncf,
            epoch: 0,
            progress: 0.0,
        };
        let total = fresh.time_to_finish(&config);
        assert!(total.is_finite() && total > 0.0);
        let mut half = fresh.clone();
        assert_eq!(half.advance(&config, total / 2.0), None);
        assert!((half.time_to_finish(&config) - total / 2.0).abs() < 1e-6 * total);
        if let Truth::Profiled { epoch, .. } = half {
            assert!(epoch > 0 && epoch < ncf.max_epochs);
        }
        let mut done = fresh;
        assert!(done.advance(&config, total * 1.01).is_some());
        assert!(done.is_done());
    }
}
