//! Live adaptation end to end: the real `adaptsched serve` (default policy, adaptive) on four
//! CPU slots runs four real trainers (`examples/mlp_trainer.py`: an MLP trained with SGD in
//! pure Python, data parallel over its slots) submitted at different times with batch limits
//! and slot ranges. From the API (`show --json`) and the jobs' own logs the test shows: a job
//! grown when others finished, a job shrunk or preempted when a new one arrived, every
//! restarted job resumed from its checkpoint (step counter continued, loss kept falling), and
//! batch sizes chosen by the fitted goodput model, each change an event with its reason.

mod common;

use common::{
    Server, explain, is_terminal, log_events, show, state_of, submit_file, wait_for_explained,
};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

fn trainer() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/mlp_trainer.py")
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

/// Submits a trainer through a job file with batch limits; returns its id.
fn submit_trainer(
    data: &Path,
    work: &Path,
    name: &str,
    slots: (u32, u32),
    initial: u32,
    epochs: f64,
    seed: u32,
) -> u64 {
    let request = serde_json::json!({
        "name": name,
        // A base learning rate the AdaScale gain (up to 1024 / initial) cannot push into
        // divergence: at 0.5, a job re-batched to 1024 once ended above its first loss.
        "command": ["python3", trainer(), "--dataset-size", "4096", "--epochs", epochs.to_string(),
                    "--seed", seed.to_string(), "--log-every", "5", "--lr", "0.1"],
        "working_dir": work.display().to_string(),
        "min_gpus": slots.0,
        "max_gpus": slots.1,
        "batch": {"initial": initial, "max": 1024, "min_local": 8, "max_local": 512},
    });
    submit_file(data, work, &request)
}

