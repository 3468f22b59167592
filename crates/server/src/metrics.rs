//! `GET /metrics`: the control plane in the Prometheus/OpenMetrics text format
//! (prometheus-client). Gauges are read from the live state at each scrape (a fresh registry
//! per scrape, so a finished job's series disappear); the round latency histogram is the one
//! the scheduling loop observes into ([`RoundLatency`]).
//!
//! Names (prefix `adaptsched_`, units in the name, counters end in `_total`) are listed in
//! docs/dashboard.md. The route needs a bearer token like `/v1` (`Authorization: Bearer`,
//! Prometheus' `authorization.credentials_file`).

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use adaptsched_store::{JobFilter, JobState};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

/// The content type prometheus-client's text encoder writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type FloatGauge = Gauge<f64, AtomicU64>;

/// Seconds per scheduling round (snapshot, decide, reconcile, apply), observed by the loop.
/// Buckets from 0.1 ms to about 26 s (×4).
#[derive(Debug, Clone)]
pub struct RoundLatency(Histogram);

impl Default for RoundLatency {
    fn default() -> Self {
        RoundLatency(Histogram::new(exponential_buckets(1e-4, 4.0, 10)))
    }
}

impl RoundLatency {
    pub fn observe(&self, seconds: f64) {
        if seconds.is_finite() && seconds >= 0.0 {
            self.0.observe(seconds);
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeviceLabels {
    node: String,
    device_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GpuLabels {
    node: String,
    gpu: String,
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    job: String,
    name: String,
    user: String,
}

/// A gauge family with unit `unit` (`None`: no unit) registered under `name`.
fn gauges<L>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
) -> Family<L, FloatGauge>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<L, FloatGauge>::default();
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, family.clone()),
        None => registry.register(name, help, family.clone()),
    }
    family
}

fn ratio() -> Option<Unit> {
    Some(Unit::Other("ratio".to_string()))
}

/// Measured goodput of a job from its latest report: samples per second
/// (`samples / step_time`) times the statistical efficiency of its batch relative to the
/// initial one (1 without gradient statistics or batch limits), as Pollux defines it.
fn goodput(
    spec: Option<&adaptsched_api::BatchSpec>,
    samples: &[adaptsched_store::MetricSample],
) -> Option<(f64, f64)> {
    let last = samples.last()?;
    if !last.step_time.is_finite() || last.step_time <= 0.0 {
        return None;
    }
    let throughput = last.samples as f64 / last.step_time;
    let efficiency = match (spec, crate::model::gradient_stats(samples)) {
        (Some(spec), Some(grad)) if spec.initial > 0 && last.samples > 0 => {
            adaptsched_core::perf::efficiency(&grad, f64::from(spec.initial), last.samples as f64)
        }
        _ => 1.0,
    };
    Some((throughput, throughput * efficiency.clamp(0.0, 1.0)))
}

