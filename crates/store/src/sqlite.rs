//! The embedded backend: one SQLite file in WAL mode, migrated on open, one connection per
//! `SqliteStore` (open several on the same file, from several processes if need be).

use crate::Store;
use crate::error::{Result, StoreError};
use crate::migrations::{self, MIGRATIONS};
use crate::types::{
    AllocationRecord, DurableJobId, JobEvent, JobFilter, JobState, JobSubmission, MetricSample,
    ProcessRecord, StoredJob, TokenRecord,
};
use adaptsched_core::plan::BatchDecision;
use adaptsched_core::{Allocation, JobCategory, Time};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params, params_from_iter};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How long a writer waits for another connection's write lock before giving up with
/// `SQLITE_BUSY`. Writes here are short (one job, one batch of metrics), so waiting seconds
/// means something is wrong; failing then is better than hanging an API request forever.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const JOB_COLUMNS: &str = "id, name, user, command, working_dir, env, min_gpus, max_gpus, \
     cpus, memory_gb, priority, max_retries, category, spec, state, state_reason, attempts, \
     created_at, updated_at, exit_code";

/// The SQLite store. Cheap to share behind an `Arc`: calls on one handle are serialized by a
/// mutex (an SQLite connection must not be used from two threads at once); separate handles
/// on the same file run concurrently, readers never blocking the writer (WAL).
pub struct SqliteStore {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, switches it to WAL, and applies any
    /// missing migrations. A file from a newer adaptsched is refused
    /// ([`StoreError::SchemaTooNew`]). The parent directory must exist.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let open_error = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_error)?;
        // SQLite opens lazily: a directory, or a file that is not a database, first fails
        // here, so these errors name the path too.
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(open_error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::WalUnavailable {
                path: path.to_path_buf(),
                mode,
            });
        }
        Self::finish_open(conn, path)
    }

    /// A private database that lives as long as the store; for tests and dry runs.
    pub fn open_in_memory() -> Result<Self> {
        let path = Path::new(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Self::finish_open(conn, path)
    }

    fn finish_open(mut conn: Connection, path: &Path) -> Result<Self> {
        let open_error = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        // FULL, not NORMAL: in WAL mode NORMAL skips the fsync at each commit, so a power
        // loss or kernel crash can roll back the last commits even though the API already
        // answered "accepted". Issue 5 requires every accepted submission to be on disk
        // before the answer, so each commit pays one fsync of the WAL. Writes are one per
        // API call (metrics come in batches), so that cost is affordable.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_error)?;
        // Off by default in SQLite; on, a row can never point at a job that does not exist.
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(open_error)?;
        migrations::migrate(&mut conn, path, MIGRATIONS)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    /// The file this store writes (`:memory:` for an in-memory store).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version recorded in the file (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<u32> {
        Ok(migrations::schema_version(&self.lock())?)
    }

    /// A poisoned lock only means another thread panicked mid-call; SQLite rolled back its
    /// open transaction when the `Transaction` dropped, so the connection is still sound.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves a job to `next` inside one write transaction; `cancel` turns "already finished"
    /// into the friendlier [`StoreError::JobFinished`].
    fn transition(
        &self,
        id: DurableJobId,
        next: JobState,
        reason: &str,
        at: Time,
        cancel: bool,
    ) -> Result<StoredJob> {
        check_time(at)?;
        let key = sql_id(id)?;
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current = state_of(&tx, id)?;
        if cancel && current.is_terminal() {
            return Err(StoreError::JobFinished {
                job: id,
                state: current,
                action: "cancel",
            });
        }
        if !current.can_become(next) {
            return Err(StoreError::InvalidTransition {
                job: id,
                from: current,
                to: next,
            });
        }
        let started = i64::from(next == JobState::Running);
        tx.prepare_cached(
            "UPDATE jobs SET state = ?1, state_reason = ?2, updated_at = ?3, \
             attempts = attempts + ?4 WHERE id = ?5",
        )?
        .execute(params![next.as_str(), reason, at, started, key])?;
        insert_event(
            &tx,
            id,
            "state",
            &format!("{current} -> {next}: {reason}"),
            at,
        )?;
        let job = load_job(&tx, id)?;
        tx.commit()?;
        Ok(job)
    }
}

