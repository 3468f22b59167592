//! Node telemetry: CPU, memory, network rates, per-job CPU and memory (summed over each job's
//! process tree) and, where NVML is available, per-GPU utilization, memory, temperature and
//! power. Sampled every few seconds into a bounded ring buffer.

use crate::node::GpuProbe;
use adaptsched_api::{GpuTelemetry, InterfaceRate, JobUsage, NodeTelemetry};
use adaptsched_store::DurableJobId;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;
use sysinfo::{Networks, Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// The latest samples, oldest first, at most `capacity` of them.
#[derive(Debug)]
pub struct History {
    samples: VecDeque<NodeTelemetry>,
    capacity: usize,
}

impl History {
    pub fn new(capacity: usize) -> Self {
        History {
            samples: VecDeque::with_capacity(capacity.min(4096)),
            capacity: capacity.max(1),
        }
    }

    pub fn push(&mut self, sample: NodeTelemetry) {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    pub fn latest(&self) -> Option<&NodeTelemetry> {
        self.samples.back()
    }

    pub fn samples(&self) -> impl Iterator<Item = &NodeTelemetry> {
        self.samples.iter()
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// History shared between the sampler task and the HTTP handlers.
pub type SharedHistory = Arc<Mutex<History>>;

pub fn latest(history: &SharedHistory) -> Option<NodeTelemetry> {
    history
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .latest()
        .cloned()
}

/// Reads the machine. Not thread-safe by itself: one sampler, driven by one task.
pub struct Sampler {
    system: Option<System>,
    networks: Option<Networks>,
    last_network_refresh: Instant,
    gpus: GpuProbe,
}

const GB: f64 = 1e9;

impl Sampler {
    pub fn new(gpus: GpuProbe) -> Self {
        if let Some(note) = gpus.note() {
            // Once, at start: a machine without GPUs is normal, not an error per sample.
            tracing::info!("{note}");
        }
        let mut system = System::new().ok();
        if let Some(system) = system.as_mut() {
            system.refresh_cpu_usage();
        }
        Sampler {
            system,
            networks: Networks::new_with_refreshed_list().ok(),
            last_network_refresh: Instant::now(),
            gpus,
        }
    }

    /// One sample at `at` (seconds since the epoch); `jobs` are the running jobs' root pids.
    pub fn sample(&mut self, at: f64, jobs: &[(DurableJobId, u32)]) -> NodeTelemetry {
        let (cpu_percent, memory_used_gb, memory_total_gb, usage) = match self.system.as_mut() {
            Some(system) => {
                system.refresh_cpu_usage();
                system.refresh_memory();
                system.refresh_processes_specifics(
                    ProcessesToUpdate::All,
                    true,
                    ProcessRefreshKind::nothing().with_cpu().with_memory(),
                );
                (
                    f64::from(system.global_cpu_usage()),
                    system.used_memory() as f64 / GB,
                    system.total_memory() as f64 / GB,
                    job_usage(system, jobs),
                )
            }
            None => (0.0, 0.0, 0.0, Vec::new()),
        };
        NodeTelemetry {
            at,
            cpu_percent,
            memory_used_gb,
            memory_total_gb,
            network: self.network_rates(),
            gpus: self.gpu_telemetry(),
            gpu_note: self.gpus.note().map(str::to_string),
            jobs: usage,
        }
    }

    fn network_rates(&mut self) -> Vec<InterfaceRate> {
        let Some(networks) = self.networks.as_mut() else {
            return Vec::new();
        };
        let elapsed = self.last_network_refresh.elapsed().as_secs_f64().max(1e-3);
        networks.refresh(true);
        self.last_network_refresh = Instant::now();
        let mut rates: Vec<InterfaceRate> = networks
            .iter()
            .map(|(name, data)| InterfaceRate {
                interface: name.to_string_lossy().into_owned(),
                rx_bytes_per_s: data.received() as f64 / elapsed,
                tx_bytes_per_s: data.transmitted() as f64 / elapsed,
            })
            .collect();
        rates.sort_by(|a, b| a.interface.cmp(&b.interface));
        rates
    }

    fn gpu_telemetry(&self) -> Option<Vec<GpuTelemetry>> {
        let GpuProbe::Available { nvml, count, .. } = &self.gpus else {
            return None;
        };
        let gpus = (0..*count)
            .filter_map(|index| {
                let device = nvml.device_by_index(index).ok()?;
                let memory = device.memory_info().ok();
                Some(GpuTelemetry {
                    index,
                    name: device.name().unwrap_or_default(),
                    utilization_percent: device
                        .utilization_rates()
                        .map_or(0.0, |u| f64::from(u.gpu)),
                    memory_used_gb: memory.as_ref().map_or(0.0, |m| m.used as f64 / GB),
                    memory_total_gb: memory.as_ref().map_or(0.0, |m| m.total as f64 / GB),
                    temperature_c: device
                        .temperature(TemperatureSensor::Gpu)
                        .ok()
                        .map(f64::from),
                    power_w: device.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
                })
            })
            .collect();
        Some(gpus)
    }
}

/// CPU (percent of one core, as `top` shows it) and memory of each job, summed over its
/// process and all descendants (a trainer's workers are its children).
fn job_usage(system: &System, jobs: &[(DurableJobId, u32)]) -> Vec<JobUsage> {
    let roots: HashMap<Pid, DurableJobId> = jobs
        .iter()
        .map(|&(job, pid)| (Pid::from_u32(pid), job))
        .collect();
    let mut totals: HashMap<DurableJobId, (f64, f64)> =
        jobs.iter().map(|&(job, _)| (job, (0.0, 0.0))).collect();
    for (&pid, process) in system.processes() {
        let mut cursor = Some(pid);
        // Bounded walk up the parent chain: pid loops cannot happen, but a bound is cheap.
        for _ in 0..64 {
            let Some(current) = cursor else { break };
            if let Some(job) = roots.get(&current) {
                let entry = totals.entry(*job).or_default();
                entry.0 += f64::from(process.cpu_usage());
                entry.1 += process.memory() as f64 / GB;
                break;
            }
            cursor = system.process(current).and_then(|p| p.parent());
        }
    }
    let mut usage: Vec<JobUsage> = totals
        .into_iter()
        .map(|(job, (cpu, memory))| JobUsage {
            job: job.0,
            cpu_percent: cpu,
            memory_gb: memory,
        })
        .collect();
    usage.sort_by_key(|u| u.job);
    usage
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::probe_gpus;
    use std::ffi::OsStr;

    fn sample(at: f64) -> NodeTelemetry {
        NodeTelemetry {
            at,
            cpu_percent: 0.0,
            memory_used_gb: 0.0,
            memory_total_gb: 0.0,
            network: Vec::new(),
            gpus: None,
            gpu_note: None,
            jobs: Vec::new(),
        }
    }

    #[test]
    fn history_keeps_the_newest_samples_up_to_its_capacity() {
        let mut history = History::new(3);
        for at in 0..5 {
            history.push(sample(f64::from(at)));
        }
        let kept: Vec<f64> = history.samples().map(|s| s.at).collect();
        assert_eq!(kept, vec![2.0, 3.0, 4.0]);
        assert_eq!(history.latest().unwrap().at, 4.0);
    }

    #[test]
    fn without_nvml_a_sample_has_no_gpus_and_says_why_and_still_measures_the_rest() {
        let probe = probe_gpus(Some(OsStr::new("/nonexistent/libnvidia-ml.so.1")));
        let mut sampler = Sampler::new(probe);
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let job = DurableJobId(42);
        let telemetry = sampler.sample(10.0, &[(job, child.id())]);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(telemetry.gpus, None);
        assert!(
            telemetry
                .gpu_note
                .as_deref()
                .is_some_and(|n| n.contains("NVML")),
            "{telemetry:?}"
        );
        assert!(telemetry.memory_total_gb > 0.0, "{telemetry:?}");
        assert!(telemetry.memory_used_gb <= telemetry.memory_total_gb);
        assert_eq!(telemetry.jobs.len(), 1);
        assert_eq!(telemetry.jobs[0].job, 42);
        assert!(telemetry.jobs[0].memory_gb > 0.0, "{telemetry:?}");
    }
}
