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
use std::collections::{BTreeMap, BTreeSet};
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
    /// Seconds per round, for `/metrics`.
    pub round_latency: crate::metrics::RoundLatency,
    /// The devices the loop planned its last round with (published by the loop, read by the
    /// API), so `/v1/cluster` and admission follow a Ray cluster whose nodes come and go.
    node: Mutex<Option<NodeInfo>>,
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

    /// The devices the loop schedules now; `None` before a loop was built over this handle.
    pub fn node(&self) -> Option<NodeInfo> {
        self.node
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_node(&self, node: &NodeInfo) {
        *self.node.lock().unwrap_or_else(PoisonError::into_inner) = Some(node.clone());
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

/// AdaScale gain of training at total batch `batch` instead of `initial`, from per-sample
/// gradient statistics as jobs report them (`grad_var` = tr Σ).
pub fn adascale_gain(grad: Option<GradStats>, initial: u32, batch: u32) -> f64 {
    let Some(grad) = grad else {
        return 1.0;
    };
    let grad = model::at_initial_batch(grad, initial);
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
    /// Measured restart cost (start to first report), once an attempt reported.
    restart_cost: Option<f64>,
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
            let restart_cost = model::restart_cost(&history, &samples);
            let skip = samples.len().saturating_sub(model::MAX_SAMPLES);
            samples.drain(..skip);
            let spec = stored_request(&job.submission).batch;
            let (fitted, _) = model::job_model(spec.as_ref(), &history, &samples);
            Ok(ActiveJob {
                attained: attained_gpu_seconds(&history, now),
                model: fitted,
                restart_cost,
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
    /// Active jobs of the last round, to notice arrivals and departures.
    last_active: BTreeSet<DurableJobId>,
    /// The latest arrivals and departures of jobs ("job 3 finished") with when they were
    /// seen, cited as the reason of the adaptations they lead to: a departure for a growth,
    /// an arrival for a shrink or preemption.
    last_arrival: Option<(f64, String)>,
    last_departure: Option<(f64, String)>,
    /// When each running attempt started (wall clock), and its measured restart cost.
    started_at: BTreeMap<DurableJobId, f64>,
    restart_costs: BTreeMap<DurableJobId, f64>,
}

/// A running job is re-batched in place (a restart) only when the batch its fitted goodput
/// model picks for its allocation is predicted to be at least this much better.
pub const REBATCH_MIN_GAIN: f64 = 1.5;
/// ... and only once its current attempt has run for this many times its restart cost (so
/// a restart is not spent on a model fitted from a handful of steps).
pub const REBATCH_MIN_AGE_RESTARTS: f64 = 10.0;
/// A running attempt is not preempted or shrunk before it has run this many times its
/// restart cost (at most [`MIN_RUN_MAX_S`]): hysteresis against plans that flip a slot
/// between two near-equal jobs every round, each flip costing both a restart.
pub const MIN_RUN_RESTARTS: f64 = 10.0;
pub const MIN_RUN_MAX_S: f64 = 120.0;

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
        shared.set_node(&node);
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
            last_active: BTreeSet::new(),
            last_arrival: None,
            last_departure: None,
            started_at: BTreeMap::new(),
            restart_costs: BTreeMap::new(),
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

    /// Takes the executor's current pool of devices, when it has one that changes (Ray), so
    /// each round plans for the nodes that are there now; publishes it for the API.
    fn refresh_pool(&mut self) {
        let Some(pool) = self.executor.pool() else {
            return;
        };
        if pool != self.node {
            tracing::info!(
                "pool {}: {} → {} {} device(s)",
                pool.node.name,
                self.node.capacity(),
                pool.capacity(),
                pool.device_label
            );
            self.node = pool;
            self.shared.set_node(&self.node);
        }
    }

    /// One scheduling round.
    pub async fn round(&mut self) {
        let round_started = std::time::Instant::now();
        self.refresh_pool();
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
        self.restart_costs.clear();
        self.note_changes(&active);
        for ActiveJob {
            job,
            attained,
            model,
            restart_cost,
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
            // Stable ids across rounds (policies keep per-job state between rounds, as in
            // the simulator, where a job's id is its index in the whole trace).
            let restart_seconds = restart_cost.unwrap_or(self.config.restart_seconds);
            if let Some(cost) = restart_cost {
                self.restart_costs.insert(job.id, *cost);
            }
            let mut view = job_view(
                job.id.0 as usize,
                job,
                node_allocation(held),
                *attained,
                restart_seconds,
            );
            if uses_models {
                view.model = Some(model.clone());
            }
            self.models.insert(job.id, model.clone());
            views.push(view);
            ids.push(job.id);
        }
        let by_view: BTreeMap<JobId, DurableJobId> = views
            .iter()
            .map(|v| v.id)
            .zip(ids.iter().copied())
            .collect();
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
                    let Some(&id) = by_view.get(job) else {
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
                    if let Some(&id) = by_view.get(job) {
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
        self.protect_young_attempts(&mut desired);
        self.rebatch_in_place(&mut desired);
        let result = reconcile::reconcile(self.node.capacity(), &desired, &self.actual);
        for action in result.actions {
            match action {
                reconcile::Action::Stop { job, reason } => {
                    let active = ids.contains(&job);
                    let (kind, message) = self.describe_stop(job, reason, active, &desired);
                    self.stop_job(job, reason, kind, message).await;
                }
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
                "placed; waiting for running jobs to release their devices (stopping, or \
                 within their minimum run time)"
                    .to_string(),
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
        drop(status);
        self.shared
            .round_latency
            .observe(round_started.elapsed().as_secs_f64());
    }

    /// Notes which jobs arrived and left since the last round: the latest such change is the
    /// reason cited by the adaptations that follow it.
    fn note_changes(&mut self, active: &[ActiveJob]) {
        let now: BTreeSet<DurableJobId> = active.iter().map(|a| a.job.id).collect();
        let left: Vec<String> = self
            .last_active
            .difference(&now)
            .map(|id| format!("job {id}"))
            .collect();
        let arrived: Vec<String> = now
            .difference(&self.last_active)
            .map(|id| format!("job {id}"))
            .collect();
        let at = wall_now();
        if !left.is_empty() {
            self.last_departure = Some((at, format!("{} finished", left.join(", "))));
        }
        if !arrived.is_empty() {
            self.last_arrival = Some((at, format!("{} arrived", arrived.join(", "))));
        }
        self.last_active = now;
    }

    /// The reason an adaptation cites: the latest departure (`growing`) or arrival, if it
    /// was recent enough to have led to it (a shrink can wait out the minimum run time),
    /// else the fitted model.
    fn cause(&self, growing: bool) -> String {
        let change = if growing {
            &self.last_departure
        } else {
            &self.last_arrival
        };
        change
            .as_ref()
            .filter(|(at, _)| wall_now() - at <= MIN_RUN_MAX_S + self.config.interval.as_secs_f64())
            .map_or_else(|| "fitted goodput".to_string(), |(_, what)| what.clone())
    }

    /// Plural device word for messages: "cpu-slots", "GPUs".
    fn devices_word(&self) -> String {
        format!("{}s", self.node.device_word())
    }

    /// Goodput the fitted model predicts for a running job as it runs now, and on `to`
    /// devices with the batch the model would pick there.
    fn goodput_change(&self, job: DurableJobId, to: u32) -> Option<f64> {
        let model = self.models.get(&job)?;
        let running = self.running.get(&job)?;
        let now = match running.batch {
            Some(b) => model::goodput_at(
                model,
                running.devices.len() as u32,
                b.local_batch_size,
                b.accumulation_steps,
            )?,
            None => return None,
        };
        let next = model.best(1, to)?.goodput;
        (now > 0.0).then(|| next / now)
    }

    /// ", goodput 1.70×" for an event message, or nothing without a fitted model.
    fn gain_text(&self, job: DurableJobId, to: u32) -> String {
        self.goodput_change(job, to)
            .map_or_else(String::new, |gain| format!(", goodput {gain:.2}×"))
    }

    /// The event kind and message of a stop: what changes, and why.
    fn describe_stop(
        &self,
        job: DurableJobId,
        reason: StopReason,
        active: bool,
        desired: &BTreeMap<DurableJobId, DesiredJob>,
    ) -> (&'static str, String) {
        let word = self.devices_word();
        match reason {
            StopReason::Resize { from, to } => {
                let change = self.cause(to > from);
                let gain = self.gain_text(job, to);
                (
                    "resize",
                    format!(
                        "resize: {from} → {to} {word}: {change}{gain} ({})",
                        reason.describe()
                    ),
                )
            }
            StopReason::NotPlanned if active => {
                let change = self.cause(false);
                let held = self.actual.get(&job).map_or(0, |a| a.devices.len());
                (
                    "preempt",
                    format!(
                        "preempt: {held} → 0 {word}: {change} ({})",
                        reason.describe()
                    ),
                )
            }
            StopReason::Rebatch => {
                let running = self.running.get(&job);
                let from = running
                    .and_then(|r| r.batch)
                    .map_or_else(|| "?".to_string(), |b| b.global_batch_size.to_string());
                let replicas = running.map_or(1, |r| r.devices.len() as u32);
                let to = desired.get(&job).and_then(|d| d.batch).map_or_else(
                    || "?".to_string(),
                    |b| (b.local_batch_size * (b.accumulation_steps + 1) * replicas).to_string(),
                );
                let noise = self.noise_text(job);
                let gain = self.gain_text(job, replicas);
                (
                    "rebatch",
                    format!(
                        "rebatch: {from} → {to}: {noise}{gain} ({})",
                        reason.describe()
                    ),
                )
            }
            _ => ("stop", format!("stopping: {}", reason.describe())),
        }
    }

    /// "fitted noise scale 85.3" (or that there is none yet).
    fn noise_text(&self, job: DurableJobId) -> String {
        match self.models.get(&job).and_then(|m| m.grad) {
            Some(g) if g.sqr > 0.0 => {
                let init = self.models[&job].limits.init_batch;
                format!("fitted noise scale {:.1}", f64::from(init) * g.var / g.sqr)
            }
            _ => "fitted throughput (no gradient statistics yet)".to_string(),
        }
    }

    /// Keeps a running attempt younger than its minimum run time ([`MIN_RUN_RESTARTS`] ×
    /// its restart cost) at its devices when the plan would preempt or shrink it; a job the
    /// plan placed on those devices waits (deferred) until the attempt is old enough.
    fn protect_young_attempts(&self, desired: &mut BTreeMap<DurableJobId, DesiredJob>) {
        let now = wall_now();
        for (id, actual) in &self.actual {
            if actual.stopping.is_some() || !self.last_active.contains(id) {
                continue;
            }
            let held = actual.devices.len() as u32;
            let want = desired.get(id).map_or(0, |d| d.devices);
            if want >= held {
                continue;
            }
            let cost = self
                .restart_costs
                .get(id)
                .copied()
                .unwrap_or(self.config.restart_seconds);
            let age = self.started_at.get(id).map_or(f64::INFINITY, |at| now - at);
            if age < (MIN_RUN_RESTARTS * cost).min(MIN_RUN_MAX_S) {
                desired.insert(
                    *id,
                    DesiredJob {
                        devices: held,
                        batch: actual.batch,
                    },
                );
            }
        }
    }

    /// Under a batch-adapting policy, a running adaptive job whose plan keeps its devices is
    /// re-batched when its fitted goodput model predicts a better batch by at least
    /// [`REBATCH_MIN_GAIN`] and its attempt has run [`REBATCH_MIN_AGE_RESTARTS`] times its
    /// restart cost (the restart is then cheap next to what it buys).
    fn rebatch_in_place(&self, desired: &mut BTreeMap<DurableJobId, DesiredJob>) {
        if !self.policy.adapts_batch_size() {
            return;
        }
        let now = wall_now();
        for (id, actual) in &self.actual {
            if actual.stopping.is_some() {
                continue;
            }
            let held = actual.devices.len() as u32;
            let Some(want) = desired.get_mut(id) else {
                continue;
            };
            if want.devices != held || want.batch.is_some() {
                continue;
            }
            let (Some(model), Some(running)) = (self.models.get(id), self.running.get(id)) else {
                continue;
            };
            let Some(current) = running.batch else {
                continue;
            };
            let cost = self
                .restart_costs
                .get(id)
                .copied()
                .unwrap_or(self.config.restart_seconds);
            let age = self.started_at.get(id).map_or(0.0, |at| now - at);
            if age < REBATCH_MIN_AGE_RESTARTS * cost {
                continue;
            }
            let Some(best) = model.best(1, held) else {
                continue;
            };
            if best.total_batch(held) == current.global_batch_size {
                continue;
            }
            let Some(gain) = self.goodput_change(*id, held) else {
                continue;
            };
            if gain >= REBATCH_MIN_GAIN {
                want.batch = Some(BatchDecision {
                    local_batch_size: best.local_bsz,
                    accumulation_steps: best.accum_steps,
                });
            }
        }
    }

    async fn stop_job(
        &mut self,
        job: DurableJobId,
        reason: StopReason,
        kind: &'static str,
        message: String,
    ) {
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
        self.executor.stop(job, self.config.grace);
        tracing::info!("job {job}: {message}");
        let at = wall_now();
        self.db(move |store| store.record_event(job, kind, &message, at))
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
        let grad = self.models.get(&id).and_then(model::per_sample);
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
            .db(
                move |store| -> adaptsched_store::Result<(StoredJob, Option<u32>)> {
                    let current = store.get_job(id)?;
                    // The global batch of the previous attempt, to note a re-batch.
                    let previous = store.allocations(id)?.iter().rev().find_map(|r| {
                        let gpus = r.allocation.total_gpus();
                        r.batch
                            .filter(|_| gpus > 0)
                            .map(|b| b.local_batch_size * (b.accumulation_steps + 1) * gpus)
                    });
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
                    Ok((running, previous))
                },
            )
            .await;
        let (running_job, previous_batch) = match started {
            Ok(started) => started,
            Err(error) => {
                // Cancelled in the meantime, most likely: nothing to start.
                tracing::info!("job {id}: not started: {error}");
                return;
            }
        };
        let attempt = running_job.attempts;
        if let (Some(from), Some(to)) = (previous_batch, batch.map(|b| b.global_batch_size))
            && from != to
        {
            let why = if chosen.is_some() {
                format!(
                    "{}, chosen for {replicas} {}",
                    self.noise_text(id),
                    self.devices_word()
                )
            } else {
                format!(
                    "initial batch split over {replicas} {}",
                    self.devices_word()
                )
            };
            let message = format!("rebatch: {from} → {to}: {why}");
            tracing::info!("job {id}: {message}");
            self.db(move |store| store.record_event(id, "rebatch", &message, at))
                .await
                .ok();
        }
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
                self.started_at.insert(id, at);
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
        self.started_at.remove(&exit.job);
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
            let message = format!("stopping: {}", StopReason::Shutdown.describe());
            self.stop_job(*job, StopReason::Shutdown, "stop", message)
                .await;
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
