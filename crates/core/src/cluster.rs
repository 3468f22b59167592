//! Nodes with heterogeneous resources and the cluster that holds them.

use crate::ids::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A GPU model, by canonical lowercase name (`t4`, `rtx2080ti`, `a100`, `quadro6000`, `v100`, ...).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GpuType(pub String);

impl GpuType {
    pub fn new(name: &str) -> Self {
        GpuType(name.trim().to_ascii_lowercase())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GpuType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One machine: its GPUs (one type per node), CPU cores, memory and network bandwidth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub gpu_type: GpuType,
    pub gpus: u32,
    pub cpu_cores: u32,
    pub memory_gb: f64,
    pub network_gbps: f64,
}

/// The machines a policy may place jobs on; a node's `NodeId` is its index here.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    pub name: String,
    pub nodes: Vec<Node>,
}

impl Cluster {
    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(id.index())
    }

    pub fn total_gpus(&self) -> u32 {
        self.nodes.iter().map(|n| n.gpus).sum()
    }

    /// GPU count per type, in type order.
    pub fn gpus_by_type(&self) -> BTreeMap<GpuType, u32> {
        let mut by_type = BTreeMap::new();
        for node in &self.nodes {
            *by_type.entry(node.gpu_type.clone()).or_insert(0) += node.gpus;
        }
        by_type
    }
}
