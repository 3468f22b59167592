//! Durability of the SQLite file: crashes, copies taken while open, migrations on reopen,
//! a newer schema refused, and two handles writing the same file.

mod common;

use adaptsched_core::NodeId;
use adaptsched_store::{
    Allocation, DurableJobId, JobFilter, JobState, SCHEMA_VERSION, SqliteStore, Store, StoreError,
};
use common::{sample, submission};
use std::path::{Path, PathBuf};
use std::process::Command;

fn wal_of(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

fn user_version(db: &Path) -> u32 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap()
}

#[test]
fn a_submitted_job_survives_dropping_the_store_without_closing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let store = SqliteStore::open(&db).unwrap();
    let job = store.submit_job(&submission("j", "alice"), 1.0).unwrap();
    store
        .set_job_state(job.id, JobState::Running, "placed", 2.0)
        .unwrap();
    // Leak it: no destructor, no close, no checkpoint — as close to a crash as one
    // process gets (the crash test below kills a real process).
    std::mem::forget(store);
    let reopened = SqliteStore::open(&db).unwrap();
    let found = reopened.get_job(job.id).unwrap();
    assert_eq!(found.state, JobState::Running);
    assert_eq!(found.submission, job.submission);
}

/// Run as a child process by `a_submitted_job_survives_the_process_being_killed`; a no-op
/// when run as an ordinary test.
#[test]
fn crash_child_submits_then_aborts() {
    let Some(db) = std::env::var_os("ADAPTSCHED_STORE_CRASH_DB") else {
        return;
    };
    let store = SqliteStore::open(&db).unwrap();
    let job = store
        .submit_job(&submission("crashy", "alice"), 1.0)
        .unwrap();
    println!("submitted-job-id={}", job.id);
    // SIGABRT: no destructors, no SQLite close, no WAL checkpoint.
    std::process::abort();
}

#[test]
fn a_submitted_job_survives_the_process_being_killed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_child_submits_then_aborts",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("ADAPTSCHED_STORE_CRASH_DB", &db)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "the child must die: {stdout}");
    let id: DurableJobId = stdout
        .lines()
        .find_map(|line| line.split_once("submitted-job-id=").map(|(_, id)| id))
        .unwrap_or_else(|| panic!("child printed no id: {stdout}"))
        .parse()
        .unwrap();
    assert!(
        std::fs::metadata(wal_of(&db)).unwrap().len() > 0,
        "the killed process left its WAL behind, unmerged"
    );
    let store = SqliteStore::open(&db).unwrap();
    let job = store.get_job(id).unwrap();
    assert_eq!(
        (job.submission.name.as_str(), job.state),
        ("crashy", JobState::Queued)
    );
}

#[test]
fn a_copy_of_db_and_wal_taken_while_open_holds_every_committed_job() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let writer = SqliteStore::open(&db).unwrap();
    let reader = SqliteStore::open(&db).unwrap();
    let first = writer
        .submit_job(&submission("first", "alice"), 1.0)
        .unwrap()
        .id;
    let second = writer
        .submit_job(&submission("second", "bob"), 2.0)
        .unwrap()
        .id;
    writer
        .record_allocation(
            first,
            &Allocation::new(vec![(NodeId(0), 2)]),
            None,
            "start",
            3.0,
        )
        .unwrap();
    // The second handle sees the commits and stays open during the copy, as a server's
    // other connections would when the machine dies.
    assert_eq!(reader.list_jobs(&JobFilter::all()).unwrap().len(), 2);
    drop(writer);

    let copies = tempfile::tempdir().unwrap();
    let copy = copies.path().join("state.db");
    std::fs::copy(&db, &copy).unwrap();
    std::fs::copy(wal_of(&db), wal_of(&copy)).unwrap();
    let only_main = copies.path().join("main-only.db");
    std::fs::copy(&db, &only_main).unwrap();

    let recovered = SqliteStore::open(&copy).unwrap();
    let names: Vec<String> = recovered
        .list_jobs(&JobFilter::all())
        .unwrap()
        .into_iter()
        .map(|job| job.submission.name)
        .collect();
    assert_eq!(names, ["first", "second"]);
    assert_eq!(recovered.allocations(first).unwrap().len(), 1);
    assert_eq!(recovered.get_job(second).unwrap().submission.user, "bob");

    // Control: the commits live in the WAL, not yet in the main file, so a copy without
    // the WAL has none of them. This is why backups must take both files.
    let without_wal = SqliteStore::open(&only_main).unwrap();
    assert!(without_wal.list_jobs(&JobFilter::all()).unwrap().is_empty());
    drop(reader);
}

