//! Small builders shared by the store's integration tests.
#![allow(dead_code)]

use adaptsched_store::{JobSubmission, MetricSample};

pub fn submission(name: &str, user: &str) -> JobSubmission {
    JobSubmission::new(name, user, ["python3", "train.py", "--epochs", "1"])
        .gpus(1, 4)
        .working_dir("/tmp/work")
        .env("SEED", "7")
        .priority(3)
        .max_retries(2)
}

pub fn sample(step: u64, at: f64) -> MetricSample {
    MetricSample {
        step,
        samples: 128,
        loss: 2.0 / (step as f64 + 1.0),
        step_time: 0.25,
        sync_time: 0.05,
        grad_sqr: Some(1.5),
        grad_var: Some(0.5),
        at,
    }
}
