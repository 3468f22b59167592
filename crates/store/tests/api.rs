//! The `Store` contract on the SQLite backend: states, filters, histories, metrics, errors.

mod common;

use adaptsched_core::NodeId;
use adaptsched_core::plan::BatchDecision;
use adaptsched_store::{
    Allocation, DurableJobId, JobFilter, JobState, SqliteStore, Store, StoreError,
};
use common::{sample, submission};

fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("state.db")).unwrap();
    (dir, store)
}

#[test]
fn submit_returns_a_queued_job_with_everything_it_was_given() {
    let (_dir, store) = store();
    let mut wanted = submission("resnet", "alice");
    wanted.spec = Some(serde_json::json!({"application": "cifar10", "batch": 256}));
    let job = store.submit_job(&wanted, 10.0).unwrap();
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.submission, wanted);
    assert_eq!(
        (job.created_at, job.updated_at, job.attempts),
        (10.0, 10.0, 0)
    );
    assert_eq!(store.get_job(job.id).unwrap(), job);
    let second = store.submit_job(&wanted, 11.0).unwrap();
    assert!(
        second.id > job.id,
        "ids increase: {} then {}",
        job.id,
        second.id
    );
}

#[test]
fn list_filters_by_state_and_user() {
    let (_dir, store) = store();
    let a1 = store
        .submit_job(&submission("a1", "alice"), 1.0)
        .unwrap()
        .id;
    let b1 = store.submit_job(&submission("b1", "bob"), 2.0).unwrap().id;
    let a2 = store
        .submit_job(&submission("a2", "alice"), 3.0)
        .unwrap()
        .id;
    store
        .set_job_state(a2, JobState::Running, "placed", 4.0)
        .unwrap();
    store
        .set_job_state(b1, JobState::Running, "placed", 4.0)
        .unwrap();

    let ids = |filter: JobFilter| -> Vec<DurableJobId> {
        store
            .list_jobs(&filter)
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect()
    };
    assert_eq!(ids(JobFilter::all()), vec![a1, b1, a2]);
    assert_eq!(ids(JobFilter::all().user("alice")), vec![a1, a2]);
    assert_eq!(ids(JobFilter::all().state(JobState::Running)), vec![b1, a2]);
    assert_eq!(
        ids(JobFilter::all().state(JobState::Running).user("alice")),
        vec![a2]
    );
    assert_eq!(
        ids(JobFilter::all().state(JobState::Queued).user("bob")),
        vec![]
    );
    assert_eq!(ids(JobFilter::all().user("carol")), vec![]);
    assert_eq!(ids(JobFilter::all().limit(2)), vec![a1, b1]);
}

#[test]
fn state_changes_are_recorded_as_events_and_running_counts_attempts() {
    let (_dir, store) = store();
    let id = store.submit_job(&submission("j", "alice"), 1.0).unwrap().id;
    store
        .set_job_state(id, JobState::Running, "placed on node#0", 2.0)
        .unwrap();
    store
        .set_job_state(id, JobState::Queued, "exit 1, retry 1 of 2", 3.0)
        .unwrap();
    let job = store
        .set_job_state(id, JobState::Running, "placed on node#0", 4.0)
        .unwrap();
    assert_eq!(job.attempts, 2);
    assert_eq!(job.state_reason, "placed on node#0");
    assert_eq!(job.updated_at, 4.0);
    let job = store
        .set_job_state(id, JobState::Succeeded, "exit 0", 5.0)
        .unwrap();
    assert_eq!(job.state, JobState::Succeeded);

    let events = store.events(id).unwrap();
    let seen: Vec<(f64, &str, &str)> = events
        .iter()
        .map(|e| (e.at, e.kind.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (1.0, "submitted", "submitted by alice"),
            (2.0, "state", "queued -> running: placed on node#0"),
            (3.0, "state", "running -> queued: exit 1, retry 1 of 2"),
            (4.0, "state", "queued -> running: placed on node#0"),
            (5.0, "state", "running -> succeeded: exit 0"),
        ]
    );
}

