//! Performance models (Pollux, OSDI'21 §3): throughput from α/β/γ fitted online, statistical
//! efficiency from the gradient noise scale, goodput, and the best batch for an allocation.

use serde::{Deserialize, Serialize};

/// Throughput-model parameters: compute (`c`), inter-node sync (`n`), intra-node sync (`r`),
/// and γ ≥ 1 for how much compute and sync overlap.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PerfParams {
    pub alpha_c: f64,
    pub beta_c: f64,
    pub alpha_n: f64,
    pub beta_n: f64,
    pub alpha_r: f64,
    pub beta_r: f64,
    pub gamma: f64,
}

impl PerfParams {
    /// Whether syncing within one node was fitted from observations, rather than left at the
    /// prior's floor (which prices it as free until a multi-GPU single-node run is seen).
    pub fn intra_node_fitted(&self) -> bool {
        self.alpha_r > LOWER
    }

    /// Whether syncing across nodes was fitted from observations, rather than set by the
    /// prior (the floor, or `INTER_OVER_INTRA_PRIOR` × the intra-node term).
    pub fn inter_node_fitted(&self) -> bool {
        self.alpha_n > LOWER && self.alpha_n != self.alpha_r * INTER_OVER_INTRA_PRIOR
    }

    /// Which sync terms (within one node, across nodes) `donor` fitted and these parameters
    /// did not: what [`JobModel::borrow_sync`] would take from it.
    pub fn sync_terms_to_borrow(&self, donor: &PerfParams) -> (bool, bool) {
        (
            !self.intra_node_fitted() && donor.intra_node_fitted(),
            !self.inter_node_fitted() && donor.inter_node_fitted(),
        )
    }

    /// The prior for cross-node sync not yet observed: at least as slow as syncing within one
    /// node (`INTER_OVER_INTRA_PRIOR` × the intra-node terms).
    fn apply_inter_node_prior(&mut self) {
        self.alpha_n = self.alpha_n.max(self.alpha_r * INTER_OVER_INTRA_PRIOR);
        self.beta_n = self.beta_n.max(self.beta_r * INTER_OVER_INTRA_PRIOR);
    }
}

/// Gradient statistics a job reports: |g|² and tr(Σ) (pre-conditioned), measured at its batch.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GradStats {
    pub sqr: f64,
    pub var: f64,
}

/// A job's batch-size limits: initial (M0) and largest total batch, per-GPU batch range.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchLimits {
    pub init_batch: u32,
    pub max_batch: u32,
    pub min_local: u32,
    pub max_local: u32,
}

/// One measured configuration: seconds per accumulation step and per optimizer step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub nodes: u32,
    pub replicas: u32,
    pub local_bsz: u32,
    /// `None` when the step's compute was not measured apart from its synchronization (a
    /// multi-replica step without accumulation, where DDP overlaps the two): then only the
    /// whole step informs the fit.
    pub accum_step_time: Option<f64>,
    pub optim_step_time: f64,
}

/// The best batch configuration for one allocation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchChoice {
    /// Goodput in initial-batch samples per second.
    pub goodput: f64,
    pub local_bsz: u32,
    pub accum_steps: u32,
}

impl BatchChoice {
    pub fn total_batch(&self, replicas: u32) -> u32 {
        replicas * self.local_bsz * (self.accum_steps + 1)
    }
}

/// Seconds of one forward/backward pass at per-GPU batch `local_bsz`.
pub fn accum_time(p: &PerfParams, local_bsz: f64) -> f64 {
    p.alpha_c + p.beta_c * local_bsz
}

/// Seconds of gradient synchronization: 0 on one GPU, intra-node or inter-node ring all-reduce.
pub fn network_time(p: &PerfParams, nodes: u32, replicas: u32) -> f64 {
    let extra = (f64::from(replicas) - 2.0).max(1e-8);
    if nodes > 1 {
        p.alpha_n + p.beta_n * extra
    } else if replicas > 1 {
        p.alpha_r + p.beta_r * extra
    } else {
        1e-8
    }
}

/// Seconds of the synchronizing (optimizer) step, with compute and sync overlapping by γ.
pub fn optim_time(p: &PerfParams, accum: f64, network: f64) -> f64 {
    optim_time_from(p, accum, network.powf(p.gamma))
}

/// `optim_time` given the sync time already raised to γ (constant over a batch search).
fn optim_time_from(p: &PerfParams, accum: f64, network_pow: f64) -> f64 {
    (accum.powf(p.gamma) + network_pow).powf(1.0 / p.gamma)
}

/// Seconds per optimizer step with `accum_steps` extra accumulation steps.
pub fn iteration_time(
    p: &PerfParams,
    nodes: u32,
    replicas: u32,
    local_bsz: f64,
    accum_steps: u32,
) -> f64 {
    let network_pow = network_time(p, nodes, replicas).powf(p.gamma);
    iteration_time_from(p, local_bsz, accum_steps, network_pow)
}

fn iteration_time_from(p: &PerfParams, local_bsz: f64, accum_steps: u32, network_pow: f64) -> f64 {
    let accum = accum_time(p, local_bsz);
    f64::from(accum_steps) * accum + optim_time_from(p, accum, network_pow)
}

/// Samples per second.
pub fn throughput(
    p: &PerfParams,
    nodes: u32,
    replicas: u32,
    local_bsz: f64,
    accum_steps: u32,
) -> f64 {
    let network_pow = network_time(p, nodes, replicas).powf(p.gamma);
    throughput_from(p, replicas, local_bsz, accum_steps, network_pow)
}