/// Everything `/metrics` shows, encoded.
pub async fn render(state: &AppState) -> Result<String, ApiError> {
    let jobs = state
        .db(|store| -> adaptsched_store::Result<_> {
            let jobs = store.list_jobs(&JobFilter::all())?;
            let mut running = Vec::new();
            for job in jobs.iter().filter(|job| job.state == JobState::Running) {
                // The latest few steps are enough for the latest rate and gradient statistics.
                let all = store.metrics(job.id, 0)?;
                let keep = all.len().saturating_sub(16);
                running.push((job.id, all[keep..].to_vec()));
            }
            Ok((jobs, running))
        })
        .await??;
    let (jobs, running_samples) = jobs;
    let mut registry = Registry::with_prefix("adaptsched");
    let node = crate::http::node_view(state);
    let node_name = node.name.clone();

    let devices = gauges::<DeviceLabels>(
        &mut registry,
        "node_devices",
        "Devices (GPUs or CPU slots) the node offers",
        None,
    );
    let device_labels = DeviceLabels {
        node: node_name.clone(),
        device_type: node.gpu_type.clone(),
    };
    devices
        .get_or_create(&device_labels)
        .set(f64::from(node.gpus));
    let allocated = gauges::<DeviceLabels>(
        &mut registry,
        "node_devices_allocated",
        "Devices allocated to running jobs",
        None,
    );
    allocated
        .get_or_create(&device_labels)
        .set(f64::from(node.gpus_allocated));
    let balance = gauges::<NodeLabels>(
        &mut registry,
        "node_balance",
        "Capacity-proportional balance p_i = (x_i/sum x)/(y_i/sum y); absent while nothing is allocated",
        ratio(),
    );
    let node_labels = NodeLabels {
        node: node_name.clone(),
    };
    if let Some(p) = node.balance_ratio {
        balance.get_or_create(&node_labels).set(p);
    }
    let cpu = gauges::<NodeLabels>(
        &mut registry,
        "node_cpu_utilization",
        "CPU utilization of all cores, 0..1",
        ratio(),
    );
    let memory_used = gauges::<NodeLabels>(
        &mut registry,
        "node_memory_used",
        "Memory in use on the node",
        Some(Unit::Bytes),
    );
    let memory_total = gauges::<NodeLabels>(
        &mut registry,
        "node_memory_total",
        "Memory of the node",
        Some(Unit::Bytes),
    );
    let gpu_util = gauges::<GpuLabels>(
        &mut registry,
        "gpu_utilization",
        "GPU utilization (NVML), 0..1",
        ratio(),
    );
    let gpu_used = gauges::<GpuLabels>(
        &mut registry,
        "gpu_memory_used",
        "GPU memory in use (NVML)",
        Some(Unit::Bytes),
    );
    let gpu_total = gauges::<GpuLabels>(
        &mut registry,
        "gpu_memory_total",
        "GPU memory (NVML)",
        Some(Unit::Bytes),
    );
    if let Some(sample) = &node.telemetry {
        cpu.get_or_create(&node_labels)
            .set(sample.cpu_percent / 100.0);
        memory_used
            .get_or_create(&node_labels)
            .set(sample.memory_used_gb * 1e9);
        memory_total
            .get_or_create(&node_labels)
            .set(sample.memory_total_gb * 1e9);
        for gpu in sample.gpus.iter().flatten() {
            let labels = GpuLabels {
                node: node_name.clone(),
                gpu: gpu.index.to_string(),
                model: gpu.name.clone(),
            };
            gpu_util
                .get_or_create(&labels)
                .set(gpu.utilization_percent / 100.0);
            gpu_used
                .get_or_create(&labels)
                .set(gpu.memory_used_gb * 1e9);
            gpu_total
                .get_or_create(&labels)
                .set(gpu.memory_total_gb * 1e9);
        }
    }

    let by_state = gauges::<StateLabels>(&mut registry, "jobs", "Jobs by state", None);
    for job_state in JobState::ALL {
        let count = jobs.iter().filter(|job| job.state == job_state).count();
        by_state
            .get_or_create(&StateLabels {
                state: job_state.as_str().to_string(),
            })
            .set(count as f64);
    }
    let restarts_all = Counter::<u64>::default();
    restarts_all.inc_by(
        jobs.iter()
            .map(|job| u64::from(job.attempts.saturating_sub(1)))
            .sum(),
    );
    registry.register(
        "restarts",
        "Restarts of all jobs (each start after a job's first: preemption, resize, retry, server restart)",
        restarts_all,
    );
    let job_restarts = Family::<JobLabels, Counter<u64>>::default();
    registry.register(
        "job_restarts",
        "Restarts of each queued or running job",
        job_restarts.clone(),
    );
    let job_devices = gauges::<JobLabels>(
        &mut registry,
        "job_devices",
        "Devices held by each running job",
        None,
    );
    let throughput = gauges::<JobLabels>(
        &mut registry,
        "job_throughput_samples_per_second",
        "Samples per second of each running job's latest reported step",
        None,
    );
    let goodput_family = gauges::<JobLabels>(
        &mut registry,
        "job_goodput_samples_per_second",
        "Goodput of each running job: throughput x statistical efficiency of its batch (Pollux)",
        None,
    );
    let status = state.control.status().clone();
    for job in jobs
        .iter()
        .filter(|job| matches!(job.state, JobState::Queued | JobState::Running))
    {
        let labels = JobLabels {
            job: job.id.0.to_string(),
            name: job.submission.name.clone(),
            user: job.submission.user.clone(),
        };
        job_restarts
            .get_or_create(&labels)
            .inc_by(u64::from(job.attempts.saturating_sub(1)));
        if job.state != JobState::Running {
            continue;
        }
        let held = status.running.get(&job.id).map_or(0, |r| r.devices.len());
        job_devices.get_or_create(&labels).set(held as f64);
        let samples = running_samples
            .iter()
            .find(|(id, _)| *id == job.id)
            .map_or(&[][..], |(_, samples)| samples.as_slice());
        let spec = crate::admission::stored_request(&job.submission).batch;
        if let Some((rate, good)) = goodput(spec.as_ref(), samples) {
            throughput.get_or_create(&labels).set(rate);
            goodput_family.get_or_create(&labels).set(good);
        }
    }
    let rounds = Counter::<u64>::default();
    rounds.inc_by(status.rounds);
    registry.register("rounds", "Scheduling rounds run", rounds);
    registry.register_with_unit(
        "round_duration",
        "Wall time of a scheduling round (snapshot, decide, reconcile, apply)",
        Unit::Seconds,
        state.control.round_latency.0.clone(),
    );

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).map_err(ApiError::internal)?;
    Ok(text)
}

/// `GET /metrics` (any valid bearer token).
pub async fn handler(State(state): State<AppState>, _caller: Caller) -> Result<Response, ApiError> {
    let text = render(&state).await?;
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        text,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use adaptsched_store::MetricSample;

    fn sample(samples: u64, step_time: f64, grad: Option<(f64, f64)>) -> MetricSample {
        MetricSample {
            step: 1,
            samples,
            loss: 1.0,
            step_time,
            sync_time: 0.0,
            grad_sqr: grad.map(|g| g.0),
            grad_var: grad.map(|g| g.1),
            at: 0.0,
        }
    }

    #[test]
    fn goodput_is_throughput_times_efficiency() {
        assert_eq!(goodput(None, &[]), None);
        assert_eq!(goodput(None, &[sample(64, 0.0, None)]), None);
        // No batch limits: goodput = throughput.
        assert_eq!(
            goodput(None, &[sample(64, 0.5, Some((1.0, 1.0)))]),
            Some((128.0, 128.0))
        );
        // Twice the initial batch with var = sqr: gain (1+1)/(1/2+1) = 4/3, efficiency 2/3.
        let spec = adaptsched_api::BatchSpec {
            initial: 32,
            max: 256,
            min_local: None,
            max_local: None,
        };
        let (rate, good) = goodput(Some(&spec), &[sample(64, 0.5, Some((1.0, 1.0)))]).unwrap();
        assert_eq!(rate, 128.0);
        assert!((good - 128.0 * 2.0 / 3.0).abs() < 1e-9, "{good}");
    }

    #[test]
    fn round_latency_ignores_nonsense() {
        let latency = RoundLatency::default();
        latency.observe(0.01);
        latency.observe(f64::NAN);
        latency.observe(-1.0);
        let mut registry = Registry::default();
        registry.register_with_unit("round", "", Unit::Seconds, latency.0.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("round_seconds_count 1\n"), "{text}");
    }
}
