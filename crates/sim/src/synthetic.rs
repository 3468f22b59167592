//! Seeded synthetic clusters and job mixes, for timing policies at sizes no bundled trace has.
//!
//! Real traces stop at a few thousand GPUs; a scheduler must still decide in time on a cluster
//! of tens of thousands. A [`Scenario`] is a heterogeneous cluster plus a set of active jobs,
//! some already running on valid allocations and some queued, built from one seed so that a
//! benchmark row means the same input on every machine.

use crate::error::InputError;
use adaptsched_core::{
    Allocation, Cluster, GpuType, JobCategory, JobId, JobView, Node, NodeId, Plan, Snapshot, Time,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// GPU types a synthetic cluster draws from, in order, with the GPUs per node of each (the
/// shapes of the presets: 4×T4 and 4×Quadro servers, 8-GPU RTX, A100 and V100 servers).
pub const GPU_TYPES: &[(&str, u32)] = &[
    ("t4", 4),
    ("rtx2080ti", 8),
    ("a100", 8),
    ("v100", 8),
    ("quadro6000", 4),
];

/// Applications jobs are drawn from, with a typical total batch size (the Pollux/Sia ones).
pub const APPLICATIONS: &[(&str, u32)] = &[
    ("cifar10", 128),
    ("imagenet", 1600),
    ("bert", 12),
    ("deepspeech2", 20),
    ("yolov3", 8),
    ("ncf", 256),
];

/// CPU cores and GB of memory per GPU on every synthetic node: more than any synthetic job
/// asks per GPU, so GPUs stay the binding resource and the seeded running allocations are
/// valid by construction (CPU and memory are still checked by `validate_plan`).
const NODE_CORES_PER_GPU: u32 = 8;
const NODE_MEMORY_GB_PER_GPU: f64 = 64.0;

/// The virtual time of the snapshot: two days of history to draw submissions from.
const HISTORY_SECONDS: f64 = 2.0 * 86_400.0;

/// What to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyntheticSpec {
    /// GPUs in the cluster (nodes of 4 or 8 GPUs; the last node takes the remainder).
    pub gpus: u32,
    /// Active jobs.
    pub jobs: usize,
    /// GPU types, the first `gpu_types` of [`GPU_TYPES`].
    pub gpu_types: usize,
    pub seed: u64,
}

/// A cluster and its active jobs at `now`: the input of one `Policy::decide`.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub cluster: Cluster,
    /// Ordered by submission time then id, as a `Snapshot` requires.
    pub jobs: Vec<JobView>,
    pub now: Time,
}

/// The RNG a benchmark hands to `decide`, seeded like the simulator's.
pub fn policy_rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A heterogeneous cluster of `gpus` GPUs: one node of each of the first `gpu_types` types
/// first (so every type is present when there are GPUs for it), then nodes of random types.
pub fn synthetic_cluster(
    gpus: u32,
    gpu_types: usize,
    rng: &mut impl Rng,
) -> Result<Cluster, InputError> {
    if gpus == 0 {
        return Err(InputError::Other(
            "a synthetic cluster needs ≥ 1 GPU".into(),
        ));
    }
    if gpu_types == 0 || gpu_types > GPU_TYPES.len() {
        return Err(InputError::Other(format!(
            "GPU types: {gpu_types} must be between 1 and {}",
            GPU_TYPES.len()
        )));
    }
    let mut nodes = Vec::new();
    let mut per_type = vec![0usize; gpu_types];
    let mut remaining = gpus;
    while remaining > 0 {
        let t = if nodes.len() < gpu_types {
            nodes.len()
        } else {
            rng.random_range(0..gpu_types)
        };
        let (name, size) = GPU_TYPES[t];
        let size = size.min(remaining);
        nodes.push(Node {
            name: format!("{name}-{}", per_type[t]),
            gpu_type: GpuType::new(name),
            gpus: size,
            cpu_cores: size * NODE_CORES_PER_GPU,
            memory_gb: f64::from(size) * NODE_MEMORY_GB_PER_GPU,
            network_gbps: if name == "a100" { 200.0 } else { 50.0 },
        });
        per_type[t] += 1;
        remaining -= size;
    }
    Ok(Cluster {
        name: format!("synthetic-{gpus}x{gpu_types}"),
        nodes,
    })
}

/// The largest gang a synthetic job asks for, so that a handful of giant jobs cannot fill
/// a whole synthetic cluster on their own and leave nothing for a policy to decide.
const MAX_REQUESTED_GPUS: u32 = 256;

/// A requested GPU count from a skewed distribution: 1 with probability 1/2, 2 with 1/4, 4
/// with 1/8, ... (most jobs are small, a few are large), at most `cap`.
fn skewed_gpus(rng: &mut impl Rng, cap: u32) -> u32 {
    let mut gpus = 1u32;
    while gpus.saturating_mul(2) <= cap && rng.random_bool(0.5) {
        gpus *= 2;
    }
    gpus
}