fn throughput_from(
    p: &PerfParams,
    replicas: u32,
    local_bsz: f64,
    accum_steps: u32,
    network_pow: f64,
) -> f64 {
    let batch = f64::from(replicas) * local_bsz * f64::from(accum_steps + 1);
    batch / iteration_time_from(p, local_bsz, accum_steps, network_pow)
}

/// Statistical efficiency of total batch `batch` relative to `init_batch`:
/// AdaScale gain ÷ scale, i.e. `(φ + M0)/(φ + M)` with noise scale φ = M0·var/sqr.
pub fn efficiency(grad: &GradStats, init_batch: f64, batch: f64) -> f64 {
    let scale = batch / init_batch;
    let denominator = grad.var / scale + grad.sqr;
    let gain = if denominator > 0.0 {
        (grad.var + grad.sqr) / denominator
    } else {
        1.0
    };
    gain / scale
}

/// Goodput (initial-batch samples per second) of a configuration.
pub fn goodput(
    p: &PerfParams,
    grad: &GradStats,
    init_batch: u32,
    nodes: u32,
    replicas: u32,
    local_bsz: u32,
    accum_steps: u32,
) -> f64 {
    let network_pow = network_time(p, nodes, replicas).powf(p.gamma);
    goodput_from(
        p,
        grad,
        init_batch,
        replicas,
        local_bsz,
        accum_steps,
        network_pow,
    )
}

fn goodput_from(
    p: &PerfParams,
    grad: &GradStats,
    init_batch: u32,
    replicas: u32,
    local_bsz: u32,
    accum_steps: u32,
    network_pow: f64,
) -> f64 {
    let batch = f64::from(replicas * local_bsz * (accum_steps + 1));
    throughput_from(p, replicas, f64::from(local_bsz), accum_steps, network_pow)
        * efficiency(grad, f64::from(init_batch), batch)
}

/// Number of total batch sizes tried per allocation (geometrically spaced, as Pollux does).
const BATCH_CANDIDATES: usize = 50;

/// The (per-GPU batch, accumulation steps) with the best goodput on `replicas` GPUs over
/// `nodes` nodes, within the job's limits; `None` if no batch fits.
pub fn best_batch(
    p: &PerfParams,
    grad: &GradStats,
    limits: &BatchLimits,
    nodes: u32,
    replicas: u32,
) -> Option<BatchChoice> {
    if replicas == 0 {
        return None;
    }
    let r = f64::from(replicas);
    let low = f64::from(limits.init_batch.max(limits.min_local * replicas));
    let high = f64::from(limits.max_batch);
    if low > high {
        return None;
    }
    // Constant over the search: the sync time raised to γ, computed once (same value as
    // `goodput` computes per call).
    let network_pow = network_time(p, nodes, replicas).powf(p.gamma);
    let mut best: Option<BatchChoice> = None;
    let mut previous: Option<(u32, u32)> = None;
    for i in 0..BATCH_CANDIDATES {
        let t = i as f64 / (BATCH_CANDIDATES - 1) as f64;
        let batch = low * (high / low).powf(t);
        let local = batch / r;
        let mut accum = ((local / f64::from(limits.max_local) - 1e-8).ceil() - 1.0).max(0.0) as u32;
        if replicas == 1 && local > f64::from(limits.init_batch) + 1e-8 {
            accum = accum.max(1);
        }
        let atomic = (local / f64::from(accum + 1) - 1e-8).ceil() as u32;
        if atomic < limits.min_local || atomic > limits.max_local {
            continue;
        }
        // Neighbouring candidates often round to the same configuration: same goodput.
        if previous == Some((atomic, accum)) {
            continue;
        }
        previous = Some((atomic, accum));
        let value = goodput_from(
            p,
            grad,
            limits.init_batch,
            replicas,
            atomic,
            accum,
            network_pow,
        );
        if value.is_finite() && best.is_none_or(|b| value > b.goodput) {
            best = Some(BatchChoice {
                goodput: value,
                local_bsz: atomic,
                accum_steps: accum,
            });
        }
    }
    best
}

/// Best-batch goodputs of one job by (index of its type model, nodes, replicas): what its
/// `JobModel::goodputs_on` calls of one round share.
#[derive(Clone, Debug, Default)]
pub struct GoodputMemo(std::collections::BTreeMap<(usize, u32, u32), Option<f64>>);

/// A job's throughput model on one GPU type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TypeModel {
    pub gpu_type: crate::cluster::GpuType,
    /// Fitted from what the job reported on this type; `None` if it never ran there.
    pub perf: Option<PerfParams>,
    /// Whether any multi-GPU run on this type was observed (else sync terms are priors).
    pub multi_gpu_observed: bool,
    pub limits: BatchLimits,
}

/// What the driver knows about a job's performance, fitted online from its own reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobModel {
    /// Fitted throughput parameters on the type the job runs on (or would run on first);
    /// `None` until the job has run there.
    pub perf: Option<PerfParams>,
    /// Models per allowed GPU type (heterogeneity-aware policies).
    pub types: Vec<TypeModel>,
    /// Latest gradient statistics the job reported.
    pub grad: Option<GradStats>,
    pub limits: BatchLimits,
    /// GPU-count and batch the job may not leave (`None` = free), e.g. jobs pinned by the user.
    pub fixed_batch: Option<u32>,
    /// The most GPUs the job has run on so far (exploration: grow at most to twice this).
    pub max_replicas_seen: u32,
}