#[test]
fn invalid_transitions_are_rejected_naming_both_states() {
    let (_dir, store) = store();
    let id = store.submit_job(&submission("j", "alice"), 1.0).unwrap().id;
    let err = store
        .set_job_state(id, JobState::Succeeded, "?", 2.0)
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::InvalidTransition {
            from: JobState::Queued,
            to: JobState::Succeeded,
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        format!("job {id}: invalid state transition queued -> succeeded")
    );
    store
        .set_job_state(id, JobState::Running, "placed", 2.0)
        .unwrap();
    store
        .set_job_state(id, JobState::Succeeded, "exit 0", 3.0)
        .unwrap();
    for next in JobState::ALL {
        let err = store.set_job_state(id, next, "again", 4.0).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("job {id}: invalid state transition succeeded -> {next}")
        );
    }
    // Nothing about the job changed, and no event was written for the refused moves.
    let job = store.get_job(id).unwrap();
    assert_eq!((job.state, job.updated_at), (JobState::Succeeded, 3.0));
    assert_eq!(store.events(id).unwrap().len(), 3);
}

#[test]
fn transition_table_matches_the_lifecycle() {
    use JobState::*;
    let allowed = [
        (Queued, Running),
        (Queued, Failed),
        (Queued, Cancelled),
        (Running, Queued),
        (Running, Succeeded),
        (Running, Failed),
        (Running, Cancelled),
    ];
    for from in JobState::ALL {
        for to in JobState::ALL {
            assert_eq!(
                from.can_become(to),
                allowed.contains(&(from, to)),
                "{from} -> {to}"
            );
        }
    }
}

#[test]
fn cancel_works_until_the_job_finishes_then_names_the_state() {
    let (_dir, store) = store();
    let queued = store.submit_job(&submission("q", "alice"), 1.0).unwrap().id;
    let running = store.submit_job(&submission("r", "alice"), 1.0).unwrap().id;
    store
        .set_job_state(running, JobState::Running, "placed", 2.0)
        .unwrap();
    for id in [queued, running] {
        let job = store.cancel_job(id, "cancelled by alice", 3.0).unwrap();
        assert_eq!(job.state, JobState::Cancelled);
        assert_eq!(job.state_reason, "cancelled by alice");
    }
    let err = store.cancel_job(queued, "again", 4.0).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("job {queued} already cancelled: cannot cancel")
    );

    let done = store.submit_job(&submission("d", "alice"), 1.0).unwrap().id;
    store
        .set_job_state(done, JobState::Running, "placed", 2.0)
        .unwrap();
    store
        .set_job_state(done, JobState::Failed, "exit 3, no retries left", 3.0)
        .unwrap();
    let err = store.cancel_job(done, "too late", 4.0).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::JobFinished {
                state: JobState::Failed,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!("job {done} already failed: cannot cancel")
    );
}

#[test]
fn unknown_jobs_are_named_by_every_call() {
    let (_dir, store) = store();
    let ghost = DurableJobId(42);
    let alloc = Allocation::new(vec![(NodeId(0), 1)]);
    let errors = [
        store.get_job(ghost).map(|_| ()).unwrap_err(),
        store
            .set_job_state(ghost, JobState::Running, "", 1.0)
            .map(|_| ())
            .unwrap_err(),
        store.cancel_job(ghost, "", 1.0).map(|_| ()).unwrap_err(),
        store
            .record_event(ghost, "note", "", 1.0)
            .map(|_| ())
            .unwrap_err(),
        store.events(ghost).map(|_| ()).unwrap_err(),
        store
            .record_allocation(ghost, &alloc, None, "", 1.0)
            .map(|_| ())
            .unwrap_err(),
        store.allocations(ghost).map(|_| ()).unwrap_err(),
        store
            .record_metrics(ghost, &[sample(0, 1.0)])
            .map(|_| ())
            .unwrap_err(),
        store.metrics(ghost, 0).map(|_| ()).unwrap_err(),
        store
            .get_job(DurableJobId(u64::MAX))
            .map(|_| ())
            .unwrap_err(),
    ];
    for (index, err) in errors.iter().enumerate() {
        assert!(
            matches!(err, StoreError::UnknownJob(_)),
            "call {index}: {err}"
        );
    }
    assert_eq!(errors[0].to_string(), "unknown job 42");
    assert_eq!(errors[9].to_string(), format!("unknown job {}", u64::MAX));
}

