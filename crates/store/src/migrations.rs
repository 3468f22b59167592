//! Versioned schema migrations: an ordered list of SQL scripts, each applied once, in its own
//! transaction, with the version kept in SQLite's `PRAGMA user_version`.
//!
//! Why `user_version` rather than a table: it lives in the file header, is read without a
//! query plan, and changes atomically with the migration's transaction. Never edit a
//! migration that has shipped; append a new one.

use crate::error::{Result, StoreError};
use rusqlite::{Connection, TransactionBehavior};
use std::path::Path;

/// One step of the schema's history.
pub(crate) struct Migration {
    /// 1-based and contiguous: migration `n` takes the file from version `n - 1` to `n`.
    pub version: u32,
    pub description: &'static str,
    pub sql: &'static str,
}

/// The schema, oldest first. The last version is the one this build writes.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "jobs, events, allocations, metrics",
        // `AUTOINCREMENT` on jobs: a durable id must never be handed out twice, even if the
        // highest job were deleted. Other tables only need rowid order.
        // Timestamps are REAL seconds on the control plane's clock (adaptsched_core::Time).
        sql: r#"
CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT    NOT NULL,
    user         TEXT    NOT NULL,
    command      TEXT    NOT NULL,           -- JSON array of strings
    working_dir  TEXT    NOT NULL,
    env          TEXT    NOT NULL,           -- JSON object of strings
    min_gpus     INTEGER NOT NULL CHECK (min_gpus >= 0),
    max_gpus     INTEGER NOT NULL CHECK (max_gpus >= min_gpus),
    cpus         REAL    NOT NULL CHECK (cpus >= 0),
    memory_gb    REAL    NOT NULL CHECK (memory_gb >= 0),
    priority     INTEGER NOT NULL,
    max_retries  INTEGER NOT NULL CHECK (max_retries >= 0),
    category     TEXT    NOT NULL,
    spec         TEXT,                       -- JSON, optional
    state        TEXT    NOT NULL
                 CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    state_reason TEXT    NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    created_at   REAL    NOT NULL,
    updated_at   REAL    NOT NULL
);
CREATE INDEX jobs_by_state ON jobs (state, id);
CREATE INDEX jobs_by_user  ON jobs (user, id);

CREATE TABLE job_events (
    seq     INTEGER PRIMARY KEY,
    job_id  INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    at      REAL    NOT NULL,
    kind    TEXT    NOT NULL,
    message TEXT    NOT NULL
);
CREATE INDEX job_events_by_job ON job_events (job_id, seq);

CREATE TABLE allocations (
    seq                INTEGER PRIMARY KEY,
    job_id             INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    at                 REAL    NOT NULL,
    allocation         TEXT    NOT NULL,     -- JSON adaptsched_core::Allocation
    total_gpus         INTEGER NOT NULL,
    local_batch_size   INTEGER,
    accumulation_steps INTEGER,
    reason             TEXT    NOT NULL,
    CHECK ((local_batch_size IS NULL) = (accumulation_steps IS NULL))
);
CREATE INDEX allocations_by_job ON allocations (job_id, seq);

-- One row per (job, step): a client that re-sends a report after a timeout, or a job that
-- replays steps after restoring a checkpoint, overwrites instead of duplicating.
CREATE TABLE metrics (
    job_id    INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    step      INTEGER NOT NULL CHECK (step >= 0),
    samples   INTEGER NOT NULL CHECK (samples >= 0),
    loss      REAL,                          -- NULL = NaN reported
    step_time REAL    NOT NULL,
    sync_time REAL    NOT NULL,
    grad_sqr  REAL,
    grad_var  REAL,
    at        REAL    NOT NULL,
    PRIMARY KEY (job_id, step)
) WITHOUT ROWID;
"#,
    },
    Migration {
        version: 2,
        description: "job processes and API tokens",
        // job_processes: the live process of a running job, so a restarted server can find a
        // process that outlived it (pid + kernel start time + boot id identify it even when
        // the pid is reused) and never run a job twice. tokens: SHA-256 of each bearer
        // token, never the token itself, so a copied database does not leak credentials.
        sql: r#"
CREATE TABLE job_processes (
    job_id      INTEGER PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    pid         INTEGER NOT NULL CHECK (pid > 0),   -- also the process group id
    start_ticks INTEGER NOT NULL,                   -- /proc/<pid>/stat starttime
    boot_id     TEXT    NOT NULL,
    attempt     INTEGER NOT NULL,
    started_at  REAL    NOT NULL
);

-- The exit code of the job's last attempt (128 + signal when killed), for listings.
ALTER TABLE jobs ADD COLUMN exit_code INTEGER;

CREATE TABLE tokens (
    token_sha256 TEXT    PRIMARY KEY,
    user         TEXT    NOT NULL,
    admin        INTEGER NOT NULL CHECK (admin IN (0, 1)),
    job_id       INTEGER REFERENCES jobs (id) ON DELETE CASCADE,
    created_at   REAL    NOT NULL
);
"#,
    },
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Reads `PRAGMA user_version`.
pub(crate) fn schema_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}

