//! Property tests: for random heterogeneous clusters and random active jobs, every plan any
//! registered policy returns passes `validate_plan`, over several consecutive rounds in which
//! each plan is fed back as the jobs' allocations, jobs finish and new ones arrive.
//!
//! Beyond validity: a job that could never fit is never placed; non-preemptive policies keep
//! every running job where it is; feeding a plan back unchanged at the same `now` is a fixed
//! point for every policy; `fifo` and `proportional` leave no queued job waiting that fits in
//! what the plan leaves free (for `fifo`, the head of the queue); a job alone on an empty
//! cluster that fits is placed by every policy.

use adaptsched_core::{
    Allocation, Cluster, GpuType, JobCategory, JobId, JobView, Node, Plan, Snapshot, Time,
    validate_plan,
};
use adaptsched_policies::{POLICY_NAMES, build_policy};
use proptest::prelude::*;
use proptest::sample::{Index, select, subsequence};
use proptest::test_runner::TestCaseError;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;

const TYPES: [&str; 3] = ["t4", "a100", "v100"];
const NON_PREEMPTIVE: [&str; 2] = ["fifo", "proportional"];
/// Policies that run every job at exactly its requested GPU count (the others are elastic and
/// are held to the gang bounds by `validate_plan` only).
const FIXED_SIZE: [&str; 5] = ["fifo", "srtf", "tiresias", "tiresias-paper", "proportional"];
/// Policies with an open bug against `a_lone_job_that_fits_is_placed`, skipped there; see the
/// minimal test named after it. Add a name only with such a test.
const KNOWN_LONE_JOB_BUGS: [&str; 0] = [];
/// Policies with an open bug against the fixed-point half of `plans_are_stable`, skipped there
/// (validity is still checked). Add a name only with a minimal test of the bug.
/// `pollux` and `sia` re-optimize a non-convex objective every round (as the artifacts' GA and
/// MILP do); a replay may trade one job's GPUs for another's when the restart penalty changes
/// the optimum. `adaptive` shares Sia's solver and shows the same on nodes of mixed sizes
/// within one GPU type (a replay moved a job from 4 to 1 GPU of a 5-GPU node), and its
/// starvation guard may hand a GPU back to a job that has waited past its grace; on uniform
/// nodes without waiting jobs its own test `re_deciding_on_its_own_plan_changes_nothing`
/// holds it to a fixed point.
/// Their plans are still validated.
const KNOWN_UNSTABLE: [&str; 3] = ["pollux", "sia", "adaptive"];
const ROUNDS: usize = 5;
/// The first round's `now`; initial jobs were submitted at 0, 10, 20, ... s.
const HISTORY_S: Time = 20_000.0;

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

fn node_gen() -> impl Strategy<Value = (Index, u32, u32, f64)> {
    (
        any::<Index>(),
        1u32..=8,
        prop_oneof![
            2 => Just(0u32),
            1 => 1u32..=16,
            1 => select(vec![8u32, 16, 32, 64]),
        ],
        prop_oneof![
            2 => Just(0.0f64),
            1 => 4.0f64..256.0,
            1 => select(vec![32.0f64, 64.0, 128.0]),
        ],
    )
}

/// 1–12 nodes of 1–3 GPU types, 1–8 GPUs each; some nodes bound CPU cores or memory.
fn cluster_gen() -> impl Strategy<Value = Cluster> {
    (
        subsequence(TYPES.to_vec(), 1..=3),
        prop::collection::vec(node_gen(), 1..=12),
    )
        .prop_map(|(types, nodes)| Cluster {
            name: "random".to_string(),
            nodes: nodes
                .into_iter()
                .enumerate()
                .map(|(i, (slot, gpus, cpu_cores, memory_gb))| Node {
                    name: format!("n{i}"),
                    gpu_type: GpuType::new(types[slot.index(types.len())]),
                    gpus,
                    cpu_cores,
                    memory_gb,
                    network_gbps: 10.0,
                })
                .collect(),
        })
}

