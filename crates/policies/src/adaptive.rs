//! `adaptive`: our policy. One multiple-choice knapsack per round over every job's (GPU type,
//! GPU count) options (Sia's structure and solver), valued by goodput speedup from the job's
//! online-fitted model with batch-size co-adaptation (Pollux), with a utilitarian exponent
//! (p = 0.5), fast first grants (up to the user's request), restart-cost discounting with
//! hysteresis, a finish-time-fairness weight (Themis: each job's ratio so far, from its
//! progress under its own model against a 1/n share of the cluster, squared) and a bonus for
//! catching up to its fair rate once it falls 15% behind, and, when jobs outnumber GPUs, an
//! admission order by response ratio (waited over expected remaining service, learned from
//! finished jobs of the same application). Its placement moves jobs scattered over more nodes
//! than they need back onto fewer when the sync saved pays for the restarts.
//! Least-attained-service weights on shares (Tiresias-style) are measured in
//! docs/adaptive.md and off by default. It reads only what a live scheduler knows: fitted
//! models, attained service, restarts and their measured cost, the jobs active, and what
//! finished jobs needed.

use crate::placement::FreeResources;
use crate::sia::{
    Choice, JobOptions, SiaProblem, SolverEffort, TypeInfo, UsableGpus, allowed_counts,
    chosen_configurations, current_choices, fill_idle_gpus, place, place_on, solve_with,
    type_infos,
};
use adaptsched_core::perf::{GoodputMemo, JobModel, PerfParams};
use adaptsched_core::{Allocation, GpuType, JobId, JobView, NodeId, Plan, Policy, Snapshot};
use rand::RngCore;
use std::collections::BTreeMap;

/// Options in a round above which the solver takes batched passes (see `SolverEffort`).
const BATCHED_SOLVER_ABOVE_OPTIONS: usize = 4000;

/// Knobs of `adaptive`; each component can be switched off for the ablation.
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptiveConfig {
    /// Fairness exponent of the per-job cost (goodput speedup)^p; more negative = fairer.
    pub p: f64,
    /// Least-attained-service weighting: a job's cost is scaled by
    /// (1 + attained GPU-seconds / `las_scale_s`)^(−`las_power`); 0 switches it off.
    pub las_power: f64,
    pub las_scale_s: f64,
    /// Cost of leaving a job without GPUs (compare: one GPU of its slowest type costs 1).
    pub unallocated_cost: f64,
    /// Discount a changed configuration by the job's measured restart cost.
    pub restart_aware: bool,
    /// Exploration: a job may grow to at most `growth` × the most GPUs it has run on...
    pub growth: u32,
    /// ...but always to this many (a job's model cannot know its scaling before it scales).
    pub min_grant: u32,
    /// ...and to the GPUs the user requested: a request is what its owner expects to use.
    pub grant_requested: bool,
    /// Predict remaining service from finished jobs of the same application.
    pub history: bool,
    /// Finished jobs needed before the history is trusted.
    pub history_min: usize,
    /// A restart must pay for itself within this many times its own cost (0: no such
    /// discount): damps reshuffles whose gain would not outlast the restart.
    pub restart_horizon: f64,
    /// Amortize a restart over the job's expected remaining time (history or LAS) when that
    /// is shorter than `restart_horizon` restarts: short jobs do not grow for little gain.
    pub restart_by_remaining: bool,
    /// Starvation guard: after a grace of `restart_horizon` restarts, a waiting job's weight
    /// grows by 1 every this many seconds it waits (0: off), so no job waits forever behind
    /// jobs with more goodput to gain.
    pub starvation_scale_s: f64,
    /// Ablation bound only: read the simulator's hidden remaining time instead of the
    /// history/LAS estimate, to measure what a perfect size predictor could buy.
    pub oracle_bound: bool,
    /// Admission priority when jobs outnumber GPUs (0: off): every allocated option of a job
    /// gains `admit_weight × ln((waited − grace + floor) / (expected remaining + floor))`, plus
    /// `ln(admit_incumbency)` while it runs. Constant over a job's options, it leaves the
    /// shares of running jobs alone and only decides who waits: long expected jobs first,
    /// short or long-waiting ones last (highest response ratio next).
    pub admit_weight: f64,
    pub admit_floor_s: f64,
    pub admit_incumbency: f64,
    /// Finish-time-fairness weighting (Themis): a job's weight is multiplied by its estimated
    /// finish-time-fairness ratio so far, raised to this power (0: off). The ratio is the
    /// wall time since submission over the time the job would have needed alone on its
    /// requested GPUs for the progress it has made, both from its own fitted model.
    pub ftf_power: f64,
    /// ...counting only the part of the ratio above this bound (1: all of it).
    pub ftf_bound: f64,
    /// ...measured as Themis (and the simulator's metric) does: against a 1/n share of the
    /// cluster when the job asked for more, n = jobs active on average over its life.
    pub ftf_share: bool,
    /// Start-ups (restart delays) added to a waiting job's time alone (≥ 1; running: 1).
    pub ftf_grace_restarts: f64,
    /// Fair-share floor (0: off): a job whose finish-time-fairness ratio so far is above this
    /// gains `ftf_floor_bonus` on every option that runs it at least at its fair rate (its
    /// goodput alone on its request, over the `ftf_share` slowdown). The weight above only
    /// scales a job's goodput curve, so a job held at half its request by a gang that barely
    /// speeds it up stays there however far behind it falls; the floor prices catching up.
    pub ftf_floor: f64,
    pub ftf_floor_bonus: f64,
    /// Move a job placed on more nodes than it needs onto fewer, once GPUs free up, when
    /// its model says the faster synchronization pays for the restart...
    pub consolidate: bool,
    /// ...also onto one node after another job's GPUs there (fewer than the job needs) move
    /// to another node.
    pub make_room: bool,
    /// A job that has not yet synchronized on a GPU type is priced with the sync terms that
    /// jobs of its application fitted there, when it can choose among GPU types...
    pub application_sync: bool,
    /// ...and also when it cannot (one GPU type): off, as measured in docs/adaptive.md.
    pub application_sync_one_type: bool,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            p: 0.5,
            las_power: 0.0,
            las_scale_s: 3600.0,
            unallocated_cost: 1e3,
            restart_aware: true,
            growth: 2,
            min_grant: 4,
            grant_requested: true,
            history: true,
            history_min: 1,
            restart_horizon: 10.0,
            restart_by_remaining: false,
            starvation_scale_s: 0.0,
            oracle_bound: false,
            admit_weight: 1.0,
            admit_floor_s: 300.0,
            admit_incumbency: 2.0,
            ftf_power: 2.0,
            ftf_bound: 1.0,
            ftf_share: true,
            ftf_grace_restarts: 10.0,
            ftf_floor: 1.15,
            ftf_floor_bonus: 1.0,
            consolidate: true,
            make_room: true,
            application_sync: true,
            application_sync_one_type: false,
        }
    }
}

impl AdaptiveConfig {
    /// Applies `key=value` overrides, separated by `/` (`adaptive:p=-0.5/las_power=0`).
    pub fn with_overrides(mut self, overrides: &str) -> Result<Self, String> {
        for pair in overrides.split('/').filter(|s| !s.trim().is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not key=value"))?;
            let number = || {
                value
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| format!("{key}={value:?} is not a number"))
            };
            match key.trim() {
                "p" => self.p = number()?,
                "las_power" => self.las_power = number()?,
                "las_scale_s" => self.las_scale_s = number()?,
                "unallocated_cost" => self.unallocated_cost = number()?,
                "restart_aware" => self.restart_aware = number()? != 0.0,
                "growth" => self.growth = number()? as u32,
                "min_grant" => self.min_grant = number()? as u32,
                "grant_requested" => self.grant_requested = number()? != 0.0,
                "history" => self.history = number()? != 0.0,
                "history_min" => self.history_min = number()? as usize,
                "restart_horizon" => self.restart_horizon = number()?,
                "restart_by_remaining" => self.restart_by_remaining = number()? != 0.0,
                "starvation_scale_s" => self.starvation_scale_s = number()?,
                "oracle_bound" => self.oracle_bound = number()? != 0.0,
                "admit_weight" => self.admit_weight = number()?,
                "admit_floor_s" => self.admit_floor_s = number()?,
                "admit_incumbency" => self.admit_incumbency = number()?,
                "ftf_power" => self.ftf_power = number()?,
                "ftf_bound" => self.ftf_bound = number()?,
                "ftf_share" => self.ftf_share = number()? != 0.0,
                "ftf_grace_restarts" => self.ftf_grace_restarts = number()?,
                "ftf_floor" => self.ftf_floor = number()?,
                "ftf_floor_bonus" => self.ftf_floor_bonus = number()?,
                "consolidate" => self.consolidate = number()? != 0.0,
                "make_room" => self.make_room = number()? != 0.0,
                "application_sync" => self.application_sync = number()? != 0.0,
                "application_sync_one_type" => {
                    self.application_sync_one_type = number()? != 0.0;
                }
                other => return Err(format!("unknown adaptive setting {other:?}")),
            }
        }
        Ok(self)
    }
}