impl Store for SqliteStore {
    fn submit_job(&self, submission: &JobSubmission, at: Time) -> Result<StoredJob> {
        submission.validate()?;
        check_time(at)?;
        let command = to_json("command", &submission.command)?;
        let env = to_json("env", &submission.env)?;
        let spec = submission
            .spec
            .as_ref()
            .map(|spec| to_json("spec", spec))
            .transpose()?;
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.prepare_cached(
            "INSERT INTO jobs (name, user, command, working_dir, env, min_gpus, max_gpus, cpus, \
             memory_gb, priority, max_retries, category, spec, state, state_reason, attempts, \
             created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, 0, ?16, ?16)",
        )?
        .execute(params![
            submission.name,
            submission.user,
            command,
            submission.working_dir,
            env,
            submission.min_gpus,
            submission.max_gpus,
            submission.cpus,
            submission.memory_gb,
            submission.priority,
            submission.max_retries,
            submission.category.as_str(),
            spec,
            JobState::Queued.as_str(),
            "submitted",
            at,
        ])?;
        let id = id_from_sql("jobs", tx.last_insert_rowid())?;
        insert_event(
            &tx,
            id,
            "submitted",
            &format!("submitted by {}", submission.user),
            at,
        )?;
        let job = load_job(&tx, id)?;
        // Commit = fsync of the WAL (synchronous=FULL): after this the job survives a crash.
        tx.commit()?;
        Ok(job)
    }

    fn get_job(&self, id: DurableJobId) -> Result<StoredJob> {
        load_job(&self.lock(), id)
    }

    fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<StoredJob>> {
        let mut conditions = Vec::new();
        let mut values = Vec::new();
        if let Some(state) = filter.state {
            conditions.push("state = ?");
            values.push(Value::Text(state.as_str().to_string()));
        }
        if let Some(user) = &filter.user {
            conditions.push("user = ?");
            values.push(Value::Text(user.clone()));
        }
        if let Some(after) = filter.after {
            conditions.push("id > ?");
            // Past every id SQLite can hold: nothing comes after it.
            values.push(Value::Integer(i64::try_from(after.0).unwrap_or(i64::MAX)));
        }
        let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs");
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        sql.push_str(" ORDER BY id");
        if let Some(limit) = filter.limit {
            sql.push_str(" LIMIT ?");
            values.push(Value::Integer(i64::from(limit)));
        }
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&sql)?;
        let raws = stmt
            .query_map(params_from_iter(values), RawJob::from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        raws.into_iter().map(RawJob::decode).collect()
    }

    fn set_job_state(
        &self,
        id: DurableJobId,
        state: JobState,
        reason: &str,
        at: Time,
    ) -> Result<StoredJob> {
        self.transition(id, state, reason, at, false)
    }

    fn cancel_job(&self, id: DurableJobId, reason: &str, at: Time) -> Result<StoredJob> {
        self.transition(id, JobState::Cancelled, reason, at, true)
    }

    fn record_event(
        &self,
        id: DurableJobId,
        kind: &str,
        message: &str,
        at: Time,
    ) -> Result<JobEvent> {
        check_time(at)?;
        if kind.trim().is_empty() {
            return Err(StoreError::InvalidValue {
                field: "event kind",
                value: format!("{kind:?} (must not be empty)"),
            });
        }
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        state_of(&tx, id)?;
        let event = insert_event(&tx, id, kind, message, at)?;
        tx.commit()?;
        Ok(event)
    }

