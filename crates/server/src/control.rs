//! The live scheduling loop: every interval and on events (submit, cancel, exit) it builds a
//! snapshot of this node and the active jobs, asks the policy (the same code the simulator
//! runs) for a plan, validates it, and reconciles the plan with what runs through the
//! executor. It also recovers after a crash and stops jobs on shutdown.
//!
//! The loop owns the executor and the "actual" state; the store is the durable truth of job
//! states. Handlers only write the store and wake the loop, so there is one writer of
//! "what runs".

use crate::admission::stored_request;
use crate::auth;
use crate::executor::{Executor, ExitEvent, LaunchContext, LaunchSpec, launch_env};
use crate::model;
use crate::node::NodeInfo;
use crate::procinfo;
use crate::reconcile::{self, ActualJob, DesiredJob, StopReason};
use adaptsched_api::{BatchSpec, BatchView, data_dir, env};
use adaptsched_core::perf::{GradStats, JobModel, efficiency, split_batch};
use adaptsched_core::plan::BatchDecision;
use adaptsched_core::{Allocation, JobId, JobView, NodeId, Policy, Snapshot, validate_plan};
use adaptsched_store::{
    AllocationRecord, DurableJobId, JobFilter, JobState, ProcessRecord, Store, StoredJob,
    TokenRecord,
};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

/// Settings of the loop.
#[derive(Clone, Debug)]
pub struct ControlConfig {
    pub interval: Duration,
    pub grace: Duration,
    /// The server's URL, given to jobs (`ADAPTSCHED_URL`).
    pub url: String,
    pub data_dir: PathBuf,
    /// First retry delay after a failed attempt; doubles with each failure.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// What policies assume one restart (checkpoint, stop, restore) costs a job.
    pub restart_seconds: f64,
}

/// What runs now, as the API shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct RunningView {
    pub devices: Vec<u32>,
    pub batch: Option<BatchView>,
    pub pid: u32,
    /// Why it is being stopped, while it is.
    pub stopping: Option<String>,
}

/// The loop's published status: waiting reasons, running jobs, round statistics.
#[derive(Clone, Debug, Default)]
pub struct ControlStatus {
    pub waiting: BTreeMap<DurableJobId, String>,
    pub running: BTreeMap<DurableJobId, RunningView>,
    pub rounds: u64,
    pub last_round_ms: Option<f64>,
    /// Set once crash recovery finished and the first round ran.
    pub ready: bool,
}

/// Shared between the loop and the HTTP handlers.
#[derive(Debug, Default)]
pub struct ControlShared {
    status: Mutex<ControlStatus>,
    wake: Notify,
}