/// Places `gpus` GPUs of one allowed type onto free nodes (a random allowed type first, then
/// the others), starting at a random node so running jobs spread over the cluster.
fn place(
    cluster: &Cluster,
    free: &mut [u32],
    allowed: &[GpuType],
    gpus: u32,
    rng: &mut impl Rng,
) -> Option<Allocation> {
    let first = rng.random_range(0..allowed.len());
    let start = rng.random_range(0..cluster.nodes.len());
    for k in 0..allowed.len() {
        let gpu_type = &allowed[(first + k) % allowed.len()];
        let nodes: Vec<usize> = (0..cluster.nodes.len())
            .map(|i| (start + i) % cluster.nodes.len())
            .filter(|&i| &cluster.nodes[i].gpu_type == gpu_type && free[i] > 0)
            .collect();
        if nodes.iter().map(|&i| free[i]).sum::<u32>() < gpus {
            continue;
        }
        let mut parts = Vec::new();
        let mut remaining = gpus;
        for i in nodes {
            let take = free[i].min(remaining);
            free[i] -= take;
            parts.push((NodeId(i as u32), take));
            remaining -= take;
            if remaining == 0 {
                break;
            }
        }
        return Some(Allocation::new(parts));
    }
    None
}

/// A plausible fitted model: per-type compute speed, sync costs and gradient noise drawn
/// around the magnitudes the Pollux profiles fit to.
fn synthetic_model(
    rng: &mut impl Rng,
    types: &[GpuType],
    batch: u32,
    requested: u32,
) -> adaptsched_core::perf::JobModel {
    use adaptsched_core::perf::{BatchLimits, GradStats, JobModel, PerfParams, TypeModel};
    let init_batch = (batch / requested.max(1)).max(8);
    let limits = BatchLimits {
        init_batch,
        max_batch: init_batch * 32,
        min_local: (init_batch / 4).max(1),
        max_local: init_batch * 4,
    };
    let base = rng.random_range(0.01..0.1);
    let perf_for = |speed: f64, rng: &mut dyn rand::RngCore| PerfParams {
        alpha_c: base / speed,
        beta_c: base / speed / f64::from(init_batch),
        alpha_n: rng.random_range(0.02..0.2),
        beta_n: rng.random_range(0.001..0.02),
        alpha_r: rng.random_range(0.005..0.05),
        beta_r: rng.random_range(0.0005..0.005),
        gamma: rng.random_range(1.0..2.0),
    };
    let models: Vec<TypeModel> = types
        .iter()
        .map(|t| {
            let speed = rng.random_range(0.5..4.0);
            TypeModel {
                gpu_type: t.clone(),
                perf: Some(perf_for(speed, rng)),
                multi_gpu_observed: rng.random_bool(0.5),
                limits,
            }
        })
        .collect();
    JobModel {
        perf: models.first().and_then(|m| m.perf),
        types: models,
        grad: Some(GradStats {
            sqr: 1.0,
            var: rng.random_range(0.1..100.0),
        }),
        limits,
        fixed_batch: None,
        max_replicas_seen: requested,
    }
}

