//! Reconcile: the pure diff between the plan's desired state and what actually runs, as a
//! list of actions (start, stop). Level-triggered: it looks only at the two states, never at
//! what happened before, so running it twice on the same states yields nothing the second
//! time once the first actions are applied.
//!
//! This node's devices are numbered `0..capacity`. A resize or re-batch is a stop now and a
//! start with the new allocation in a later round, once the job has checkpointed and exited
//! (its devices are not free before that).

use adaptsched_core::plan::BatchDecision;
use adaptsched_store::DurableJobId;
use std::collections::{BTreeMap, BTreeSet};

/// What the plan wants for one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredJob {
    pub devices: u32,
    pub batch: Option<BatchDecision>,
}

/// What runs now for one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActualJob {
    /// Device indices it holds (until its process has exited, even while stopping).
    pub devices: Vec<u32>,
    pub batch: Option<BatchDecision>,
    /// A stop was asked for; the job still holds its devices until it exits.
    pub stopping: Option<StopReason>,
}

/// Why a running job is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The plan has no place for it (preempted), or it was cancelled or finished elsewhere.
    NotPlanned,
    /// The plan gives it a different number of devices.
    Resize { from: u32, to: u32 },
    /// Same devices, different batch decision: the job restarts with the new batch.
    Rebatch,
    /// The server is shutting down.
    Shutdown,
}

