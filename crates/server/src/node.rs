//! This machine as a scheduling node: its devices (NVIDIA GPUs through NVML, or CPU device
//! slots), CPU cores and memory. Without the NVIDIA driver there are simply no GPUs, and the
//! reason is kept for the API (`gpu_note`).

use crate::executor::DeviceKind;
use adaptsched_core::{Cluster, GpuType, Node};
use nvml_wrapper::Nvml;
use std::ffi::OsStr;

/// The `gpu_type` of CPU device slots.
pub const CPU_SLOT_TYPE: &str = "cpu-slot";

/// What NVML said about this machine's GPUs.
pub enum GpuProbe {
    Available {
        nvml: Box<Nvml>,
        count: u32,
        name: String,
    },
    Absent {
        note: String,
    },
}

impl GpuProbe {
    pub fn note(&self) -> Option<&str> {
        match self {
            GpuProbe::Available { .. } => None,
            GpuProbe::Absent { note } => Some(note),
        }
    }
}

/// Opens NVML (from `lib_path` if given, else the driver's `libnvidia-ml.so.1`). Never fails:
/// a machine without the driver, or with a broken one, has no GPUs and a note saying why.
pub fn probe_gpus(lib_path: Option<&OsStr>) -> GpuProbe {
    let init = match lib_path {
        Some(path) => Nvml::builder().lib_path(path).init(),
        None => Nvml::init(),
    };
    let nvml = match init {
        Ok(nvml) => nvml,
        Err(error) => {
            return GpuProbe::Absent {
                note: format!("no NVIDIA GPU telemetry: NVML unavailable ({error})"),
            };
        }
    };
    let count = match nvml.device_count() {
        Ok(count) => count,
        Err(error) => {
            return GpuProbe::Absent {
                note: format!("no NVIDIA GPU telemetry: cannot count devices ({error})"),
            };
        }
    };
    if count == 0 {
        return GpuProbe::Absent {
            note: "no NVIDIA GPU telemetry: the driver reports no GPUs".to_string(),
        };
    }
    let name = nvml
        .device_by_index(0)
        .and_then(|device| device.name())
        .unwrap_or_else(|_| "nvidia-gpu".to_string());
    GpuProbe::Available {
        nvml: Box::new(nvml),
        count,
        name,
    }
}

/// This node as the scheduler sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeInfo {
    /// The node as policies see it (`cpu_cores = 0` in CPU-slot mode: the slots are the CPU
    /// budget, see `describe_node`).
    pub node: Node,
    pub device_kind: DeviceKind,
    /// Display name of the device type (`NVIDIA H200`, `cpu-slot`).
    pub device_label: String,
    /// Real CPU cores and memory of the machine (admission checks per-replica requests
    /// against them).
    pub machine_cores: f64,
    pub machine_memory_gb: f64,
}

impl NodeInfo {
    pub fn cluster(&self) -> Cluster {
        Cluster {
            name: "local".to_string(),
            nodes: vec![self.node.clone()],
        }
    }

    pub fn capacity(&self) -> u32 {
        self.node.gpus
    }

    pub fn device_word(&self) -> &'static str {
        match self.device_kind {
            DeviceKind::Gpu => "GPU",
            DeviceKind::CpuSlot => CPU_SLOT_TYPE,
        }
    }
}

/// Decides what the node offers. `--cpu-slots N` offers N CPU slots instead of GPUs; without
/// it the node offers its GPUs, and a machine with no GPU offers one CPU slot per core so
/// `adaptsched serve` runs jobs anywhere out of the box.
///
/// In CPU-slot mode the node's `cpu_cores` is 0 (no CPU constraint in `validate_plan`): the
/// slots already divide the CPUs, and counting per-replica cores as well would leave slots
/// idle on small machines.
pub fn describe_node(
    name: &str,
    cpu_slots: Option<u32>,
    gpus: Option<(u32, &str)>,
    machine_cores: u32,
    machine_memory_gb: f64,
) -> NodeInfo {
    let (kind, devices, label) = match (cpu_slots, gpus) {
        (Some(slots), _) => (DeviceKind::CpuSlot, slots, CPU_SLOT_TYPE.to_string()),
        (None, Some((count, gpu_name))) if count > 0 => {
            (DeviceKind::Gpu, count, gpu_name.to_string())
        }
        (None, _) => (
            DeviceKind::CpuSlot,
            machine_cores.max(1),
            CPU_SLOT_TYPE.to_string(),
        ),
    };
    let cpu_cores = match kind {
        DeviceKind::Gpu => machine_cores,
        DeviceKind::CpuSlot => 0,
    };
    NodeInfo {
        node: Node {
            name: name.to_string(),
            gpu_type: GpuType::new(&label),
            gpus: devices,
            cpu_cores,
            memory_gb: machine_memory_gb,
            network_gbps: 0.0,
        },
        device_kind: kind,
        device_label: label,
        machine_cores: f64::from(machine_cores),
        machine_memory_gb,
    }
}

/// Host name, cores and memory of this machine, from sysinfo.
pub fn machine() -> (String, u32, f64) {
    let name = sysinfo::System::host_name().unwrap_or_else(|_| "local".to_string());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let memory_gb = sysinfo::System::new()
        .map(|mut system| {
            system.refresh_memory();
            system.total_memory() as f64 / 1e9
        })
        .unwrap_or(0.0);
    (name, cores, memory_gb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_driver_there_are_no_gpus_and_a_note_says_why() {
        let probe = probe_gpus(Some(OsStr::new("/nonexistent/libnvidia-ml.so.1")));
        let note = probe.note().expect("no GPUs without a driver");
        assert!(note.contains("NVML unavailable"), "{note}");
    }

    #[test]
    fn cpu_slots_replace_gpus_and_lift_the_core_constraint() {
        let node = describe_node("n", Some(6), Some((2, "NVIDIA H200")), 2, 8.0);
        assert_eq!(node.device_kind, DeviceKind::CpuSlot);
        assert_eq!(node.capacity(), 6);
        assert_eq!(node.node.gpu_type.as_str(), "cpu-slot");
        assert_eq!(node.node.cpu_cores, 0);
        assert_eq!(node.machine_cores, 2.0);
    }

    #[test]
    fn gpus_are_offered_when_present_else_one_slot_per_core() {
        let gpu = describe_node("n", None, Some((8, "NVIDIA H200")), 16, 128.0);
        assert_eq!(
            (gpu.device_kind, gpu.capacity(), gpu.node.cpu_cores),
            (DeviceKind::Gpu, 8, 16)
        );
        assert_eq!(gpu.node.gpu_type.as_str(), "nvidia h200");
        let none = describe_node("n", None, None, 4, 8.0);
        assert_eq!(
            (none.device_kind, none.capacity()),
            (DeviceKind::CpuSlot, 4)
        );
    }
}