impl JobModel {
    /// The best batch and its goodput on `replicas` GPUs over `nodes` nodes, or `None` before
    /// the job has a fitted model.
    pub fn best(&self, nodes: u32, replicas: u32) -> Option<BatchChoice> {
        let perf = self.perf.as_ref()?;
        best_batch(perf, &self.grad_or_default(), &self.limits, nodes, replicas)
    }

    fn grad_or_default(&self) -> GradStats {
        self.grad.unwrap_or(GradStats { sqr: 1.0, var: 0.0 })
    }

    /// Another type whose multi-GPU scaling was observed, to bootstrap `gpu_type` from.
    fn scaling_reference(
        &self,
        gpu_type: &crate::cluster::GpuType,
    ) -> Option<(&TypeModel, &PerfParams)> {
        self.types
            .iter()
            .filter(|t| t.multi_gpu_observed && &t.gpu_type != gpu_type)
            .find_map(|t| t.perf.as_ref().map(|p| (t, p)))
    }

    fn type_model(&self, gpu_type: &crate::cluster::GpuType) -> Option<&TypeModel> {
        self.types.iter().find(|t| &t.gpu_type == gpu_type)
    }

    /// The parameters fitted on `gpu_type` (a model without per-type entries speaks for
    /// every type), `None` before the job ran there.
    pub fn perf_on(&self, gpu_type: &crate::cluster::GpuType) -> Option<&PerfParams> {
        if self.types.is_empty() {
            return self.perf.as_ref();
        }
        self.type_model(gpu_type)?.perf.as_ref()
    }

    /// This model with its intra-node sync on `gpu_type` taken as `ratio` × its inter-node
    /// sync: for a job not yet seen syncing within one node, what other jobs' syncs on the
    /// same machines say it would cost.
    pub fn with_intra_node_sync(&self, gpu_type: &crate::cluster::GpuType, ratio: f64) -> Self {
        let impute = |p: &mut PerfParams| {
            p.alpha_r = (p.alpha_n * ratio).max(LOWER);
            p.beta_r = (p.beta_n * ratio).max(LOWER);
        };
        let mut model = self.clone();
        let perf = if model.types.is_empty() {
            model.perf.as_mut()
        } else {
            model
                .types
                .iter_mut()
                .find(|t| &t.gpu_type == gpu_type)
                .and_then(|t| t.perf.as_mut())
        };
        if let Some(perf) = perf {
            impute(perf);
        }
        model
    }

    /// Takes the sync terms this model has not fitted on `gpu_type` from `donor`, the
    /// parameters another job of the same application fitted there, keeping its own compute
    /// terms: a job that has not yet synchronized is then priced on how its application
    /// scales, not as if syncing were free. Returns whether anything was taken.
    pub fn borrow_sync(&mut self, gpu_type: &crate::cluster::GpuType, donor: &PerfParams) -> bool {
        let Some(type_model) = self.types.iter_mut().find(|t| &t.gpu_type == gpu_type) else {
            return false;
        };
        let Some(own) = type_model.perf.as_mut() else {
            return false;
        };
        let (intra, inter) = own.sync_terms_to_borrow(donor);
        if !intra && !inter {
            return false;
        }
        if intra {
            (own.alpha_r, own.beta_r) = (donor.alpha_r, donor.beta_r);
        }
        if inter {
            (own.alpha_n, own.beta_n) = (donor.alpha_n, donor.beta_n);
        } else if !own.inter_node_fitted() {
            own.apply_inter_node_prior();
        }
        if !type_model.multi_gpu_observed {
            own.gamma = donor.gamma;
            type_model.multi_gpu_observed = true;
        }
        true
    }

    /// Best goodput configuration on `gpu_type`, Sia-style: a type's own model once a
    /// multi-GPU run there was seen; before that, its one-GPU goodput scaled by how another
    /// type with multi-GPU data scales (`thr(N,A) ≈ thr(1,A)/thr(1,B) · thr(N,B)`).
    pub fn best_on(
        &self,
        gpu_type: &crate::cluster::GpuType,
        nodes: u32,
        replicas: u32,
    ) -> Option<BatchChoice> {
        let grad = self.grad_or_default();
        let own = self.type_model(gpu_type)?;
        let own_perf = own.perf.as_ref()?;
        let direct = best_batch(own_perf, &grad, &own.limits, nodes, replicas);
        if replicas <= 1 || own.multi_gpu_observed {
            return direct;
        }
        let Some((reference, reference_perf)) = self.scaling_reference(gpu_type) else {
            return direct;
        };
        let own_one = best_batch(own_perf, &grad, &own.limits, 1, 1)?.goodput;
        let reference_one = best_batch(reference_perf, &grad, &reference.limits, 1, 1)?.goodput;
        let scaled = best_batch(reference_perf, &grad, &reference.limits, nodes, replicas)?;
        if reference_one <= 0.0 {
            return direct;
        }
        let batch = direct.unwrap_or(scaled);
        Some(BatchChoice {
            goodput: scaled.goodput * own_one / reference_one,
            ..batch
        })
    }