/// The adaptive policy.
#[derive(Debug, Default)]
pub struct Adaptive {
    config: AdaptiveConfig,
    /// Service (GPU-seconds) that finished jobs needed, per application, learned online.
    history: BTreeMap<String, Vec<f64>>,
    /// Jobs of the last round: their application and attained service, to notice completions.
    last_round: BTreeMap<JobId, (String, f64)>,
    /// Goodput of each job's configurations, reused while its model and limit are unchanged
    /// (models change only when a job's reports are refitted).
    goodputs: BTreeMap<JobId, CachedGoodputs>,
    /// Since when each job without GPUs has been waiting (for the starvation guard).
    waiting_since: BTreeMap<JobId, f64>,
    /// Each job's progress so far, in seconds alone on its requested GPUs.
    progress: BTreeMap<JobId, Progress>,
    /// Per application and GPU type, the parameters of the job that fitted the most of its
    /// sync there (`application_sync`).
    sync_donors: BTreeMap<String, BTreeMap<GpuType, SyncDonor>>,
}

/// One job's parameters fitted on one GPU type, and the evidence behind them: how many of
/// its two sync terms (within and across nodes) were fitted, then the most GPUs it ran on.
#[derive(Debug, Clone, Copy)]
struct SyncDonor {
    evidence: (u8, u32),
    perf: PerfParams,
}

/// A job's progress as its finish-time-fairness estimate needs it.
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// When it was last accounted.
    at: f64,
    /// Its restarts by then (a new one cost its restart delay of the interval since).
    restarts: u32,
    /// Seconds alone on its requested GPUs that the progress so far would have taken.
    isolated_seconds: f64,
    /// Active jobs integrated over the time since it was first seen (job-seconds).
    active_job_seconds: f64,
    /// Themis' credit for a request above the fair share: max(1, requested ÷ (GPUs ÷ n)),
    /// n = jobs active on average over its life (1 when `ftf_share` is off).
    share_slowdown: f64,
}

/// A job's (type, GPUs, goodput) triples and what they were computed from.
#[derive(Debug)]
struct CachedGoodputs {
    model: Option<JobModel>,
    limit: u32,
    raw: Vec<(usize, u32, f64)>,
    /// Its best goodput alone on its requested GPUs (the finish-time-fairness reference).
    alone: Option<f64>,
}

impl Adaptive {
    pub fn new(config: AdaptiveConfig) -> Self {
        Adaptive {
            config,
            ..Adaptive::default()
        }
    }

    /// Jobs gone since the last round finished: remember the service they needed.
    fn learn(&mut self, snapshot: &Snapshot<'_>) {
        let active: BTreeMap<JobId, (String, f64)> = snapshot
            .jobs
            .iter()
            .map(|j| (j.id, (j.application.clone(), j.attained_gpu_seconds)))
            .collect();
        for (id, (application, service)) in std::mem::take(&mut self.last_round) {
            if !active.contains_key(&id) && service > 0.0 {
                self.history.entry(application).or_default().push(service);
            }
        }
        self.last_round = active;
    }

    /// Expected remaining service of a job: from finished jobs of its application that ran
    /// longer than it has so far; with no such history, as much again as it attained (LAS).
    fn expected_remaining(&self, job: &JobView) -> f64 {
        let attained = job.attained_gpu_seconds;
        // Filled only for the `oracle_bound` experiment.
        if let Some(left) = job.oracle_remaining_seconds {
            return left * f64::from(job.requested_gpus.max(1));
        }
        // Count and summed excess of the longer finished jobs, without a per-call allocation
        // (this runs for every job every round).
        let (longer, excess) = self
            .history
            .get(&job.application)
            .into_iter()
            .flatten()
            .filter(|&&x| x > attained)
            .fold((0usize, 0.0), |(n, sum), &x| (n + 1, sum + (x - attained)));
        if self.config.history && longer >= self.config.history_min {
            excess / longer as f64
        } else {
            attained
        }
    }

    /// Seconds a job has waited without GPUs beyond a grace of the wait a restart would have
    /// to pay back (the hysteresis horizon): so a waiting job does not preempt an equal running
    /// one at once, the two do not swap every round, and jobs of unknown size (LAS fallback)
    /// time-slice no faster than a restart pays back.
    fn waited_past_grace(&self, job: &JobView, now: f64) -> f64 {
        let grace = self.config.restart_horizon * job.restart_seconds;
        self.waiting_since
            .get(&job.id)
            .map_or(0.0, |since| (now - since - grace).max(0.0))
    }

    /// The priority weight of a job: higher for less expected remaining service (when LAS is
    /// on), growing with the time it has waited without GPUs (starvation guard), and with how
    /// far it has fallen behind its time alone (finish-time-fairness weight), each when on.
    fn weight(&self, job: &JobView, now: f64) -> f64 {
        let las = if self.config.las_power == 0.0 {
            1.0
        } else {
            (1.0 + self.expected_remaining(job) / self.config.las_scale_s)
                .powf(-self.config.las_power)
        };
        let waited = self.waited_past_grace(job, now);
        let boost = if self.config.starvation_scale_s > 0.0 {
            1.0 + waited / self.config.starvation_scale_s
        } else {
            1.0
        };
        let fairness = if self.config.ftf_power == 0.0 {
            1.0
        } else {
            (self.ftf_so_far(job, now) / self.config.ftf_bound)
                .max(1.0)
                .powf(self.config.ftf_power)
        };
        las * boost * fairness
    }

    /// The admission bonus of a job (see `AdaptiveConfig::admit_weight`).
    fn admission_bonus(&self, job: &JobView, now: f64) -> f64 {
        if self.config.admit_weight == 0.0 {
            return 0.0;
        }
        let floor = self.config.admit_floor_s;
        let waited = self.waited_past_grace(job, now);
        let incumbency = if job.is_running() {
            self.config.admit_incumbency.ln()
        } else {
            0.0
        };
        let response_ratio = (waited + floor) / (self.expected_remaining(job) + floor);
        self.config.admit_weight * (response_ratio.ln() + incumbency)
    }

    /// Tracks since when each job has been without GPUs.
    fn note_waiting(&mut self, snapshot: &Snapshot<'_>) {
        let mut next = BTreeMap::new();
        for job in snapshot.jobs.iter().filter(|j| !j.is_running()) {
            let since = self
                .waiting_since
                .get(&job.id)
                .copied()
                .unwrap_or(snapshot.now);
            next.insert(job.id, since);
        }
        self.waiting_since = next;
    }

