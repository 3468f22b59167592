//! The discrete-event engine: a virtual clock, an event queue keyed by (time, sequence), and
//! scheduling rounds that call a policy and apply its validated plan.

use crate::error::InputError;
use crate::profiles::{AppProfile, DEFAULT_RESTART_DELAY_S, ProfileSet, SpeedTable, kind_for_gpu};
use crate::progress::{RunConfig, Truth, fixed_batch_config};
use crate::workload::Workload;
use adaptsched_core::metrics::{
    JobOutcome, RunMetrics, UsageStep, balance_spread, finish_time_fairness, summarize,
};
use adaptsched_core::perf::{
    BatchLimits, GradStats, JobModel, Observation, PerfParams, TypeModel, fit_perf_params,
};
use adaptsched_core::{
    Allocation, Cluster, GpuType, JobCategory, JobId, JobSpec, JobView, Plan, PlanViolation,
    Policy, Snapshot, Time, Work, validate_plan,
};
use adaptsched_policies::placement::node_size;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Instant;

/// How a simulation runs.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Seconds between periodic scheduling rounds.
    pub interval_s: f64,
    /// Seed of the RNG handed to the policy.
    pub seed: u64,
    /// Also run a round at every arrival and completion (off = only on the periodic grid,
    /// as the Pollux artifact does).
    pub rounds_on_events: bool,
    /// Checkpoint-restore delay for every job; `None` = per application from the profiles
    /// (30 s for the Pollux layout and for raw traces).
    pub restart_delay_s: Option<f64>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            interval_s: 60.0,
            seed: 0,
            rounds_on_events: true,
            restart_delay_s: None,
        }
    }
}

/// Why a simulation could not finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("policy {policy} returned an invalid plan at t={time:.0}s: {violation}")]
    InvalidPlan {
        policy: String,
        time: Time,
        violation: PlanViolation,
    },
    #[error(
        "simulation stalled at t={time:.0}s: {waiting} jobs wait and nothing runs (e.g. {example})"
    )]
    Stalled {
        time: Time,
        waiting: usize,
        example: String,
    },
}

/// One job's fate in a run.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRecord {
    pub name: String,
    pub application: String,
    pub submit: Time,
    pub start: Option<Time>,
    pub end: Option<Time>,
    pub restarts: u32,
    pub requested_gpus: u32,
    pub isolated_seconds: f64,
    /// Distinct total batch sizes it trained with, in order of first use.
    pub batch_sizes: Vec<u32>,
    /// Its Themis finish-time fairness ratio (completed, schedulable jobs only).
    pub finish_time_fairness: Option<f64>,
}

impl JobRecord {
    pub fn jct(&self) -> Option<f64> {
        self.end.map(|e| e - self.submit)
    }
}

/// Everything one run produced.
#[derive(Clone, Debug)]
pub struct SimResult {
    pub policy: String,
    pub workload: String,
    pub jobs: Vec<JobRecord>,
    pub timeline: Vec<UsageStep>,
    pub metrics: RunMetrics,
    /// Wall seconds of each `decide` call (not deterministic; kept out of byte-compared files).
    pub decision_seconds: Vec<f64>,
    pub rounds: u64,
    pub events: u64,
    pub notes: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct QueuedEvent {
    time: Time,
    seq: u64,
    job: usize,
    generation: u64,
}

impl Eq for QueuedEvent {}
impl PartialOrd for QueuedEvent {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for QueuedEvent {
    fn cmp(&self, other: &Self) -> Ordering {
        self.time
            .total_cmp(&other.time)
            .then(self.seq.cmp(&other.seq))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    NotSubmitted,
    Active,
    Finished,
    Rejected,
}

struct SimJob<'a> {
    spec: JobSpec,
    truth: Truth<'a>,
    app: Option<&'a AppProfile>,
    phase: Phase,
    allocation: Allocation,
    config: Option<RunConfig<'a>>,
    min_gpus: u32,
    max_gpus: u32,
    allowed_gpu_types: Vec<GpuType>,
    restart_delay: f64,
    /// Time up to which progress and attained service are accounted.
    accounted_to: Time,
    /// The current restart delay ends here; no progress before.
    productive_from: Time,
    attained_gpu_seconds: f64,
    restarts: u32,
    start: Option<Time>,
    end: Option<Time>,
    generation: u64,
    isolated_seconds: f64,
    batch_sizes: Vec<u32>,
    /// The epoch whose end the pending milestone event marks.
    milestone_epoch: usize,
    /// Whether the job picks its own batch from its fitted model (Pollux-style).
    adaptive_batch: bool,
    /// Batch the artifact pins for this application under adaptive policies (ncf).
    pinned_batch: Option<u32>,
    /// What the job has reported: distinct (nodes, GPUs, per-GPU batch) step times.
    /// Per GPU type (profile node kind order is irrelevant; keyed by type).
    observations: BTreeMap<GpuType, Vec<Observation>>,
    perf: BTreeMap<GpuType, PerfParams>,
    grad: Option<GradStats>,
    max_replicas_seen: u32,
    /// Whether the driver fits this job's models (the policy uses them).
    modeled: bool,
    /// The most GPUs of one allowed type the job could use at once.
    largest_pool: u32,
    /// GPU-seconds spent training (not restarting), weighted by statistical efficiency.
    useful_gpu_seconds: f64,
}

impl<'a> SimJob<'a> {
    /// Brings progress and attained service up to `now`.
    fn account_to(&mut self, now: Time) {
        if now <= self.accounted_to {
            return;
        }
        let gpus = f64::from(self.allocation.total_gpus());
        self.attained_gpu_seconds += gpus * (now - self.accounted_to);
        if let Some(config) = &self.config {
            let productive = now - self.accounted_to.max(self.productive_from);
            if productive > 0.0 {
                self.useful_gpu_seconds += gpus * productive * self.truth.efficiency(config);
                self.truth.advance(config, productive);
            }
        }
        self.accounted_to = now;
    }
}

/// Which speed table a job uses on a GPU type, if its application was measured there.
fn table_for<'a>(app: &'a AppProfile, gpu_type: &GpuType) -> Option<&'a SpeedTable> {
    app.speed.get(kind_for_gpu(gpu_type))
}