impl ControlShared {
    /// Asks for a round now (a submission, a cancellation). Never lost: a wake while a round
    /// runs makes the next one start right after.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn status(&self) -> MutexGuard<'_, ControlStatus> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Seconds since the Unix epoch: the control plane's clock for the store and policies.
pub fn wall_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// GPU-seconds held so far, from a job's allocation history (each record holds until the
/// next; the last until `now`).
pub fn attained_gpu_seconds(history: &[AllocationRecord], now: f64) -> f64 {
    let mut total = 0.0;
    for (index, record) in history.iter().enumerate() {
        let until = history.get(index + 1).map_or(now, |next| next.at);
        total += f64::from(record.allocation.total_gpus()) * (until - record.at).max(0.0);
    }
    total
}

/// The batch a job runs with on `replicas` devices: the decision if there is one, else the
/// job's initial batch split over its replicas. `None` for jobs without limits.
///
/// `lr_scale` is the AdaScale gain `(var + sqr)/(var/S + sqr)` for `S = global / initial`
/// (protocol.md §2) from the job's latest gradient statistics; without them it is 1, as
/// the goodput model assumes (`JobModel` without statistics).
pub fn batch_view(
    spec: Option<&BatchSpec>,
    replicas: u32,
    decision: Option<BatchDecision>,
    grad: Option<GradStats>,
) -> Option<BatchView> {
    let spec = spec?;
    let replicas = replicas.max(1);
    let (local, accumulation) = match decision {
        Some(decision) => (decision.local_batch_size, decision.accumulation_steps),
        None => split_batch(&model::limits(Some(spec)), replicas, spec.initial),
    };
    let global = local
        .saturating_mul(accumulation.saturating_add(1))
        .saturating_mul(replicas);
    Some(BatchView {
        global_batch_size: global,
        local_batch_size: local,
        accumulation_steps: accumulation,
        lr_scale: adascale_gain(grad, spec.initial, global),
    })
}

/// AdaScale gain of training at total batch `batch` instead of `initial`.
pub fn adascale_gain(grad: Option<GradStats>, initial: u32, batch: u32) -> f64 {
    let Some(grad) = grad else {
        return 1.0;
    };
    let (initial, batch) = (f64::from(initial.max(1)), f64::from(batch.max(1)));
    // efficiency = gain / scale (adaptsched_core::perf), so gain = efficiency · scale.
    efficiency(&grad, initial, batch) * batch / initial
}

/// One active job as a policy sees it.
pub fn job_view(
    index: usize,
    job: &StoredJob,
    allocation: Allocation,
    attained: f64,
    restart_seconds: f64,
) -> JobView {
    let request = stored_request(&job.submission);
    JobView {
        id: JobId(index as u32),
        name: job.submission.name.clone(),
        application: job.submission.name.clone(),
        category: job.submission.category,
        submit_time: job.created_at,
        // Rigid policies run a job on what it needs at least.
        requested_gpus: job.submission.min_gpus,
        requested_batch_size: request.batch.map(|b| b.initial),
        min_gpus: job.submission.min_gpus,
        max_gpus: job.submission.max_gpus,
        allowed_gpu_types: Vec::new(),
        cpus_per_gpu: request.cpus.unwrap_or(1.0),
        memory_gb_per_gpu: request.memory_gb.unwrap_or(0.0),
        attained_gpu_seconds: attained,
        allocation,
        restarts: job.attempts.saturating_sub(1),
        oracle_remaining_seconds: None,
        model: None,
        restart_seconds,
    }
}

fn node_allocation(devices: u32) -> Allocation {
    if devices == 0 {
        Allocation::default()
    } else {
        Allocation::new(vec![(NodeId(0), devices)])
    }
}

/// Delay before retry number `failures` (1-based): `base · 2^(failures-1)`, at most `max`.
pub fn retry_delay(base: Duration, max: Duration, failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(30));
    base.saturating_mul(factor).min(max)
}

/// An active job as a round needs it.
struct ActiveJob {
    job: StoredJob,
    attained: f64,
    model: JobModel,
}

/// Running and queued jobs, oldest first, with their attained service and fitted models.
fn read_active(store: &dyn Store, now: f64) -> adaptsched_store::Result<Vec<ActiveJob>> {
    let mut jobs = store.list_jobs(&JobFilter::all().state(JobState::Running))?;
    jobs.extend(store.list_jobs(&JobFilter::all().state(JobState::Queued))?);
    jobs.sort_by(|a, b| a.created_at.total_cmp(&b.created_at).then(a.id.cmp(&b.id)));
    jobs.into_iter()
        .map(|job| {
            let history = store.allocations(job.id)?;
            let mut samples = store.metrics(job.id, 0)?;
            let skip = samples.len().saturating_sub(model::MAX_SAMPLES);
            samples.drain(..skip);
            let spec = stored_request(&job.submission).batch;
            let (fitted, _) = model::job_model(spec.as_ref(), &history, &samples);
            Ok(ActiveJob {
                attained: attained_gpu_seconds(&history, now),
                model: fitted,
                job,
            })
        })
        .collect()
}