    /// Adds the interval since the last round to each job's progress, at the goodput of the
    /// allocation it held over that interval relative to its requested GPUs alone.
    fn track_progress(&mut self, snapshot: &Snapshot<'_>, types: &[TypeInfo]) {
        let mut next = BTreeMap::new();
        for job in snapshot.jobs {
            // A job first seen with service behind it (the policy was rebuilt, as after a
            // server restart) is credited that service as if on its requested GPUs.
            let mut progress = self.progress.get(&job.id).copied().unwrap_or(Progress {
                at: snapshot.now.max(job.submit_time),
                restarts: job.restarts,
                isolated_seconds: job.attained_gpu_seconds / f64::from(job.requested_gpus.max(1)),
                // ...and the jobs active now as those active over its life so far.
                active_job_seconds: (snapshot.now - job.submit_time).max(0.0)
                    * snapshot.jobs.len() as f64,
                share_slowdown: 1.0,
            });
            let restarting =
                f64::from(job.restarts.saturating_sub(progress.restarts)) * job.restart_seconds;
            let productive = (snapshot.now - progress.at - restarting).max(0.0);
            if productive > 0.0 && job.is_running() {
                let rate = relative_rate(snapshot, job, types, self.goodputs.get(&job.id));
                progress.isolated_seconds += productive * rate.unwrap_or(0.0);
            }
            progress.active_job_seconds +=
                (snapshot.now - progress.at) * snapshot.jobs.len() as f64;
            if self.config.ftf_share {
                let lived = snapshot.now - job.submit_time;
                let active = if lived > 0.0 {
                    (progress.active_job_seconds / lived).max(1.0)
                } else {
                    snapshot.jobs.len() as f64
                };
                let share = f64::from(snapshot.cluster.total_gpus()) / active;
                progress.share_slowdown = (f64::from(job.requested_gpus.max(1)) / share).max(1.0);
            }
            progress.at = snapshot.now;
            progress.restarts = job.restarts;
            next.insert(job.id, progress);
        }
        self.progress = next;
    }

    /// A job's finish-time-fairness ratio so far: wall time since submission over the time
    /// alone its progress would have taken plus one start-up (as the isolated time has). A
    /// waiting job's counts `ftf_grace_restarts` start-ups instead: as for admission, a waiting
    /// job whose ratio rose within a few restart costs would preempt an equal running one,
    /// and the two would swap faster than a restart pays back.
    fn ftf_so_far(&self, job: &JobView, now: f64) -> f64 {
        let start_ups = if job.is_running() {
            1.0
        } else {
            self.config.ftf_grace_restarts.max(1.0)
        };
        let isolated = self
            .progress
            .get(&job.id)
            .map_or(0.0, |p| p.isolated_seconds)
            + job.restart_seconds.max(1.0) * start_ups;
        let isolated = isolated * self.progress.get(&job.id).map_or(1.0, |p| p.share_slowdown);
        ((now - job.submit_time).max(0.0) / isolated).max(1.0)
    }

    /// The goodput of a job's fair share (its best alone on its request, over the share
    /// slowdown) when its finish-time-fairness ratio so far is above `ftf_floor`.
    fn fair_goodput_if_behind(&self, job: &JobView, now: f64) -> Option<f64> {
        if self.config.ftf_floor <= 0.0 || self.ftf_so_far(job, now) <= self.config.ftf_floor {
            return None;
        }
        let alone = self.goodputs.get(&job.id)?.alone?;
        let slowdown = self.progress.get(&job.id).map_or(1.0, |p| p.share_slowdown);
        Some(alone / slowdown)
    }

    /// Keeps, per application and GPU type, the parameters of the job whose sync there rests
    /// on the most evidence (the latest one on a tie, as fits improve with reports).
    fn learn_sync(&mut self, snapshot: &Snapshot<'_>) {
        for job in snapshot.jobs {
            let Some(model) = &job.model else { continue };
            for type_model in model.types.iter().filter(|t| t.multi_gpu_observed) {
                let Some(perf) = type_model.perf else {
                    continue;
                };
                let fitted =
                    u8::from(perf.intra_node_fitted()) + u8::from(perf.inter_node_fitted());
                let candidate = SyncDonor {
                    evidence: (fitted, model.max_replicas_seen),
                    perf,
                };
                // Keyed without allocating in the common case (the entry exists).
                let donors = match self.sync_donors.get_mut(&job.application) {
                    Some(donors) => donors,
                    None => self.sync_donors.entry(job.application.clone()).or_default(),
                };
                match donors.get_mut(&type_model.gpu_type) {
                    Some(donor) if donor.evidence > candidate.evidence => {}
                    Some(donor) => *donor = candidate,
                    None => {
                        donors.insert(type_model.gpu_type.clone(), candidate);
                    }
                }
            }
        }
    }

    /// The job's model with the sync terms it has not fitted on each GPU type taken from its
    /// application's donor there, or `None` when it takes nothing (it keeps its own). Its
    /// first allocation then knows how its application scales: one-GPU profiles alone price
    /// every gang as if syncing were free, which on a cluster of several types sends a new
    /// job to many GPUs of a slow type, across nodes, until its own reports move it (a
    /// restart) to fewer, faster ones. With one type the guess only sets its size, which its
    /// first reports correct.
    fn model_with_application_sync(&self, job: &JobView, types: &[TypeInfo]) -> Option<JobModel> {
        if !self.config.application_sync {
            return None;
        }
        let model = job.model.as_ref()?;
        let donors = self.sync_donors.get(&job.application)?;
        let choices_of_type = types.iter().filter(|t| job.allows(&t.gpu_type)).count();
        if choices_of_type < 2 && !self.config.application_sync_one_type {
            return None;
        }
        let mut borrowed: Option<JobModel> = None;
        for type_model in &model.types {
            let Some(donor) = donors.get(&type_model.gpu_type) else {
                continue;
            };
            // Copy the model only when the donor has a term to give.
            let (intra, inter) = match type_model.perf {
                Some(own) => own.sync_terms_to_borrow(&donor.perf),
                None => (false, false),
            };
            if !intra && !inter {
                continue;
            }
            let copy = borrowed.get_or_insert_with(|| model.clone());
            copy.borrow_sync(&type_model.gpu_type, &donor.perf);
        }
        borrowed
    }

    /// Makes sure the goodputs of a job's configurations within its growth limit are those
    /// of its current model (they are recomputed only when the model or limit changed).
    fn refresh_goodputs(&mut self, job: &JobView, types: &[TypeInfo], usable: &mut UsableGpus) {
        let seen = job.model.as_ref().map_or(0, |m| m.max_replicas_seen);
        let requested = if self.config.grant_requested {
            job.requested_gpus
        } else {
            0
        };
        let limit = job
            .max_gpus
            .min(
                (self.config.growth * seen)
                    .max(self.config.min_grant)
                    .max(requested)
                    .max(1),
            )
            .max(job.min_gpus);
        let fresh = self
            .goodputs
            .get(&job.id)
            .is_some_and(|c| c.limit == limit && c.model == job.model);
        if !fresh {
            let borrowed = self.model_with_application_sync(job, types);
            let model = borrowed.as_ref().or(job.model.as_ref());
            let (raw, alone) = configurations(job, model, types, usable, limit);
            self.goodputs.insert(
                job.id,
                CachedGoodputs {
                    model: job.model.clone(),
                    limit,
                    raw,
                    alone,
                },
            );
        }
    }

    /// What a changed configuration of `job` is worth relative to its goodput there: its
    /// restart cost discounted Pollux's way, `(age − restarts·delay)/(age + delay)`, times the
    /// hysteresis `1 − delay/horizon` (1 when restarts are not priced).
    fn restart_factor(&self, job: &JobView, now: f64) -> f64 {
        let age = (now - job.submit_time).max(0.0);
        let delay = job.restart_seconds;
        if !self.config.restart_aware || age < delay {
            1.0
        } else {
            let horizon = if self.config.restart_by_remaining {
                // Seconds the job still needs at its current size: a restart that costs a
                // large part of them is not worth a small speedup.
                let held = job.allocation.total_gpus().max(1);
                let remaining = self.expected_remaining(job) / f64::from(held);
                remaining.min(self.config.restart_horizon * delay)
            } else {
                self.config.restart_horizon * delay
            };
            let amortized = if horizon > 0.0 {
                (1.0 - delay / horizon).max(0.0)
            } else {
                1.0
            };
            amortized * (age - f64::from(job.restarts) * delay).max(0.0) / (age + delay)
        }
    }

