//! `fifo`: first come, first served, non-preemptive; the head of the queue blocks the rest.

use crate::placement::{FreeResources, PlacementRule, keep_running, place_gang};
use adaptsched_core::{Plan, Policy, Snapshot};
use rand::RngCore;

/// Runs jobs in submission order with their requested GPUs; a running job is never stopped.
#[derive(Debug, Default)]
pub struct Fifo;

impl Policy for Fifo {
    fn name(&self) -> &'static str {
        "fifo"
    }

    fn acts_when_nothing_waits(&self) -> bool {
        false
    }

    fn decide(&mut self, snapshot: &Snapshot<'_>, _rng: &mut dyn RngCore) -> Plan {
        let mut plan = Plan::default();
        let mut free = FreeResources::of(snapshot.cluster);
        keep_running(&mut free, &mut plan, snapshot.jobs);
        let mut blocked_by: Option<&str> = None;
        for job in snapshot.jobs.iter().filter(|j| !j.is_running()) {
            if let Some(head) = blocked_by {
                plan.wait(
                    job.id,
                    format!("queued behind {head} (first come, first served)"),
                );
                continue;
            }
            match place_gang(&free, job, job.requested_gpus, PlacementRule::BestFit) {
                Some(allocation) => {
                    free.take(job, &allocation);
                    plan.allocate(job.id, allocation);
                }
                None => {
                    plan.wait(
                        job.id,
                        format!(
                            "needs {} GPUs, {} free",
                            job.requested_gpus,
                            free.total_free_gpus()
                        ),
                    );
                    blocked_by = Some(&job.name);
                }
            }
        }
        plan
    }
}
