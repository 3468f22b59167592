//! Cluster definitions: built-in presets and TOML files.

use crate::error::InputError;
use adaptsched_core::{Cluster, GpuType, Node};
use serde::Deserialize;
use std::path::Path;

/// The largest cluster a file may describe (keeps GPU counts far from u32 overflow).
pub const MAX_CLUSTER_GPUS: u64 = 10_000_000;

/// Every built-in preset name.
pub const PRESET_NAMES: &[&str] = &["pollux-t4x64", "sia-hetero64", "sia-physical44", "philly"];

/// A group of identical machines.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeGroup {
    /// Name prefix; nodes are named `<name>-<i>`.
    name: String,
    #[serde(default = "one")]
    count: u32,
    gpu_type: String,
    gpus: u32,
    #[serde(default)]
    cpu_cores: u32,
    #[serde(default)]
    memory_gb: f64,
    #[serde(default)]
    network_gbps: f64,
}

fn one() -> u32 {
    1
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterFile {
    #[serde(default)]
    name: Option<String>,
    nodes: Vec<NodeGroup>,
}

fn group(
    name: &str,
    count: u32,
    gpu_type: &str,
    gpus: u32,
    cpu_cores: u32,
    memory_gb: f64,
    network_gbps: f64,
) -> NodeGroup {
    NodeGroup {
        name: name.to_string(),
        count,
        gpu_type: gpu_type.to_string(),
        gpus,
        cpu_cores,
        memory_gb,
        network_gbps,
    }
}

fn build(name: &str, groups: &[NodeGroup]) -> Cluster {
    let mut nodes = Vec::new();
    for g in groups {
        for i in 0..g.count {
            nodes.push(Node {
                name: format!("{}-{i}", g.name),
                gpu_type: GpuType::new(&g.gpu_type),
                gpus: g.gpus,
                cpu_cores: g.cpu_cores,
                memory_gb: g.memory_gb,
                network_gbps: g.network_gbps,
            });
        }
    }
    Cluster {
        name: name.to_string(),
        nodes,
    }
}

// Machine shapes (CPU, memory, network are the vendors' published specs; the artifacts
// model GPUs only): AWS g4dn.12xlarge (4×T4, 48 vCPU, 192 GB, 50 Gb/s); the Sia paper's
// 8×RTX 2080Ti servers (assumed 32 cores, 256 GB, 50 Gb/s Ethernet as the paper states);
// DGX A100 (8×A100, 128 cores, 1 TB, 200 Gb/s); 4×Quadro RTX 6000 (assumed 32 cores, 256 GB,
// 50 Gb/s).
fn t4_nodes(count: u32) -> NodeGroup {
    group("t4", count, "t4", 4, 48, 192.0, 50.0)
}
fn rtx_nodes(count: u32) -> NodeGroup {
    group("rtx", count, "rtx2080ti", 8, 32, 256.0, 50.0)
}
fn a100_nodes(count: u32) -> NodeGroup {
    group("a100", count, "a100", 8, 128, 1024.0, 200.0)
}
fn quadro_nodes(count: u32) -> NodeGroup {
    group("quadro", count, "quadro6000", 4, 32, 256.0, 50.0)
}

/// A built-in cluster by name.
pub fn preset(name: &str) -> Option<Cluster> {
    Some(match name {
        "pollux-t4x64" => build(name, &[t4_nodes(16)]),
        "sia-hetero64" => build(name, &[t4_nodes(6), rtx_nodes(3), a100_nodes(2)]),
        "sia-physical44" => build(name, &[rtx_nodes(3), a100_nodes(2), quadro_nodes(1)]),
        "philly" => crate::readers::philly::philly_cluster(),
        _ => return None,
    })
}

/// Reads a cluster TOML file (`[[nodes]]` groups of `name`, `count`, `gpu_type`, `gpus`,
/// `cpu_cores`, `memory_gb`, `network_gbps`).
pub fn read_cluster_file(path: &Path) -> Result<Cluster, InputError> {
    let text = std::fs::read_to_string(path).map_err(|e| InputError::io(path, e))?;
    let file: ClusterFile = toml::from_str(&text)
        .map_err(|e| InputError::file(path, e.to_string().trim().to_string()))?;
    if file.nodes.is_empty() {
        return Err(InputError::file(path, "no [[nodes]]"));
    }
    let mut total_gpus: u64 = 0;
    for (i, g) in file.nodes.iter().enumerate() {
        if g.gpus == 0 || g.count == 0 {
            return Err(InputError::file(
                path,
                format!(
                    "nodes[{i}]: gpus = {} and count = {} must both be ≥ 1",
                    g.gpus, g.count
                ),
            ));
        }
        total_gpus += u64::from(g.gpus) * u64::from(g.count);
        if total_gpus > MAX_CLUSTER_GPUS {
            return Err(InputError::file(
                path,
                format!("nodes[{i}]: the cluster would have more than {MAX_CLUSTER_GPUS} GPUs"),
            ));
        }
        if g.gpu_type.trim().is_empty() {
            return Err(InputError::file(
                path,
                format!("nodes[{i}].gpu_type: empty"),
            ));
        }
        if !(g.memory_gb.is_finite() && g.memory_gb >= 0.0) {
            return Err(InputError::file(
                path,
                format!("nodes[{i}].memory_gb: {} must be ≥ 0", g.memory_gb),
            ));
        }
        if !(g.network_gbps.is_finite() && g.network_gbps >= 0.0) {
            return Err(InputError::file(
                path,
                format!("nodes[{i}].network_gbps: {} must be ≥ 0", g.network_gbps),
            ));
        }
    }
    let name = file
        .name
        .clone()
        .unwrap_or_else(|| crate::readers::file_stem(path));
    Ok(build(&name, &file.nodes))
}

/// A preset name or a TOML file path.
pub fn resolve_cluster(spec: &str) -> Result<Cluster, InputError> {
    if let Some(cluster) = preset(spec) {
        return Ok(cluster);
    }
    let path = Path::new(spec);
    if path.exists() {
        return read_cluster_file(path);
    }
    Err(InputError::Other(format!(
        "unknown cluster {spec:?}: not a preset ({}) nor an existing TOML file",
        PRESET_NAMES.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn presets_have_the_papers_gpu_counts() {
        assert_eq!(preset("pollux-t4x64").expect("preset").total_gpus(), 64);
        let hetero = preset("sia-hetero64").expect("preset");
        assert_eq!(hetero.total_gpus(), 64);
        assert_eq!(hetero.gpus_by_type().get(&GpuType::new("a100")), Some(&16));
        assert_eq!(preset("sia-physical44").expect("preset").total_gpus(), 44);
    }

    #[test]
    fn reads_a_toml_cluster_and_rejects_bad_ones() {
        let mut file = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .expect("temp");
        writeln!(
            file,
            "name = \"lab\"\n[[nodes]]\nname = \"a\"\ncount = 2\ngpu_type = \"A100\"\ngpus = 8"
        )
        .expect("write");
        let cluster = read_cluster_file(file.path()).expect("valid");
        assert_eq!(cluster.nodes.len(), 2);
        assert_eq!(cluster.nodes[1].name, "a-1");
        assert_eq!(cluster.nodes[0].gpu_type, GpuType::new("a100"));

        let mut bad = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .expect("temp");
        writeln!(bad, "[[nodes]]\nname = \"a\"\ngpu_type = \"t4\"\ngpus = -1").expect("write");
        let err = read_cluster_file(bad.path())
            .expect_err("negative GPUs")
            .to_string();
        assert!(err.contains("gpus") && err.contains("-1"), "{err}");

        for (text, needle) in [
            (
                "[[nodes]]\nname = \"a\"\ngpu_type = \"t4\"\ngpus = 0",
                "gpus = 0",
            ),
            (
                "[[nodes]]\nname = \"a\"\ncount = 0\ngpu_type = \"t4\"\ngpus = 4",
                "count = 0",
            ),
            (
                "[[nodes]]\nname = \"a\"\ncount = 2\ngpu_type = \"t4\"\ngpus = 4294967295",
                "more than",
            ),
        ] {
            let mut file = tempfile::Builder::new()
                .suffix(".toml")
                .tempfile()
                .expect("temp");
            writeln!(file, "{text}").expect("write");
            let err = read_cluster_file(file.path())
                .expect_err(needle)
                .to_string();
            assert!(err.contains(needle), "{err}");
        }

        let err = resolve_cluster("no-such-preset")
            .expect_err("unknown")
            .to_string();
        assert!(
            err.contains("no-such-preset") && err.contains("pollux-t4x64"),
            "{err}"
        );
    }
}