    /// A job's options: each allowed (type, count) within its growth limit (goodputs from
    /// `refresh_goodputs`), costed by its weighted goodput speedup over one GPU of its slowest
    /// type, discounted by restarts.
    fn options(&self, snapshot: &Snapshot<'_>, job: &JobView, types: &[TypeInfo]) -> JobOptions {
        let current_type = job.allocation.gpu_type(snapshot.cluster);
        let current_gpus = job.allocation.total_gpus();
        let raw = &self.goodputs[&job.id].raw;
        let reference = raw
            .iter()
            .map(|r| r.2)
            .filter(|&g| g > 0.0)
            .fold(f64::INFINITY, f64::min);
        let restart_factor = self.restart_factor(job, snapshot.now);
        let weight = self.weight(job, snapshot.now);
        let bonus = self.admission_bonus(job, snapshot.now);
        let fair_goodput = self.fair_goodput_if_behind(job, snapshot.now);
        let choices = raw
            .iter()
            .map(|&(t, gpus, goodput)| {
                let speedup = if reference.is_finite() {
                    goodput / reference
                } else {
                    1.0
                };
                let same = current_type == Some(&types[t].gpu_type) && current_gpus == gpus;
                let value = if same || current_gpus == 0 {
                    speedup
                } else {
                    speedup * restart_factor
                };
                // p < 0: minimize Σ w·v^p (fairness); p > 0: maximize Σ w·v^p (efficiency).
                let cost = if value > 0.0 {
                    let sign = if self.config.p > 0.0 { -1.0 } else { 1.0 };
                    // Within rounding of the fair rate counts as reaching it.
                    let behind = if fair_goodput.is_some_and(|fair| goodput >= fair * (1.0 - 1e-9))
                    {
                        self.config.ftf_floor_bonus
                    } else {
                        0.0
                    };
                    sign * weight * value.powf(self.config.p) - bonus - behind
                } else {
                    self.config.unallocated_cost
                };
                Choice {
                    gpu_type: t,
                    gpus,
                    cost: cost.min(self.config.unallocated_cost),
                }
            })
            .collect();
        JobOptions { choices }
    }

    /// Jobs that keep their configuration keep their GPUs, so the holes left by jobs that
    /// shrink or finish scatter later jobs over more nodes than they need, and each stays
    /// there, syncing across nodes, for as long as its configuration is unchanged (on
    /// `pollux-t4x64` at load 1.0, a third of GPU time). After the round's changes are
    /// placed, each job on more nodes than it needs (largest first) moves onto fewer: into
    /// GPUs left free (and its own), or onto one node after another job's GPUs there move to
    /// another node (`make_room`; jobs younger than `restart_horizon` restarts stay put). A
    /// move is made only if the job's model says the faster synchronization is worth the
    /// restarts it costs, as a changed configuration must (`restart_factor`, once per job
    /// that would not have restarted anyway).
    fn consolidate(
        &self,
        snapshot: &Snapshot<'_>,
        types: &[TypeInfo],
        plan: &mut Plan,
        free: &mut FreeResources,
    ) {
        let mut sync_ratios: Vec<Option<Option<f64>>> = vec![None; types.len()];
        let type_of = |job: &JobView| -> Option<usize> {
            let gpu_type = plan.allocations.get(&job.id)?.gpu_type(snapshot.cluster)?;
            types.iter().position(|info| &info.gpu_type == gpu_type)
        };
        let mut scattered: Vec<(usize, usize)> = snapshot
            .jobs
            .iter()
            .enumerate()
            .filter_map(|(j, job)| {
                let t = type_of(job)?;
                let allocation = &plan.allocations[&job.id];
                let needed = allocation.total_gpus().div_ceil(types[t].node_size.max(1));
                (allocation.num_nodes() > needed as usize).then_some((j, t))
            })
            .collect();
        scattered.sort_by_key(|&(j, _)| {
            let job = &snapshot.jobs[j];
            (
                std::cmp::Reverse(plan.allocations[&job.id].total_gpus()),
                job.id,
            )
        });
        for (j, t) in scattered {
            let job = &snapshot.jobs[j];
            let Some(model) = job.model.as_ref() else {
                continue;
            };
            let before = plan.allocations[&job.id].clone();
            let gpus = before.total_gpus();
            let gpu_type = &types[t].gpu_type;
            // Until the job has synced within one node there, its model prices that as free;
            // what other jobs measured on the same machines says what it costs.
            let imputed;
            let model = if model
                .perf_on(gpu_type)
                .is_some_and(|p| p.intra_node_fitted())
            {
                model
            } else {
                let ratio = *sync_ratios[t]
                    .get_or_insert_with(|| intra_to_inter_sync(snapshot.jobs, gpu_type));
                let Some(ratio) = ratio else {
                    continue;
                };
                imputed = model.with_intra_node_sync(gpu_type, ratio);
                &imputed
            };
            let goodput = |nodes: usize| model_goodput(model, gpu_type, nodes as u32, gpus);
            // A job whose configuration changed this round restarts anyway.
            let discount = |other: &JobView| {
                let unchanged = plan.allocations.get(&other.id) == Some(&other.allocation);
                if other.is_running() && unchanged {
                    self.restart_factor(other, snapshot.now)
                } else {
                    1.0
                }
            };
            let worth =
                |nodes: usize, factor: f64| match (goodput(nodes), goodput(before.num_nodes())) {
                    (Some(after), Some(now)) => after * factor > now,
                    _ => false,
                };
            free.give_back(job, &before);
            let direct = place_on(snapshot.cluster, free, job, &types[t].nodes, gpus)
                .filter(|c| c.num_nodes() < before.num_nodes())
                .filter(|c| worth(c.num_nodes(), discount(job)));
            if let Some(allocation) = direct {
                free.take(job, &allocation);
                plan.allocate(job.id, allocation);
                continue;
            }
            let room = (self.config.make_room && gpus <= types[t].node_size)
                .then(|| {
                    // A restart costs a young (likely short) job a large part of its life.
                    let settled = |other: &JobView| {
                        snapshot.now - other.submit_time
                            >= self.config.restart_horizon * other.restart_seconds
                    };
                    make_room(snapshot, plan, free, &types[t].nodes, job, gpus, settled)
                })
                .flatten()
                .filter(|room| {
                    let other = &snapshot.jobs[room.moved];
                    worth(1, discount(job) * discount(other))
                });
            match room {
                Some(room) => {
                    let other = &snapshot.jobs[room.moved];
                    let old = plan.allocations[&other.id].clone();
                    let moved = room.moved_allocation(&old);
                    free.give_back(other, &old);
                    free.take(other, &moved);
                    plan.allocate(other.id, moved);
                    let packed = Allocation::new(vec![(NodeId(room.node as u32), gpus)]);
                    free.take(job, &packed);
                    plan.allocate(job.id, packed);
                }
                None => {
                    free.take(job, &before);
                    plan.allocate(job.id, before);
                }
            }
        }
    }
}

/// The median, over jobs whose models have synced both within one node and across nodes on
/// `gpu_type`, of intra- over inter-node sync time (at the smallest gang, α_r/α_n); `None`
/// when no job has. The network is the machines', not the job's: a model that has only
/// seen one side borrows the others' ratio. At most 64 jobs are asked, so a round on a
/// large cluster stays linear.
fn intra_to_inter_sync(jobs: &[JobView], gpu_type: &GpuType) -> Option<f64> {
    let mut ratios: Vec<f64> = jobs
        .iter()
        .filter_map(|job| job.model.as_ref()?.perf_on(gpu_type))
        .filter(|p| p.intra_node_fitted() && p.inter_node_fitted())
        .map(|p| p.alpha_r / p.alpha_n)
        .take(64)
        .collect();
    if ratios.is_empty() {
        return None;
    }
    ratios.sort_by(f64::total_cmp);
    Some(ratios[ratios.len() / 2])
}

/// One node a scattered job could have to itself after another job's GPUs there (all of a
/// job on that node alone, or one node's part of a job spread over several) move to another
/// node: which job (an index into the snapshot's jobs), how many GPUs, from and to where.
struct Room {
    node: usize,
    moved: usize,
    gpus: u32,
    to: usize,
}

impl Room {
    /// The moved job's allocation after the move: its part on `node` goes to `to`.
    fn moved_allocation(&self, before: &Allocation) -> Allocation {
        let mut parts: Vec<(NodeId, u32)> = before
            .parts
            .iter()
            .copied()
            .filter(|&(n, _)| n.index() != self.node)
            .collect();
        match parts.iter_mut().find(|(n, _)| n.index() == self.to) {
            Some((_, held)) => *held += self.gpus,
            None => parts.push((NodeId(self.to as u32), self.gpus)),
        }
        Allocation::new(parts)
    }
}