    fn events(&self, id: DurableJobId) -> Result<Vec<JobEvent>> {
        let key = sql_id(id)?;
        let conn = self.lock();
        state_of(&conn, id)?;
        let mut stmt = conn.prepare_cached(
            "SELECT seq, at, kind, message FROM job_events WHERE job_id = ?1 ORDER BY seq",
        )?;
        let events = stmt
            .query_map([key], |row| {
                Ok(JobEvent {
                    seq: row.get(0)?,
                    job: id,
                    at: row.get(1)?,
                    kind: row.get(2)?,
                    message: row.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(events)
    }

    fn record_allocation(
        &self,
        id: DurableJobId,
        allocation: &Allocation,
        batch: Option<BatchDecision>,
        reason: &str,
        at: Time,
    ) -> Result<AllocationRecord> {
        check_time(at)?;
        let key = sql_id(id)?;
        let allocation_json = to_json("allocation", allocation)?;
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let state = state_of(&tx, id)?;
        if state.is_terminal() {
            return Err(StoreError::JobFinished {
                job: id,
                state,
                action: "record an allocation",
            });
        }
        tx.prepare_cached(
            "INSERT INTO allocations (job_id, at, allocation, total_gpus, local_batch_size, \
             accumulation_steps, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            key,
            at,
            allocation_json,
            allocation.total_gpus(),
            batch.map(|b| b.local_batch_size),
            batch.map(|b| b.accumulation_steps),
            reason,
        ])?;
        let record = AllocationRecord {
            seq: tx.last_insert_rowid(),
            job: id,
            at,
            allocation: allocation.clone(),
            batch,
            reason: reason.to_string(),
        };
        tx.commit()?;
        Ok(record)
    }

    fn allocations(&self, id: DurableJobId) -> Result<Vec<AllocationRecord>> {
        let key = sql_id(id)?;
        let conn = self.lock();
        state_of(&conn, id)?;
        let mut stmt = conn.prepare_cached(
            "SELECT seq, at, allocation, local_batch_size, accumulation_steps, reason \
             FROM allocations WHERE job_id = ?1 ORDER BY seq",
        )?;
        let raws = stmt
            .query_map([key], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, f64>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, Option<u32>>(3)?,
                    row.get::<_, Option<u32>>(4)?,
                    row.get::<_, String>(5)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        raws.into_iter()
            .map(|(seq, at, json, local, accum, reason)| {
                let allocation: Allocation =
                    serde_json::from_str(&json).map_err(|err| StoreError::Corrupt {
                        table: "allocations",
                        row: seq,
                        detail: format!("allocation {json:?}: {err}"),
                    })?;
                let batch = match (local, accum) {
                    (Some(local_batch_size), Some(accumulation_steps)) => Some(BatchDecision {
                        local_batch_size,
                        accumulation_steps,
                    }),
                    _ => None,
                };
                Ok(AllocationRecord {
                    seq,
                    job: id,
                    at,
                    allocation,
                    batch,
                    reason,
                })
            })
            .collect()
    }

    fn record_metrics(&self, id: DurableJobId, samples: &[MetricSample]) -> Result<usize> {
        let key = sql_id(id)?;
        for sample in samples {
            check_metric(sample)?;
        }
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        state_of(&tx, id)?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO metrics (job_id, step, samples, loss, step_time, sync_time, \
                 grad_sqr, grad_var, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                 ON CONFLICT (job_id, step) DO UPDATE SET samples = excluded.samples, \
                 loss = excluded.loss, step_time = excluded.step_time, \
                 sync_time = excluded.sync_time, grad_sqr = excluded.grad_sqr, \
                 grad_var = excluded.grad_var, at = excluded.at",
            )?;
            for sample in samples {
                // check_metric proved both fit in i64.
                let step = i64::try_from(sample.step).unwrap_or(i64::MAX);
                let count = i64::try_from(sample.samples).unwrap_or(i64::MAX);
                stmt.execute(params![
                    key,
                    step,
                    count,
                    not_nan(Some(sample.loss)),
                    sample.step_time,
                    sample.sync_time,
                    not_nan(sample.grad_sqr),
                    not_nan(sample.grad_var),
                    sample.at,
                ])?;
            }
        }
        tx.commit()?;
        Ok(samples.len())
    }

    fn metrics(&self, id: DurableJobId, since_step: u64) -> Result<Vec<MetricSample>> {
        let key = sql_id(id)?;
        // No step can exceed i64::MAX (record_metrics refuses them), so clamping is exact.
        let since = i64::try_from(since_step).unwrap_or(i64::MAX);
        let conn = self.lock();
        state_of(&conn, id)?;
        let mut stmt = conn.prepare_cached(
            "SELECT step, samples, loss, step_time, sync_time, grad_sqr, grad_var, at \
             FROM metrics WHERE job_id = ?1 AND step >= ?2 ORDER BY step",
        )?;
        let samples = stmt
            .query_map(params![key, since], |row| {
                Ok(MetricSample {
                    step: get_u64(row, 0)?,
                    samples: get_u64(row, 1)?,
                    loss: row.get::<_, Option<f64>>(2)?.unwrap_or(f64::NAN),
                    step_time: row.get(3)?,
                    sync_time: row.get(4)?,
                    grad_sqr: row.get(5)?,
                    grad_var: row.get(6)?,
                    at: row.get(7)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(samples)
    }
    fn record_exit(&self, id: DurableJobId, exit_code: i32, message: &str, at: Time) -> Result<()> {
        check_time(at)?;
        let key = sql_id(id)?;
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        state_of(&tx, id)?;
        tx.prepare_cached("UPDATE jobs SET exit_code = ?1 WHERE id = ?2")?
            .execute(params![exit_code, key])?;
        insert_event(&tx, id, "exit", message, at)?;
        tx.commit()?;
        Ok(())
    }

    fn record_process(&self, record: &ProcessRecord) -> Result<()> {
        check_time(record.started_at)?;
        let key = sql_id(record.job)?;
        if record.pid == 0 {
            return Err(StoreError::InvalidValue {
                field: "pid",
                value: "0".to_string(),
            });
        }
        let ticks = i64::try_from(record.start_ticks).map_err(|_| StoreError::InvalidValue {
            field: "start_ticks",
            value: record.start_ticks.to_string(),
        })?;
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        state_of(&tx, record.job)?;
        tx.prepare_cached(
            "INSERT INTO job_processes (job_id, pid, start_ticks, boot_id, attempt, started_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (job_id) DO UPDATE SET \
             pid = excluded.pid, start_ticks = excluded.start_ticks, boot_id = excluded.boot_id, \
             attempt = excluded.attempt, started_at = excluded.started_at",
        )?
        .execute(params![
            key,
            record.pid,
            ticks,
            record.boot_id,
            record.attempt,
            record.started_at
        ])?;
        tx.commit()?;
        Ok(())
    }

    fn clear_process(&self, id: DurableJobId) -> Result<()> {
        let key = sql_id(id)?;
        self.lock()
            .prepare_cached("DELETE FROM job_processes WHERE job_id = ?1")?
            .execute([key])?;
        Ok(())
    }

    fn processes(&self) -> Result<Vec<ProcessRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT job_id, pid, start_ticks, boot_id, attempt, started_at FROM job_processes \
             ORDER BY job_id",
        )?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, u32>(1)?,
                    get_u64(row, 2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, u32>(4)?,
                    row.get::<_, f64>(5)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(job, pid, start_ticks, boot_id, attempt, started_at)| {
                Ok(ProcessRecord {
                    job: id_from_sql("job_processes", job)?,
                    pid,
                    start_ticks,
                    boot_id,
                    attempt,
                    started_at,
                })
            })
            .collect()
    }

    fn add_token(&self, token_sha256: &str, token: &TokenRecord, at: Time) -> Result<()> {
        check_time(at)?;
        if token_sha256.len() != 64 || !token_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::InvalidValue {
                field: "token digest",
                value: format!("{token_sha256:?} (expected 64 hex digits)"),
            });
        }
        if token.user.trim().is_empty() {
            return Err(StoreError::InvalidValue {
                field: "user",
                value: format!("{:?} (must not be empty)", token.user),
            });
        }
        let job = token.job.map(sql_id).transpose()?;
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(id) = token.job {
            state_of(&tx, id)?;
        }
        let inserted = tx
            .prepare_cached(
                "INSERT INTO tokens (token_sha256, user, admin, job_id, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (token_sha256) DO NOTHING",
            )?
            .execute(params![token_sha256, token.user, token.admin, job, at])?;
        if inserted == 0 {
            return Err(StoreError::InvalidValue {
                field: "token",
                value: "already registered".to_string(),
            });
        }
        tx.commit()?;
        Ok(())
    }

    fn token(&self, token_sha256: &str) -> Result<Option<TokenRecord>> {
        let conn = self.lock();
        let row = conn
            .prepare_cached("SELECT user, admin, job_id FROM tokens WHERE token_sha256 = ?1")?
            .query_row([token_sha256], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, bool>(1)?,
                    row.get::<_, Option<i64>>(2)?,
                ))
            })
            .optional()?;
        row.map(|(user, admin, job)| {
            Ok(TokenRecord {
                user,
                admin,
                job: job.map(|j| id_from_sql("tokens", j)).transpose()?,
            })
        })
        .transpose()
    }
}

