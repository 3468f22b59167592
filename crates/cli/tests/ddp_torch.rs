//! The PyTorch example (`examples/ddp_trainer.py`: DistributedDataParallel on gloo, with
//! `adaptsched.torch`'s gradient noise scale and AdaScale) under the real `adaptsched serve`:
//! it starts on one CPU slot beside a job holding the others, grows to two replicas when that
//! job finishes (SIGTERM, checkpoint, restart), resumes where it stopped, and reports the
//! gradient statistics the server turns into a noise scale.
//!
//! Needs a Python with torch in `ADAPTSCHED_TORCH_PYTHON`. PyTorch from PyPI is about 5 GB
//! with its CUDA libraries, too much for CI, so without it the test says so and passes; run
//! it by hand (docs/protocol.md).

mod common;

use common::{
    Server, cli_ok, explain, log_events, show, state_of, submit_file, wait_for_explained,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn the_ddp_trainer_grows_resumes_and_reports_its_noise_scale() {
    let Some(python) = std::env::var_os("ADAPTSCHED_TORCH_PYTHON").map(PathBuf::from) else {
        eprintln!("skipped: set ADAPTSCHED_TORCH_PYTHON to a Python with torch to run this test");
        return;
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let _server = Server::start(&data, &[]);
    let python = python.display().to_string();

    // A pure-Python job holding three of the four slots for a few seconds. The DDP job must
    // run long enough next to its restart cost (torch's import) for a restart to pay: the
    // policy grows it once it is about 5 restart costs old.
    let blocker = submit_file(
        &data,
        &work,
        &serde_json::json!({
            "name": "blocker",
            "command": ["python3", example("mlp_trainer.py"), "--dataset-size", "2048",
                        "--epochs", "3", "--log-every", "50"],
            "working_dir": work.display().to_string(),
            "min_gpus": 3, "max_gpus": 3,
        }),
    );
    let wait = |what: &str, limit: u64, probe: &mut dyn FnMut() -> Option<()>| {
        wait_for_explained(what, Duration::from_secs(limit), || explain(&data), probe)
    };
    wait("the blocker to run", 30, &mut || {
        (state_of(&show(&data, blocker)) == "running").then_some(())
    });
    let ddp = submit_file(
        &data,
        &work,
        &serde_json::json!({
            "name": "ddp",
            "command": [python, example("ddp_trainer.py"), "--dataset-size", "16384",
                        "--epochs", "100", "--hidden", "2048", "--log-every", "50"],
            "working_dir": work.display().to_string(),
            "min_gpus": 1, "max_gpus": 2,
            "batch": {"initial": 128, "max": 512, "min_local": 32, "max_local": 256},
        }),
    );
    wait("the DDP job to finish", 300, &mut || {
        let state = state_of(&show(&data, ddp)).to_string();
        assert_ne!(
            state,
            "failed",
            "{}",
            cli_ok(&data, &["logs", &ddp.to_string()])
        );
        (state == "succeeded").then_some(())
    });

    let job = show(&data, ddp);
    let replicas: Vec<u64> = job["allocation_history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["allocation"].as_array())
        .map(|a| a.iter().filter_map(|p| p["gpus"].as_u64()).sum())
        .filter(|&n| n > 0)
        .collect();
    eprintln!(
        "ddp job: replicas per attempt {replicas:?}, restarts {}",
        job["restarts"]
    );
    assert_eq!(
        replicas.first(),
        Some(&1),
        "it started on the one free slot"
    );
    assert!(
        replicas.contains(&2),
        "it grew to two replicas: {replicas:?}\n{}",
        explain(&data)
    );

    let lines = log_events(&data, ddp);
    let losses: Vec<f64> = lines
        .iter()
        .filter(|l| l["event"] == "step")
        .filter_map(|l| l["loss"].as_f64())
        .collect();
    assert!(losses.len() >= 6, "{lines:?}");
    let head: f64 = losses[..3].iter().sum::<f64>() / 3.0;
    let tail: f64 = losses[losses.len() - 3..].iter().sum::<f64>() / 3.0;
    assert!(
        tail < head,
        "the loss fell: first {head:.3}, last {tail:.3}"
    );
    // Each restart resumed where the previous attempt stopped, on its new replica count.
    let mut stopped_at = None;
    let mut resumed_on = Vec::new();
    for line in &lines {
        match line["event"].as_str() {
            Some("stopped") => stopped_at = line["step"].as_u64(),
            Some("start") if line["resumed"] == true => {
                let step = line["step"].as_u64().unwrap();
                assert_eq!(
                    Some(step),
                    stopped_at.take(),
                    "resumed where it stopped: {line}"
                );
                resumed_on.push(line["replicas"].as_u64().unwrap());
            }
            _ => {}
        }
    }
    assert!(
        resumed_on.contains(&2),
        "resumed on two replicas: {lines:?}"
    );
    // With two replicas the helper measured the gradient noise, and the server fitted it.
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "step" && l["grad_var"].as_f64().is_some()),
        "gradient statistics measured across the replicas"
    );
    let model = &job["model"];
    assert!(
        model["noise_scale"].as_f64().is_some_and(|n| n > 0.0),
        "{model}"
    );
    assert!(model["params"]["beta_c"].as_f64().is_some(), "{model}");
    eprintln!(
        "ddp e2e: {:.1} s, noise scale {}, {} steps reported",
        started.elapsed().as_secs_f64(),
        model["noise_scale"],
        losses.len()
    );
}