/// The cheapest `Room` for `job` (whose own GPUs are already in `free`) among `nodes` with
/// some free GPUs: the part moved is smaller than `job` and fits on another node; a job
/// that restarts this round anyway costs nothing to move, others cost their GPUs times
/// their restart delay, and only `settled` ones may move.
fn make_room(
    snapshot: &Snapshot<'_>,
    plan: &Plan,
    free: &mut FreeResources,
    nodes: &[usize],
    job: &JobView,
    gpus: u32,
    settled: impl Fn(&JobView) -> bool,
) -> Option<Room> {
    let unchanged =
        |other: &JobView, placed: &Allocation| other.is_running() && *placed == other.allocation;
    let mut parts_on: BTreeMap<usize, Vec<(usize, u32)>> = BTreeMap::new();
    for (k, other) in snapshot.jobs.iter().enumerate() {
        let Some(placed) = plan.allocations.get(&other.id) else {
            continue;
        };
        if other.id == job.id || (unchanged(other, placed) && !settled(other)) {
            continue;
        }
        for &(node, held) in placed.parts.iter().filter(|&&(_, held)| held < gpus) {
            parts_on.entry(node.index()).or_default().push((k, held));
        }
    }
    let mut best: Option<(f64, Room)> = None;
    let partly_free: Vec<usize> = nodes
        .iter()
        .copied()
        .filter(|&n| free.usable_gpus(job, n) > 0 && parts_on.contains_key(&n))
        .collect();
    for node in partly_free {
        for &(k, held) in parts_on.get(&node).into_iter().flatten() {
            let other = &snapshot.jobs[k];
            let placed = &plan.allocations[&other.id];
            let part = Allocation::new(vec![(NodeId(node as u32), held)]);
            free.give_back(other, &part);
            let fits_here = free.usable_gpus(job, node) >= gpus;
            let to = nodes
                .iter()
                .copied()
                .filter(|&m| m != node && free.usable_gpus(other, m) >= held)
                .min_by_key(|&m| (free.usable_gpus(other, m), m));
            free.take(other, &part);
            let (true, Some(to)) = (fits_here, to) else {
                continue;
            };
            let cost = if unchanged(other, placed) {
                f64::from(placed.total_gpus()) * other.restart_seconds
            } else {
                0.0
            };
            if best.as_ref().is_none_or(|(c, _)| cost < *c) {
                let room = Room {
                    node,
                    moved: k,
                    gpus: held,
                    to,
                };
                best = Some((cost, room));
            }
        }
    }
    best.map(|(_, room)| room)
}

/// A job's best goodput on `gpus` GPUs of a type over `nodes` nodes, from its fitted model. A
/// model without per-type entries (one GPU kind) speaks for every type.
fn model_goodput(model: &JobModel, gpu_type: &GpuType, nodes: u32, gpus: u32) -> Option<f64> {
    model
        .best_on(gpu_type, nodes, gpus)
        .or_else(|| model.types.is_empty().then(|| model.best(nodes, gpus))?)
        .map(|c| c.goodput)
}

/// A job's goodput on its current allocation over its best goodput alone on its requested
/// GPUs (None when it holds none or either is unknown), from its priced configurations where
/// the allocation is one of them. Without a model, GPUs count linearly.
fn relative_rate(
    snapshot: &Snapshot<'_>,
    job: &JobView,
    types: &[TypeInfo],
    cached: Option<&CachedGoodputs>,
) -> Option<f64> {
    let held = job.allocation.total_gpus();
    let current_type = job.allocation.gpu_type(snapshot.cluster)?;
    let Some(model) = job.model.as_ref() else {
        return Some(f64::from(held) / f64::from(job.requested_gpus.max(1)));
    };
    let cached = cached?;
    let priced = types
        .iter()
        .position(|t| &t.gpu_type == current_type)
        .and_then(|t| cached.raw.iter().find(|r| r.0 == t && r.1 == held))
        .map(|r| r.2);
    let now = match priced {
        Some(goodput) => goodput,
        None => model_goodput(model, current_type, job.allocation.num_nodes() as u32, held)?,
    };
    let alone = cached.alone?;
    (alone > 0.0).then(|| now / alone)
}

/// Every allowed (type index, GPU count, goodput) of a job up to `limit` GPUs: powers of two
/// within a node, then whole nodes (Sia's configurations), and its best goodput alone on its
/// requested GPUs (the finish-time-fairness reference), priced with `model` (the job's own,
/// or with sync terms borrowed from its application). Without a model, GPUs count linearly.
fn configurations(
    job: &JobView,
    model: Option<&JobModel>,
    types: &[TypeInfo],
    usable: &mut UsableGpus,
    limit: u32,
) -> (Vec<(usize, u32, f64)>, Option<f64>) {
    let mut raw = Vec::new();
    let mut memo = GoodputMemo::default();
    let mut alone: Option<f64> = None;
    let requested = job.requested_gpus.max(1);
    for (t, info) in types.iter().enumerate() {
        if !job.allows(&info.gpu_type) {
            continue;
        }
        let counts = allowed_counts(job, t, info, limit, usable);
        // The requested GPUs, packed, then every configuration.
        let mut configs = vec![(requested.div_ceil(info.node_size.max(1)), requested)];
        configs.extend(counts.iter().map(|&g| (g.div_ceil(info.node_size), g)));
        let mut goodputs: Vec<Option<f64>> = match model {
            Some(model) if !model.types.is_empty() => {
                model.goodputs_on(&info.gpu_type, &configs, &mut memo)
            }
            Some(model) => configs
                .iter()
                .map(|&(nodes, g)| model_goodput(model, &info.gpu_type, nodes, g))
                .collect(),
            None => configs.iter().map(|&(_, g)| Some(f64::from(g))).collect(),
        };
        if let Some(on_request) = goodputs.remove(0) {
            alone = Some(alone.map_or(on_request, |a: f64| a.max(on_request)));
        }
        let goodputs = goodputs.into_iter().map(|g| g.unwrap_or(0.0));
        raw.extend(
            counts
                .into_iter()
                .zip(goodputs)
                .map(|(g, goodput)| (t, g, goodput)),
        );
    }
    (raw, alone)
}