/// A job row as SQLite returns it, before the JSON and enum columns are decoded (decoding
/// errors become [`StoreError::Corrupt`] naming the row, not an opaque SQLite error).
struct RawJob {
    id: i64,
    name: String,
    user: String,
    command: String,
    working_dir: String,
    env: String,
    min_gpus: u32,
    max_gpus: u32,
    cpus: f64,
    memory_gb: f64,
    priority: i32,
    max_retries: u32,
    category: String,
    spec: Option<String>,
    state: String,
    state_reason: String,
    attempts: u32,
    created_at: f64,
    updated_at: f64,
    exit_code: Option<i32>,
}

impl RawJob {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<RawJob> {
        Ok(RawJob {
            id: row.get(0)?,
            name: row.get(1)?,
            user: row.get(2)?,
            command: row.get(3)?,
            working_dir: row.get(4)?,
            env: row.get(5)?,
            min_gpus: row.get(6)?,
            max_gpus: row.get(7)?,
            cpus: row.get(8)?,
            memory_gb: row.get(9)?,
            priority: row.get(10)?,
            max_retries: row.get(11)?,
            category: row.get(12)?,
            spec: row.get(13)?,
            state: row.get(14)?,
            state_reason: row.get(15)?,
            attempts: row.get(16)?,
            created_at: row.get(17)?,
            updated_at: row.get(18)?,
            exit_code: row.get(19)?,
        })
    }