/// `count` active jobs on `cluster`: random applications, categories, GPU-type restrictions,
/// requested GPUs, attained service and oracle remaining times; about 70% are offered a
/// placement in submission order and run where it fits, the rest wait.
pub fn synthetic_jobs(
    cluster: &Cluster,
    count: usize,
    now: Time,
    rng: &mut impl Rng,
) -> Vec<JobView> {
    let by_type = cluster.gpus_by_type();
    let types: Vec<GpuType> = by_type.keys().cloned().collect();
    let total = cluster.total_gpus();
    let mut submits: Vec<Time> = (0..count)
        .map(|_| rng.random_range(0.0..now.max(1.0)))
        .collect();
    submits.sort_by(f64::total_cmp);
    let mut free: Vec<u32> = cluster.nodes.iter().map(|n| n.gpus).collect();
    let mut jobs = Vec::with_capacity(count);
    for (index, submit) in submits.into_iter().enumerate() {
        let (application, batch) = APPLICATIONS[rng.random_range(0..APPLICATIONS.len())];
        let mut allowed = types.clone();
        if allowed.len() > 1 && rng.random_bool(0.25) {
            // An application not profiled on one type may not run there.
            allowed.remove(rng.random_range(0..allowed.len()));
        }
        let largest_pool = allowed.iter().filter_map(|t| by_type.get(t)).copied().max();
        let requested = skewed_gpus(rng, largest_pool.unwrap_or(1).clamp(1, MAX_REQUESTED_GPUS));
        let category = match rng.random_range(0..10) {
            0..4 => JobCategory::Adaptive,
            4..7 => JobCategory::ScaleGpus,
            _ => JobCategory::Rigid,
        };
        let (min_gpus, max_gpus) = match category {
            JobCategory::Rigid => (requested, requested),
            _ => (1, requested.max(total)),
        };
        let allowed_for_model = allowed.clone();
        let allocation = if rng.random_bool(0.7) {
            place(cluster, &mut free, &allowed, requested, rng).unwrap_or_default()
        } else {
            Allocation::default()
        };
        let age = now - submit;
        let attained = rng.random_range(0.0..=0.5) * age * f64::from(requested);
        jobs.push(JobView {
            id: JobId(index as u32),
            name: format!("{application}-{index}"),
            application: application.to_string(),
            category,
            submit_time: submit,
            requested_gpus: requested,
            requested_batch_size: Some(batch),
            min_gpus,
            max_gpus,
            allowed_gpu_types: allowed,
            cpus_per_gpu: [0.0, 1.0, 2.0, 4.0][rng.random_range(0..4)],
            memory_gb_per_gpu: [0.0, 8.0, 16.0, 32.0][rng.random_range(0..4)],
            attained_gpu_seconds: attained,
            restarts: if attained > 0.0 {
                rng.random_range(0..4)
            } else {
                0
            },
            allocation,
            // Log-uniform between a minute and ten hours.
            oracle_remaining_seconds: Some(60.0 * 600f64.powf(rng.random_range(0.0..1.0))),
            // A fitted-looking model, so goodput-driven policies do their real work.
            model: Some(synthetic_model(rng, &allowed_for_model, batch, requested)),
            restart_seconds: 30.0,
        });
    }
    jobs
}

/// The scenario of a spec: the same spec always gives the same scenario.
pub fn scenario(spec: SyntheticSpec) -> Result<Scenario, InputError> {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let cluster = synthetic_cluster(spec.gpus, spec.gpu_types, &mut rng)?;
    let jobs = synthetic_jobs(&cluster, spec.jobs, HISTORY_SECONDS, &mut rng);
    Ok(Scenario {
        cluster,
        jobs,
        now: HISTORY_SECONDS,
    })
}