/// A gang of `gpus` packed onto full nodes of `size` GPUs (`[4, 4, 2]`).
fn packed_placement(gpus: u32, size: u32) -> Vec<u32> {
    let mut placement = vec![size; (gpus / size) as usize];
    if !gpus.is_multiple_of(size) {
        placement.push(gpus % size);
    }
    placement
}

fn config_for<'a>(
    app: Option<&'a AppProfile>,
    gpu_type: &GpuType,
    placement: Vec<u32>,
    batch: Option<u32>,
) -> RunConfig<'a> {
    match app.and_then(|a| table_for(a, gpu_type).map(|t| (a, t))) {
        Some((app, table)) => {
            let (atomic_bsz, accum_steps) =
                fixed_batch_config(app, table, placement.iter().sum(), batch);
            RunConfig {
                table: Some(table),
                placement,
                atomic_bsz,
                accum_steps,
            }
        }
        None => RunConfig {
            table: None,
            placement,
            atomic_bsz: 0,
            accum_steps: 0,
        },
    }
}

/// GPUs of type `gpu_type` that `spec` could use at once, given its CPU and memory per GPU.
fn usable_gpus_of_type(cluster: &Cluster, spec: &JobSpec, gpu_type: &GpuType) -> u32 {
    cluster
        .nodes
        .iter()
        .filter(|n| &n.gpu_type == gpu_type)
        .map(|n| {
            let mut usable = n.gpus;
            if spec.cpus_per_gpu > 0.0 && n.cpu_cores > 0 {
                usable = usable
                    .min(((f64::from(n.cpu_cores) + 1e-9) / spec.cpus_per_gpu).floor() as u32);
            }
            if spec.memory_gb_per_gpu > 0.0 && n.memory_gb > 0.0 {
                usable = usable.min(((n.memory_gb + 1e-9) / spec.memory_gb_per_gpu).floor() as u32);
            }
            usable
        })
        .sum()
}

/// Batch limits of an application on one node kind.
fn batch_limits(app: &AppProfile, table: &SpeedTable) -> BatchLimits {
    BatchLimits {
        init_batch: app.init_batch_size,
        max_batch: app.max_batch_size,
        min_local: table.min_local_bsz,
        max_local: table.max_local_bsz,
    }
}

/// How a job runs on `placement`: its own fitted-goodput batch when it adapts (the default
/// before it has a model), else the batch asked for (or `batch`, a policy's choice).
fn job_config<'a>(
    job: &SimJob<'a>,
    gpu_type: &GpuType,
    placement: Vec<u32>,
    batch: Option<u32>,
) -> RunConfig<'a> {
    let Some((app, table)) = job.app.and_then(|a| table_for(a, gpu_type).map(|t| (a, t))) else {
        return RunConfig {
            table: None,
            placement,
            atomic_bsz: 0,
            accum_steps: 0,
        };
    };
    let replicas: u32 = placement.iter().sum();
    let nodes = placement.len() as u32;
    let adaptive = job.adaptive_batch && job.pinned_batch.is_none() && batch.is_none();
    let choice = adaptive
        .then(|| {
            let grad = job.grad.unwrap_or(GradStats { sqr: 1.0, var: 0.0 });
            job.perf.get(gpu_type).and_then(|p| {
                adaptsched_core::perf::best_batch(
                    p,
                    &grad,
                    &batch_limits(app, table),
                    nodes,
                    replicas,
                )
            })
        })
        .flatten();
    let (atomic_bsz, accum_steps) = match choice {
        Some(c) => {
            let count = replicas * (c.accum_steps + 1);
            (
                c.local_bsz.min(app.max_batch_size / count).max(1),
                c.accum_steps,
            )
        }
        None if adaptive => fixed_batch_config(app, table, replicas, None),
        None => fixed_batch_config(
            app,
            table,
            replicas,
            batch.or(job.pinned_batch).or(job.spec.requested_batch_size),
        ),
    };
    RunConfig {
        table: Some(table),
        placement,
        atomic_bsz,
        accum_steps,
    }
}