/// One job's random parameters (its id, submit time and allocation come from the driver).
#[derive(Clone, Debug)]
struct JobGen {
    gpus: u32,
    /// Elastic (`adaptive`, gang bounds 1..=gpus) rather than rigid (gpus..=gpus).
    elastic: bool,
    allowed: Vec<&'static str>,
    cpus_per_gpu: f64,
    memory_gb_per_gpu: f64,
    oracle_remaining: f64,
    /// Share of `age × gpus` GPU-seconds it already held (it ran, then was preempted).
    attained_share: f64,
}

fn job_gen() -> impl Strategy<Value = JobGen> {
    (
        (
            prop_oneof![6 => 1u32..=10, 1 => 11u32..=100],
            prop::bool::weighted(0.25),
        ),
        prop_oneof![3 => Just(Vec::new()), 2 => subsequence(TYPES.to_vec(), 1..=2)],
        prop_oneof![
            3 => Just(0.0f64),
            1 => select(vec![0.5f64, 1.0, 2.0, 4.0, 8.0]),
            1 => 0.1f64..6.0,
        ],
        prop_oneof![
            3 => Just(0.0f64),
            1 => select(vec![4.0f64, 8.0, 16.0, 32.0]),
            1 => 0.5f64..48.0,
        ],
        1.0f64..50_000.0,
        prop_oneof![1 => Just(0.0f64), 2 => 0.0f64..=1.0],
    )
        .prop_map(
            |(
                (gpus, elastic),
                allowed,
                cpus_per_gpu,
                memory_gb_per_gpu,
                oracle_remaining,
                attained_share,
            )| JobGen {
                gpus,
                elastic,
                allowed,
                cpus_per_gpu,
                memory_gb_per_gpu,
                oracle_remaining,
                attained_share,
            },
        )
}

/// What happens between two rounds: time passes, maybe a job finishes, maybe one arrives.
#[derive(Clone, Debug)]
struct Step {
    dt: f64,
    finish: Option<Index>,
    arrive: Option<JobGen>,
}

fn step_gen() -> impl Strategy<Value = Step> {
    (
        prop_oneof![1 => Just(0.0f64), 4 => 1.0f64..30_000.0],
        prop::option::weighted(0.4, any::<Index>()),
        prop::option::weighted(0.5, job_gen()),
    )
        .prop_map(|(dt, finish, arrive)| Step { dt, finish, arrive })
}

/// A queued job submitted at `submit_time`, seen at `now`; its attained service is consistent
/// with its age (at most `age × gpus`).
fn view(id: u32, submit_time: Time, now: Time, g: &JobGen) -> JobView {
    let age = (now - submit_time).max(0.0);
    JobView {
        id: JobId(id),
        name: format!("job{id}"),
        application: "trace".to_string(),
        category: if g.elastic {
            JobCategory::Adaptive
        } else {
            JobCategory::Rigid
        },
        submit_time,
        requested_gpus: g.gpus,
        requested_batch_size: None,
        min_gpus: if g.elastic { 1 } else { g.gpus },
        max_gpus: g.gpus,
        allowed_gpu_types: g.allowed.iter().map(|t| GpuType::new(t)).collect(),
        cpus_per_gpu: g.cpus_per_gpu,
        memory_gb_per_gpu: g.memory_gb_per_gpu,
        attained_gpu_seconds: g.attained_share * age * f64::from(g.gpus),
        allocation: Allocation::default(),
        restarts: 0,
        oracle_remaining_seconds: Some(g.oracle_remaining),
        model: None,
        restart_seconds: 30.0,
    }
}

// ---------------------------------------------------------------------------------------------
// An independent fit oracle, with `validate_plan`'s semantics
// ---------------------------------------------------------------------------------------------