/// The loop. Build it with [`ControlLoop::new`], then `run` it on the runtime.
pub struct ControlLoop {
    store: Arc<dyn Store>,
    executor: Box<dyn Executor>,
    exits: mpsc::UnboundedReceiver<ExitEvent>,
    policy: Box<dyn Policy>,
    rng: ChaCha8Rng,
    node: NodeInfo,
    config: ControlConfig,
    shared: Arc<ControlShared>,
    actual: BTreeMap<DurableJobId, ActualJob>,
    running: BTreeMap<DurableJobId, RunningView>,
    attempts: BTreeMap<DurableJobId, u32>,
    backoff: BTreeMap<DurableJobId, (Instant, String)>,
    wake_at: Option<Instant>,
    /// Each active job's fitted model from the last round.
    models: BTreeMap<DurableJobId, JobModel>,
}

impl ControlLoop {
    pub fn new(
        store: Arc<dyn Store>,
        executor: Box<dyn Executor>,
        exits: mpsc::UnboundedReceiver<ExitEvent>,
        policy: Box<dyn Policy>,
        node: NodeInfo,
        config: ControlConfig,
        shared: Arc<ControlShared>,
    ) -> Self {
        ControlLoop {
            store,
            executor,
            exits,
            policy,
            // Seeded: the same state gives the same plan, as in the simulator.
            rng: ChaCha8Rng::seed_from_u64(0),
            node,
            config,
            shared,
            actual: BTreeMap::new(),
            running: BTreeMap::new(),
            attempts: BTreeMap::new(),
            backoff: BTreeMap::new(),
            wake_at: None,
            models: BTreeMap::new(),
        }
    }