impl StopReason {
    pub fn describe(self) -> String {
        match self {
            StopReason::NotPlanned => "preempted: the plan gives it no devices".to_string(),
            StopReason::Resize { from, to } => format!("resizing from {from} to {to} devices"),
            StopReason::Rebatch => "restarting with a new batch size".to_string(),
            StopReason::Shutdown => "server shutting down".to_string(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Stop {
        job: DurableJobId,
        reason: StopReason,
    },
    Start {
        job: DurableJobId,
        devices: Vec<u32>,
        batch: Option<BatchDecision>,
    },
}

/// The actions, plus jobs the plan places whose devices are still held by stopping jobs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub actions: Vec<Action>,
    pub deferred: Vec<DurableJobId>,
}

/// Diffs `desired` against `actual` on a node with `capacity` devices. Stops come first;
/// starts take the lowest free device indices, counting devices of stopping jobs as taken.
pub fn reconcile(
    capacity: u32,
    desired: &BTreeMap<DurableJobId, DesiredJob>,
    actual: &BTreeMap<DurableJobId, ActualJob>,
) -> Reconciled {
    let mut result = Reconciled::default();
    for (&job, running) in actual {
        if running.stopping.is_some() {
            continue;
        }
        let held = running.devices.len() as u32;
        let reason = match desired.get(&job) {
            None => Some(StopReason::NotPlanned),
            Some(want) if want.devices == 0 => Some(StopReason::NotPlanned),
            Some(want) if want.devices != held => Some(StopReason::Resize {
                from: held,
                to: want.devices,
            }),
            Some(want) if want.batch.is_some() && want.batch != running.batch => {
                Some(StopReason::Rebatch)
            }
            Some(_) => None,
        };
        if let Some(reason) = reason {
            result.actions.push(Action::Stop { job, reason });
        }
    }
    let taken: BTreeSet<u32> = actual
        .values()
        .flat_map(|running| running.devices.iter().copied())
        .collect();
    let mut free: Vec<u32> = (0..capacity).filter(|d| !taken.contains(d)).collect();
    // A pool that shrank below what runs (Ray nodes left) leaves held indices beyond
    // `capacity`: never hand out more than the capacity minus what is held.
    free.truncate(capacity.saturating_sub(taken.len() as u32) as usize);
    for (&job, want) in desired {
        if want.devices == 0 || actual.contains_key(&job) {
            continue;
        }
        if want.devices as usize > free.len() {
            result.deferred.push(job);
            continue;
        }
        let devices: Vec<u32> = free.drain(..want.devices as usize).collect();
        result.actions.push(Action::Start {
            job,
            devices,
            batch: want.batch,
        });
    }
    result
}

/// `actual` after `actions` were carried out (starts succeeded, stops requested): what the
/// loop records, and what the idempotence tests check.
pub fn apply(actual: &mut BTreeMap<DurableJobId, ActualJob>, actions: &[Action]) {
    for action in actions {
        match action {
            Action::Stop { job, reason } => {
                if let Some(running) = actual.get_mut(job) {
                    running.stopping = Some(*reason);
                }
            }
            Action::Start {
                job,
                devices,
                batch,
            } => {
                actual.insert(
                    *job,
                    ActualJob {
                        devices: devices.clone(),
                        batch: *batch,
                        stopping: None,
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> DurableJobId {
        DurableJobId(n)
    }

    fn want(devices: u32) -> DesiredJob {
        DesiredJob {
            devices,
            batch: None,
        }
    }

    fn running(devices: &[u32]) -> ActualJob {
        ActualJob {
            devices: devices.to_vec(),
            batch: None,
            stopping: None,
        }
    }

    fn batch(local: u32) -> Option<BatchDecision> {
        Some(BatchDecision {
            local_batch_size: local,
            accumulation_steps: 0,
        })
    }

    #[test]
    fn starts_take_the_lowest_free_devices() {
        let desired = BTreeMap::from([(id(1), want(2)), (id(2), want(1))]);
        let actual = BTreeMap::from([(id(3), running(&[0]))]);
        let desired = {
            let mut d = desired;
            d.insert(id(3), want(1));
            d
        };
        let result = reconcile(4, &desired, &actual);
        assert_eq!(
            result.actions,
            vec![
                Action::Start {
                    job: id(1),
                    devices: vec![1, 2],
                    batch: None
                },
                Action::Start {
                    job: id(2),
                    devices: vec![3],
                    batch: None
                },
            ]
        );
        assert!(result.deferred.is_empty());
    }

    #[test]
    fn a_shrunken_pool_starts_nothing_beyond_its_capacity() {
        // Four devices, job 1 on the upper two; the pool then shrinks to two.
        let actual = BTreeMap::from([(id(1), running(&[2, 3]))]);
        let desired = BTreeMap::from([(id(1), want(2)), (id(2), want(1))]);
        let result = reconcile(2, &desired, &actual);
        assert!(result.actions.is_empty(), "{result:?}");
        assert_eq!(result.deferred, vec![id(2)]);
        // Once it has exited, what is left is free again: job 1 restarts on it.
        let result = reconcile(2, &desired, &BTreeMap::new());
        assert_eq!(
            result.actions,
            vec![Action::Start {
                job: id(1),
                devices: vec![0, 1],
                batch: None
            }]
        );
        assert_eq!(result.deferred, vec![id(2)]);
    }

    #[test]
    fn jobs_not_in_the_plan_stop_and_keep_their_devices_until_they_exit() {
        let desired = BTreeMap::from([(id(2), want(2))]);
        let mut actual = BTreeMap::from([(id(1), running(&[0, 1]))]);
        let first = reconcile(2, &desired, &actual);
        assert_eq!(
            first.actions,
            vec![Action::Stop {
                job: id(1),
                reason: StopReason::NotPlanned
            }]
        );
        assert_eq!(first.deferred, vec![id(2)]);
        apply(&mut actual, &first.actions);
        let second = reconcile(2, &desired, &actual);
        assert!(second.actions.is_empty(), "{second:?}");
        assert_eq!(second.deferred, vec![id(2)]);
        // Once it exits, the waiting job starts on the freed devices.
        actual.remove(&id(1));
        let third = reconcile(2, &desired, &actual);
        assert_eq!(
            third.actions,
            vec![Action::Start {
                job: id(2),
                devices: vec![0, 1],
                batch: None
            }]
        );
    }

    #[test]
    fn a_different_size_is_a_resize_and_a_new_batch_a_rebatch() {
        let desired = BTreeMap::from([
            (id(1), want(2)),
            (
                id(2),
                DesiredJob {
                    devices: 1,
                    batch: batch(64),
                },
            ),
            (
                id(3),
                DesiredJob {
                    devices: 1,
                    batch: batch(32),
                },
            ),
        ]);
        let actual = BTreeMap::from([
            (id(1), running(&[0])),
            (
                id(2),
                ActualJob {
                    batch: batch(32),
                    ..running(&[1])
                },
            ),
            (
                id(3),
                ActualJob {
                    batch: batch(32),
                    ..running(&[2])
                },
            ),
        ]);
        let result = reconcile(4, &desired, &actual);
        assert_eq!(
            result.actions,
            vec![
                Action::Stop {
                    job: id(1),
                    reason: StopReason::Resize { from: 1, to: 2 }
                },
                Action::Stop {
                    job: id(2),
                    reason: StopReason::Rebatch
                },
            ]
        );
    }

    #[test]
    fn reconciling_twice_does_nothing_the_second_time() {
        let desired = BTreeMap::from([
            (id(1), want(1)),
            (id(2), want(2)),
            (id(4), want(3)),
            (id(5), want(0)),
        ]);
        let mut actual = BTreeMap::from([(id(1), running(&[3])), (id(3), running(&[0]))]);
        let first = reconcile(4, &desired, &actual);
        assert!(!first.actions.is_empty());
        apply(&mut actual, &first.actions);
        let second = reconcile(4, &desired, &actual);
        assert!(second.actions.is_empty(), "{second:?}");
        assert_eq!(second.deferred, first.deferred);
    }

    #[test]
    fn no_device_is_ever_given_to_two_jobs() {
        // Every combination of up to 4 running jobs and desired sizes on a 4-device node.
        for mask in 0u32..16 {
            for sizes in 0u32..81 {
                let actual: BTreeMap<_, _> = (0..4u32)
                    .filter(|d| mask & (1 << d) != 0)
                    .map(|d| (id(u64::from(d)), running(&[d])))
                    .collect();
                let desired: BTreeMap<_, _> = (0..4u32)
                    .map(|j| (id(10 + u64::from(j)), want((sizes / 3u32.pow(j)) % 3)))
                    .collect();
                let mut after = actual.clone();
                apply(&mut after, &reconcile(4, &desired, &actual).actions);
                let mut seen = BTreeSet::new();
                for job in after.values() {
                    for &device in &job.devices {
                        assert!(device < 4);
                        assert!(seen.insert(device), "device {device} twice: {after:?}");
                    }
                }
            }
        }
    }
}