#[test]
fn migrations_run_once_and_reopening_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    assert!(!db.exists());
    let store = SqliteStore::open(&db).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let id = store.submit_job(&submission("j", "alice"), 1.0).unwrap().id;
    store.record_metrics(id, &[sample(0, 1.0)]).unwrap();
    drop(store);
    assert_eq!(user_version(&db), SCHEMA_VERSION);

    // The migration creates its tables without IF NOT EXISTS, so a second run would fail.
    for _ in 0..3 {
        let store = SqliteStore::open(&db).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(store.list_jobs(&JobFilter::all()).unwrap().len(), 1);
        assert_eq!(store.metrics(id, 0).unwrap().len(), 1);
    }
    assert_eq!(user_version(&db), SCHEMA_VERSION);
}

#[test]
fn the_database_is_in_wal_mode_with_foreign_keys_checked() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let _store = SqliteStore::open(&db).unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal", "WAL is persistent in the file");
    // Our schema declares the references; a row for a missing job is refused when
    // foreign keys are on, which the store turns on for each of its connections.
    conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
    let err = conn
        .execute(
            "INSERT INTO job_events (job_id, at, kind, message) VALUES (999, 0, 'x', 'y')",
            [],
        )
        .unwrap_err();
    assert!(err.to_string().contains("FOREIGN KEY"), "{err}");
}

#[test]
fn a_database_from_a_newer_version_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    drop(SqliteStore::open(&db).unwrap());
    let future = SCHEMA_VERSION + 5;
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(&format!("PRAGMA user_version = {future}"))
        .unwrap();
    let err = SqliteStore::open(&db).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found, supported, .. }
            if found == future && supported == SCHEMA_VERSION),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&format!("schema version {future}")),
        "{message}"
    );
    assert!(
        message.contains(&format!("the {SCHEMA_VERSION} this build supports")),
        "{message}"
    );
    assert!(message.contains("state.db"), "{message}");
    assert_eq!(user_version(&db), future, "the file is left untouched");
}

#[test]
fn a_file_that_is_not_a_database_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("notes.txt");
    std::fs::write(
        &db,
        "this is not sqlite, just some text long enough to have a header",
    )
    .unwrap();
    let err = SqliteStore::open(&db).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
    assert!(err.to_string().contains("notes.txt"), "{err}");
    let missing_dir = dir.path().join("no/such/dir/state.db");
    let err = SqliteStore::open(&missing_dir).unwrap_err();
    assert!(err.to_string().contains("no/such/dir"), "{err}");
}

#[test]
fn two_handles_on_one_file_write_concurrently_without_losing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let a = SqliteStore::open(&db).unwrap();
    let b = SqliteStore::open(&db).unwrap();
    const PER_THREAD: usize = 40;
    let ids: Vec<Vec<DurableJobId>> = std::thread::scope(|scope| {
        let workers: Vec<_> = [(&a, "alice"), (&b, "bob")]
            .into_iter()
            .map(|(store, user)| {
                scope.spawn(move || {
                    let mut ids = Vec::new();
                    for i in 0..PER_THREAD {
                        let at = i as f64;
                        let id = store
                            .submit_job(&submission(&format!("{user}{i}"), user), at)
                            .unwrap()
                            .id;
                        store
                            .set_job_state(id, JobState::Running, "placed", at)
                            .unwrap();
                        store
                            .record_metrics(id, &[sample(0, at), sample(1, at)])
                            .unwrap();
                        // Read through the handle while the other one writes.
                        assert!(
                            !store
                                .list_jobs(&JobFilter::all().user(user))
                                .unwrap()
                                .is_empty()
                        );
                        ids.push(id);
                    }
                    ids
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut all: Vec<DurableJobId> = ids.concat();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 2 * PER_THREAD, "every id distinct");

    // Each handle sees the other's writes, and can change the other's jobs.
    for store in [&a, &b] {
        let running = store
            .list_jobs(&JobFilter::all().state(JobState::Running))
            .unwrap();
        assert_eq!(running.len(), 2 * PER_THREAD);
    }
    let alices_first = ids[0][0];
    b.set_job_state(alices_first, JobState::Succeeded, "exit 0", 100.0)
        .unwrap();
    assert_eq!(a.get_job(alices_first).unwrap().state, JobState::Succeeded);
    assert_eq!(a.metrics(ids[1][0], 0).unwrap().len(), 2);
}