impl Policy for Adaptive {
    fn name(&self) -> &'static str {
        "adaptive"
    }

    fn adapts_batch_size(&self) -> bool {
        true
    }

    fn needs_oracle(&self) -> bool {
        self.config.oracle_bound
    }

    fn profiles_each_gpu_type(&self) -> bool {
        true
    }

    fn decide(&mut self, snapshot: &Snapshot<'_>, _rng: &mut dyn RngCore) -> Plan {
        self.learn(snapshot);
        self.note_waiting(snapshot);
        if self.config.application_sync {
            self.learn_sync(snapshot);
        }
        let active: std::collections::BTreeSet<JobId> =
            snapshot.jobs.iter().map(|j| j.id).collect();
        self.goodputs.retain(|id, _| active.contains(id));
        let types = type_infos(snapshot.cluster);
        let mut usable = UsableGpus::new(snapshot.cluster);
        for job in snapshot.jobs {
            self.refresh_goodputs(job, &types, &mut usable);
        }
        if self.config.ftf_power != 0.0 || self.config.ftf_floor > 0.0 {
            self.track_progress(snapshot, &types);
        }
        let problem = SiaProblem {
            jobs: snapshot
                .jobs
                .iter()
                .map(|job| self.options(snapshot, job, &types))
                .collect(),
            capacity: types.iter().map(|t| t.capacity).collect(),
            lambda_unallocated: self.config.unallocated_cost,
        };
        let warm = current_choices(snapshot, &types, &problem);
        // One move per pass finds slightly better plans, but its passes are quadratic in the
        // number of jobs: batched passes from a few hundred jobs on (the simulated 64-GPU
        // clusters stay below this; 500 jobs on 2,048 GPUs are far above).
        let effort = SolverEffort {
            iterations: 40,
            patience: 4,
            batched_above: BATCHED_SOLVER_ABOVE_OPTIONS,
        };
        let assignment = solve_with(&problem, Some(warm), effort);
        let chosen = chosen_configurations(&problem, &assignment);
        let (mut plan, mut free) = place(snapshot, &types, &chosen);
        if self.config.consolidate {
            self.consolidate(snapshot, &types, &mut plan, &mut free);
        }
        let reason = "every GPU it could use is taken";
        fill_idle_gpus(snapshot, &types, &problem, &mut plan, &mut free, reason);
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adaptsched_core::perf::{BatchLimits, GradStats, TypeModel};
    use adaptsched_core::{Cluster, GpuType, JobCategory, Node, validate_plan};
    use rand::{Rng, SeedableRng};

    fn cluster(nodes: u32) -> Cluster {
        Cluster {
            name: "c".into(),
            nodes: (0..nodes)
                .map(|i| Node {
                    name: format!("n{i}"),
                    gpu_type: GpuType::new(if i % 2 == 0 { "t4" } else { "a100" }),
                    gpus: 4,
                    cpu_cores: 0,
                    memory_gb: 0.0,
                    network_gbps: 0.0,
                })
                .collect(),
        }
    }

    /// A job whose fitted model scales with `alpha_n` (sync cost): small = scales well.
    fn job(id: u32, sync_cost: f64, seen: u32) -> JobView {
        let perf = PerfParams {
            alpha_c: 0.05,
            beta_c: 0.0005,
            alpha_n: sync_cost,
            beta_n: sync_cost / 10.0,
            alpha_r: sync_cost / 2.0,
            beta_r: sync_cost / 20.0,
            gamma: 1.5,
        };
        JobView {
            id: JobId(id),
            name: format!("j{id}"),
            application: "app".into(),
            category: JobCategory::Adaptive,
            submit_time: 0.0,
            requested_gpus: 1,
            requested_batch_size: None,
            min_gpus: 1,
            max_gpus: 16,
            allowed_gpu_types: Vec::new(),
            cpus_per_gpu: 0.0,
            memory_gb_per_gpu: 0.0,
            attained_gpu_seconds: 0.0,
            allocation: Allocation::default(),
            restarts: 0,
            oracle_remaining_seconds: None,
            model: Some(JobModel {
                perf: Some(perf),
                types: Vec::new(),
                grad: Some(GradStats {
                    sqr: 1.0,
                    var: 200.0,
                }),
                limits: BatchLimits {
                    init_batch: 64,
                    max_batch: 4096,
                    min_local: 16,
                    max_local: 256,
                },
                fixed_batch: None,
                max_replicas_seen: seen,
            }),
            restart_seconds: 30.0,
        }
    }

    fn decide(policy: &mut Adaptive, cluster: &Cluster, jobs: &[JobView], now: f64) -> Plan {
        let snapshot = Snapshot { now, cluster, jobs };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let plan = policy.decide(&snapshot, &mut rng);
        validate_plan(cluster, jobs, &plan).expect("valid plan");
        plan
    }

    #[test]
    fn overrides_set_knobs_and_name_what_is_wrong() {
        let config = AdaptiveConfig::default()
            .with_overrides("p=-1/las_power=0.5/min_grant=2")
            .expect("valid");
        assert_eq!(
            (config.p, config.las_power, config.min_grant),
            (-1.0, 0.5, 2)
        );
        let unknown = AdaptiveConfig::default().with_overrides("q=1").unwrap_err();
        assert!(unknown.contains("\"q\""), "{unknown}");
        let bad = AdaptiveConfig::default().with_overrides("p=x").unwrap_err();
        assert!(bad.contains("p=\"x\""), "{bad}");
    }

    #[test]
    fn every_job_gets_a_gpu_before_any_job_gets_a_second() {
        let cluster = cluster(2);
        let jobs: Vec<JobView> = (0..8).map(|i| job(i, 0.01, 8)).collect();
        let plan = decide(&mut Adaptive::default(), &cluster, &jobs, 0.0);
        assert_eq!(plan.allocations.len(), 8, "{plan:?}");
        assert!(plan.allocations.values().all(|a| a.total_gpus() == 1));
    }

    #[test]
    fn gpus_go_where_they_buy_the_most_goodput() {
        let cluster = cluster(4);
        let jobs = vec![job(0, 0.001, 16), job(1, 2.0, 16)];
        let plan = decide(&mut Adaptive::default(), &cluster, &jobs, 0.0);
        let gpus = |id: u32| {
            plan.allocations
                .get(&JobId(id))
                .map_or(0, |a| a.total_gpus())
        };
        assert!(
            gpus(0) > gpus(1),
            "scalable {} vs sync-bound {}",
            gpus(0),
            gpus(1)
        );
    }

    #[test]
    fn re_deciding_on_its_own_plan_changes_nothing() {
        let cluster = cluster(4);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut jobs: Vec<JobView> = (0..6)
            .map(|i| job(i, rng.random_range(0.001..1.0), 4))
            .collect();
        let mut policy = Adaptive::default();
        // The jobs arrive at 0; a minute on the first plan later, the plan stands.
        let first = decide(&mut policy, &cluster, &jobs, 0.0);
        for j in &mut jobs {
            j.allocation = first.allocations.get(&j.id).cloned().unwrap_or_default();
            j.attained_gpu_seconds = 60.0 * f64::from(j.allocation.total_gpus());
        }
        let second = decide(&mut policy, &cluster, &jobs, 60.0);
        assert_eq!(first.allocations, second.allocations);
    }

    fn one_gpu_cluster() -> Cluster {
        Cluster {
            name: "one".into(),
            nodes: vec![Node {
                name: "n".into(),
                gpu_type: GpuType::new("t4"),
                gpus: 1,
                cpu_cores: 0,
                memory_gb: 0.0,
                network_gbps: 0.0,
            }],
        }
    }

    #[test]
    fn a_waiting_job_preempts_an_equal_running_one_only_after_a_wait() {
        let cluster = one_gpu_cluster();
        let mut running = job(0, 0.01, 1);
        running.allocation = Allocation::new(vec![(adaptsched_core::NodeId(0), 1)]);
        running.attained_gpu_seconds = 60.0;
        let waiting = job(1, 0.01, 1);
        let jobs = vec![running, waiting];
        let mut policy = Adaptive::default();
        // No history: expected remaining = attained (60 s and 0 s). The runner's ratio is
        // 2 × 300/360; the waiter's (waited − 300 s grace + 300)/300 passes it after 500 s.
        for now in [0.0, 60.0, 150.0, 450.0] {
            let plan = decide(&mut policy, &cluster, &jobs, now);
            assert!(
                plan.allocations.contains_key(&JobId(0)),
                "preempted at {now}"
            );
        }
        let late = decide(&mut policy, &cluster, &jobs, 1000.0);
        assert!(
            late.allocations.contains_key(&JobId(1)),
            "starved: {late:?}"
        );
    }

    #[test]
    fn when_jobs_outnumber_gpus_the_longest_expected_job_waits() {
        let cluster = one_gpu_cluster();
        let mut policy = Adaptive::default();
        policy.history.insert("long".into(), vec![100_000.0]);
        policy.history.insert("short".into(), vec![100.0]);
        let mut long = job(0, 0.01, 1);
        long.application = "long".into();
        long.allocation = Allocation::new(vec![(adaptsched_core::NodeId(0), 1)]);
        long.attained_gpu_seconds = 600.0;
        let mut short = job(1, 0.01, 1);
        short.application = "short".into();
        let jobs = vec![long, short];
        let plan = decide(&mut policy, &cluster, &jobs, 0.0);
        assert!(plan.allocations.contains_key(&JobId(1)), "{plan:?}");
        // Off, the newcomer waits behind the incumbent.
        let mut off = Adaptive::new(AdaptiveConfig {
            admit_weight: 0.0,
            ..AdaptiveConfig::default()
        });
        off.history = policy.history.clone();
        let plan = decide(&mut off, &cluster, &jobs, 0.0);
        assert!(plan.allocations.contains_key(&JobId(0)), "{plan:?}");
    }

    #[test]
    fn finished_jobs_teach_the_remaining_service_of_their_application() {
        let cluster = cluster(2);
        let mut policy = Adaptive::new(AdaptiveConfig {
            history_min: 1,
            ..AdaptiveConfig::default()
        });
        let mut done = job(0, 0.01, 1);
        done.attained_gpu_seconds = 1000.0;
        decide(&mut policy, &cluster, std::slice::from_ref(&done), 0.0);
        let mut fresh = job(1, 0.01, 1);
        fresh.attained_gpu_seconds = 400.0;
        // Job 0 is gone: it finished after 1000 GPU-seconds.
        decide(&mut policy, &cluster, std::slice::from_ref(&fresh), 60.0);
        assert_eq!(policy.expected_remaining(&fresh), 600.0);
        let mut other = fresh.clone();
        other.application = "unseen".into();
        assert_eq!(policy.expected_remaining(&other), 400.0, "LAS fallback");
    }

    /// Jobs without fitted models (GPUs count linearly), one per (requested GPUs, node,
    /// GPUs held there; 0: waiting).
    fn jobs_without_models(specs: &[(u32, u32, u32)]) -> Vec<JobView> {
        specs
            .iter()
            .zip(0..)
            .map(|(&(requested, node, held), i)| JobView {
                model: None,
                requested_gpus: requested,
                allocation: if held == 0 {
                    Allocation::default()
                } else {
                    Allocation::new(vec![(adaptsched_core::NodeId(node), held)])
                },
                ..job(i, 0.01, 4)
            })
            .collect()
    }

    #[test]
    fn with_ftf_share_a_request_above_the_fair_share_is_credited_as_themis_does() {
        // 8 GPUs, 3 jobs: a fair share is 8/3 GPUs. Job 0 asked for 4 and holds 2; jobs 1
        // and 2 asked for 1 and hold 1. Alone on 4 GPUs, job 0 would count 1.5 times slower
        // (4 over 8/3); on 2 it runs half as fast as on 4: ratio 2 / 1.5.
        let cluster = cluster(2);
        let jobs = jobs_without_models(&[(4, 0, 2), (1, 1, 1), (1, 1, 1)]);
        let types = type_infos(&cluster);
        let ratios = |ftf_share: bool| {
            let mut policy = Adaptive::new(AdaptiveConfig {
                ftf_power: 1.0,
                ftf_share,
                ftf_grace_restarts: 1.0,
                ..AdaptiveConfig::default()
            });
            for now in [0.0, 1500.0, 3000.0] {
                let snapshot = Snapshot {
                    now,
                    cluster: &cluster,
                    jobs: &jobs,
                };
                policy.track_progress(&snapshot, &types);
            }
            jobs.iter()
                .map(|j| policy.ftf_so_far(j, 3000.0))
                .collect::<Vec<_>>()
        };
        let plain = ratios(false);
        let themis = ratios(true);
        assert!((plain[0] - 2.0).abs() < 0.05, "{plain:?}");
        assert!((themis[0] - 2.0 / 1.5).abs() < 0.05, "{themis:?}");
        for j in 1..3 {
            assert!((plain[j] - 1.0).abs() < 0.02 && (themis[j] - plain[j]).abs() < 1e-12);
        }
    }

    #[test]
    fn fewer_gpus_than_requested_raise_the_finish_time_fairness_estimate() {
        let cluster = cluster(2);
        // Without a model GPUs count linearly: half the request, half the progress.
        let mut jobs = jobs_without_models(&[(4, 0, 4), (4, 1, 2), (4, 0, 0)]);
        let mut policy = Adaptive::new(AdaptiveConfig {
            ftf_power: 1.0,
            ftf_share: false,
            ftf_grace_restarts: 1.0,
            ..AdaptiveConfig::default()
        });
        let types = type_infos(&cluster);
        let at = |now: f64, jobs: &[JobView], policy: &mut Adaptive| {
            let snapshot = Snapshot {
                now,
                cluster: &cluster,
                jobs,
            };
            policy.track_progress(&snapshot, &types);
            jobs.iter()
                .map(|j| policy.ftf_so_far(j, now))
                .collect::<Vec<_>>()
        };
        at(0.0, &jobs, &mut policy);
        let ratios = at(3000.0, &jobs, &mut policy);
        assert!((ratios[0] - 1.0).abs() < 0.02, "on its request: {ratios:?}");
        assert!((ratios[1] - 2.0).abs() < 0.05, "on half: {ratios:?}");
        assert!(ratios[2] > 50.0, "waiting: {ratios:?}");
        let weights: Vec<f64> = jobs.iter().map(|j| policy.weight(j, 3000.0)).collect();
        assert!(
            weights[0] < weights[1] && weights[1] < weights[2],
            "{weights:?}"
        );

        // A restart since the last round costs its delay of the interval's progress.
        jobs[0].restarts = 1;
        let before = policy.progress[&JobId(0)].isolated_seconds;
        at(3060.0, &jobs, &mut policy);
        let gained = policy.progress[&JobId(0)].isolated_seconds - before;
        assert!((gained - 30.0).abs() < 1e-9, "gained {gained}");

        // Switched off, the weight ignores the ratio.
        let plain = Adaptive::new(AdaptiveConfig {
            ftf_power: 0.0,
            ..AdaptiveConfig::default()
        });
        assert_eq!(
            plain.weight(&jobs[1], 3000.0),
            plain.weight(&jobs[2], 3000.0)
        );
    }

    #[test]
    fn a_job_fallen_behind_its_fair_share_is_priced_to_catch_up() {
        // 8 GPUs, two jobs that asked for 4 (a fair share each); without models GPUs count
        // linearly. Job 0 has held 2 for an hour (ratio 2 so far), job 1 its 4.
        let cluster = t4_nodes(2);
        let jobs = jobs_without_models(&[(4, 0, 2), (4, 1, 4)]);
        let types = type_infos(&cluster);
        let costs_after_an_hour = |ftf_floor: f64| {
            let mut policy = Adaptive::new(AdaptiveConfig {
                ftf_floor,
                ..AdaptiveConfig::default()
            });
            let mut usable = UsableGpus::new(&cluster);
            for now in [0.0, 1800.0, 3600.0] {
                let snapshot = Snapshot {
                    now,
                    cluster: &cluster,
                    jobs: &jobs,
                };
                for job in &jobs {
                    policy.refresh_goodputs(job, &types, &mut usable);
                }
                policy.track_progress(&snapshot, &types);
            }
            let snapshot = Snapshot {
                now: 3600.0,
                cluster: &cluster,
                jobs: &jobs,
            };
            let ratio = policy.ftf_so_far(&jobs[0], 3600.0);
            let costs: Vec<Vec<(u32, f64)>> = jobs
                .iter()
                .map(|job| {
                    let options = policy.options(&snapshot, job, &types);
                    options.choices.iter().map(|c| (c.gpus, c.cost)).collect()
                })
                .collect();
            (ratio, costs)
        };
        let (ratio, plain) = costs_after_an_hour(0.0);
        assert!(ratio > 1.9, "job 0 is behind: {ratio}");
        let (_, floored) = costs_after_an_hour(AdaptiveConfig::default().ftf_floor);
        // Job 0: only the option that runs it at its fair rate (4 GPUs) gains the bonus.
        for (&(gpus, before), &(_, after)) in plain[0].iter().zip(&floored[0]) {
            let gained = before - after;
            let expected = if gpus >= 4 { 1.0 } else { 0.0 };
            assert!(
                (gained - expected).abs() < 1e-9,
                "{gpus} GPUs gained {gained}"
            );
        }
        assert!(plain[0].iter().any(|&(gpus, _)| gpus < 4));
        // Job 1 is not behind: nothing changes.
        assert_eq!(plain[1], floored[1]);
    }

    /// `consolidate` on jobs kept where they are: the plan that results.
    fn consolidated(cluster: &Cluster, jobs: &[JobView]) -> Plan {
        let snapshot = Snapshot {
            now: 3600.0,
            cluster,
            jobs,
        };
        let types = type_infos(cluster);
        let mut free = FreeResources::of(cluster);
        let mut plan = Plan::default();
        for job in jobs {
            free.take(job, &job.allocation);
            plan.allocate(job.id, job.allocation.clone());
        }
        Adaptive::default().consolidate(&snapshot, &types, &mut plan, &mut free);
        validate_plan(cluster, jobs, &plan).expect("valid plan");
        plan
    }

    fn on(parts: &[(u32, u32)]) -> Allocation {
        Allocation::new(parts.iter().map(|&(n, g)| (NodeId(n), g)).collect())
    }

    fn t4_nodes(nodes: u32) -> Cluster {
        let mut cluster = cluster(nodes);
        for node in &mut cluster.nodes {
            node.gpu_type = GpuType::new("t4");
        }
        cluster
    }

    #[test]
    fn a_job_split_over_nodes_moves_onto_one_with_room() {
        let cluster = t4_nodes(2);
        let mut split = job(0, 1.0, 2);
        split.allocation = on(&[(0, 1), (1, 1)]);
        let mut other = job(1, 1.0, 2);
        other.allocation = on(&[(1, 2)]);
        let plan = consolidated(&cluster, &[split, other.clone()]);
        // The fullest node that fits, so node 0 stays whole for a larger job.
        assert_eq!(plan.allocations[&JobId(0)], on(&[(1, 2)]));
        assert_eq!(plan.allocations[&JobId(1)], other.allocation);
    }

    #[test]
    fn a_smaller_job_moves_to_make_room_only_when_the_sync_saved_pays_for_both_restarts() {
        // Node 0: 2 of the split job's GPUs, a 1-GPU job and 1 free; node 1: the other 2 and a
        // 2-GPU job; node 2: a 2-GPU job and 2 free. No node has 4 free for it.
        let layout = |sync_cost: f64| {
            let mut jobs = vec![
                job(0, sync_cost, 4),
                job(1, sync_cost, 1),
                job(2, sync_cost, 2),
                job(3, sync_cost, 2),
            ];
            jobs[0].allocation = on(&[(0, 2), (1, 2)]);
            jobs[1].allocation = on(&[(0, 1)]);
            jobs[2].allocation = on(&[(1, 2)]);
            jobs[3].allocation = on(&[(2, 2)]);
            jobs
        };
        let cluster = t4_nodes(3);
        let jobs = layout(1.0);
        let plan = consolidated(&cluster, &jobs);
        // Moving the 1-GPU job costs one restarted GPU, the 2-GPU job two.
        assert_eq!(plan.allocations[&JobId(0)], on(&[(0, 4)]));
        let moved = &plan.allocations[&JobId(1)];
        assert_eq!(moved.total_gpus(), 1);
        assert_ne!(moved.parts[0].0, NodeId(0));
        for kept in &jobs[2..] {
            assert_eq!(plan.allocations[&kept.id], kept.allocation);
        }

        // Syncing across nodes costs next to nothing: nobody restarts for it.
        let jobs = layout(0.0001);
        let plan = consolidated(&cluster, &jobs);
        for job in &jobs {
            assert_eq!(plan.allocations[&job.id], job.allocation);
        }
    }

    #[test]
    fn a_part_of_a_job_spread_over_nodes_moves_to_make_room() {
        // The 4-GPU job and an 8-GPU job share nodes 0 and 1 half and half; node 2 holds the
        // rest of the 8-GPU job. Moving the large job's part on node 0 to node 1 packs both.
        let cluster = t4_nodes(3);
        let mut split = job(0, 1.0, 4);
        split.allocation = on(&[(0, 2), (1, 2)]);
        let mut large = job(1, 1.0, 8);
        large.allocation = on(&[(2, 4), (0, 2), (1, 2)]);
        let plan = consolidated(&cluster, &[split, large]);
        assert_eq!(plan.allocations[&JobId(0)], on(&[(0, 4)]));
        assert_eq!(plan.allocations[&JobId(1)], on(&[(2, 4), (1, 4)]));
    }

    #[test]
    fn a_job_never_seen_syncing_within_a_node_moves_on_what_other_jobs_measured() {
        let cluster = t4_nodes(2);
        let set_sync = |job: &mut JobView, intra: f64, inter: f64| {
            let perf = job
                .model
                .as_mut()
                .and_then(|m| m.perf.as_mut())
                .expect("model");
            (perf.alpha_r, perf.beta_r, perf.alpha_n, perf.beta_n) =
                (intra, intra / 10.0, inter, inter / 10.0);
        };
        // Its model has only seen it across nodes: within one is at the prior's floor (free).
        let with_neighbour = |neighbour_intra: Option<f64>| {
            let mut split = job(0, 1.0, 2);
            set_sync(&mut split, 1e-8, 1.0);
            split.allocation = on(&[(0, 1), (1, 1)]);
            let mut other = job(1, 1.0, 2);
            other.allocation = on(&[(1, 2)]);
            match neighbour_intra {
                Some(intra) => set_sync(&mut other, intra, 1.0),
                None => set_sync(&mut other, 1e-8, 1.0),
            }
            consolidated(&cluster, &[split, other])
        };
        let moved = |plan: &Plan| plan.allocations[&JobId(0)].num_nodes() == 1;
        assert!(
            moved(&with_neighbour(Some(0.05))),
            "others sync 20x faster within a node"
        );
        assert!(
            !moved(&with_neighbour(Some(0.95))),
            "others sync about as fast"
        );
        assert!(
            !moved(&with_neighbour(None)),
            "nobody has synced within a node"
        );
    }

    /// A job with per-type models: `synced` types carry fitted sync terms (`sync` seconds
    /// across nodes, a tenth of it within one), the others only a one-GPU fit (sync terms at
    /// the fit's floor, so every gang looks free of sync). a100 computes twice as fast as t4.
    fn typed_job(id: u32, application: &str, synced: &[&str], sync: f64) -> JobView {
        let mut job = job(id, sync, 1);
        job.application = application.into();
        job.requested_gpus = 8;
        let model = job.model.as_mut().expect("model");
        let types: Vec<TypeModel> = ["t4", "a100"]
            .iter()
            .map(|&name| {
                let fitted = synced.contains(&name);
                let floor = 1e-8;
                let speed = if name == "a100" { 2.0 } else { 1.0 };
                TypeModel {
                    gpu_type: GpuType::new(name),
                    perf: Some(PerfParams {
                        alpha_c: 0.05 / speed,
                        beta_c: 0.0005 / speed,
                        alpha_n: if fitted { sync } else { floor },
                        beta_n: if fitted { sync / 10.0 } else { floor },
                        alpha_r: if fitted { sync / 10.0 } else { floor },
                        beta_r: if fitted { sync / 100.0 } else { floor },
                        gamma: 1.5,
                    }),
                    multi_gpu_observed: fitted,
                    limits: model.limits,
                }
            })
            .collect();
        model.perf = types[0].perf;
        model.types = types;
        model.max_replicas_seen = if synced.is_empty() { 1 } else { 8 };
        job
    }

    #[test]
    fn a_new_job_is_priced_on_how_its_application_synchronizes() {
        // Two t4 and two a100 nodes of 4 GPUs. A running job (t4 only) has measured that its
        // application syncs slowly across t4 nodes; a new job of it has one-GPU fits only,
        // and both a100 nodes are free.
        let first_plan = |cluster: &Cluster, donor_application: &str, overrides: &str| {
            let mut donor = typed_job(0, donor_application, &["t4"], 0.5);
            donor.allocation = on(&[(0, 2), (2, 2)]);
            donor.submit_time = -3600.0;
            donor.allowed_gpu_types = vec![GpuType::new("t4")];
            let new = typed_job(1, "app", &[], 0.5);
            let config = AdaptiveConfig::default()
                .with_overrides(overrides)
                .expect("valid");
            let plan = decide(&mut Adaptive::new(config), cluster, &[donor, new], 0.0);
            plan.allocations[&JobId(1)].num_nodes()
        };
        let mixed = cluster(4);
        assert_eq!(
            first_plan(&mixed, "app", ""),
            1,
            "syncs as its application does"
        );
        assert!(
            first_plan(&mixed, "app", "application_sync=0") > 1,
            "sync looks free"
        );
        assert!(
            first_plan(&mixed, "other", "") > 1,
            "another application's sync says nothing"
        );
        // One GPU type: the first allocation only guesses a size, and stays optimistic...
        let t4 = t4_nodes(4);
        assert!(first_plan(&t4, "app", "") > 1);
        // ...unless asked to borrow there too.
        assert_eq!(first_plan(&t4, "app", "application_sync_one_type=1"), 1);
    }
}
