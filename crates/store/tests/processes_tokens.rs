//! The store's records of live job processes (crash recovery) and of API tokens (by digest).

mod common;

use adaptsched_store::{DurableJobId, ProcessRecord, SqliteStore, Store, TokenRecord};
use common::submission;

fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("state.db")).unwrap();
    (dir, store)
}

fn record(job: DurableJobId, pid: u32, attempt: u32) -> ProcessRecord {
    ProcessRecord {
        job,
        pid,
        start_ticks: 123_456,
        boot_id: "boot-a".to_string(),
        attempt,
        started_at: 5.0,
    }
}

#[test]
fn a_process_record_survives_reopening_and_is_replaced_not_duplicated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let job = {
        let store = SqliteStore::open(&path).unwrap();
        let job = store.submit_job(&submission("a", "alice"), 1.0).unwrap();
        store.record_process(&record(job.id, 100, 1)).unwrap();
        store.record_process(&record(job.id, 200, 2)).unwrap();
        job
    };
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.processes().unwrap(), vec![record(job.id, 200, 2)]);
    store.clear_process(job.id).unwrap();
    store.clear_process(job.id).unwrap();
    assert!(store.processes().unwrap().is_empty());
}

#[test]
fn a_process_of_an_unknown_job_or_pid_zero_is_refused() {
    let (_dir, store) = store();
    assert!(
        store
            .record_process(&record(DurableJobId(9), 1, 1))
            .is_err()
    );
    let job = store.submit_job(&submission("a", "alice"), 1.0).unwrap();
    let error = store.record_process(&record(job.id, 0, 1)).unwrap_err();
    assert!(error.to_string().contains("pid"), "{error}");
}

#[test]
fn tokens_are_found_by_digest_and_cannot_change_owner() {
    let (_dir, store) = store();
    let digest = "ab".repeat(32);
    let alice = TokenRecord {
        user: "alice".to_string(),
        admin: false,
        job: None,
    };
    assert_eq!(store.token(&digest).unwrap(), None);
    store.add_token(&digest, &alice, 1.0).unwrap();
    assert_eq!(store.token(&digest).unwrap(), Some(alice));
    let bob = TokenRecord {
        user: "bob".to_string(),
        admin: true,
        job: None,
    };
    assert!(store.add_token(&digest, &bob, 2.0).is_err());
    assert_eq!(store.token(&digest).unwrap().unwrap().user, "alice");
    assert!(store.add_token("not-hex", &bob, 2.0).is_err());
}

#[test]
fn a_job_token_names_its_job() {
    let (_dir, store) = store();
    let job = store.submit_job(&submission("a", "alice"), 1.0).unwrap();
    let digest = "cd".repeat(32);
    let token = TokenRecord {
        user: "alice".to_string(),
        admin: false,
        job: Some(job.id),
    };
    store.add_token(&digest, &token, 1.0).unwrap();
    assert_eq!(store.token(&digest).unwrap(), Some(token));
}

#[test]
fn an_exit_sets_the_exit_code_and_records_an_event() {
    let (_dir, store) = store();
    let job = store.submit_job(&submission("a", "alice"), 1.0).unwrap();
    assert_eq!(job.exit_code, None);
    store
        .record_exit(job.id, 3, "attempt 1: exit code 3", 2.0)
        .unwrap();
    assert_eq!(store.get_job(job.id).unwrap().exit_code, Some(3));
    let last = store.events(job.id).unwrap().pop().unwrap();
    assert_eq!(
        (last.kind.as_str(), last.message.as_str()),
        ("exit", "attempt 1: exit code 3")
    );
    assert!(store.record_exit(DurableJobId(99), 1, "x", 2.0).is_err());
}
