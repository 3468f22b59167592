//! Durable state for the adaptsched control plane: jobs, their events, allocation history and
//! training metrics, behind the [`Store`] trait, with SQLite (WAL) as the embedded default.
//!
//! The store never reads a wall clock: every write takes the time (`at`, seconds on the
//! control plane's clock) from its caller, so the control plane decides time and tests can
//! pin it.

mod error;
mod migrations;
mod sqlite;
mod types;

pub use adaptsched_core::plan::BatchDecision;
pub use adaptsched_core::{Allocation, Time};
pub use error::{Result, StoreError};
pub use migrations::SCHEMA_VERSION;
pub use sqlite::SqliteStore;
pub use types::{
    AllocationRecord, DurableJobId, JobEvent, JobFilter, JobState, JobSubmission, MetricSample,
    ProcessRecord, StoredJob, TokenRecord,
};

/// What the control plane needs from durable state.
///
/// A trait so that a Postgres (or other shared) backend can come later without touching the
/// control plane. Every write is committed before the method returns: when `submit_job`
/// answers, the job survives a crash of the process. Methods take `&self` so one store can
/// be shared (`Arc<dyn Store>`) by the HTTP handlers and the scheduling loop.
pub trait Store: Send + Sync {
    /// Validates and stores a new job in state `queued`, records a `submitted` event, and
    /// returns it with its durable id.
    fn submit_job(&self, submission: &JobSubmission, at: Time) -> Result<StoredJob>;

    fn get_job(&self, id: DurableJobId) -> Result<StoredJob>;

    /// Jobs matching `filter`, lowest id (oldest) first.
    fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<StoredJob>>;

    /// Moves a job to `state` with a reason a user can read, and records a `state` event.
    /// Entering `running` counts an attempt. Rejects transitions `JobState::can_become`
    /// forbids, naming both states.
    fn set_job_state(
        &self,
        id: DurableJobId,
        state: JobState,
        reason: &str,
        at: Time,
    ) -> Result<StoredJob>;

    /// Marks a queued or running job cancelled (the control plane then stops its process).
    /// A job that already finished is an error naming its state.
    fn cancel_job(&self, id: DurableJobId, reason: &str, at: Time) -> Result<StoredJob>;

    fn record_event(
        &self,
        id: DurableJobId,
        kind: &str,
        message: &str,
        at: Time,
    ) -> Result<JobEvent>;

    /// The job's events in the order they were recorded.
    fn events(&self, id: DurableJobId) -> Result<Vec<JobEvent>>;

    /// Appends to the job's allocation history (an empty allocation records a stop), with
    /// the batch decision that came with it. A finished job cannot be allocated.
    fn record_allocation(
        &self,
        id: DurableJobId,
        allocation: &Allocation,
        batch: Option<BatchDecision>,
        reason: &str,
        at: Time,
    ) -> Result<AllocationRecord>;

    /// The job's allocation history in the order it was recorded.
    fn allocations(&self, id: DurableJobId) -> Result<Vec<AllocationRecord>>;

    /// Stores reported steps in one transaction; a step reported again replaces the earlier
    /// report (retried requests and replays after a checkpoint restore do not duplicate).
    /// Returns how many samples were written.
    fn record_metrics(&self, id: DurableJobId, samples: &[MetricSample]) -> Result<usize>;

    /// The job's reported steps with `step >= since_step`, in step order.
    fn metrics(&self, id: DurableJobId, since_step: u64) -> Result<Vec<MetricSample>>;

    /// Records how an attempt ended: the job's `exit_code` (shown in listings) and an `exit`
    /// event with `message`, in one transaction.
    fn record_exit(&self, id: DurableJobId, exit_code: i32, message: &str, at: Time) -> Result<()>;

    /// Records (or replaces) the live process of a job, so that a restarted server finds it.
    fn record_process(&self, record: &ProcessRecord) -> Result<()>;

    /// Forgets the job's process (it exited or was killed). Forgetting twice is fine.
    fn clear_process(&self, id: DurableJobId) -> Result<()>;

    /// Every recorded process, by job id.
    fn processes(&self) -> Result<Vec<ProcessRecord>>;

    /// Stores a bearer token by its SHA-256 hex digest. A digest stored twice is an error
    /// (`InvalidValue`), so a token can never silently change owner.
    fn add_token(&self, token_sha256: &str, token: &TokenRecord, at: Time) -> Result<()>;

    /// Who the token with this digest belongs to, if anyone.
    fn token(&self, token_sha256: &str) -> Result<Option<TokenRecord>>;
}