/// Brings the database up to the last of `migrations`, applying each missing one in its own
/// `BEGIN IMMEDIATE` transaction. Returns the versions applied (empty when already current).
///
/// The version is re-read inside each transaction: two processes opening a fresh file at
/// once serialize on the write lock and the second finds nothing left to do. A migration
/// that fails rolls back entirely, leaving the file at the previous version.
pub(crate) fn migrate(
    conn: &mut Connection,
    path: &Path,
    migrations: &[Migration],
) -> Result<Vec<u32>> {
    let supported = migrations.len() as u32;
    let found = schema_version(conn)?;
    if found > supported {
        return Err(StoreError::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            supported,
        });
    }
    let mut applied = Vec::new();
    for migration in migrations {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current = schema_version(&tx)?;
        if current > supported {
            return Err(StoreError::SchemaTooNew {
                path: path.to_path_buf(),
                found: current,
                supported,
            });
        }
        if current >= migration.version {
            continue;
        }
        let failed = |source| StoreError::Migration {
            version: migration.version,
            description: migration.description,
            source,
        };
        tx.execute_batch(migration.sql).map_err(failed)?;
        // PRAGMA takes no bound parameters; the version is our own integer, not input.
        tx.execute_batch(&format!("PRAGMA user_version = {}", migration.version))
            .map_err(failed)?;
        tx.commit().map_err(failed)?;
        applied.push(migration.version);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREATE_T: Migration = Migration {
        version: 1,
        description: "create t",
        // Not `IF NOT EXISTS`: running it twice fails, so the tests see a re-run.
        sql: "CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);",
    };
    const ADD_ROW: Migration = Migration {
        version: 2,
        description: "add a row",
        sql: "INSERT INTO t VALUES (2);",
    };
    const BROKEN: Migration = Migration {
        version: 3,
        description: "broken",
        sql: "INSERT INTO t VALUES (3); INSERT INTO no_such_table VALUES (1);",
    };

    fn rows(conn: &Connection) -> Vec<i64> {
        let mut stmt = conn.prepare("SELECT x FROM t ORDER BY x").unwrap();
        stmt.query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn versions_are_contiguous_from_one() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                migration.version as usize,
                index + 1,
                "{}",
                migration.description
            );
        }
        assert_eq!(SCHEMA_VERSION as usize, MIGRATIONS.len());
    }

    #[test]
    fn each_migration_applies_once_and_only_missing_ones_run() {
        let mut conn = Connection::open_in_memory().unwrap();
        let path = Path::new(":memory:");
        assert_eq!(migrate(&mut conn, path, &[CREATE_T]).unwrap(), vec![1]);
        assert_eq!(
            migrate(&mut conn, path, &[CREATE_T]).unwrap(),
            Vec::<u32>::new()
        );
        assert_eq!(
            migrate(&mut conn, path, &[CREATE_T, ADD_ROW]).unwrap(),
            vec![2]
        );
        assert_eq!(schema_version(&conn).unwrap(), 2);
        assert_eq!(rows(&conn), vec![1, 2]);
    }

    #[test]
    fn a_failing_migration_rolls_back_and_keeps_the_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        let path = Path::new(":memory:");
        migrate(&mut conn, path, &[CREATE_T, ADD_ROW]).unwrap();
        let err = migrate(&mut conn, path, &[CREATE_T, ADD_ROW, BROKEN]).unwrap_err();
        assert!(
            matches!(err, StoreError::Migration { version: 3, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("migration 3 (broken)"), "{err}");
        assert_eq!(schema_version(&conn).unwrap(), 2);
        assert_eq!(
            rows(&conn),
            vec![1, 2],
            "the half-applied migration must roll back"
        );
    }

    #[test]
    fn a_version_1_file_with_jobs_upgrades_keeping_them() {
        let mut conn = Connection::open_in_memory().unwrap();
        let path = Path::new(":memory:");
        migrate(&mut conn, path, &MIGRATIONS[..1]).unwrap();
        conn.execute_batch(
            "INSERT INTO jobs (name, user, command, working_dir, env, min_gpus, max_gpus, cpus, \
             memory_gb, priority, max_retries, category, state, state_reason, created_at, \
             updated_at) VALUES ('a', 'alice', '[\"true\"]', '/', '{}', 1, 1, 1, 0, 0, 0, \
             'rigid', 'running', 'started', 1, 1)",
        )
        .unwrap();
        assert_eq!(migrate(&mut conn, path, MIGRATIONS).unwrap(), vec![2]);
        let (name, exit_code): (String, Option<i64>) = conn
            .query_row("SELECT name, exit_code FROM jobs", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .unwrap();
        assert_eq!((name.as_str(), exit_code), ("a", None));
        let processes: i64 = conn
            .query_row("SELECT COUNT(*) FROM job_processes", [], |row| row.get(0))
            .unwrap();
        assert_eq!(processes, 0);
    }

    #[test]
    fn a_newer_file_is_refused_naming_both_versions() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA user_version = 7").unwrap();
        let err = migrate(&mut conn, Path::new("x.db"), &[CREATE_T]).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("schema version 7"), "{message}");
        assert!(message.contains("the 1 this build"), "{message}");
        assert!(message.contains("x.db"), "{message}");
    }
}