    fn decode(self) -> Result<StoredJob> {
        let row = self.id;
        let corrupt = |column: &str, value: &str, err: String| StoreError::Corrupt {
            table: "jobs",
            row,
            detail: format!("{column} {value:?}: {err}"),
        };
        let command: Vec<String> = serde_json::from_str(&self.command)
            .map_err(|err| corrupt("command", &self.command, err.to_string()))?;
        let env: BTreeMap<String, String> = serde_json::from_str(&self.env)
            .map_err(|err| corrupt("env", &self.env, err.to_string()))?;
        let spec = match &self.spec {
            Some(text) => Some(
                serde_json::from_str(text).map_err(|err| corrupt("spec", text, err.to_string()))?,
            ),
            None => None,
        };
        let category: JobCategory = self
            .category
            .parse()
            .map_err(|err: String| corrupt("category", &self.category, err))?;
        let state: JobState = self
            .state
            .parse()
            .map_err(|err: StoreError| corrupt("state", &self.state, err.to_string()))?;
        Ok(StoredJob {
            id: id_from_sql("jobs", self.id)?,
            submission: JobSubmission {
                name: self.name,
                user: self.user,
                command,
                working_dir: self.working_dir,
                env,
                min_gpus: self.min_gpus,
                max_gpus: self.max_gpus,
                cpus: self.cpus,
                memory_gb: self.memory_gb,
                priority: self.priority,
                max_retries: self.max_retries,
                category,
                spec,
            },
            state,
            state_reason: self.state_reason,
            created_at: self.created_at,
            updated_at: self.updated_at,
            attempts: self.attempts,
            exit_code: self.exit_code,
        })
    }
}

