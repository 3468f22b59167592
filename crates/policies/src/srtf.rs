//! `srtf`: shortest remaining time first with an oracle: a lower bound, not a real scheduler.

use crate::placement::{FreeResources, PlacementRule, keep_running, place_gang};
use adaptsched_core::{JobView, Plan, Policy, Snapshot};
use rand::RngCore;

/// Preemptive shortest-remaining-time-first on the oracle's remaining run time; jobs that do
/// not fit are skipped (backfilled past) rather than blocking the queue.
#[derive(Debug, Default)]
pub struct Srtf;

fn remaining(job: &JobView) -> f64 {
    job.oracle_remaining_seconds.unwrap_or(f64::INFINITY)
}

impl Policy for Srtf {
    fn name(&self) -> &'static str {
        "srtf"
    }

    fn needs_oracle(&self) -> bool {
        true
    }

    fn acts_when_nothing_waits(&self) -> bool {
        false
    }

    fn decide(&mut self, snapshot: &Snapshot<'_>, _rng: &mut dyn RngCore) -> Plan {
        let mut order: Vec<&JobView> = snapshot.jobs.iter().collect();
        order.sort_by(|a, b| {
            remaining(a)
                .total_cmp(&remaining(b))
                .then(a.submit_time.total_cmp(&b.submit_time))
                .then(a.id.cmp(&b.id))
        });
        // Choose which jobs run by GPU count first, then keep the chosen ones that already run
        // where they are, so that a job is moved only when it must be.
        let mut budget = snapshot.cluster.total_gpus();
        let mut chosen = Vec::new();
        for job in order {
            if job.requested_gpus <= budget {
                budget -= job.requested_gpus;
                chosen.push(job);
            }
        }
        let mut plan = Plan::default();
        let mut free = FreeResources::of(snapshot.cluster);
        keep_running(&mut free, &mut plan, chosen.iter().copied());
        for job in chosen.iter().filter(|j| !j.is_running()) {
            match place_gang(&free, job, job.requested_gpus, PlacementRule::BestFit) {
                Some(allocation) => {
                    free.take(job, &allocation);
                    plan.allocate(job.id, allocation);
                }
                None => plan.wait(job.id, "GPUs fragmented or of the wrong type"),
            }
        }
        for job in snapshot.jobs {
            if !plan.allocations.contains_key(&job.id) && !plan.waiting.contains_key(&job.id) {
                plan.wait(
                    job.id,
                    "shorter jobs hold the GPUs (shortest remaining time first)",
                );
            }
        }
        plan
    }
}