/// Resources left on each node after a set of allocations.
struct Leftover {
    gpus: Vec<i64>,
    cpus: Vec<f64>,
    memory: Vec<f64>,
}

impl Leftover {
    fn empty(cluster: &Cluster) -> Self {
        Leftover {
            gpus: cluster.nodes.iter().map(|n| i64::from(n.gpus)).collect(),
            cpus: cluster
                .nodes
                .iter()
                .map(|n| f64::from(n.cpu_cores))
                .collect(),
            memory: cluster.nodes.iter().map(|n| n.memory_gb).collect(),
        }
    }

    fn after(cluster: &Cluster, jobs: &[JobView], plan: &Plan) -> Self {
        let mut left = Leftover::empty(cluster);
        for job in jobs {
            let Some(alloc) = plan.allocations.get(&job.id) else {
                continue;
            };
            for &(node, gpus) in &alloc.parts {
                let i = node.index();
                left.gpus[i] -= i64::from(gpus);
                left.cpus[i] -= job.cpus_per_gpu * f64::from(gpus);
                left.memory[i] -= job.memory_gb_per_gpu * f64::from(gpus);
            }
        }
        left
    }

    /// GPUs of node `i` that `job` could take: k GPUs fit if k·need ≤ left + 1e-9 for CPU and
    /// memory on nodes that bound them (0 = unbounded), as `validate_plan` checks.
    fn usable(&self, cluster: &Cluster, i: usize, job: &JobView) -> i64 {
        let node = &cluster.nodes[i];
        let mut usable = self.gpus[i].max(0);
        let mut bound = |need: f64, left: f64| {
            if need > 0.0 {
                let k = ((left + 1e-9) / need).floor().max(0.0);
                usable = usable.min(k.min(1e6) as i64);
            }
        };
        if node.cpu_cores > 0 {
            bound(job.cpus_per_gpu, self.cpus[i]);
        }
        if node.memory_gb > 0.0 {
            bound(job.memory_gb_per_gpu, self.memory[i]);
        }
        usable
    }

    /// Whether `job`'s requested gang fits on nodes of one allowed GPU type (spread as needed).
    fn fits(&self, cluster: &Cluster, job: &JobView) -> bool {
        self.fits_gpus(cluster, job, job.requested_gpus)
    }