/// Records what a job running on `config` reports (step times, gradient statistics) and
/// refits its throughput model when the configuration is new, as a live job would.
fn observe(job: &mut SimJob<'_>, gpu_type: &GpuType, config: &RunConfig<'_>) {
    let (Some(app), Some(table)) = (job.app, config.table) else {
        return;
    };
    job.grad = {
        let (sqr, var) = app.grad_stats(f64::from(config.total_batch()), job.truth.epoch());
        Some(GradStats { sqr, var })
    };
    let nodes = config.placement.len() as u32;
    let replicas = config.replicas();
    let observations = job.observations.entry(gpu_type.clone()).or_default();
    let seen = observations
        .iter()
        .any(|o| o.nodes == nodes && o.replicas == replicas && o.local_bsz == config.atomic_bsz);
    if seen {
        return;
    }
    let Some((step, sync)) = table.step_time(&config.placement, f64::from(config.atomic_bsz))
    else {
        return;
    };
    observations.push(Observation {
        nodes,
        replicas,
        local_bsz: config.atomic_bsz,
        // Profiles measure sync apart from compute.
        accum_step_time: Some((step - sync).max(1e-9)),
        optim_step_time: step.max(1e-9),
    });
    if let Some(fit) = fit_perf_params(observations) {
        job.perf.insert(gpu_type.clone(), fit);
    }
}

/// The best time alone on the requested GPUs over the job's allowed types, plus one start-up.
fn isolated_seconds(job: &SimJob<'_>, cluster: &Cluster) -> f64 {
    match &job.truth {
        Truth::Duration { remaining } => *remaining + job.restart_delay,
        Truth::Profiled { .. } => {
            let best = job
                .allowed_gpu_types
                .iter()
                .map(|t| {
                    let placement =
                        packed_placement(job.spec.requested_gpus, node_size(cluster, t));
                    job.truth.time_to_finish(&config_for(
                        job.app,
                        t,
                        placement,
                        job.spec.requested_batch_size,
                    ))
                })
                .fold(f64::INFINITY, f64::min);
            best + job.restart_delay
        }
    }
}

/// The simulator for one (cluster, workload, profiles) input.
pub struct Simulation<'a> {
    cluster: &'a Cluster,
    jobs: Vec<SimJob<'a>>,
    config: SimConfig,
    notes: Vec<String>,
    /// GPUs allocated per node.
    node_used: Vec<u32>,
    node_capacity: Vec<f64>,
    timeline: Vec<UsageStep>,
    events: BinaryHeap<Reverse<QueuedEvent>>,
    seq: u64,
}

impl<'a> Simulation<'a> {
    /// Prepares a run: resolves every job's ground truth and the GPU types it may use.
    pub fn new(
        cluster: &'a Cluster,
        workload: &Workload,
        profiles: &'a ProfileSet,
        config: SimConfig,
    ) -> Result<Self, InputError> {
        let mut notes = workload.notes.clone();
        let gpus_by_type = cluster.gpus_by_type();
        let cluster_types: Vec<GpuType> = gpus_by_type.keys().cloned().collect();
        let mut jobs = Vec::with_capacity(workload.jobs.len());
        let mut rejected = 0usize;
        for spec in &workload.jobs {
            let (truth, app) = match spec.work {
                Work::Duration { seconds } => (Truth::Duration { remaining: seconds }, None),
                Work::Epochs => {
                    let app = profiles.app(&spec.application).ok_or_else(|| {
                        InputError::Other(format!(
                            "{}: job {:?}: unknown application {:?} (profiles in {} have: {})",
                            workload.name,
                            spec.name,
                            spec.application,
                            profiles.dir.display(),
                            profiles.apps.keys().cloned().collect::<Vec<_>>().join(", ")
                        ))
                    })?;
                    (
                        Truth::Profiled {
                            app,
                            epoch: 0,
                            progress: 0.0,
                        },
                        Some(app),
                    )
                }
            };
            let allowed: Vec<GpuType> = cluster_types
                .iter()
                .filter(|t| spec.allows(t))
                .filter(|t| app.is_none_or(|a| table_for(a, t).is_some()))
                .cloned()
                .collect();
            let (min_gpus, max_gpus) = match (spec.category, &spec.work) {
                (JobCategory::Rigid, _) | (_, Work::Duration { .. }) => {
                    (spec.requested_gpus, spec.requested_gpus)
                }
                _ => (1, spec.requested_gpus.max(cluster.total_gpus())),
            };
            let largest_pool = allowed
                .iter()
                .map(|t| usable_gpus_of_type(cluster, spec, t))
                .max()
                .unwrap_or(0);
            let phase = if min_gpus > largest_pool {
                rejected += 1;
                Phase::Rejected
            } else {
                Phase::NotSubmitted
            };
            let restart_delay = config
                .restart_delay_s
                .unwrap_or_else(|| app.map_or(DEFAULT_RESTART_DELAY_S, |a| a.restart_delay_s));
            let mut job = SimJob {
                spec: spec.clone(),
                truth,
                app,
                phase,
                allocation: Allocation::default(),
                config: None,
                min_gpus,
                max_gpus,
                allowed_gpu_types: allowed,
                restart_delay,
                accounted_to: spec.submit_time,
                productive_from: spec.submit_time,
                attained_gpu_seconds: 0.0,
                restarts: 0,
                start: None,
                end: None,
                generation: 0,
                isolated_seconds: 0.0,
                batch_sizes: Vec::new(),
                milestone_epoch: 0,
                adaptive_batch: false,
                pinned_batch: None,
                observations: BTreeMap::new(),
                perf: BTreeMap::new(),
                grad: None,
                max_replicas_seen: 0,
                modeled: false,
                largest_pool,
                useful_gpu_seconds: 0.0,
            };
            job.isolated_seconds = isolated_seconds(&job, cluster);
            jobs.push(job);
        }
        if rejected > 0 {
            notes.push(format!("{rejected} jobs ask for more GPUs than any allowed GPU type can give them (CPU and memory per GPU included); never schedulable, not run"));
        }
        Ok(Simulation {
            cluster,
            jobs,
            config,
            notes,
            node_used: vec![0; cluster.nodes.len()],
            node_capacity: cluster.nodes.iter().map(|n| f64::from(n.gpus)).collect(),
            timeline: Vec::new(),
            events: BinaryHeap::new(),
            seq: 0,
        })
    }