    /// `best_on(gpu_type, nodes, replicas)`'s goodput for each `(nodes, replicas)` of
    /// `configs`, without the batch choice (a policy pricing many options needs only the
    /// goodput). `memo` keeps each type's best-batch goodputs for the job's other calls: the
    /// one-GPU goodputs that bootstrapping divides by, and a reference type's goodputs that
    /// every unexplored type scales from, are computed once.
    pub fn goodputs_on(
        &self,
        gpu_type: &crate::cluster::GpuType,
        configs: &[(u32, u32)],
        memo: &mut GoodputMemo,
    ) -> Vec<Option<f64>> {
        let grad = self.grad_or_default();
        let Some(own) = self
            .types
            .iter()
            .position(|t| &t.gpu_type == gpu_type)
            .filter(|&i| self.types[i].perf.is_some())
        else {
            return vec![None; configs.len()];
        };
        let mut best = |index: usize, nodes: u32, replicas: u32| {
            *memo.0.entry((index, nodes, replicas)).or_insert_with(|| {
                let model = &self.types[index];
                best_batch(model.perf.as_ref()?, &grad, &model.limits, nodes, replicas)
                    .map(|c| c.goodput)
            })
        };
        // As `scaling_reference`: the first other type with multi-GPU data.
        let reference = (!self.types[own].multi_gpu_observed)
            .then(|| {
                self.types.iter().position(|t| {
                    t.multi_gpu_observed && &t.gpu_type != gpu_type && t.perf.is_some()
                })
            })
            .flatten();
        configs
            .iter()
            .map(|&(nodes, replicas)| {
                let Some(reference) = reference.filter(|_| replicas > 1) else {
                    return best(own, nodes, replicas);
                };
                let own_one = best(own, 1, 1)?;
                let reference_one = best(reference, 1, 1)?;
                let scaled = best(reference, nodes, replicas)?;
                if reference_one <= 0.0 {
                    return best(own, nodes, replicas);
                }
                Some(scaled * own_one / reference_one)
            })
            .collect()
    }

    /// Throughput (samples/s) on `gpu_type` at a fixed total batch, for rigid jobs
    /// (bootstrapped like `best_on`).
    pub fn throughput_on(
        &self,
        gpu_type: &crate::cluster::GpuType,
        nodes: u32,
        replicas: u32,
        batch: u32,
    ) -> Option<f64> {
        let own = self.type_model(gpu_type)?;
        let perf = own.perf.as_ref()?;
        let (local, accum) = split_batch(&own.limits, replicas, batch);
        let own_value = throughput(perf, nodes, replicas, f64::from(local), accum);
        if replicas <= 1 || own.multi_gpu_observed {
            return Some(own_value);
        }
        let Some((reference, reference_perf)) = self.scaling_reference(gpu_type) else {
            return Some(own_value);
        };
        let (l1, a1) = split_batch(&own.limits, 1, batch);
        let (r1, ra1) = split_batch(&reference.limits, 1, batch);
        let (rn, ran) = split_batch(&reference.limits, replicas, batch);
        let ratio = throughput(perf, 1, 1, f64::from(l1), a1)
            / throughput(reference_perf, 1, 1, f64::from(r1), ra1);
        Some(ratio * throughput(reference_perf, nodes, replicas, f64::from(rn), ran))
    }
}

/// Splits a fixed total batch over `replicas` GPUs, accumulating when a GPU cannot hold its
/// share (the artifacts' rule, without the one-GPU special case).
pub fn split_batch(limits: &BatchLimits, replicas: u32, batch: u32) -> (u32, u32) {
    let local = (f64::from(batch) / f64::from(replicas.max(1)) - 1e-8)
        .ceil()
        .max(1.0);
    let accum = ((local / f64::from(limits.max_local.max(1)) - 1e-8).ceil() - 1.0).max(0.0) as u32;
    let atomic = (local / f64::from(accum + 1) - 1e-8).ceil().max(1.0) as u32;
    (atomic, accum)
}

/// Which parameters the data can identify; the rest stay at their priors (Pollux's rules).
#[derive(Clone, Copy, Debug)]
struct Identifiable {
    alpha_c: bool,
    inter_node: bool,
    intra_node: bool,
    retrogress: bool,
}

const LOWER: f64 = 1e-8;

/// Until a multi-node run is seen, inter-node sync is priced at this many times intra-node.
const INTER_OVER_INTRA_PRIOR: f64 = 1.1;