#[test]
fn events_keep_recording_order_even_when_times_tie_or_go_back() {
    let (_dir, store) = store();
    let id = store.submit_job(&submission("j", "alice"), 5.0).unwrap().id;
    let other = store.submit_job(&submission("k", "bob"), 5.0).unwrap().id;
    for (index, at) in [5.0, 5.0, 4.0, 6.0].into_iter().enumerate() {
        store
            .record_event(id, "note", &format!("n{index}"), at)
            .unwrap();
        store
            .record_event(other, "note", "interleaved", at)
            .unwrap();
    }
    let events = store.events(id).unwrap();
    let messages: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(messages, ["submitted by alice", "n0", "n1", "n2", "n3"]);
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(events.iter().all(|e| e.job == id));
    let err = store.record_event(id, " ", "x", 1.0).unwrap_err();
    assert!(err.to_string().contains("invalid event kind"), "{err}");
}

#[test]
fn allocation_history_is_kept_in_order_with_batch_decisions() {
    let (_dir, store) = store();
    let id = store.submit_job(&submission("j", "alice"), 1.0).unwrap().id;
    store
        .set_job_state(id, JobState::Running, "placed", 2.0)
        .unwrap();
    let history = [
        (
            Allocation::new(vec![(NodeId(0), 2)]),
            Some((64, 0)),
            "start",
        ),
        (
            Allocation::new(vec![(NodeId(0), 4), (NodeId(1), 2)]),
            Some((32, 1)),
            "grow",
        ),
        (Allocation::new(vec![(NodeId(1), 1)]), None, "shrink"),
        (Allocation::default(), None, "preempted"),
    ];
    for (step, (alloc, batch, reason)) in history.iter().enumerate() {
        let batch = batch.map(|(local, accum)| BatchDecision {
            local_batch_size: local,
            accumulation_steps: accum,
        });
        let record = store
            .record_allocation(id, alloc, batch, reason, 10.0 + step as f64)
            .unwrap();
        assert_eq!(record.batch, batch);
    }
    let stored = store.allocations(id).unwrap();
    assert_eq!(stored.len(), history.len());
    for (record, (alloc, batch, reason)) in stored.iter().zip(&history) {
        assert_eq!(&record.allocation, alloc);
        assert_eq!(
            record
                .batch
                .map(|b| (b.local_batch_size, b.accumulation_steps)),
            *batch
        );
        assert_eq!(record.reason, *reason);
    }
    assert!(
        stored
            .windows(2)
            .all(|w| w[0].seq < w[1].seq && w[0].at < w[1].at)
    );

    store
        .set_job_state(id, JobState::Succeeded, "exit 0", 20.0)
        .unwrap();
    let err = store
        .record_allocation(id, &history[0].0, None, "late", 21.0)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("job {id} already succeeded: cannot record an allocation")
    );
}

#[test]
fn metrics_are_appended_and_read_back_since_a_step() {
    let (_dir, store) = store();
    let id = store.submit_job(&submission("j", "alice"), 1.0).unwrap().id;
    let other = store.submit_job(&submission("k", "alice"), 1.0).unwrap().id;
    let first: Vec<_> = (0..5).map(|s| sample(s, 10.0 + s as f64)).collect();
    let second: Vec<_> = (5..10).map(|s| sample(s, 10.0 + s as f64)).collect();
    assert_eq!(store.record_metrics(id, &first).unwrap(), 5);
    assert_eq!(store.record_metrics(id, &second).unwrap(), 5);
    store.record_metrics(other, &[sample(7, 99.0)]).unwrap();

    let all = store.metrics(id, 0).unwrap();
    assert_eq!(all, [first.clone(), second.clone()].concat());
    let tail = store.metrics(id, 7).unwrap();
    assert_eq!(
        tail.iter().map(|m| m.step).collect::<Vec<_>>(),
        vec![7, 8, 9]
    );
    assert_eq!(tail[0], second[2]);
    assert!(store.metrics(id, 10).unwrap().is_empty());
    assert!(store.metrics(id, u64::MAX).unwrap().is_empty());
}