fn events(job: &Value) -> Vec<(String, String)> {
    job["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| {
                    (
                        e["kind"].as_str().unwrap_or("").to_string(),
                        e["message"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `resize: A → B ...` as (A, B).
fn resize_of(message: &str) -> Option<(u32, u32)> {
    let rest = message.strip_prefix("resize: ")?;
    let (from, rest) = rest.split_once(" → ")?;
    let to = rest.split_whitespace().next()?;
    Some((from.parse().ok()?, to.parse().ok()?))
}

/// The global batch sizes a job was started with, in order.
fn batch_sizes(job: &Value) -> Vec<u64> {
    job["allocation_history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["allocation"].as_array().is_some_and(|a| !a.is_empty()))
        .filter_map(|c| c["batch"]["global_batch_size"].as_u64())
        .collect()
}

#[test]
fn jobs_grow_shrink_rebatch_and_resume_from_checkpoints() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let server = Server::start(&data, &[]);
    let wait = |what: &str, limit: u64, probe: &mut dyn FnMut() -> Option<()>| {
        wait_for_explained(what, Duration::from_secs(limit), || explain(&data), probe)
    };
    let held = |id: u64| show(&data, id)["gpus"].as_u64().unwrap_or(0);

    // A alone: the policy grows it past one slot once it has a model.
    let a = submit_trainer(&data, &work, "a", (1, 4), 64, 80.0, 1);
    wait("job a to grow past one slot", 40, &mut || {
        (held(a) >= 2).then_some(())
    });
    // B arrives: A must give slots up (shrink or preemption).
    let grown = held(a);
    let b = submit_trainer(&data, &work, "b", (1, 4), 32, 6.0, 2);
    // Once a's attempt has run its minimum run time (10 restart costs), it gives slots up.
    wait("job a to shrink and b to run", 60, &mut || {
        let state = state_of(&show(&data, a)).to_string();
        assert!(
            !is_terminal(&state),
            "job a ended ({state}) before it gave up slots: make it longer"
        );
        (state == "running" && held(a) < grown && held(b) >= 1).then_some(())
    });
    // C (one slot) and D arrive; then everything runs to completion, and as jobs finish the
    // remaining ones grow.
    let c = submit_trainer(&data, &work, "c", (1, 1), 64, 4.0, 3);
    let d = submit_trainer(&data, &work, "d", (1, 4), 128, 8.0, 4);
    let ids = [a, b, c, d];
    wait("all jobs to finish", 150, &mut || {
        ids.iter()
            .all(|&id| state_of(&show(&data, id)) == "succeeded")
            .then_some(())
    });
    let jobs: Vec<Value> = ids.iter().map(|&id| show(&data, id)).collect();

    let mut grown_after_finish = false;
    let mut shrunk_on_arrival = false;
    let mut rebatched_by_model = false;
    for (job, id) in jobs.iter().zip(ids) {
        let sizes = batch_sizes(job);
        eprintln!(
            "job {id} ({}): restarts {}, batch sizes {sizes:?}",
            job["name"], job["restarts"]
        );
        for (kind, message) in events(job) {
            if matches!(kind.as_str(), "resize" | "rebatch" | "preempt") {
                eprintln!("  {kind}: {message}");
                assert!(message.contains(':'), "every change says why: {message}");
            }
            if let Some((from, to)) = resize_of(&message) {
                grown_after_finish |= to > from && message.contains("finished");
                shrunk_on_arrival |= to < from && message.contains("arrived");
            }
            shrunk_on_arrival |= kind == "preempt" && message.contains("arrived");
            rebatched_by_model |= kind == "rebatch" && message.contains("fitted noise scale");
        }
        assert!(!sizes.is_empty(), "job {id} started with a batch");
        // The fitted model and noise scale are shown.
        let model = &job["model"];
        assert!(model["observations"].as_u64() > Some(10), "{model}");
        assert!(
            model["noise_scale"].as_f64().is_some_and(|n| n > 0.0),
            "{model}"
        );
        assert!(model["params"]["gamma"].as_f64().is_some(), "{model}");

        // Resumed from checkpoints: each restart continues the step counter from where the
        // previous attempt stopped, and the loss after it is below the job's first loss.
        let lines = log_events(&data, id);
        let first_loss = lines
            .iter()
            .find(|l| l["event"] == "step")
            .and_then(|l| l["loss"].as_f64())
            .expect("a first loss");
        let mut stopped_at: Option<u64> = None;
        let mut awaiting_step = false;
        for line in &lines {
            match line["event"].as_str() {
                Some("stopped") => stopped_at = line["step"].as_u64(),
                Some("start") if line["resumed"] == true => {
                    let step = line["step"].as_u64().unwrap();
                    assert!(step > 0, "job {id} resumed at step 0: {line}");
                    if let Some(stop) = stopped_at.take() {
                        assert_eq!(step, stop, "job {id} resumed where it stopped");
                    }
                    awaiting_step = true;
                }
                Some("step") if awaiting_step => {
                    awaiting_step = false;
                    let loss = line["loss"].as_f64().unwrap();
                    assert!(
                        loss < first_loss,
                        "job {id}: loss {loss} after a restart, first {first_loss}"
                    );
                }
                _ => {}
            }
        }
        let done = lines
            .iter()
            .rfind(|l| l["event"] == "done")
            .and_then(|l| l["loss"].as_f64())
            .expect("done");
        assert!(
            done < first_loss,
            "job {id}: final {done}, first {first_loss}"
        );
        if job["restarts"].as_u64() > Some(0) {
            assert!(
                lines
                    .iter()
                    .any(|l| l["event"] == "start" && l["resumed"] == true),
                "job {id} restarted but never resumed"
            );
        }
    }
    let log = server.log();
    assert!(
        grown_after_finish,
        "no job grew when another finished\n{log}"
    );
    assert!(
        shrunk_on_arrival,
        "no job shrank when another arrived\n{log}"
    );
    assert!(
        rebatched_by_model,
        "no batch size chosen from the fitted model\n{log}"
    );
    eprintln!("e2e adaptive: {:.1} s", started.elapsed().as_secs_f64());
}