/// Fits α/β/γ to observations: minimizes the RMS log error of accumulation and optimizer step
/// times plus Pollux's penalties 1e-3(γ−1)² and 1e-2((β_n/α_n)² + (β_r/α_r)²). Parameters
/// the data cannot identify keep their priors: α_c = half the mean accumulation time when one
/// batch size was seen; inter-node terms at their floor until a multi-node placement, intra-node
/// ones until a multi-GPU single-node one, β terms until more than two GPUs.
pub fn fit_perf_params(observations: &[Observation]) -> Option<PerfParams> {
    if observations.is_empty() {
        return None;
    }
    let first_bsz = observations[0].local_bsz;
    let known = Identifiable {
        alpha_c: observations.iter().any(|o| o.local_bsz != first_bsz),
        inter_node: observations.iter().any(|o| o.nodes > 1),
        intra_node: observations.iter().any(|o| o.nodes == 1 && o.replicas > 1),
        retrogress: observations.iter().any(|o| o.replicas > 2),
    };
    // The prior's step compute: the measured compute times, or whole steps without any.
    let measured: Vec<f64> = observations
        .iter()
        .filter_map(|o| o.accum_step_time)
        .collect();
    let mean_accum = if measured.is_empty() {
        observations.iter().map(|o| o.optim_step_time).sum::<f64>() / observations.len() as f64
    } else {
        measured.iter().sum::<f64>() / measured.len() as f64
    };
    // One local batch size seen: the fixed and per-sample parts of a step cannot be told
    // apart, so each takes half of it (the prior), both fixed. Left free, β_c could settle
    // where β_c·b ≪ α_c, a flat region of the objective, and the fit would miss the one
    // step time it has seen and predict no speedup from a smaller local batch.
    let fixed_compute =
        (!known.alpha_c).then(|| (mean_accum / 2.0, mean_accum / 2.0 / f64::from(first_bsz)));
    // Free parameters, each optimized as the log of its excess over the lower bound (γ − 1 for γ).
    let mut free: Vec<usize> = vec![6];
    if known.alpha_c {
        free.extend([0, 1]);
    }
    if known.inter_node {
        free.push(2);
        if known.retrogress {
            free.push(3);
        }
    }
    if known.intra_node {
        free.push(4);
        if known.retrogress {
            free.push(5);
        }
    }
    free.sort_unstable();
    let initial: [f64; 7] = [1e-1, 1e-2, 1e-1, 1e-2, 1e-1, 1e-2, 1.0 + 1e-3];
    let build = |x: &[f64]| -> PerfParams {
        let mut v = [LOWER, LOWER, LOWER, LOWER, LOWER, LOWER, 1.0];
        if let Some((alpha_c, beta_c)) = fixed_compute {
            v[0] = alpha_c;
            v[1] = beta_c;
        }
        for (slot, &index) in free.iter().enumerate() {
            v[index] = if index == 6 {
                1.0 + 9.0 / (1.0 + (-x[slot]).exp())
            } else {
                LOWER + x[slot].exp()
            };
        }
        PerfParams {
            alpha_c: v[0],
            beta_c: v[1],
            alpha_n: v[2],
            beta_n: v[3],
            alpha_r: v[4],
            beta_r: v[5],
            gamma: v[6],
        }
    };
    let start: Vec<f64> = free
        .iter()
        .map(|&i| {
            if i == 6 {
                -((9.0 / (initial[6] - 1.0)) - 1.0).ln()
            } else {
                (initial[i] - LOWER).ln()
            }
        })
        .collect();
    let objective = |x: &[f64]| fit_objective(&build(x), observations);
    let x = minimize_bfgs(&objective, start, 200);
    let mut params = build(&x);
    if !known.inter_node {
        params.apply_inter_node_prior();
    }
    Some(params)
}

fn fit_objective(p: &PerfParams, observations: &[Observation]) -> f64 {
    let n = observations.len() as f64;
    let (mut accum_err, mut accum_n, mut optim_err) = (0.0, 0.0, 0.0);
    for o in observations {
        let accum = accum_time(p, f64::from(o.local_bsz));
        let optim = optim_time(p, accum, network_time(p, o.nodes, o.replicas));
        if let Some(measured) = o.accum_step_time {
            accum_err += (accum.ln() - measured.max(1e-12).ln()).powi(2);
            accum_n += 1.0;
        }
        optim_err += (optim.ln() - o.optim_step_time.max(1e-12).ln()).powi(2);
    }
    let penalty = 1e-3 * (p.gamma - 1.0).powi(2)
        + 1e-2 * ((p.beta_n / p.alpha_n).powi(2) + (p.beta_r / p.alpha_r).powi(2));
    let accum_rmse = if accum_n > 0.0 {
        (accum_err / accum_n).sqrt()
    } else {
        0.0
    };
    let value = accum_rmse + (optim_err / n).sqrt() + penalty;
    if value.is_finite() { value } else { f64::MAX }
}

/// Central-difference gradient.
fn gradient(f: &dyn Fn(&[f64]) -> f64, x: &[f64]) -> Vec<f64> {
    let mut probe = x.to_vec();
    (0..x.len())
        .map(|i| {
            let h = 1e-6 * x[i].abs().max(1.0);
            probe[i] = x[i] + h;
            let up = f(&probe);
            probe[i] = x[i] - h;
            let down = f(&probe);
            probe[i] = x[i];
            (up - down) / (2.0 * h)
        })
        .collect()
}

