//! The adaptsched control plane: `adaptsched serve` (HTTP API, scheduling loop, executors,
//! node telemetry) over the durable store.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Flags of `adaptsched serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = adaptsched_api::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Data dir: database, logs, checkpoints, token, server URL.
    #[arg(long, env = "ADAPTSCHED_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Scheduling policy (registry name).
    #[arg(long, default_value = adaptsched_policies::DEFAULT_POLICY)]
    pub policy: String,
    /// Seconds between scheduling rounds (rounds also run on submissions and exits).
    #[arg(long, default_value_t = 60.0)]
    pub interval: f64,
    /// Offer this many CPU device slots on this node instead of (or besides) GPUs.
    #[arg(long)]
    pub cpu_slots: Option<u32>,
    /// Seconds a job gets between SIGTERM and SIGKILL when stopped or resized.
    #[arg(long, default_value_t = 30.0)]
    pub grace_period: f64,
}

/// Runs the server until interrupted.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    anyhow::bail!("adaptsched serve is being built (args: {args:?})")
}