    /// Under a batch-adapting policy, `adaptive` profiled jobs choose their own batch and may
    /// use up to the GPUs their largest batch can feed (the Pollux artifact's bounds; its ncf
    /// jobs stay at batch 32768 on one GPU).
    fn enable_adaptive_batches(&mut self) {
        let cluster_gpus = self.cluster.total_gpus();
        for job in &mut self.jobs {
            let Some(app) = job.app else { continue };
            if job.spec.category != JobCategory::Adaptive {
                continue;
            }
            job.adaptive_batch = true;
            job.pinned_batch = app.pinned_batch;
            let min_local = app
                .speed
                .values()
                .map(|t| t.min_local_bsz)
                .min()
                .unwrap_or(1)
                .max(1);
            job.min_gpus = 1;
            job.max_gpus = if app.pinned_batch.is_some() {
                1
            } else {
                (app.max_batch_size / min_local).clamp(1, cluster_gpus)
            };
        }
    }

    fn push_event(&mut self, time: Time, job: usize) {
        self.seq += 1;
        let generation = self.jobs[job].generation;
        self.events.push(Reverse(QueuedEvent {
            time,
            seq: self.seq,
            job,
            generation,
        }));
    }

    /// The next valid completion, dropping stale ones.
    fn next_completion(&mut self) -> Option<QueuedEvent> {
        while let Some(Reverse(event)) = self.events.peek().copied() {
            if self.jobs[event.job].generation == event.generation
                && self.jobs[event.job].phase == Phase::Active
            {
                return Some(event);
            }
            self.events.pop();
        }
        None
    }

    fn record_usage(&mut self, now: Time) {
        let allocated: u32 = self.node_used.iter().sum();
        let loads: Vec<f64> = self.node_used.iter().map(|&g| f64::from(g)).collect();
        let step = UsageStep {
            time: now,
            allocated_gpus: allocated,
            balance_spread: balance_spread(&loads, &self.node_capacity),
        };
        match self.timeline.last_mut() {
            Some(last) if last.time == now => *last = step,
            Some(last)
                if last.allocated_gpus == step.allocated_gpus
                    && last.balance_spread == step.balance_spread => {}
            _ => self.timeline.push(step),
        }
    }

    fn set_allocation(
        &mut self,
        index: usize,
        allocation: Allocation,
        batch: Option<u32>,
        now: Time,
    ) {
        let old = std::mem::take(&mut self.jobs[index].allocation);
        for &(node, gpus) in &old.parts {
            self.node_used[node.index()] -= gpus;
        }
        let mut allocation = allocation;
        // Zero-GPU parts carry no work and must not decide the job's GPU type.
        allocation.parts.retain(|&(_, gpus)| gpus > 0);
        for &(node, gpus) in &allocation.parts {
            self.node_used[node.index()] += gpus;
        }
        let job = &mut self.jobs[index];
        job.generation += 1;
        let Some(gpu_type) = allocation.gpu_type(self.cluster).cloned() else {
            job.config = None;
            return;
        };
        let placement = allocation.placement();
        if job.start.is_some() {
            job.restarts += 1;
        } else {
            job.start = Some(now);
        }
        job.max_replicas_seen = job.max_replicas_seen.max(allocation.total_gpus());
        job.productive_from = now + job.restart_delay;
        job.allocation = allocation;
        let config = job_config(job, &gpu_type, placement, batch);
        let from = job.productive_from;
        self.start_config(index, config, from);
    }

    /// Runs job `index` on `config` from `from` on: records what it reports and schedules its
    /// next milestone.
    fn start_config(&mut self, index: usize, config: RunConfig<'a>, from: Time) {
        let job = &mut self.jobs[index];
        if job.app.is_some() && !job.batch_sizes.contains(&config.total_batch()) {
            job.batch_sizes.push(config.total_batch());
        }
        if job.modeled
            && let Some(gpu_type) = job.allocation.gpu_type(self.cluster)
        {
            observe(job, gpu_type, &config);
        }
        let until = job.truth.time_to_milestone(&config);
        job.milestone_epoch = job.truth.epoch() + 1;
        job.config = Some(config);
        job.generation += 1;
        let at = from.max(job.accounted_to) + until;
        if until.is_finite() {
            self.push_event(at, index);
        }
    }