/// Unconstrained BFGS with Armijo backtracking; small dimensions only.
fn minimize_bfgs(f: &dyn Fn(&[f64]) -> f64, mut x: Vec<f64>, max_iterations: usize) -> Vec<f64> {
    let n = x.len();
    let mut h = vec![vec![0.0; n]; n];
    for (i, row) in h.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    let mut fx = f(&x);
    let mut g = gradient(f, &x);
    for _ in 0..max_iterations {
        let direction: Vec<f64> = (0..n)
            .map(|i| -(0..n).map(|j| h[i][j] * g[j]).sum::<f64>())
            .collect();
        let slope: f64 = direction.iter().zip(&g).map(|(d, g)| d * g).sum();
        let (direction, slope) = if slope < 0.0 {
            (direction, slope)
        } else {
            // Not a descent direction: reset to steepest descent.
            for (i, row) in h.iter_mut().enumerate() {
                row.iter_mut()
                    .enumerate()
                    .for_each(|(j, v)| *v = if i == j { 1.0 } else { 0.0 });
            }
            (
                g.iter().map(|v| -v).collect(),
                -g.iter().map(|v| v * v).sum::<f64>(),
            )
        };
        let mut step = 1.0;
        let mut next: Vec<f64>;
        let mut f_next;
        loop {
            next = x
                .iter()
                .zip(&direction)
                .map(|(x, d)| x + step * d)
                .collect();
            f_next = f(&next);
            if f_next <= fx + 1e-4 * step * slope || step < 1e-10 {
                break;
            }
            step *= 0.5;
        }
        if f_next > fx {
            break;
        }
        let g_next = gradient(f, &next);
        let s: Vec<f64> = next.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = g_next.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy: f64 = s.iter().zip(&y).map(|(a, b)| a * b).sum();
        let improvement = fx - f_next;
        x = next;
        fx = f_next;
        g = g_next;
        if improvement < 1e-12 && g.iter().map(|v| v.abs()).fold(0.0, f64::max) < 1e-7 {
            break;
        }
        if sy > 1e-12 {
            // BFGS update of the inverse Hessian.
            let hy: Vec<f64> = (0..n)
                .map(|i| (0..n).map(|j| h[i][j] * y[j]).sum())
                .collect();
            let yhy: f64 = y.iter().zip(&hy).map(|(a, b)| a * b).sum();
            for i in 0..n {
                for j in 0..n {
                    h[i][j] +=
                        ((sy + yhy) * s[i] * s[j]) / (sy * sy) - (hy[i] * s[j] + s[i] * hy[j]) / sy;
                }
            }
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRUE: PerfParams = PerfParams {
        alpha_c: 0.02,
        beta_c: 0.001,
        alpha_n: 0.08,
        beta_n: 0.01,
        alpha_r: 0.01,
        beta_r: 0.002,
        gamma: 1.6,
    };

    #[test]
    fn iteration_time_by_hand() {
        // 2 nodes × 4 GPUs, local batch 100, one accumulation step:
        // accum = 0.02 + 0.1 = 0.12; network = 0.08 + 0.01·6 = 0.14;
        // optim = (0.12^1.6 + 0.14^1.6)^(1/1.6); total = 0.12 + optim.
        let optim = (0.12f64.powf(1.6) + 0.14f64.powf(1.6)).powf(1.0 / 1.6);
        assert!((iteration_time(&TRUE, 2, 8, 100.0, 1) - (0.12 + optim)).abs() < 1e-12);
        // One GPU: no sync to speak of.
        assert!((iteration_time(&TRUE, 1, 1, 100.0, 0) - 0.12).abs() < 1e-6);
        // Throughput counts every sample of every accumulation step.
        assert!((throughput(&TRUE, 2, 8, 100.0, 1) - 1600.0 / (0.12 + optim)).abs() < 1e-9);
    }

    #[test]
    fn efficiency_matches_the_noise_scale_formula() {
        let grad = GradStats { sqr: 2.0, var: 6.0 };
        // φ = M0·var/sqr = 100·3 = 300; efficiency(M) = (φ + M0)/(φ + M).
        for batch in [100.0, 200.0, 800.0, 3200.0] {
            let expected = (300.0 + 100.0) / (300.0 + batch);
            assert!(
                (efficiency(&grad, 100.0, batch) - expected).abs() < 1e-12,
                "{batch}"
            );
        }
    }

    #[test]
    fn best_batch_grows_with_noise_and_respects_limits() {
        let limits = BatchLimits {
            init_batch: 128,
            max_batch: 4096,
            min_local: 32,
            max_local: 512,
        };
        let quiet = GradStats { sqr: 1.0, var: 0.1 };
        let noisy = GradStats {
            sqr: 1.0,
            var: 100.0,
        };
        let small = best_batch(&TRUE, &quiet, &limits, 1, 4).expect("fits");
        let large = best_batch(&TRUE, &noisy, &limits, 1, 4).expect("fits");
        assert!(
            large.total_batch(4) > small.total_batch(4),
            "{small:?} {large:?}"
        );
        for choice in [small, large] {
            assert!((32..=512).contains(&choice.local_bsz));
            assert!(choice.total_batch(4) <= 4096 + 4 * 512);
        }
        // Nothing fits when even the smallest per-GPU batch exceeds the largest total batch.
        assert!(best_batch(&TRUE, &quiet, &limits, 64, 256).is_none());
    }

    fn observe(
        p: &PerfParams,
        nodes: u32,
        replicas: u32,
        local_bsz: u32,
        noise: f64,
    ) -> Observation {
        let accum = accum_time(p, f64::from(local_bsz));
        Observation {
            nodes,
            replicas,
            local_bsz,
            accum_step_time: Some(accum * (1.0 + noise)),
            optim_step_time: optim_time(p, accum, network_time(p, nodes, replicas)) * (1.0 - noise),
        }
    }

    #[test]
    fn fitting_recovers_known_parameters_from_noisy_data() {
        let mut observations = Vec::new();
        let mut k = 0u32;
        for &(nodes, replicas) in &[(1, 1), (1, 2), (1, 4), (2, 8), (4, 16), (3, 6), (2, 4)] {
            for &bsz in &[32, 64, 128, 256] {
                k += 1;
                // Deterministic ±2% noise.
                let noise = 0.02 * ((f64::from(k) * 1.7).sin());
                observations.push(observe(&TRUE, nodes, replicas, bsz, noise));
            }
        }
        let fit = fit_perf_params(&observations).expect("fits");
        let close = |a: f64, b: f64, tolerance: f64| ((a - b) / b).abs() < tolerance;
        assert!(close(fit.alpha_c, TRUE.alpha_c, 0.15), "{fit:?}");
        assert!(close(fit.beta_c, TRUE.beta_c, 0.1), "{fit:?}");
        assert!(close(fit.alpha_n, TRUE.alpha_n, 0.25), "{fit:?}");
        assert!(close(fit.alpha_r, TRUE.alpha_r, 0.5), "{fit:?}");
        assert!((fit.gamma - TRUE.gamma).abs() < 0.4, "{fit:?}");
        // What matters most: predicted step times are within a few percent.
        for o in &observations {
            let predicted = optim_time(
                &fit,
                accum_time(&fit, f64::from(o.local_bsz)),
                network_time(&fit, o.nodes, o.replicas),
            );
            assert!(
                close(predicted, o.optim_step_time, 0.08),
                "{o:?} → {predicted}"
            );
        }
    }

    #[test]
    fn unidentifiable_parameters_keep_their_priors() {
        let one = [observe(&TRUE, 1, 1, 64, 0.0)];
        let fit = fit_perf_params(&one).expect("fits");
        let close = |a: f64, b: f64, tolerance: f64| ((a - b) / b).abs() < tolerance;
        assert!(
            (fit.alpha_c - accum_time(&TRUE, 64.0) / 2.0).abs() < 1e-12,
            "α_c = half the step"
        );
        assert!(
            close(accum_time(&fit, 64.0), accum_time(&TRUE, 64.0), 1e-9),
            "the step it has seen is predicted exactly: {fit:?}"
        );
        assert!(
            close(accum_time(&fit, 32.0), 0.75 * accum_time(&TRUE, 64.0), 1e-9),
            "half the local batch, three quarters of the time (the prior's split)"
        );
        assert!(
            fit.alpha_r <= 1e-7 && fit.beta_r <= 1e-7,
            "no multi-GPU data: sync at its floor"
        );
        assert!(
            fit.alpha_n >= fit.alpha_r,
            "inter-node never cheaper than intra-node"
        );
        assert!(fit_perf_params(&[]).is_none());
    }

    #[test]
    fn a_fit_tells_which_sync_terms_it_has_seen() {
        let seen = |placements: &[(u32, u32)]| {
            let observations: Vec<Observation> = placements
                .iter()
                .flat_map(|&(nodes, replicas)| {
                    [32, 128].map(|bsz| observe(&TRUE, nodes, replicas, bsz, 0.0))
                })
                .collect();
            let fit = fit_perf_params(&observations).expect("fits");
            (fit.intra_node_fitted(), fit.inter_node_fitted())
        };
        assert_eq!(seen(&[(1, 1)]), (false, false));
        assert_eq!(seen(&[(1, 1), (1, 4)]), (true, false));
        assert_eq!(seen(&[(1, 1), (2, 8)]), (false, true));
        assert_eq!(seen(&[(1, 4), (2, 8)]), (true, true));
    }
}

#[cfg(test)]
mod bootstrap_tests {
    use super::*;
    use crate::cluster::GpuType;

    const FAST: PerfParams = PerfParams {
        alpha_c: 0.01,
        beta_c: 0.0002,
        alpha_n: 0.05,
        beta_n: 0.005,
        alpha_r: 0.004,
        beta_r: 0.001,
        gamma: 1.5,
    };

    fn slow_one_gpu_only() -> PerfParams {
        // Fitted from one single-GPU run: sync terms at their floor (the prior).
        PerfParams {
            alpha_c: 0.03,
            beta_c: 0.0006,
            alpha_n: 1e-8,
            beta_n: 1e-8,
            alpha_r: 1e-8,
            beta_r: 1e-8,
            gamma: 1.0,
        }
    }

    fn model() -> JobModel {
        let limits = BatchLimits {
            init_batch: 64,
            max_batch: 4096,
            min_local: 16,
            max_local: 512,
        };
        JobModel {
            perf: Some(FAST),
            types: vec![
                TypeModel {
                    gpu_type: GpuType::new("a100"),
                    perf: Some(FAST),
                    multi_gpu_observed: true,
                    limits,
                },
                TypeModel {
                    gpu_type: GpuType::new("t4"),
                    perf: Some(slow_one_gpu_only()),
                    multi_gpu_observed: false,
                    limits,
                },
            ],
            grad: Some(GradStats {
                sqr: 1.0,
                var: 20.0,
            }),
            limits,
            fixed_batch: None,
            max_replicas_seen: 8,
        }
    }

    #[test]
    fn an_unexplored_type_scales_like_the_explored_one() {
        let m = model();
        let (a100, t4) = (GpuType::new("a100"), GpuType::new("t4"));
        let a_one = m.best_on(&a100, 1, 1).expect("a100 one").goodput;
        let a_eight = m.best_on(&a100, 2, 8).expect("a100 eight").goodput;
        let t_one = m.best_on(&t4, 1, 1).expect("t4 one").goodput;
        let t_eight = m.best_on(&t4, 2, 8).expect("t4 eight").goodput;
        // thr(8, t4) ≈ thr(1, t4)/thr(1, a100) · thr(8, a100).
        assert!(
            (t_eight - t_one / a_one * a_eight).abs() < 1e-9 * t_eight,
            "{t_eight} vs {}",
            t_one / a_one * a_eight
        );
        // Without bootstrapping, the t4 prior (no sync cost) would promise near-linear scaling.
        let naive = best_batch(
            &slow_one_gpu_only(),
            &m.grad.expect("grad"),
            &m.limits,
            2,
            8,
        )
        .expect("naive")
        .goodput;
        assert!(
            t_eight < naive,
            "bootstrapped {t_eight} should be below the optimistic prior {naive}"
        );
        // One GPU needs no bootstrapping.
        assert_eq!(
            t_one,
            best_batch(
                &slow_one_gpu_only(),
                &m.grad.expect("grad"),
                &m.limits,
                1,
                1
            )
            .expect("one")
            .goodput
        );
        // An unknown type has no estimate.
        assert!(m.best_on(&GpuType::new("v100"), 1, 1).is_none());
    }

    #[test]
    fn a_job_borrows_only_the_sync_terms_it_has_not_fitted() {
        let (a100, t4) = (GpuType::new("a100"), GpuType::new("t4"));
        let borrowed = |own: &JobModel, gpu_type: &GpuType, donor: &PerfParams| {
            let mut model = own.clone();
            model.borrow_sync(gpu_type, donor).then_some(model)
        };
        let mut own = model();
        // Never synced on a100: both sync terms at the floor, as one single-GPU run leaves them.
        own.types[0].perf = Some(slow_one_gpu_only());
        own.types[0].multi_gpu_observed = false;
        let with_donor = borrowed(&own, &a100, &FAST).expect("borrows");
        let perf = with_donor.perf_on(&a100).expect("fitted");
        assert_eq!(
            (
                perf.alpha_n,
                perf.beta_n,
                perf.alpha_r,
                perf.beta_r,
                perf.gamma
            ),
            (
                FAST.alpha_n,
                FAST.beta_n,
                FAST.alpha_r,
                FAST.beta_r,
                FAST.gamma
            )
        );
        let own_compute = slow_one_gpu_only();
        assert_eq!(
            (perf.alpha_c, perf.beta_c),
            (own_compute.alpha_c, own_compute.beta_c)
        );
        assert!(with_donor.types[0].multi_gpu_observed);
        // Across nodes it now scales as the donor's sync says, not as if syncing were free.
        let (one, eight) = (
            with_donor.best_on(&a100, 1, 1).expect("one").goodput,
            with_donor.best_on(&a100, 2, 8).expect("eight").goodput,
        );
        let optimistic = own.best_on(&a100, 2, 8).expect("optimistic").goodput;
        assert!(eight < optimistic, "{eight} vs {optimistic}");
        assert!(eight > one, "{eight} vs {one}");
        // Synced within a node already: only the cross-node terms are taken.
        let mut intra_only = slow_one_gpu_only();
        (intra_only.alpha_r, intra_only.beta_r) = (0.02, 0.003);
        own.types[0].perf = Some(intra_only);
        own.types[0].multi_gpu_observed = true;
        let with_donor = borrowed(&own, &a100, &FAST).expect("borrows");
        let perf = with_donor.perf_on(&a100).expect("fitted");
        assert_eq!((perf.alpha_r, perf.beta_r), (0.02, 0.003));
        assert_eq!((perf.alpha_n, perf.beta_n), (FAST.alpha_n, FAST.beta_n));
        // Nothing to take: the job fitted both, the donor never synced, or the type is not
        // the job's.
        assert!(borrowed(&model(), &a100, &FAST).is_none());
        assert!(borrowed(&own, &t4, &slow_one_gpu_only()).is_none());
        assert!(borrowed(&own, &GpuType::new("v100"), &FAST).is_none());
    }

    #[test]
    fn goodputs_on_many_configurations_equal_best_on_each() {
        let mut m = model();
        let configs: Vec<(u32, u32)> = [1, 2, 4, 8, 16, 24, 64]
            .iter()
            .map(|&g: &u32| (g.div_ceil(8), g))
            .collect();
        let types = ["a100", "t4", "v100"].map(GpuType::new);
        for variant in 0..3 {
            if variant == 1 {
                // No type with multi-GPU data: nothing to bootstrap from.
                m.types[0].multi_gpu_observed = false;
            }
            if variant == 2 {
                // A batch range that fits no single GPU.
                m.types[1].limits.max_batch = 8;
            }
            let mut memo = GoodputMemo::default();
            for gpu_type in &types {
                let many = m.goodputs_on(gpu_type, &configs, &mut memo);
                let each: Vec<Option<f64>> = configs
                    .iter()
                    .map(|&(n, r)| m.best_on(gpu_type, n, r).map(|c| c.goodput))
                    .collect();
                assert_eq!(many, each, "{gpu_type:?}, variant {variant}");
            }
        }
        let mut memo = GoodputMemo::default();
        assert!(
            m.goodputs_on(&types[1], &configs, &mut memo)
                .iter()
                .all(Option::is_none)
        );
        assert!(
            m.goodputs_on(&types[0], &configs, &mut memo)
                .iter()
                .any(Option::is_some)
        );
    }

    #[test]
    fn fixed_batch_throughput_is_bootstrapped_the_same_way() {
        let m = model();
        let (a100, t4) = (GpuType::new("a100"), GpuType::new("t4"));
        let ratio = m.throughput_on(&t4, 1, 1, 512).expect("t4")
            / m.throughput_on(&a100, 1, 1, 512).expect("a100");
        let t_eight = m.throughput_on(&t4, 2, 8, 512).expect("t4 eight");
        let a_eight = m.throughput_on(&a100, 2, 8, 512).expect("a100 eight");
        assert!((t_eight - ratio * a_eight).abs() < 1e-9 * t_eight);
        // 2048 over 3 GPUs: 683 each, above the 512 cap, so two steps of 342.
        assert_eq!(split_batch(&m.limits, 3, 2048), (342, 1));
    }
}
