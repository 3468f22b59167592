//! The one error type of the store: every failure names the job, state, path or value at fault.

use crate::types::{DurableJobId, JobState};
use std::path::PathBuf;

/// Result of every store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Why a store operation failed.
///
/// Callers map these to HTTP statuses or exit codes in one place; the variants separate what
/// the user got wrong (unknown job, invalid transition, bad value) from what went wrong with
/// the database itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("unknown job {0}")]
    UnknownJob(DurableJobId),
    #[error("job {job}: invalid state transition {from} -> {to}")]
    InvalidTransition {
        job: DurableJobId,
        from: JobState,
        to: JobState,
    },
    /// The job already reached a terminal state, so `action` makes no sense any more.
    #[error("job {job} already {state}: cannot {action}")]
    JobFinished {
        job: DurableJobId,
        state: JobState,
        action: &'static str,
    },
    #[error("invalid {field}: {value}")]
    InvalidValue { field: &'static str, value: String },
    #[error("unknown job state {0:?} (expected queued, running, succeeded, failed or cancelled)")]
    UnknownState(String),
    /// The file was written by a newer adaptsched; opening it could corrupt data we do not
    /// understand, so we refuse instead of guessing.
    #[error(
        "database {path} has schema version {found}, newer than the {supported} this build supports; upgrade adaptsched"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    /// Without WAL a crash in the middle of a write could lose more than that write, and
    /// readers would block writers; a filesystem that cannot do WAL (some network mounts)
    /// is reported instead of silently accepted.
    #[error("could not enable WAL on {path}: journal mode is {mode:?}")]
    WalUnavailable { path: PathBuf, mode: String },
    #[error("migration {version} ({description}) failed: {source}")]
    Migration {
        version: u32,
        description: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot open database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// A row that does not decode (bad JSON, unknown state): someone edited the file by hand,
    /// or a bug wrote it. Names the table and row so it can be found.
    #[error("corrupt row in {table} (id {row}): {detail}")]
    Corrupt {
        table: &'static str,
        row: i64,
        detail: String,
    },
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
}