    /// A milestone event: the end of an epoch (or of the job).
    fn reach_milestone(&mut self, index: usize, now: Time) -> bool {
        let job = &mut self.jobs[index];
        job.account_to(now);
        job.truth.reach_milestone(job.milestone_epoch);
        if job.truth.is_done() {
            return true;
        }
        // Between epochs the job re-picks its batch (same GPUs, no restart).
        let Some(current) = job.config.clone() else {
            return false;
        };
        let next = match job.allocation.gpu_type(self.cluster) {
            Some(gpu_type) if job.adaptive_batch => {
                let gpu_type = gpu_type.clone();
                job_config(job, &gpu_type, current.placement.clone(), None)
            }
            _ => current,
        };
        self.start_config(index, next, now);
        false
    }

    fn finish(&mut self, index: usize, now: Time) {
        self.set_allocation(index, Allocation::default(), None, now);
        let job = &mut self.jobs[index];
        job.phase = Phase::Finished;
        job.end = Some(now);
        job.accounted_to = now;
    }

    /// The oracle's remaining run time of a job on its requested GPUs (srtf only).
    fn oracle_remaining(&self, index: usize) -> f64 {
        let job = &self.jobs[index];
        {
            let gpu_type = match job.allocation.gpu_type(self.cluster) {
                Some(gpu_type) => gpu_type.clone(),
                None => job
                    .allowed_gpu_types
                    .first()
                    .cloned()
                    .unwrap_or_else(|| GpuType::new("any")),
            };
            let placement =
                packed_placement(job.spec.requested_gpus, node_size(self.cluster, &gpu_type));
            job.truth.time_to_finish(&config_for(
                job.app,
                &gpu_type,
                placement,
                job.spec.requested_batch_size,
            ))
        }
    }

    /// A job's view at admission; `refresh_view` keeps its changing fields current.
    fn view(&self, index: usize) -> JobView {
        let job = &self.jobs[index];
        JobView {
            id: JobId(index as u32),
            name: job.spec.name.clone(),
            application: job.spec.application.clone(),
            category: job.spec.category,
            submit_time: job.spec.submit_time,
            requested_gpus: job.spec.requested_gpus,
            requested_batch_size: job.spec.requested_batch_size,
            min_gpus: job.min_gpus,
            max_gpus: job.max_gpus,
            allowed_gpu_types: job.allowed_gpu_types.clone(),
            cpus_per_gpu: job.spec.cpus_per_gpu,
            memory_gb_per_gpu: job.spec.memory_gb_per_gpu,
            attained_gpu_seconds: job.attained_gpu_seconds,
            allocation: job.allocation.clone(),
            restarts: job.restarts,
            oracle_remaining_seconds: None,
            model: None,
            restart_seconds: job.restart_delay,
        }
    }

    fn refresh_view(&self, view: &mut JobView, index: usize, needs_oracle: bool) {
        let job = &self.jobs[index];
        view.attained_gpu_seconds = job.attained_gpu_seconds;
        view.restarts = job.restarts;
        if view.allocation != job.allocation {
            view.allocation.clone_from(&job.allocation);
        }
        view.oracle_remaining_seconds = needs_oracle.then(|| self.oracle_remaining(index));
        if job.modeled {
            view.model = self.model_of(job);
        }
    }

    /// The fitted model a policy sees for a job: per allowed type, and for the type it runs on.
    fn model_of(&self, job: &SimJob<'_>) -> Option<JobModel> {
        let app = job.app?;
        let current = job
            .allocation
            .gpu_type(self.cluster)
            .or(job.allowed_gpu_types.first())?;
        let types = job
            .allowed_gpu_types
            .iter()
            .filter_map(|t| {
                let table = table_for(app, t)?;
                Some(TypeModel {
                    gpu_type: t.clone(),
                    perf: job.perf.get(t).copied(),
                    multi_gpu_observed: job
                        .observations
                        .get(t)
                        .is_some_and(|o| o.iter().any(|o| o.replicas > 1)),
                    limits: batch_limits(app, table),
                })
            })
            .collect();
        Some(JobModel {
            perf: job.perf.get(current).copied(),
            types,
            grad: job.grad,
            limits: batch_limits(app, table_for(app, current)?),
            fixed_batch: job.pinned_batch,
            max_replicas_seen: job.max_replicas_seen,
        })
    }

    /// Sia's profiling: a new job runs briefly on one GPU of every allowed type, so that each
    /// type has a one-GPU model before the first decision (its cost, < 20 GPU-seconds in the
    /// paper, is not charged).
    fn profile_on_each_type(&mut self, index: usize) {
        let job = &self.jobs[index];
        let types = job.allowed_gpu_types.clone();
        for gpu_type in types {
            let job = &self.jobs[index];
            let config = job_config(job, &gpu_type, vec![1], None);
            let job = &mut self.jobs[index];
            observe(job, &gpu_type, &config);
        }
    }