/// SQLite integers are `i64`; the schema's CHECKs keep these columns non-negative.
fn get_u64(row: &Row<'_>, index: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(index)?;
    u64::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(index, value))
}

fn load_job(conn: &Connection, id: DurableJobId) -> Result<StoredJob> {
    let key = sql_id(id)?;
    let raw = conn
        .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?
        .query_row([key], RawJob::from_row)
        .optional()?
        .ok_or(StoreError::UnknownJob(id))?;
    raw.decode()
}

/// The job's state, or `UnknownJob`: the existence check every per-job call starts with, so
/// that a bad id is reported as such rather than as a foreign-key failure or an empty list.
fn state_of(conn: &Connection, id: DurableJobId) -> Result<JobState> {
    let key = sql_id(id)?;
    let text: String = conn
        .prepare_cached("SELECT state FROM jobs WHERE id = ?1")?
        .query_row([key], |row| row.get(0))
        .optional()?
        .ok_or(StoreError::UnknownJob(id))?;
    text.parse().map_err(|err: StoreError| StoreError::Corrupt {
        table: "jobs",
        row: key,
        detail: err.to_string(),
    })
}

fn insert_event(
    conn: &Connection,
    id: DurableJobId,
    kind: &str,
    message: &str,
    at: Time,
) -> Result<JobEvent> {
    let key = sql_id(id)?;
    conn.prepare_cached(
        "INSERT INTO job_events (job_id, at, kind, message) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![key, at, kind, message])?;
    Ok(JobEvent {
        seq: conn.last_insert_rowid(),
        job: id,
        at,
        kind: kind.to_string(),
        message: message.to_string(),
    })
}

/// SQLite integers are signed; an id beyond `i64::MAX` cannot have been handed out.
fn sql_id(id: DurableJobId) -> Result<i64> {
    i64::try_from(id.0).map_err(|_| StoreError::UnknownJob(id))
}

fn id_from_sql(table: &'static str, row: i64) -> Result<DurableJobId> {
    u64::try_from(row)
        .map(DurableJobId)
        .map_err(|_| StoreError::Corrupt {
            table,
            row,
            detail: "negative job id".to_string(),
        })
}

/// Non-finite times would be stored as NULL or infinity and break every ordering by time.
fn check_time(at: Time) -> Result<()> {
    if at.is_finite() {
        Ok(())
    } else {
        Err(StoreError::InvalidValue {
            field: "at",
            value: at.to_string(),
        })
    }
}

fn check_metric(sample: &MetricSample) -> Result<()> {
    let invalid = |field: &'static str, value: String| {
        Err(StoreError::InvalidValue {
            field,
            value: format!("{value} (step {})", sample.step),
        })
    };
    if i64::try_from(sample.step).is_err() {
        return invalid("step", sample.step.to_string());
    }
    if i64::try_from(sample.samples).is_err() {
        return invalid("samples", sample.samples.to_string());
    }
    if !sample.step_time.is_finite() || sample.step_time < 0.0 {
        return invalid("step_time", sample.step_time.to_string());
    }
    if !sample.sync_time.is_finite() || sample.sync_time < 0.0 {
        return invalid("sync_time", sample.sync_time.to_string());
    }
    if !sample.at.is_finite() {
        return invalid("at", sample.at.to_string());
    }
    Ok(())
}

/// A diverged job reports NaN; SQLite has no NaN, so it is stored as NULL (read back as NaN
/// for the loss, `None` for the gradient statistics).
fn not_nan(value: Option<f64>) -> Option<f64> {
    value.filter(|v| !v.is_nan())
}

fn to_json(field: &'static str, value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|err| StoreError::InvalidValue {
        field,
        value: err.to_string(),
    })
}