#[test]
fn a_step_reported_again_replaces_the_old_report() {
    let (_dir, store) = store();
    let id = store.submit_job(&submission("j", "alice"), 1.0).unwrap().id;
    store
        .record_metrics(id, &[sample(0, 1.0), sample(1, 2.0)])
        .unwrap();
    let mut replay = sample(1, 9.0);
    replay.loss = f64::NAN;
    replay.grad_sqr = Some(f64::NAN);
    store.record_metrics(id, &[replay]).unwrap();
    let stored = store.metrics(id, 0).unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1].at, 9.0);
    assert!(stored[1].loss.is_nan(), "NaN loss survives as NaN");
    assert_eq!(stored[1].grad_sqr, None);
}

#[test]
fn bad_values_are_refused_naming_field_and_value() {
    let (_dir, store) = store();
    let cases = [
        (submission("j", "alice").gpus(4, 2), "invalid gpus: 4:2"),
        (submission("", "alice"), "invalid name"),
        (submission("j", ""), "invalid user"),
        (
            adaptsched_store::JobSubmission::new("j", "alice", Vec::<String>::new()),
            "invalid command: []",
        ),
        (
            submission("j", "alice").env("A=B", "1"),
            "invalid env: \"A=B\"",
        ),
    ];
    for (bad, expected) in cases {
        let err = store.submit_job(&bad, 1.0).unwrap_err();
        assert!(err.to_string().starts_with(expected), "{err}");
    }
    let mut bad = submission("j", "alice");
    bad.cpus = -1.0;
    assert_eq!(
        store.submit_job(&bad, 1.0).unwrap_err().to_string(),
        "invalid cpus: -1"
    );
    let err = store
        .submit_job(&submission("j", "alice"), f64::NAN)
        .unwrap_err();
    assert_eq!(err.to_string(), "invalid at: NaN");
    assert!(
        store.list_jobs(&JobFilter::all()).unwrap().is_empty(),
        "nothing stored"
    );

    let id = store.submit_job(&submission("j", "alice"), 1.0).unwrap().id;
    let mut bad_step = sample(3, 1.0);
    bad_step.step_time = -0.5;
    let err = store
        .record_metrics(id, &[sample(2, 1.0), bad_step])
        .unwrap_err();
    assert_eq!(err.to_string(), "invalid step_time: -0.5 (step 3)");
    assert!(
        store.metrics(id, 0).unwrap().is_empty(),
        "the batch is all or nothing"
    );
}

#[test]
fn job_state_round_trips_through_text() {
    for state in JobState::ALL {
        assert_eq!(state.as_str().parse::<JobState>().unwrap(), state);
        assert_eq!(
            serde_json::to_string(&state).unwrap(),
            format!("\"{state}\"")
        );
    }
    let err = "done".parse::<JobState>().unwrap_err();
    assert!(
        err.to_string().starts_with("unknown job state \"done\""),
        "{err}"
    );
    assert_eq!("17".parse::<DurableJobId>().unwrap(), DurableJobId(17));
    assert!("x".parse::<DurableJobId>().is_err());
}

#[test]
fn in_memory_store_works_like_a_file() {
    let store = SqliteStore::open_in_memory().unwrap();
    let id = store.submit_job(&submission("j", "alice"), 1.0).unwrap().id;
    assert_eq!(store.get_job(id).unwrap().submission.name, "j");
    assert_eq!(
        store.schema_version().unwrap(),
        adaptsched_store::SCHEMA_VERSION
    );
}

#[test]
fn store_is_usable_as_a_shared_trait_object() {
    let store: std::sync::Arc<dyn Store> =
        std::sync::Arc::new(SqliteStore::open_in_memory().unwrap());
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..10 {
                    store
                        .submit_job(&submission(&format!("t{t}-{i}"), "alice"), 1.0)
                        .unwrap();
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    assert_eq!(store.list_jobs(&JobFilter::all()).unwrap().len(), 40);
}