impl Scenario {
    /// The policy's input at `now`.
    pub fn snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            now: self.now,
            cluster: &self.cluster,
            jobs: &self.jobs,
        }
    }

    /// The current allocations as a plan (what `validate_plan` checks for the start state).
    pub fn current_plan(&self) -> Plan {
        let mut plan = Plan::default();
        for job in self.jobs.iter().filter(|j| j.is_running()) {
            plan.allocate(job.id, job.allocation.clone());
        }
        plan
    }

    /// Applies a plan as a driver would and runs `seconds` of virtual time: allocations become
    /// the plan's, running jobs gain attained service and lose oracle remaining time. No job
    /// finishes and none arrives, so every round sees the same number of active jobs.
    pub fn apply(&mut self, plan: &Plan, seconds: f64) {
        for job in &mut self.jobs {
            let next = plan.allocations.get(&job.id).cloned().unwrap_or_default();
            if !next.is_empty()
                && !next.same_resources(&job.allocation)
                && job.attained_gpu_seconds > 0.0
            {
                job.restarts += 1;
            }
            job.allocation = next;
            let gpus = f64::from(job.allocation.total_gpus());
            if gpus > 0.0 {
                job.attained_gpu_seconds += gpus * seconds;
                job.oracle_remaining_seconds =
                    job.oracle_remaining_seconds.map(|r| (r - seconds).max(1.0));
            }
        }
        self.now += seconds;
    }

    /// What running jobs' reports do to their fitted models over a round, as in the
    /// simulator and the live server: each running job has now run on its current GPU count,
    /// and `share` of them (drawn with `rng`) also have new gradient statistics (the noise
    /// grows as training goes on), so a policy's per-model caches go stale as they would live.
    pub fn report(&mut self, share: f64, rng: &mut impl Rng) {
        for job in self.jobs.iter_mut().filter(|j| j.is_running()) {
            let gpus = job.allocation.total_gpus();
            let refit = rng.random_bool(share.clamp(0.0, 1.0));
            let Some(model) = job.model.as_mut() else {
                continue;
            };
            model.max_replicas_seen = model.max_replicas_seen.max(gpus);
            if let Some(grad) = model.grad.as_mut().filter(|_| refit) {
                grad.var *= 1.02;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adaptsched_core::validate_plan;

    fn spec(gpus: u32, jobs: usize, seed: u64) -> SyntheticSpec {
        SyntheticSpec {
            gpus,
            jobs,
            gpu_types: 4,
            seed,
        }
    }

    #[test]
    fn same_seed_same_scenario_other_seed_other_one() {
        let a = scenario(spec(2048, 500, 7)).expect("valid");
        assert_eq!(a, scenario(spec(2048, 500, 7)).expect("valid"));
        assert_ne!(a, scenario(spec(2048, 500, 8)).expect("valid"));
    }

    #[test]
    fn cluster_has_the_gpus_types_and_node_shapes_asked_for() {
        for gpus in [1, 3, 64, 2048, 16_384] {
            let s = scenario(spec(gpus, 10, 1)).expect("valid");
            assert_eq!(s.cluster.total_gpus(), gpus);
            assert!(s.cluster.gpus_by_type().len() <= 4);
            let last = s.cluster.nodes.len() - 1;
            for (i, node) in s.cluster.nodes.iter().enumerate() {
                assert!(
                    [4, 8].contains(&node.gpus) || i == last,
                    "{}: {} GPUs",
                    node.name,
                    node.gpus
                );
            }
        }
        assert_eq!(
            scenario(spec(2048, 1, 1))
                .expect("valid")
                .cluster
                .gpus_by_type()
                .len(),
            4
        );
    }

    #[test]
    fn start_state_is_a_valid_mix_of_running_and_queued_jobs() {
        let s = scenario(spec(2048, 500, 3)).expect("valid");
        assert_eq!(s.jobs.len(), 500);
        validate_plan(&s.cluster, &s.jobs, &s.current_plan())
            .expect("seeded allocations are valid");
        let running = s.jobs.iter().filter(|j| j.is_running()).count();
        assert!(running > 50 && running < 500, "{running} running");
        assert!(
            s.jobs
                .windows(2)
                .all(|w| w[0].submit_time <= w[1].submit_time)
        );
        assert!(s.jobs.iter().any(|j| j.requested_gpus >= 8));
        assert!(s.jobs.iter().all(|j| j.oracle_remaining_seconds.is_some()));
        for category in [
            JobCategory::Adaptive,
            JobCategory::ScaleGpus,
            JobCategory::Rigid,
        ] {
            assert!(s.jobs.iter().any(|j| j.category == category), "{category}");
        }
    }

    #[test]
    fn reports_record_the_gpus_run_on_and_refit_the_drawn_share() {
        let grads = |s: &Scenario| -> Vec<f64> {
            s.jobs
                .iter()
                .map(|j| j.model.as_ref().and_then(|m| m.grad).map_or(0.0, |g| g.var))
                .collect()
        };
        let start = scenario(spec(2048, 500, 3)).expect("valid");
        let running = start.jobs.iter().filter(|j| j.is_running()).count();
        let mut rng = policy_rng(1);
        let mut none = start.clone();
        none.report(0.0, &mut rng);
        assert_eq!(grads(&none), grads(&start), "share 0 refits nothing");
        for job in none.jobs.iter().filter(|j| j.is_running()) {
            let seen = job.model.as_ref().map_or(0, |m| m.max_replicas_seen);
            assert!(seen >= job.allocation.total_gpus(), "{}", job.name);
        }
        let changed = |share: f64, rng: &mut ChaCha8Rng| {
            let mut s = start.clone();
            s.report(share, rng);
            grads(&s)
                .iter()
                .zip(grads(&start))
                .filter(|(a, b)| *a != b)
                .count()
        };
        assert_eq!(
            changed(1.0, &mut rng),
            running,
            "share 1 refits every running job"
        );
        let some = changed(0.3, &mut rng);
        assert!(
            some > running / 5 && some < running * 2 / 5,
            "{some} of {running}"
        );
    }

    #[test]
    fn bad_specs_are_errors_not_panics() {
        assert!(scenario(spec(0, 1, 0)).is_err());
        assert!(
            scenario(SyntheticSpec {
                gpu_types: 0,
                ..spec(8, 1, 0)
            })
            .is_err()
        );
        assert!(
            scenario(SyntheticSpec {
                gpu_types: 9,
                ..spec(8, 1, 0)
            })
            .is_err()
        );
        assert!(
            scenario(spec(8, 0, 0))
                .expect("no jobs is fine")
                .jobs
                .is_empty()
        );
    }

    #[test]
    fn applying_a_plan_moves_allocations_and_service() {
        let mut s = scenario(spec(64, 32, 5)).expect("valid");
        let before = s.clone();
        s.apply(&Plan::default(), 60.0);
        assert!(s.jobs.iter().all(|j| !j.is_running()));
        assert_eq!(s.now, before.now + 60.0);
        let mut s = before.clone();
        s.apply(&before.current_plan(), 60.0);
        for (a, b) in s.jobs.iter().zip(&before.jobs) {
            assert_eq!(a.allocation, b.allocation);
            assert_eq!(a.restarts, b.restarts);
            let gained = f64::from(b.allocation.total_gpus()) * 60.0;
            assert!((a.attained_gpu_seconds - b.attained_gpu_seconds - gained).abs() < 1e-6);
        }
    }
}