    /// One scheduling round at `now`: snapshot, decide, validate, apply the difference.
    fn round(
        &mut self,
        policy: &mut dyn Policy,
        rng: &mut ChaCha8Rng,
        active: &[usize],
        views: &mut [JobView],
        now: Time,
        timings: &mut Vec<f64>,
    ) -> Result<Plan, SimError> {
        let needs_oracle = policy.needs_oracle();
        for (view, &index) in views.iter_mut().zip(active) {
            self.jobs[index].account_to(now);
            self.refresh_view(view, index, needs_oracle);
        }
        let snapshot = Snapshot {
            now,
            cluster: self.cluster,
            jobs: views,
        };
        let started = Instant::now();
        let plan = policy.decide(&snapshot, rng);
        timings.push(started.elapsed().as_secs_f64());
        validate_plan(self.cluster, views, &plan).map_err(|violation| SimError::InvalidPlan {
            policy: policy.name().to_string(),
            time: now,
            violation,
        })?;
        // Release first, then place, so that moves within one round never over-fill a node.
        let mut changes = Vec::new();
        for &index in active {
            let desired = plan
                .allocations
                .get(&JobId(index as u32))
                .cloned()
                .unwrap_or_default();
            let batch = plan.batch.get(&JobId(index as u32)).map(|b| {
                b.local_batch_size
                    .saturating_mul(b.accumulation_steps.saturating_add(1))
                    .saturating_mul(desired.total_gpus())
            });
            let current = &self.jobs[index];
            let rebatch = batch.is_some_and(|b| {
                current
                    .config
                    .as_ref()
                    .is_some_and(|c| c.total_batch() != b)
            });
            if !desired.same_resources(&current.allocation) || rebatch {
                changes.push((index, desired, batch));
            }
        }
        for (index, _, _) in &changes {
            self.set_allocation(*index, Allocation::default(), None, now);
        }
        for (index, desired, batch) in changes {
            if !desired.is_empty() {
                self.set_allocation(index, desired, batch, now);
            }
        }
        self.record_usage(now);
        Ok(plan)
    }

    /// Runs the policy over the whole workload. `on_progress` gets the fraction of jobs done.
    pub fn run(
        mut self,
        policy: &mut dyn Policy,
        workload_name: &str,
        on_progress: &mut dyn FnMut(f64),
    ) -> Result<SimResult, SimError> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
        if policy.adapts_batch_size() {
            self.enable_adaptive_batches();
        } else {
            // Rigid scheduling runs a job on the GPUs it asked for: more than any pool has is
            // never schedulable.
            let mut too_big = 0;
            for job in &mut self.jobs {
                if job.phase == Phase::NotSubmitted && job.spec.requested_gpus > job.largest_pool {
                    job.phase = Phase::Rejected;
                    too_big += 1;
                }
            }
            if too_big > 0 {
                self.notes.push(format!(
                    "{too_big} jobs ask for more GPUs than any allowed GPU type has; this policy runs jobs at their requested size, so they are not run"
                ));
            }
        }
        if policy.uses_job_models() {
            for job in &mut self.jobs {
                job.modeled = job.app.is_some();
            }
        }
        let profile_arrivals = policy.profiles_each_gpu_type();
        let interval = self.config.interval_s.max(1e-3);
        let order: Vec<usize> = (0..self.jobs.len())
            .filter(|&i| self.jobs[i].phase == Phase::NotSubmitted)
            .collect();
        let total = order.len();
        let mut next_arrival = 0usize;
        let mut active: Vec<usize> = Vec::new();
        // Views of the active jobs, aligned with `active`; refreshed in place each round.
        let mut views: Vec<JobView> = Vec::new();
        let mut finished = 0usize;
        let mut next_round = interval;
        let mut wake_at: Option<Time> = None;
        let mut timings = Vec::new();
        let (mut rounds, mut events) = (0u64, 0u64);
        while finished < total {
            let arrival_time = order
                .get(next_arrival)
                .map(|&i| self.jobs[i].spec.submit_time);
            let completion = self.next_completion();
            if active.is_empty() {
                // Idle: jump to the next arrival and realign the periodic grid after it.
                let Some(t) = arrival_time else { break };
                if next_round < t {
                    next_round = (t / interval).ceil() * interval;
                }
            }
            let candidates = [
                arrival_time,
                completion.map(|e| e.time),
                (!active.is_empty()).then_some(next_round),
                wake_at,
            ];
            let Some(now) = candidates.into_iter().flatten().min_by(f64::total_cmp) else {
                break;
            };
            let mut changed = false;
            while let Some(event) = self.next_completion().filter(|e| e.time <= now) {
                self.events.pop();
                events += 1;
                if !self.reach_milestone(event.job, event.time) {
                    continue;
                }
                self.finish(event.job, event.time);
                if let Some(position) = active.iter().position(|&i| i == event.job) {
                    active.remove(position);
                    views.remove(position);
                }
                finished += 1;
                changed = true;
                self.record_usage(event.time);
            }
            while let Some(&index) = order
                .get(next_arrival)
                .filter(|&&i| self.jobs[i].spec.submit_time <= now)
            {
                self.jobs[index].phase = Phase::Active;
                if profile_arrivals && self.jobs[index].modeled {
                    self.profile_on_each_type(index);
                }
                active.push(index);
                views.push(self.view(index));
                next_arrival += 1;
                events += 1;
                changed = true;
            }
            let periodic = now >= next_round;
            if periodic {
                next_round = ((now / interval).floor() + 1.0) * interval;
            }
            let woken = wake_at.is_some_and(|t| t <= now);
            if woken {
                wake_at = None;
            }
            let someone_waits = active.iter().any(|&i| self.jobs[i].allocation.is_empty());
            // With nothing pending at all, a round must run (and detect a stall) even if the
            // policy would skip it.
            let stuck = !someone_waits
                && self.next_completion().is_none()
                && next_arrival >= order.len()
                && wake_at.is_none();
            if !active.is_empty()
                && (someone_waits || stuck || policy.acts_when_nothing_waits())
                && (periodic || woken || stuck || (changed && self.config.rounds_on_events))
            {
                let plan = self.round(policy, &mut rng, &active, &mut views, now, &mut timings)?;
                rounds += 1;
                wake_at = plan.wake_at.filter(|&t| t > now);
                // Stuck: no job can make progress (none runs, or those that run cannot advance
                // on their placement) and nothing will ever arrive or wake the policy.
                let no_progress = self.next_completion().is_none();
                if no_progress && next_arrival >= order.len() && wake_at.is_none() {
                    let example = plan
                        .waiting
                        .values()
                        .next()
                        .cloned()
                        .unwrap_or_else(|| "no reason given".to_string());
                    return Err(SimError::Stalled {
                        time: now,
                        waiting: active.len(),
                        example,
                    });
                }
                on_progress(finished as f64 / total.max(1) as f64);
            }
        }
        let mut jobs: Vec<JobRecord> = self
            .jobs
            .iter()
            .map(|j| JobRecord {
                name: j.spec.name.clone(),
                application: j.spec.application.clone(),
                submit: j.spec.submit_time,
                start: j.start,
                end: j.end,
                restarts: j.restarts,
                requested_gpus: j.spec.requested_gpus,
                isolated_seconds: j.isolated_seconds,
                batch_sizes: j.batch_sizes.clone(),
                finish_time_fairness: None,
            })
            .collect();
        // Never-schedulable jobs count in `jobs_total` only: as "active forever" they would
        // distort fairness, makespan and restarts per job.
        let outcomes: Vec<JobOutcome> = jobs
            .iter()
            .zip(&self.jobs)
            .filter(|(_, sim_job)| sim_job.phase != Phase::Rejected)
            .map(|(j, sim_job)| JobOutcome {
                submit: j.submit,
                start: j.start,
                end: j.end,
                restarts: j.restarts,
                requested_gpus: j.requested_gpus,
                isolated_seconds: j.isolated_seconds,
                useful_gpu_seconds: sim_job.useful_gpu_seconds,
            })
            .collect();
        let gpus = self.cluster.total_gpus();
        let fairness = finish_time_fairness(&outcomes, gpus);
        let mut metrics = summarize(&outcomes, &self.timeline, gpus, &fairness);
        metrics.jobs_total = jobs.len();
        let mut fairness = fairness.into_iter();
        for (record, sim_job) in jobs.iter_mut().zip(&self.jobs) {
            if sim_job.phase != Phase::Rejected {
                record.finish_time_fairness = fairness.next().flatten();
            }
        }
        on_progress(1.0);
        Ok(SimResult {
            policy: policy.name().to_string(),
            workload: workload_name.to_string(),
            jobs,
            timeline: self.timeline,
            metrics,
            decision_seconds: timings,
            rounds,
            events,
            notes: self.notes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adaptsched_core::Node;
    use adaptsched_policies::build_policy;

    fn cluster(nodes: u32, gpus: u32) -> Cluster {
        let node = |i: u32| Node {
            name: format!("n{i}"),
            gpu_type: GpuType::new("t4"),
            gpus,
            cpu_cores: 0,
            memory_gb: 0.0,
            network_gbps: 0.0,
        };
        Cluster {
            name: "test".into(),
            nodes: (0..nodes).map(node).collect(),
        }
    }

    fn bundled_profiles() -> ProfileSet {
        ProfileSet::read(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/pollux/profiles"
        )))
        .expect("bundled profiles")
    }

