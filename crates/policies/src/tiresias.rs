//! `tiresias`: two-dimensional least-attained-service with discretized priority queues
//! (Gu et al., NSDI'19), configured by default as the Pollux artifact's simulator runs it.

use crate::placement::{FreeResources, PlacementRule, keep_running, place_gang};
use adaptsched_core::{JobId, Plan, Policy, Snapshot, Time};
use rand::RngCore;
use std::collections::{BTreeMap, BTreeSet};

/// Tiresias settings. The default is the Pollux artifact's: two queues split at 16 GPU-hours,
/// no promotion, gangs taken from the nodes with the most free GPUs first.
#[derive(Clone, Debug, PartialEq)]
pub struct TiresiasConfig {
    /// Attained-service thresholds in GPU-seconds between consecutive queues (ascending).
    pub queue_thresholds_gpu_seconds: Vec<f64>,
    /// The paper's starvation rule: a demoted job waiting longer than this multiple of its
    /// run time since the last promotion goes back to the top queue. `None` = never.
    pub promote_after_multiple: Option<f64>,
    pub placement: PlacementRule,
}

impl Default for TiresiasConfig {
    fn default() -> Self {
        TiresiasConfig {
            queue_thresholds_gpu_seconds: vec![16.0 * 3600.0],
            promote_after_multiple: None,
            placement: PlacementRule::MostFreeFirst,
        }
    }
}

impl TiresiasConfig {
    /// The paper's configuration: promotion after waiting twice the executed time.
    pub fn paper() -> Self {
        TiresiasConfig {
            promote_after_multiple: Some(2.0),
            ..TiresiasConfig::default()
        }
    }
}

#[derive(Clone, Debug, Default)]
struct JobRecord {
    queue: usize,
    /// Seconds run since the last promotion (drives demotion).
    executed_seconds: f64,
    /// Seconds waited since it last ran (drives promotion).
    pending_seconds: f64,
}

/// Discretized 2D-LAS: FIFO within a queue, higher queues first, preemptive.
#[derive(Debug)]
pub struct Tiresias {
    name: &'static str,
    config: TiresiasConfig,
    records: BTreeMap<JobId, JobRecord>,
    /// Queue membership in arrival (or demotion/promotion) order.
    queues: Vec<Vec<JobId>>,
    last_round: Option<Time>,
}

impl Tiresias {
    /// A Tiresias policy registered as `name`.
    pub fn new(name: &'static str, config: TiresiasConfig) -> Self {
        let queues = vec![Vec::new(); config.queue_thresholds_gpu_seconds.len() + 1];
        Tiresias {
            name,
            config,
            records: BTreeMap::new(),
            queues,
            last_round: None,
        }
    }

    fn move_to_queue(&mut self, job: JobId, queue: usize) {
        for q in &mut self.queues {
            q.retain(|&id| id != job);
        }
        self.queues[queue].push(job);
        if let Some(record) = self.records.get_mut(&job) {
            record.queue = queue;
        }
    }

    /// Forgets finished jobs, admits new ones, and applies demotion and promotion.
    fn update_queues(&mut self, snapshot: &Snapshot<'_>) {
        let active: BTreeSet<JobId> = snapshot.jobs.iter().map(|j| j.id).collect();
        self.records.retain(|id, _| active.contains(id));
        for queue in &mut self.queues {
            queue.retain(|id| active.contains(id));
        }
        let elapsed = self.last_round.map_or(0.0, |t| (snapshot.now - t).max(0.0));
        let thresholds = self.config.queue_thresholds_gpu_seconds.clone();
        let promote_after = self.config.promote_after_multiple;
        for job in snapshot.jobs {
            let record = match self.records.entry(job.id) {
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(JobRecord::default());
                    self.queues[0].push(job.id);
                    continue;
                }
                std::collections::btree_map::Entry::Occupied(slot) => slot.into_mut(),
            };
            if job.is_running() {
                record.executed_seconds += elapsed;
                record.pending_seconds = 0.0;
                let gpu_seconds = record.executed_seconds * f64::from(job.requested_gpus);
                let target = thresholds.iter().filter(|&&t| gpu_seconds >= t).count();
                if target > record.queue {
                    self.move_to_queue(job.id, target);
                }
            } else if record.executed_seconds > 0.0 {
                record.pending_seconds += elapsed;
                let starving = promote_after.is_some_and(|k| {
                    record.queue > 0 && record.pending_seconds >= k * record.executed_seconds
                });
                if starving {
                    record.executed_seconds = 0.0;
                    record.pending_seconds = 0.0;
                    self.move_to_queue(job.id, 0);
                }
            }
        }
        self.last_round = Some(snapshot.now);
    }
}

impl Policy for Tiresias {
    fn name(&self) -> &'static str {
        self.name
    }

    fn acts_when_nothing_waits(&self) -> bool {
        false
    }

    fn decide(&mut self, snapshot: &Snapshot<'_>, _rng: &mut dyn RngCore) -> Plan {
        self.update_queues(snapshot);
        let views: BTreeMap<JobId, &adaptsched_core::JobView> =
            snapshot.jobs.iter().map(|j| (j.id, j)).collect();
        let priority_order: Vec<JobId> = self.queues.iter().flatten().copied().collect();
        // Admit by GPU count in priority order; a job that does not fit is skipped, not blocking.
        let mut budget = snapshot.cluster.total_gpus();
        let mut admitted = Vec::new();
        let mut plan = Plan::default();
        for &id in &priority_order {
            let job = views[&id];
            if job.requested_gpus <= budget {
                budget -= job.requested_gpus;
                admitted.push(job);
            } else {
                let queue = self.records[&id].queue;
                plan.wait(
                    id,
                    format!("queue {queue}: higher-priority jobs hold the GPUs"),
                );
            }
        }
        let mut free = FreeResources::of(snapshot.cluster);
        keep_running(&mut free, &mut plan, admitted.iter().copied());
        for job in admitted.iter().filter(|j| !j.is_running()) {
            match place_gang(&free, job, job.requested_gpus, self.config.placement) {
                Some(allocation) => {
                    free.take(job, &allocation);
                    plan.allocate(job.id, allocation);
                }
                None => plan.wait(job.id, "no allowed GPUs free with enough CPU and memory"),
            }
        }
        plan
    }
}