    /// Whether `gpus` GPUs for `job` fit on nodes of one allowed GPU type.
    fn fits_gpus(&self, cluster: &Cluster, job: &JobView, gpus: u32) -> bool {
        let types: BTreeSet<&GpuType> = cluster.nodes.iter().map(|n| &n.gpu_type).collect();
        types.into_iter().filter(|t| job.allows(t)).any(|t| {
            let usable: i64 = (0..cluster.nodes.len())
                .filter(|&i| cluster.nodes[i].gpu_type == *t)
                .map(|i| self.usable(cluster, i, job))
                .sum();
            usable >= i64::from(gpus)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The driver: consecutive rounds with each plan fed back
// ---------------------------------------------------------------------------------------------

/// Which round a plan came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Round {
    /// A regular round, after time passed and jobs came and went.
    Regular(usize),
    /// The previous plan fed back unchanged at the same `now`.
    Replay(usize),
}

/// Sets every job's allocation to what the plan gives it (empty when absent).
fn apply(jobs: &mut [JobView], plan: &Plan) {
    for job in jobs {
        let desired = plan
            .allocations
            .get(&job.id)
            .filter(|a| !a.is_empty())
            .cloned()
            .unwrap_or_default();
        if job.is_running() && !desired.is_empty() && !desired.same_resources(&job.allocation) {
            job.restarts += 1;
        }
        job.allocation = desired;
    }
}

/// Runs policy `name` for `ROUNDS` rounds (each followed by a replay of its plan at the same
/// `now`) and hands every (round, snapshot jobs, plan) to `check`.
fn drive(
    name: &str,
    cluster: &Cluster,
    initial: &[JobGen],
    steps: &[Step],
    mut check: impl FnMut(Round, Time, &[JobView], &Plan) -> Result<(), TestCaseError>,
) -> Result<(), TestCaseError> {
    let mut policy = build_policy(name).expect("registered name");
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut jobs: Vec<JobView> = initial
        .iter()
        .enumerate()
        .map(|(i, g)| view(i as u32, i as f64 * 10.0, HISTORY_S, g))
        .collect();
    let mut next_id = jobs.len() as u32;
    let mut now: Time = HISTORY_S;
    for (round, step) in steps.iter().enumerate() {
        let snapshot = Snapshot {
            now,
            cluster,
            jobs: &jobs,
        };
        let plan = policy.decide(&snapshot, &mut rng);
        check(Round::Regular(round), now, &jobs, &plan)?;
        apply(&mut jobs, &plan);

        // Nothing else changes: same `now`, the plan fed back.
        let snapshot = Snapshot {
            now,
            cluster,
            jobs: &jobs,
        };
        let replay = policy.decide(&snapshot, &mut rng);
        check(Round::Replay(round), now, &jobs, &replay)?;
        apply(&mut jobs, &replay);

        // Time passes: running jobs attain service and get closer to their end.
        now += step.dt;
        for job in &mut jobs {
            let gpus = f64::from(job.allocation.total_gpus());
            if gpus > 0.0 {
                job.attained_gpu_seconds += gpus * step.dt;
                if let Some(left) = &mut job.oracle_remaining_seconds {
                    *left = (*left - step.dt).max(0.0);
                }
            }
        }
        jobs.retain(|j| j.oracle_remaining_seconds.is_none_or(|left| left > 0.0));
        if let Some(pick) = step.finish {
            let running: Vec<usize> = (0..jobs.len()).filter(|&i| jobs[i].is_running()).collect();
            if !running.is_empty() {
                jobs.remove(running[pick.index(running.len())]);
            }
        }
        if let Some(g) = &step.arrive {
            jobs.push(view(next_id, now, now, g));
            next_id += 1;
        }
    }
    Ok(())
}

fn allocated(plan: &Plan, id: JobId) -> Option<&Allocation> {
    plan.allocations.get(&id).filter(|a| !a.is_empty())
}

/// `validate_plan` holds; a job that could never fit (even alone, at its smallest gang) is
/// never placed; fixed-size policies give every placed job exactly its requested GPUs.
fn check_valid(
    name: &str,
    round: Round,
    cluster: &Cluster,
    jobs: &[JobView],
    plan: &Plan,
) -> Result<(), TestCaseError> {
    if let Err(violation) = validate_plan(cluster, jobs, plan) {
        return Err(TestCaseError::fail(format!(
            "{name} {round:?}: invalid plan: {violation}\njobs: {jobs:#?}\nplan: {plan:#?}"
        )));
    }
    let empty = Leftover::empty(cluster);
    for job in jobs {
        if let Some(alloc) = allocated(plan, job.id) {
            prop_assert!(
                empty.fits_gpus(cluster, job, job.min_gpus.max(1)),
                "{name} {round:?}: {} can never fit ({} GPUs, types {:?}, {} cpu/gpu, {} GB/gpu) \
                 but was placed on {:?}",
                job.id,
                job.min_gpus,
                job.allowed_gpu_types,
                job.cpus_per_gpu,
                job.memory_gb_per_gpu,
                alloc
            );
            if FIXED_SIZE.contains(&name) {
                prop_assert_eq!(
                    alloc.total_gpus(),
                    job.requested_gpus,
                    "{} {:?}",
                    name,
                    round
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every plan of every policy, over consecutive rounds with plans fed back, is valid.
    #[test]
    fn every_plan_of_every_policy_is_valid(
        cluster in cluster_gen(),
        initial in prop::collection::vec(job_gen(), 0..=16),
        steps in prop::collection::vec(step_gen(), ROUNDS),
    ) {
        let mut plans = 0usize;
        for &name in POLICY_NAMES {
            drive(name, &cluster, &initial, &steps, |round, _now, jobs, plan| {
                plans += 1;
                check_valid(name, round, &cluster, jobs, plan)
            })?;
        }
        prop_assert_eq!(plans, POLICY_NAMES.len() * ROUNDS * 2);
    }

    /// Stability: a plan fed back unchanged at the same `now` is a fixed point for every policy
    /// (same jobs on the same GPUs), and a non-preemptive policy keeps every running job where
    /// it is in every round, however much time passed.
    #[test]
    fn plans_are_stable(
        cluster in cluster_gen(),
        initial in prop::collection::vec(job_gen(), 0..=16),
        steps in prop::collection::vec(step_gen(), ROUNDS),
    ) {
        for &name in POLICY_NAMES {
            let non_preemptive = NON_PREEMPTIVE.contains(&name);
            let mut previous: Option<Plan> = None;
            drive(name, &cluster, &initial, &steps, |round, now, jobs, plan| {
                check_valid(name, round, &cluster, jobs, plan)?;
                if non_preemptive {
                    for job in jobs.iter().filter(|j| j.is_running()) {
                        let kept = allocated(plan, job.id)
                            .is_some_and(|a| a.same_resources(&job.allocation));
                        prop_assert!(
                            kept,
                            "{} {:?} t={}: running {} moved or stopped: {:?} -> {:?}",
                            name, round, now, job.id, job.allocation, plan.allocations.get(&job.id)
                        );
                    }
                }
                if KNOWN_UNSTABLE.contains(&name) {
                    return Ok(());
                }
                if let Round::Replay(_) = round {
                    let before = previous.take().expect("a replay follows a regular round");
                    for job in jobs {
                        let (a, b) = (allocated(&before, job.id), allocated(plan, job.id));
                        let same = match (a, b) {
                            (None, None) => true,
                            (Some(a), Some(b)) => a.same_resources(b),
                            _ => false,
                        };
                        prop_assert!(
                            same,
                            "{} {:?} t={}: replaying the plan changed {}: {:?} -> {:?}",
                            name, round, now, job.id, a, b
                        );
                    }
                } else {
                    previous = Some(plan.clone());
                }
                Ok(())
            })?;
        }
    }

    /// Queue discipline of the non-preemptive policies: `fifo` starts queued jobs as a prefix of
    /// the queue and leaves its head waiting only if it does not fit in what the plan leaves
    /// free; `proportional` (backfilling) leaves no queued job waiting that would fit there.
    #[test]
    fn non_preemptive_policies_leave_nothing_waiting_that_fits(
        cluster in cluster_gen(),
        initial in prop::collection::vec(job_gen(), 0..=16),
        steps in prop::collection::vec(step_gen(), ROUNDS),
    ) {
        for name in NON_PREEMPTIVE {
            drive(name, &cluster, &initial, &steps, |round, now, jobs, plan| {
                check_valid(name, round, &cluster, jobs, plan)?;
                let left = Leftover::after(&cluster, jobs, plan);
                let queued: Vec<&JobView> = jobs.iter().filter(|j| !j.is_running()).collect();
                let mut head_blocked = false;
                for job in queued {
                    let placed = allocated(plan, job.id).is_some();
                    if name == "fifo" {
                        prop_assert!(
                            !(placed && head_blocked),
                            "fifo {:?} t={}: {} started past a blocked head", round, now, job.id
                        );
                        if !placed && !head_blocked {
                            head_blocked = true;
                            prop_assert!(
                                !left.fits(&cluster, job),
                                "fifo {:?} t={}: head {} waits but fits in what is free",
                                round, now, job.id
                            );
                        }
                    } else {
                        prop_assert!(
                            placed || !left.fits(&cluster, job),
                            "{} {:?} t={}: {} waits but fits in what is free ({:?})",
                            name, round, now, job.id, plan.waiting.get(&job.id)
                        );
                    }
                }
                Ok(())
            })?;
        }
    }

    /// A rigid job alone on an empty cluster is placed (with its requested GPUs, on an allowed
    /// type) by every policy exactly when it fits there, whatever its age.
    #[test]
    fn a_lone_job_that_fits_is_placed(
        cluster in cluster_gen(),
        g in job_gen(),
        now in 0.0f64..1e6,
        age in prop_oneof![Just(0.0f64), 0.0f64..1e5],
    ) {
        let g = JobGen { elastic: false, ..g };
        let jobs = vec![view(0, now - age, now, &g)];
        let fits = Leftover::empty(&cluster).fits(&cluster, &jobs[0]);
        let mut checked = 0;
        for &name in POLICY_NAMES.iter().filter(|n| !KNOWN_LONE_JOB_BUGS.contains(n)) {
            let mut policy = build_policy(name).expect("registered name");
            let snapshot = Snapshot { now, cluster: &cluster, jobs: &jobs };
            let plan = policy.decide(&snapshot, &mut ChaCha8Rng::seed_from_u64(1));
            check_valid(name, Round::Regular(0), &cluster, &jobs, &plan)?;
            prop_assert_eq!(
                allocated(&plan, JobId(0)).is_some(),
                fits,
                "{} on an empty cluster: job {:?} fits = {}, plan {:?}",
                name, g, fits, plan
            );
            checked += 1;
        }
        prop_assert!(checked >= FIXED_SIZE.len());
    }
}

/// Regression: `pollux` once capped a job's candidate GPU counts at 2 × the most replicas seen
/// (1 without a fitted model), below a rigid job's `min_gpus`, so rigid multi-GPU jobs never
/// started.
#[test]
fn pollux_places_a_lone_rigid_multi_gpu_job() {
    let cluster = Cluster {
        name: "one".to_string(),
        nodes: vec![Node {
            name: "n0".to_string(),
            gpu_type: GpuType::new("t4"),
            gpus: 2,
            cpu_cores: 0,
            memory_gb: 0.0,
            network_gbps: 10.0,
        }],
    };
    let g = JobGen {
        gpus: 2,
        elastic: false,
        allowed: Vec::new(),
        cpus_per_gpu: 0.0,
        memory_gb_per_gpu: 0.0,
        oracle_remaining: 100.0,
        attained_share: 0.0,
    };
    // Submitted 100 s ago, so that the restart penalty does not zero its speedup.
    let jobs = vec![view(0, 0.0, 100.0, &g)];
    let mut policy = build_policy("pollux").expect("registered name");
    let snapshot = Snapshot {
        now: 100.0,
        cluster: &cluster,
        jobs: &jobs,
    };
    let plan = policy.decide(&snapshot, &mut ChaCha8Rng::seed_from_u64(1));
    assert_eq!(validate_plan(&cluster, &jobs, &plan), Ok(()));
    assert_eq!(
        plan.allocations.get(&JobId(0)).map(Allocation::total_gpus),
        Some(2),
        "{plan:?}"
    );
}

/// Regression for a tolerance mismatch: `FreeResources::usable_gpus` (placement.rs:68/72)
/// allows 1e-9 *GPUs* of slack (`floor(free / need + 1e-9)`), `validate_plan` (plan.rs:222/229)
/// 1e-9 *cores or GB*. A need per GPU that is a rounded-up fraction of a node (16/3 written as
/// 5.3333333337) puts 3 GPUs at 16.0000000011 of 16: placed by every policy, then rejected, so
/// the simulator aborts with `InvalidPlan`.
#[test]
fn rounded_up_cpu_or_memory_need_does_not_overfill_a_node() {
    for (cpu_cores, memory_gb, cpus_per_gpu, memory_gb_per_gpu) in [
        (16, 0.0, 5.333_333_333_7, 0.0),
        (0, 16.0, 0.0, 5.333_333_333_7),
    ] {
        let cluster = Cluster {
            name: "one".to_string(),
            nodes: vec![Node {
                name: "n0".to_string(),
                gpu_type: GpuType::new("t4"),
                gpus: 4,
                cpu_cores,
                memory_gb,
                network_gbps: 10.0,
            }],
        };
        let g = JobGen {
            gpus: 3,
            elastic: false,
            allowed: Vec::new(),
            cpus_per_gpu,
            memory_gb_per_gpu,
            oracle_remaining: 100.0,
            attained_share: 0.0,
        };
        let jobs = vec![view(0, 0.0, 0.0, &g)];
        for &name in POLICY_NAMES {
            let mut policy = build_policy(name).expect("registered name");
            let snapshot = Snapshot {
                now: 0.0,
                cluster: &cluster,
                jobs: &jobs,
            };
            let plan = policy.decide(&snapshot, &mut ChaCha8Rng::seed_from_u64(1));
            assert_eq!(
                validate_plan(&cluster, &jobs, &plan),
                Ok(()),
                "{name}: {plan:?}"
            );
        }
    }
}

/// `pollux` spreads a gang larger than its biggest node over whole nodes in index order
/// (`find_room`), which can take more nodes than `nodes_for(gpus, largest node)`; the next round
/// `place` only keeps a running job whose node count equals that number (pollux.rs:223-225), so
/// it re-places the gang, finds its nodes no longer whole (a 1-GPU job joined the last one) and
/// stops it. Nothing changed between the two rounds; the job is preempted anyway (and restarts
/// on every other round after that).
#[test]
fn pollux_keeps_a_gang_it_spread_over_small_nodes() {
    let cluster = Cluster {
        name: "small".to_string(),
        nodes: [4, 1, 5]
            .into_iter()
            .enumerate()
            .map(|(i, gpus)| Node {
                name: format!("n{i}"),
                gpu_type: GpuType::new("a100"),
                gpus,
                cpu_cores: 0,
                memory_gb: 0.0,
                network_gbps: 10.0,
            })
            .collect(),
    };
    let rigid = |gpus| JobGen {
        gpus,
        elastic: false,
        allowed: Vec::new(),
        cpus_per_gpu: 0.0,
        memory_gb_per_gpu: 0.0,
        oracle_remaining: 1.0,
        attained_share: 0.0,
    };
    let now = 20_000.0;
    let mut jobs = vec![view(0, 0.0, now, &rigid(6)), view(1, 10.0, now, &rigid(1))];
    let mut policy = build_policy("pollux").expect("registered name");
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let first = policy.decide(
        &Snapshot {
            now,
            cluster: &cluster,
            jobs: &jobs,
        },
        &mut rng,
    );
    assert_eq!(validate_plan(&cluster, &jobs, &first), Ok(()));
    let placed = allocated(&first, JobId(0))
        .cloned()
        .expect("the 6-GPU gang starts");
    apply(&mut jobs, &first);
    let replay = policy.decide(
        &Snapshot {
            now,
            cluster: &cluster,
            jobs: &jobs,
        },
        &mut rng,
    );
    assert_eq!(validate_plan(&cluster, &jobs, &replay), Ok(()));
    assert!(
        allocated(&replay, JobId(0)).is_some_and(|a| a.same_resources(&placed)),
        "first {first:?}\nreplay {replay:?}"
    );
}

/// `pollux` places a gang of at most its largest node's size on one node only (`find_room`,
/// pollux.rs ~305-310), and a larger one only on *whole* nodes, where "whole" means every GPU
/// usable by this job (~314). A node whose CPU or memory bounds the job below its GPU count is
/// neither, so a job that fits the empty cluster by spreading (4 GPUs on n1 + 1 on n0) waits
/// forever.
#[test]
fn pollux_places_a_gang_where_memory_bounds_a_node() {
    let node = |name: &str, gpus, memory_gb| Node {
        name: name.to_string(),
        gpu_type: GpuType::new("t4"),
        gpus,
        cpu_cores: 0,
        memory_gb,
        network_gbps: 10.0,
    };
    let cluster = Cluster {
        name: "bounded".to_string(),
        nodes: vec![node("n0", 8, 8.0), node("n1", 4, 0.0)],
    };
    let g = JobGen {
        gpus: 5,
        elastic: false,
        allowed: Vec::new(),
        cpus_per_gpu: 0.0,
        memory_gb_per_gpu: 4.0,
        oracle_remaining: 100.0,
        attained_share: 0.0,
    };
    let jobs = vec![view(0, 0.0, 100.0, &g)];
    assert!(Leftover::empty(&cluster).fits(&cluster, &jobs[0]));
    let mut policy = build_policy("pollux").expect("registered name");
    let snapshot = Snapshot {
        now: 100.0,
        cluster: &cluster,
        jobs: &jobs,
    };
    let plan = policy.decide(&snapshot, &mut ChaCha8Rng::seed_from_u64(1));
    assert_eq!(validate_plan(&cluster, &jobs, &plan), Ok(()));
    assert!(allocated(&plan, JobId(0)).is_some(), "{plan:?}");
}

/// `sia` leaves GPUs idle that it would fill itself: on t4 nodes of 7 GPUs and of 5 GPUs with
/// 92.7 GB (2 usable by a 31.5 GB/GPU job), its configuration choice picks jobs 2 (6 GPUs) and
/// 3 (5 GPUs), job 3 does not fit ("fragmented": its per-GPU memory is not part of the choice)
/// and nothing takes its place, so 6 GPUs stay idle although job 1 (6 GPUs: 5 on n1 + 1 on n0)
/// fits there. The plan fed back at the same `now` then starts job 1: not a fixed point.
#[test]
fn sia_starts_a_waiting_job_that_fits_the_gpus_left_idle() {
    let node = |name: &str, gpus, memory_gb| Node {
        name: name.to_string(),
        gpu_type: GpuType::new("t4"),
        gpus,
        cpu_cores: 0,
        memory_gb,
        network_gbps: 10.0,
    };
    let cluster = Cluster {
        name: "bounded".to_string(),
        nodes: vec![node("n0", 7, 0.0), node("n1", 5, 92.7)],
    };
    let rigid = |gpus, memory_gb_per_gpu| JobGen {
        gpus,
        elastic: false,
        allowed: Vec::new(),
        cpus_per_gpu: 0.0,
        memory_gb_per_gpu,
        oracle_remaining: 1.0,
        attained_share: 0.0,
    };
    let now = HISTORY_S;
    let jobs: Vec<JobView> = [rigid(8, 0.0), rigid(6, 0.0), rigid(6, 0.0), rigid(5, 31.5)]
        .iter()
        .enumerate()
        .map(|(i, g)| view(i as u32, i as f64 * 10.0, now, g))
        .collect();
    let mut policy = build_policy("sia").expect("registered name");
    let snapshot = Snapshot {
        now,
        cluster: &cluster,
        jobs: &jobs,
    };
    let plan = policy.decide(&snapshot, &mut ChaCha8Rng::seed_from_u64(7));
    assert_eq!(validate_plan(&cluster, &jobs, &plan), Ok(()));
    let left = Leftover::after(&cluster, &jobs, &plan);
    let idle_but_fits: Vec<JobId> = jobs
        .iter()
        .filter(|j| allocated(&plan, j.id).is_none() && left.fits(&cluster, j))
        .map(|j| j.id)
        .collect();
    assert!(
        idle_but_fits.is_empty(),
        "{idle_but_fits:?} fit in what {plan:?} leaves free"
    );
}