    fn workload(jobs: Vec<JobSpec>) -> Workload {
        Workload {
            name: "w".into(),
            jobs,
            notes: Vec::new(),
        }
    }

    fn run(policy: &str, cluster: &Cluster, w: &Workload, config: SimConfig) -> SimResult {
        let profiles = bundled_profiles();
        let mut policy = build_policy(policy).expect("policy");
        Simulation::new(cluster, w, &profiles, config)
            .expect("valid")
            .run(policy.as_mut(), "w", &mut |_| {})
            .expect("runs")
    }

    #[test]
    fn a_lone_job_starts_at_arrival_and_pays_one_restart_delay() {
        let c = cluster(1, 4);
        let w = workload(vec![
            JobSpec::new("a", 10.0, "trace", 2).with_duration(100.0),
        ]);
        let r = run("fifo", &c, &w, SimConfig::default());
        assert_eq!(r.jobs[0].start, Some(10.0));
        assert_eq!(r.jobs[0].end, Some(10.0 + 30.0 + 100.0));
        assert_eq!(r.metrics.jobs_completed, 1);
        // 2 of 4 GPUs held for 130 s, of which 100 s trained.
        assert!((r.metrics.gpu_utilization - 0.5).abs() < 1e-12);
        assert!((r.metrics.goodput_utilization - 200.0 / 520.0).abs() < 1e-12);
    }

    #[test]
    fn periodic_rounds_wait_for_the_grid_like_the_pollux_artifact() {
        let c = cluster(1, 4);
        let w = workload(vec![
            JobSpec::new("a", 10.0, "trace", 2).with_duration(100.0),
        ]);
        let config = SimConfig {
            rounds_on_events: false,
            restart_delay_s: Some(0.0),
            ..SimConfig::default()
        };
        let r = run("fifo", &c, &w, config);
        assert_eq!(r.jobs[0].start, Some(60.0));
        assert_eq!(r.jobs[0].end, Some(160.0));
    }