    /// Runs a store call on the blocking pool. The future does not borrow `self`, so the
    /// loop's future stays `Send` (policies and executors need not be `Sync`).
    fn db<T, F>(&self, call: F) -> impl Future<Output = T> + Send + 'static + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> T + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        async move {
            match tokio::task::spawn_blocking(move || call(store.as_ref())).await {
                Ok(value) => value,
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                // Cancelled: the runtime is shutting down, and this task with it.
                Err(_) => std::future::pending().await,
            }
        }
    }

    /// Publishes what runs now, so the API agrees with the store as soon as a job starts
    /// or ends (not only at the end of the round).
    fn publish_running(&self) {
        self.shared.status().running = self.running.clone();
    }

    /// Runs until `shutdown` becomes true; then stops every job and returns.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        self.recover().await;
        loop {
            if *shutdown.borrow() {
                break;
            }
            self.round().await;
            let next = self.next_deadline();
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = self.shared.wake.notified() => {}
                Some(exit) = self.exits.recv() => self.on_exit(exit).await,
                _ = shutdown.changed() => {}
            }
            while let Ok(exit) = self.exits.try_recv() {
                self.on_exit(exit).await;
            }
        }
        self.shutdown().await;
    }

    fn next_deadline(&self) -> Instant {
        let mut next = Instant::now() + self.config.interval;
        for (until, _) in self.backoff.values() {
            next = next.min(*until);
        }
        if let Some(wake) = self.wake_at {
            next = next.min(wake.max(Instant::now()));
        }
        next
    }

    /// After a crash: every process recorded in the store (or carrying this data dir in its
    /// environment) is stopped before anything starts, and jobs recorded `running` go back
    /// to the queue to be restarted from their checkpoint dir. A job never runs twice.
    pub async fn recover(&mut self) {
        let data_dir = self.config.data_dir.display().to_string();
        let grace = self.config.grace;
        let (records, running) = self
            .db(|store| {
                (
                    store.processes().unwrap_or_default(),
                    store
                        .list_jobs(&JobFilter::all().state(JobState::Running))
                        .unwrap_or_default(),
                )
            })
            .await;
        let mut groups: Vec<(u32, String)> = Vec::new();
        for record in &records {
            if procinfo::is_same_process(record.pid, record.start_ticks, &record.boot_id) {
                groups.push((
                    record.pid,
                    format!("job {} (pid {})", record.job, record.pid),
                ));
            }
        }
        // A start that crashed between spawning and recording its pid leaves a process the
        // store does not know; its environment names our data dir and its job.
        for (pid, pgrp) in procinfo::processes_with_env(env::DATA_DIR, &data_dir) {
            if procinfo::env_of(pid, env::JOB_ID).is_some()
                && !groups.iter().any(|(group, _)| *group == pgrp)
            {
                groups.push((pgrp, format!("unrecorded job process {pid}")));
            }
        }
        for (pgid, what) in &groups {
            tracing::warn!("recovery: stopping {what} left over from a previous server");
            if !procinfo::terminate_group(*pgid, grace).await {
                tracing::error!("recovery: process group {pgid} ({what}) did not exit");
            }
        }
        let at = wall_now();
        let stopped = groups.len();
        self.db(move |store| {
            for record in records {
                let _ = store.clear_process(record.job);
            }
            for job in running {
                let reason = "server restarted; restarting from its checkpoint";
                // How the lost attempt ended is unknown (it was not our child): an event, no
                // exit code.
                let _ = store.record_event(
                    job.id,
                    "exit",
                    "attempt lost: the server restarted and stopped its process",
                    at,
                );
                let _ = store.record_allocation(
                    job.id,
                    &Allocation::default(),
                    None,
                    "server restarted",
                    at,
                );
                if let Err(error) = store.set_job_state(job.id, JobState::Queued, reason, at) {
                    tracing::error!("recovery: job {}: {error}", job.id);
                }
            }
        })
        .await;
        if stopped > 0 {
            tracing::info!("recovery: stopped {stopped} leftover process group(s)");
        }
    }

    /// One scheduling round.
    pub async fn round(&mut self) {
        let now = wall_now();
        let active = self.db(move |store| read_active(store, now)).await;
        let active = match active {
            Ok(active) => active,
            Err(error) => {
                tracing::error!("scheduling round: reading the store: {error}");
                return;
            }
        };
        let instant = Instant::now();
        self.backoff.retain(|_, (until, _)| *until > instant);
        let mut waiting: BTreeMap<DurableJobId, String> = BTreeMap::new();
        let mut views = Vec::new();
        let mut ids = Vec::new();
        let uses_models = self.policy.uses_job_models();
        self.models.clear();
        for ActiveJob {
            job,
            attained,
            model,
        } in &active
        {
            if let Some((_, why)) = self.backoff.get(&job.id) {
                waiting.insert(job.id, why.clone());
                continue;
            }
            let held = self
                .actual
                .get(&job.id)
                .map_or(0, |actual| actual.devices.len() as u32);
            let mut view = job_view(
                views.len(),
                job,
                node_allocation(held),
                *attained,
                self.config.restart_seconds,
            );
            if uses_models {
                view.model = Some(model.clone());
            }
            self.models.insert(job.id, model.clone());
            views.push(view);
            ids.push(job.id);
        }
        let cluster = self.node.cluster();
        let snapshot = Snapshot {
            now,
            cluster: &cluster,
            jobs: &views,
        };
        let started = std::time::Instant::now();
        let (policy, rng) = (&mut self.policy, &mut self.rng);
        let mut decide = || policy.decide(&snapshot, rng);
        // A policy may compute for a while (Pollux's search): on a multi-threaded runtime,
        // tell tokio so HTTP requests move to other workers meanwhile.
        let plan = match tokio::runtime::Handle::current().runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(decide),
            _ => decide(),
        };
        let decide_ms = started.elapsed().as_secs_f64() * 1e3;
        let mut desired: BTreeMap<DurableJobId, DesiredJob> = BTreeMap::new();
        match validate_plan(&cluster, &views, &plan) {
            Ok(()) => {
                for (job, allocation) in &plan.allocations {
                    let Some(&id) = ids.get(job.index()) else {
                        continue;
                    };
                    desired.insert(
                        id,
                        DesiredJob {
                            devices: allocation.total_gpus(),
                            batch: plan.batch.get(job).copied(),
                        },
                    );
                }
                for (job, why) in &plan.waiting {
                    if let Some(&id) = ids.get(job.index()) {
                        waiting.insert(id, why.clone());
                    }
                }
                self.wake_at = plan
                    .wake_at
                    .filter(|at| at.is_finite() && *at > now)
                    .map(|at| instant + Duration::from_secs_f64((at - now).min(86_400.0)));
            }
            Err(violation) => {
                // Never apply a broken plan: keep what runs, start nothing, and say why.
                tracing::error!(
                    "policy {} returned an invalid plan: {violation}",
                    self.policy.name()
                );
                // Only active jobs: a job cancelled meanwhile still stops.
                for (id, actual) in self.actual.iter().filter(|(id, _)| ids.contains(id)) {
                    desired.insert(
                        *id,
                        DesiredJob {
                            devices: actual.devices.len() as u32,
                            batch: actual.batch,
                        },
                    );
                }
                for id in &ids {
                    waiting.insert(
                        *id,
                        format!("scheduler error: the policy's plan was invalid ({violation})"),
                    );
                }
            }
        }
        let result = reconcile::reconcile(self.node.capacity(), &desired, &self.actual);
        for action in result.actions {
            match action {
                reconcile::Action::Stop { job, reason } => self.stop_job(job, reason).await,
                reconcile::Action::Start {
                    job,
                    devices,
                    batch,
                } => {
                    let stored = active.iter().find(|a| a.job.id == job).map(|a| &a.job);
                    if let Some(stored) = stored.cloned() {
                        self.start_job(stored, devices, batch).await;
                    }
                }
            }
        }
        for job in result.deferred {
            waiting.insert(
                job,
                "placed; waiting for stopping jobs to release their devices".to_string(),
            );
        }
        for ActiveJob { job, .. } in &active {
            if self.actual.contains_key(&job.id) {
                waiting.remove(&job.id);
            } else {
                waiting
                    .entry(job.id)
                    .or_insert_with(|| "waiting for a scheduling round".to_string());
            }
        }
        let mut status = self.shared.status();
        status.waiting = waiting;
        status.running = self.running.clone();
        status.rounds += 1;
        status.last_round_ms = Some(decide_ms);
        status.ready = true;
    }

    async fn stop_job(&mut self, job: DurableJobId, reason: StopReason) {
        let Some(actual) = self.actual.get_mut(&job) else {
            return;
        };
        if actual.stopping.is_some() {
            return;
        }
        actual.stopping = Some(reason);
        if let Some(view) = self.running.get_mut(&job) {
            view.stopping = Some(reason.describe());
        }
        self.publish_running();
        tracing::info!("job {job}: stopping ({})", reason.describe());
        self.executor.stop(job, self.config.grace);
        let message = format!("stopping: {}", reason.describe());
        let at = wall_now();
        self.db(move |store| store.record_event(job, "stop", &message, at))
            .await
            .ok();
    }

    async fn start_job(
        &mut self,
        job: StoredJob,
        devices: Vec<u32>,
        decision: Option<BatchDecision>,
    ) {
        let id = job.id;
        let request = stored_request(&job.submission);
        let replicas = devices.len() as u32;
        // As in the simulator: under a batch-adapting policy an adaptive job trains with the
        // batch its fitted goodput model picks for this allocation (initial batch until it
        // has a model), unless the plan decided one.
        let adapts = self.policy.adapts_batch_size() && request.batch.is_some();
        let chosen = decision.or_else(|| {
            let best = self.models.get(&id)?.best(1, replicas).filter(|_| adapts)?;
            Some(BatchDecision {
                local_batch_size: best.local_bsz,
                accumulation_steps: best.accum_steps,
            })
        });
        let grad = self.models.get(&id).and_then(|m| m.grad);
        let batch = batch_view(request.batch.as_ref(), replicas, chosen, grad);
        let store_batch = batch.map(|b| BatchDecision {
            local_batch_size: b.local_batch_size,
            accumulation_steps: b.accumulation_steps,
        });
        let token = match auth::new_token() {
            Ok(token) => token,
            Err(error) => {
                tracing::error!("job {id}: cannot create its token: {error}");
                return;
            }
        };
        let key = auth::digest(&token);
        let word = self.node.device_word();
        let reason = format!("started on {replicas} {word}(s) {devices:?}");
        let owner = job.submission.user.clone();
        let at = wall_now();
        let started = self
            .db(move |store| -> adaptsched_store::Result<StoredJob> {
                let current = store.get_job(id)?;
                let running = if current.state == JobState::Running {
                    current
                } else {
                    store.set_job_state(id, JobState::Running, &reason, at)?
                };
                store.record_allocation(
                    id,
                    &node_allocation(replicas),
                    store_batch,
                    "planned by the policy",
                    at,
                )?;
                store.add_token(
                    &key,
                    &TokenRecord {
                        user: owner,
                        admin: false,
                        job: Some(id),
                    },
                    at,
                )?;
                Ok(running)
            })
            .await;
        let running_job = match started {
            Ok(job) => job,
            Err(error) => {
                // Cancelled in the meantime, most likely: nothing to start.
                tracing::info!("job {id}: not started: {error}");
                return;
            }
        };
        let attempt = running_job.attempts;
        let data_dir = &self.config.data_dir;
        let logs = data_dir.join(data_dir::LOGS_DIR).join(id.to_string());
        let checkpoint_dir = data_dir
            .join(data_dir::CHECKPOINTS_DIR)
            .join(id.to_string());
        if let Err(error) = std::fs::create_dir_all(&checkpoint_dir) {
            tracing::warn!(
                "job {id}: cannot create {}: {error}",
                checkpoint_dir.display()
            );
        }
        let master_port = free_port();
        let data_dir_text = data_dir.display().to_string();
        let checkpoint_text = checkpoint_dir.display().to_string();
        let context = LaunchContext {
            job: id,
            attempt,
            devices: &devices,
            device_kind: self.node.device_kind,
            batch,
            url: &self.config.url,
            token: &token,
            data_dir: &data_dir_text,
            checkpoint_dir: &checkpoint_text,
            master_port,
        };
        let launch = LaunchSpec {
            job: id,
            attempt,
            command: job.submission.command.clone(),
            working_dir: PathBuf::from(&job.submission.working_dir),
            env: launch_env(&job.submission.env, &context),
            stdout: logs.join("stdout.log"),
            stderr: logs.join("stderr.log"),
        };
        match self.executor.start(launch) {
            Ok(process) => {
                tracing::info!(
                    "job {id}: attempt {attempt} started, pid {}, {} {word}(s) {devices:?}",
                    process.pid,
                    devices.len()
                );
                let record = ProcessRecord {
                    job: id,
                    pid: process.pid,
                    start_ticks: process.start_ticks,
                    boot_id: process.boot_id,
                    attempt,
                    started_at: at,
                };
                if let Err(error) = self.db(move |store| store.record_process(&record)).await {
                    tracing::error!("job {id}: recording its process: {error}");
                }
                self.actual.insert(
                    id,
                    ActualJob {
                        devices: devices.clone(),
                        batch: decision,
                        stopping: None,
                    },
                );
                self.attempts.insert(id, attempt);
                self.running.insert(
                    id,
                    RunningView {
                        devices,
                        batch,
                        pid: process.pid,
                        stopping: None,
                    },
                );
                self.publish_running();
            }
            Err(error) => {
                tracing::warn!("job {id}: attempt {attempt} could not start: {error}");
                let what = format!("could not start: {error}");
                let exit_code = 127;
                self.end_attempt(id, attempt, exit_code, what, None, false)
                    .await;
            }
        }
    }

    /// Handles an executor's report that an attempt ended.
    pub async fn on_exit(&mut self, exit: ExitEvent) {
        if self.attempts.get(&exit.job) != Some(&exit.attempt) {
            tracing::debug!("ignoring a stale exit report: {exit:?}");
            return;
        }
        self.attempts.remove(&exit.job);
        self.running.remove(&exit.job);
        let stopping = self.actual.remove(&exit.job).and_then(|a| a.stopping);
        self.publish_running();
        let what = exit.status.describe();
        tracing::info!("job {}: attempt {} ended: {what}", exit.job, exit.attempt);
        self.end_attempt(
            exit.job,
            exit.attempt,
            exit.status.exit_code(),
            what,
            stopping,
            exit.status.success(),
        )
        .await;
    }

    /// Records how an attempt ended and moves the job on: back to the queue after a stop the
    /// scheduler asked for, succeeded on exit code 0, else retried with exponential backoff
    /// until `max_retries` failures, then failed.
    async fn end_attempt(
        &mut self,
        id: DurableJobId,
        attempt: u32,
        exit_code: i32,
        what: String,
        stopping: Option<StopReason>,
        success: bool,
    ) {
        let at = wall_now();
        let (base, max) = (self.config.retry_base, self.config.retry_max);
        let outcome = self
            .db(
                move |store| -> adaptsched_store::Result<Option<(Duration, String)>> {
                    store.clear_process(id)?;
                    store.record_exit(id, exit_code, &format!("attempt {attempt}: {what}"), at)?;
                    let job = store.get_job(id)?;
                    if job.state.is_terminal() {
                        // Cancelled while running: the stop was the point.
                        return Ok(None);
                    }
                    store.record_allocation(id, &Allocation::default(), None, &what, at)?;
                    if job.state != JobState::Running {
                        return Ok(None);
                    }
                    if let Some(reason) = stopping {
                        let why = format!("{} ({what})", reason.describe());
                        store.set_job_state(id, JobState::Queued, &why, at)?;
                        return Ok(None);
                    }
                    if success {
                        store.set_job_state(id, JobState::Succeeded, &what, at)?;
                        return Ok(None);
                    }
                    let failures = 1 + store
                        .events(id)?
                        .iter()
                        .filter(|event| event.kind == "failed-attempt")
                        .count() as u32;
                    store.record_event(id, "failed-attempt", &what, at)?;
                    let retries = job.submission.max_retries;
                    if failures > retries {
                        let why = if retries == 0 {
                            what
                        } else {
                            format!("{what}; no retries left ({retries} used)")
                        };
                        store.set_job_state(id, JobState::Failed, &why, at)?;
                        return Ok(None);
                    }
                    let delay = retry_delay(base, max, failures);
                    let why = format!(
                        "{what}; retry {failures} of {retries} after {:.0} s backoff",
                        delay.as_secs_f64()
                    );
                    store.set_job_state(id, JobState::Queued, &why, at)?;
                    Ok(Some((delay, why)))
                },
            )
            .await;
        match outcome {
            Ok(Some((delay, why))) => {
                self.backoff.insert(id, (Instant::now() + delay, why));
            }
            Ok(None) => {}
            Err(error) => tracing::error!("job {id}: recording its exit: {error}"),
        }
    }

    /// Stops every running job (SIGTERM, grace, SIGKILL) and puts it back in the queue, so the
    /// next server start runs it again from its checkpoint.
    async fn shutdown(&mut self) {
        let jobs: Vec<DurableJobId> = self.actual.keys().copied().collect();
        for job in &jobs {
            self.stop_job(*job, StopReason::Shutdown).await;
        }
        let deadline = Instant::now() + self.config.grace + Duration::from_secs(5);
        while !self.actual.is_empty() {
            match tokio::time::timeout_at(deadline, self.exits.recv()).await {
                Ok(Some(exit)) => self.on_exit(exit).await,
                Ok(None) | Err(_) => break,
            }
        }
        if !self.actual.is_empty() {
            tracing::error!(
                "shutdown: {} job(s) did not exit; the next start stops them",
                self.actual.len()
            );
        }
        let mut status = self.shared.status();
        status.running.clear();
    }
}

/// A free TCP port on loopback for the job's `MASTER_PORT` (it may be taken again before the
/// job binds it; trainers retry or pick their own).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_or(29500, |addr| addr.port())
}

#[cfg(test)]
#[path = "control_tests.rs"]
mod tests;
