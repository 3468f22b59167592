//! The live model against the real trainer: the throughput model the server fits from a
//! job's reports predicts the example trainer's measured step times within 15% on the
//! allocations it has seen (issue 6). Its own test binary, so no other test shares the
//! machine's cores while it times steps.

use adaptsched_api::BatchSpec;
use adaptsched_core::plan::BatchDecision;
use adaptsched_core::{Allocation, NodeId};
use adaptsched_server::model::{interquartile_mean, job_model, predicted_step_time};
use adaptsched_store::{AllocationRecord, DurableJobId, MetricSample};

/// The allocation in effect from `at`: `replicas` devices, `local` samples each.
fn record(at: f64, replicas: u32, local: u32) -> AllocationRecord {
    AllocationRecord {
        seq: 0,
        job: DurableJobId(1),
        at,
        allocation: Allocation::new(vec![(NodeId(0), replicas)]),
        batch: Some(BatchDecision {
            local_batch_size: local,
            accumulation_steps: 0,
        }),
        reason: String::new(),
    }
}

/// Runs the real example trainer standalone on `replicas` worker processes at global
/// batch `batch` for `steps` steps and returns its (step_time, sync_time) per step,
/// warm-up skipped.
fn run_trainer(replicas: u32, batch: u32, steps: u32, dir: &std::path::Path) -> Vec<(f64, f64)> {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mlp_trainer.py");
    // A fresh checkpoint dir per burst, so each burst trains its `steps` steps.
    let checkpoints = tempfile::tempdir_in(dir).unwrap();
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args(["--replicas", &replicas.to_string()])
        .args(["--batch-size", &batch.to_string()])
        .args(["--max-steps", &steps.to_string(), "--epochs", "1000"])
        .args(["--log-every", "1", "--dataset-size", "2048"])
        .arg("--checkpoint-dir")
        .arg(checkpoints.path())
        .env_remove("ADAPTSCHED_URL")
        .env_remove("ADAPTSCHED_JOB_ID")
        .output()
        .expect("python3 runs the example trainer");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "step")
        .filter_map(|v| Some((v["step_time"].as_f64()?, v["sync_time"].as_f64()?)))
        .skip(3)
        .collect()
}

/// Bursts per configuration and steps per burst (the first 3 of each are warm-up).
const BURSTS: usize = 12;
const BURST_STEPS: u32 = 9;

/// The fitted throughput model predicts the real trainer's step time within 15% on the
/// allocations it has seen: the trainer (real gradients, pure Python, one worker process
/// per replica) runs standalone on several (replicas, batch) configurations, its step
/// times become reports under the matching allocation records, and the fit (the
/// simulator's `fit_perf_params`) is compared with the interquartile mean step time of each.
#[test]
fn the_fit_predicts_the_real_trainers_step_times() {
    let dir = tempfile::tempdir().unwrap();
    let configs = [(1, 32), (1, 64), (1, 128), (2, 64), (2, 128)];
    let spec = BatchSpec {
        initial: 32,
        max: 1024,
        min_local: Some(8),
        max_local: Some(256),
    };
    // Each configuration runs in several short bursts, taken in turn, so that a busy
    // spell of the machine (other builds and tests share its two cores) falls on all of
    // them alike instead of skewing one.
    let mut steps: Vec<Vec<(f64, f64)>> = vec![Vec::new(); configs.len()];
    let dir_path = dir.path();
    for _ in 0..BURSTS {
        for (&(replicas, batch), runs) in configs.iter().zip(&mut steps) {
            runs.extend(run_trainer(replicas, batch, BURST_STEPS, dir_path));
        }
    }
    let mut history = Vec::new();
    let mut samples = Vec::new();
    let mut measured = Vec::new();
    for (k, (&(replicas, batch), steps)) in configs.iter().zip(&steps).enumerate() {
        assert!(
            steps.len() >= 20,
            "{replicas}x{batch}: {} steps",
            steps.len()
        );
        let at = 1000.0 * k as f64;
        history.push(record(at, replicas, batch / replicas));
        for (i, &(step_time, sync_time)) in steps.iter().enumerate() {
            samples.push(MetricSample {
                step: i as u64,
                samples: u64::from(batch),
                loss: 1.0,
                step_time,
                sync_time,
                grad_sqr: None,
                grad_var: None,
                at: at + 1.0 + i as f64,
            });
        }
        // The typical step, as the fit sees it (each configuration's interquartile mean): a
        // step slowed by a neighbour on the machine says nothing about the allocation.
        measured.push(interquartile_mean(steps.iter().map(|s| s.0)));
    }
    let (model, count) = job_model(Some(&spec), &history, &samples);
    assert_eq!(count, samples.len());
    assert!(model.perf.is_some(), "a fit");
    let mut worst = 0.0f64;
    for (&(replicas, batch), &real) in configs.iter().zip(&measured) {
        let predicted = predicted_step_time(&model, replicas, batch / replicas, 0).unwrap();
        let error = (predicted - real).abs() / real;
        eprintln!(
            "{replicas} replica(s), batch {batch}: measured {:.2} ms, predicted {:.2} ms ({:.1}%)",
            real * 1e3,
            predicted * 1e3,
            error * 100.0
        );
        worst = worst.max(error);
    }
    assert!(
        worst < 0.15,
        "worst relative error {worst:.3}: {:?}",
        model.perf
    );
}