    #[test]
    fn fifo_queues_and_utilization_counts_allocated_gpu_time() {
        // Two 4-GPU jobs on one 4-GPU node: the second waits for the first.
        let c = cluster(1, 4);
        let w = workload(vec![
            JobSpec::new("a", 0.0, "trace", 4).with_duration(100.0),
            JobSpec::new("b", 0.0, "trace", 4).with_duration(100.0),
        ]);
        let r = run(
            "fifo",
            &c,
            &w,
            SimConfig {
                restart_delay_s: Some(0.0),
                ..SimConfig::default()
            },
        );
        assert_eq!(r.jobs[0].end, Some(100.0));
        assert_eq!(r.jobs[1].start, Some(100.0));
        assert_eq!(r.jobs[1].end, Some(200.0));
        assert!((r.metrics.gpu_utilization - 1.0).abs() < 1e-12);
        assert_eq!(r.metrics.avg_jct_s, 150.0);
    }

    #[test]
    fn tiresias_preempts_a_demoted_job_for_a_new_one_and_resumes_it() {
        // A 4-GPU job runs past the 16 GPU-hour threshold (4 h); a new 4-GPU job then takes
        // its GPUs; the first resumes afterwards with its progress kept.
        let c = cluster(1, 4);
        let w = workload(vec![
            JobSpec::new("long", 0.0, "trace", 4).with_duration(6.0 * 3600.0),
            JobSpec::new("short", 5.0 * 3600.0, "trace", 4).with_duration(600.0),
        ]);
        let r = run(
            "tiresias",
            &c,
            &w,
            SimConfig {
                restart_delay_s: Some(0.0),
                ..SimConfig::default()
            },
        );
        let (long, short) = (&r.jobs[0], &r.jobs[1]);
        assert_eq!(
            short.start,
            Some(5.0 * 3600.0),
            "the new job preempts at once"
        );
        assert_eq!(long.restarts, 1);
        assert_eq!(
            long.end,
            Some(6.0 * 3600.0 + 600.0),
            "progress kept across preemption"
        );
        // FIFO would make the short job wait an hour.
        let f = run(
            "fifo",
            &c,
            &w,
            SimConfig {
                restart_delay_s: Some(0.0),
                ..SimConfig::default()
            },
        );
        assert_eq!(f.jobs[1].start, Some(6.0 * 3600.0));
        // Each record carries its finish-time fairness; the run's maximum is the largest.
        let ftf = |run: &SimResult, i: usize| run.jobs[i].finish_time_fairness.expect("done");
        assert!(
            ftf(&f, 1) > 2.0 * ftf(&r, 1),
            "{} vs {}",
            ftf(&f, 1),
            ftf(&r, 1)
        );
        let largest = (0..2).map(|i| ftf(&f, i)).fold(0.0, f64::max);
        assert_eq!(largest, f.metrics.max_finish_time_fairness);
    }

    #[test]
    fn profiled_jobs_finish_after_their_epochs() {
        let c = cluster(16, 4);
        let w = workload(vec![
            JobSpec::new("c", 0.0, "cifar10", 1).with_batch_size(128),
        ]);
        let r = run("fifo", &c, &w, SimConfig::default());
        let jct = r.jobs[0].jct().expect("finishes");
        // 100 epochs of CIFAR-10 at batch 128 on one T4: a few hours, not minutes or days.
        assert!(jct > 3600.0 && jct < 24.0 * 3600.0, "{jct}");
        assert_eq!(r.jobs[0].batch_sizes, vec![128]);
        // At its initial batch a job is fully efficient: only the restart delay is lost.
        assert!(r.metrics.goodput_utilization < r.metrics.gpu_utilization);
        assert!(r.metrics.goodput_utilization > 0.95 * r.metrics.gpu_utilization);
        // More GPUs for the same batch is faster.
        let w4 = workload(vec![
            JobSpec::new("c", 0.0, "cifar10", 4).with_batch_size(512),
        ]);
        let r4 = run("fifo", &c, &w4, SimConfig::default());
        assert!(r4.jobs[0].jct().expect("finishes") < jct);
    }

    #[test]
    fn impossible_jobs_are_reported_not_run() {
        let c = cluster(1, 4);
        let w = workload(vec![
            JobSpec::new("big", 0.0, "trace", 8).with_duration(10.0),
            JobSpec::new("ok", 0.0, "trace", 1).with_duration(10.0),
        ]);
        let r = run("fifo", &c, &w, SimConfig::default());
        assert_eq!(r.metrics.jobs_completed, 1);
        assert_eq!(r.metrics.jobs_total, 2);
        assert!(
            r.notes.iter().any(|n| n.contains("never schedulable")),
            "{:?}",
            r.notes
        );
    }

    #[test]
    fn unknown_application_is_an_input_error() {
        let c = cluster(1, 4);
        let w = workload(vec![JobSpec::new("x", 0.0, "resnet9000", 1)]);
        let profiles = bundled_profiles();
        let err = Simulation::new(&c, &w, &profiles, SimConfig::default())
            .err()
            .expect("fails")
            .to_string();
        assert!(
            err.contains("resnet9000") && err.contains("cifar10"),
            "{err}"
        );
    }
}
