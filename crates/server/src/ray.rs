//! The Ray executor (`adaptsched serve --executor ray --ray-address URL`): runs jobs on an
//! existing Ray cluster through its dashboard's REST APIs (docs/ray.md).
//!
//! - **Nodes** come from Ray's state API (`GET /api/v0/nodes`), refreshed every poll. A node
//!   offers devices when it has an `adaptsched_slot` resource (CPU device slots) or `GPU`s;
//!   a node is told apart by its unique `adaptsched_node_<name>` resource, else by its
//!   `node:<ip>` resource when its IP is unique in the cluster.
//! - **A job's attempt** over N nodes is one Ray job (entrypoint) per node, submitted with
//!   `POST /api/jobs/`: the argv shell-quoted behind a `cd` into the working dir, pinned to
//!   its node through `entrypoint_resources`, with the launch environment plus `RANK`,
//!   `WORLD_SIZE`, `MASTER_ADDR` in `runtime_env.env_vars`. Stop, status and logs go through
//!   the Jobs API; logs are appended to the job's log files so `/v1/jobs/{id}/logs` works as
//!   with the local executor.
//! - **An attempt ends** when all its pieces have ended. When one piece fails, or its node
//!   leaves the cluster, the others are stopped, and the attempt is reported once they are
//!   all gone, so a restarted job never overlaps its previous attempt.
//! - **Capacity** is re-read every round: the loop takes [`describe_pool`] of the nodes as
//!   last polled (`Executor::pool`), so nodes that join or leave change what the policy
//!   plans for; `/v1/nodes` lists each usable node ([`node_views`]).
//! - **Grace**: each piece carries `RAY_JOB_STOP_WAIT_TIME_S` (the server's `--grace-period`)
//!   in its runtime env, which Ray's job supervisor reads between SIGTERM and SIGKILL.
//!
//! All HTTP is blocking (ureq) on one monitor thread, fed by a command queue, so the loop's
//! `start`/`stop` never wait for the network. The request and reply shaping is in small pure
//! functions at the top, unit-tested below.

use crate::executor::{
    DeviceKind, Executor, ExecutorError, ExitEvent, ExitStatus, LaunchSpec, StartedProcess,
};
use adaptsched_api::{GpuTelemetry, NodeTelemetry, NodeView, env};
use adaptsched_store::DurableJobId;
use anyhow::Context;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::mpsc as tokio_mpsc;

/// Prefix of the custom resource that names a node: `adaptsched_node_<name>: 1`.
pub const NODE_RESOURCE_PREFIX: &str = "adaptsched_node_";
/// Custom resource counting a node's CPU device slots.
pub const SLOT_RESOURCE: &str = "adaptsched_slot";
/// How much of its node's naming resource a piece asks for: small, so many pieces fit.
pub const PIN_AMOUNT: f64 = 0.001;
/// Metadata key carrying the server's data dir, to find our own Ray jobs after a restart.
pub const META_DATA_DIR: &str = "adaptsched_data_dir";
/// Seconds Ray's job supervisor waits between SIGTERM and SIGKILL when a job is stopped. It
/// reads it from its own environment, which Ray builds from the submission's `runtime_env`,
/// so setting it per piece carries `--grace-period` to Ray.
pub const STOP_WAIT_VAR: &str = "RAY_JOB_STOP_WAIT_TIME_S";
/// `gpu_type` of GPU nodes (Ray does not say which model the `GPU` resource counts).
pub const RAY_GPU_LABEL: &str = "ray-gpu";

// ---- pure shaping -------------------------------------------------------------------------

/// Quotes one word for a POSIX shell: left bare when it is made only of safe characters,
/// else in single quotes with each `'` written as `'\''`.
pub fn shell_quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The entrypoint Ray runs through its shell: `cd <dir> && exec <argv...>`, every word
/// quoted, so the job's argv arrives unchanged and no argument is interpreted by the shell.
pub fn entrypoint(working_dir: &Path, argv: &[String]) -> String {
    let words: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
    format!(
        "cd {} && exec {}",
        shell_quote(&working_dir.display().to_string()),
        words.join(" ")
    )
}

/// How a piece is pinned to its node.
#[derive(Clone, Debug, PartialEq)]
pub enum Pin {
    /// The node's unique custom resource (`adaptsched_node_<name>`).
    Resource(String),
}

/// A Ray node as adaptsched uses it.
#[derive(Clone, Debug, PartialEq)]
pub struct RayNode {
    /// `<name>` of its `adaptsched_node_<name>` resource, else its IP.
    pub name: String,
    pub node_id: String,
    pub ip: String,
    pub alive: bool,
    /// Devices it offers: `adaptsched_slot`, else `GPU`.
    pub slots: u32,
    pub kind: DeviceKind,
    pub cpus: f64,
    pub memory_bytes: f64,
    /// `None` when the node cannot be told apart from another (no naming resource and a
    /// shared IP): it offers nothing.
    pub pin: Option<Pin>,
}

/// Parses the reply of `GET /api/v0/nodes` into nodes (alive and dead).
pub fn parse_nodes(body: &Value) -> anyhow::Result<Vec<RayNode>> {
    let list = body
        .pointer("/data/result/result")
        .and_then(Value::as_array)
        .context("no data.result.result list in the reply")?;
    let mut nodes = Vec::new();
    for entry in list {
        let text = |key: &str| entry.get(key).and_then(Value::as_str).unwrap_or_default();
        let resources = entry
            .get("resources_total")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let amount = |key: &str| resources.get(key).and_then(Value::as_f64).unwrap_or(0.0);
        let marker = resources
            .keys()
            .find_map(|key| key.strip_prefix(NODE_RESOURCE_PREFIX))
            .map(str::to_string);
        let (slots, kind) = if amount(SLOT_RESOURCE) >= 1.0 {
            (amount(SLOT_RESOURCE).floor() as u32, DeviceKind::CpuSlot)
        } else {
            (amount("GPU").floor() as u32, DeviceKind::Gpu)
        };
        let ip = text("node_ip").to_string();
        nodes.push(RayNode {
            name: marker.clone().unwrap_or_else(|| ip.clone()),
            node_id: text("node_id").to_string(),
            ip: ip.clone(),
            alive: text("state") == "ALIVE",
            slots,
            kind,
            cpus: amount("CPU"),
            memory_bytes: amount("memory"),
            pin: Some(Pin::Resource(match marker {
                Some(name) => format!("{NODE_RESOURCE_PREFIX}{name}"),
                None => format!("node:{ip}"),
            })),
        });
    }
    // `node:<ip>` only tells nodes apart when no other live node has the same IP.
    let ips: Vec<(String, bool)> = nodes.iter().map(|n| (n.ip.clone(), n.alive)).collect();
    for node in &mut nodes {
        let shared = ips
            .iter()
            .filter(|(ip, alive)| *alive && *ip == node.ip)
            .count()
            > 1;
        if shared && matches!(&node.pin, Some(Pin::Resource(r)) if r.starts_with("node:")) {
            node.pin = None;
        }
    }
    Ok(nodes)
}

/// Nodes that can take pieces: alive, with devices and a pin.
pub fn usable(nodes: &[RayNode]) -> impl Iterator<Item = &RayNode> {
    nodes
        .iter()
        .filter(|n| n.alive && n.slots > 0 && n.pin.is_some())
}

/// Places `wanted` devices on nodes given each node's free devices: on one node when one
/// fits them all (the fullest such node, to keep larger holes free), else over as few nodes
/// as possible, emptiest first (ties by name). `None` when they do not fit.
pub fn place(free: &[(String, u32)], wanted: u32) -> Option<Vec<(String, u32)>> {
    if wanted == 0 {
        return None;
    }
    if let Some((name, _)) = free
        .iter()
        .filter(|(_, slots)| *slots >= wanted)
        .min_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)))
    {
        return Some(vec![(name.clone(), wanted)]);
    }
    let mut order: Vec<&(String, u32)> = free.iter().filter(|(_, s)| *s > 0).collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut left = wanted;
    let mut pieces = Vec::new();
    for (name, slots) in order {
        if left == 0 {
            break;
        }
        let take = (*slots).min(left);
        pieces.push((name.clone(), take));
        left -= take;
    }
    (left == 0).then_some(pieces)
}

/// The `entrypoint_resources` (and GPU count) pinning a piece of `devices` to `node`.
pub fn piece_resources(node: &RayNode, devices: u32) -> (BTreeMap<String, f64>, f64) {
    let mut resources = BTreeMap::new();
    if let Some(Pin::Resource(name)) = &node.pin {
        resources.insert(name.clone(), PIN_AMOUNT);
    }
    let gpus = match node.kind {
        DeviceKind::CpuSlot => {
            resources.insert(SLOT_RESOURCE.to_string(), f64::from(devices));
            0.0
        }
        // Ray sets CUDA_VISIBLE_DEVICES for the entrypoint from `entrypoint_num_gpus`.
        DeviceKind::Gpu => f64::from(devices),
    };
    (resources, gpus)
}

/// The launch environment of one piece: the job's, with its rank among the pieces.
/// `ADAPTSCHED_REPLICAS` stays the whole allocation (the batch variables are global);
/// `ADAPTSCHED_CPU_SLOTS` lists this piece's own slots (0-based on its node).
pub fn piece_env(
    base: &BTreeMap<String, String>,
    rank: usize,
    world: usize,
    master_addr: &str,
    devices: u32,
    kind: DeviceKind,
) -> BTreeMap<String, String> {
    let mut vars = base.clone();
    let mut set = |k: &str, v: String| {
        vars.insert(k.to_string(), v);
    };
    set(env::RANK, rank.to_string());
    set(env::WORLD_SIZE, world.to_string());
    set(env::LOCAL_RANK, "0".to_string());
    set(env::NODES, world.to_string());
    set(env::MASTER_ADDR, master_addr.to_string());
    let local: Vec<String> = (0..devices).map(|d| d.to_string()).collect();
    match kind {
        DeviceKind::CpuSlot => set(env::CPU_SLOTS, local.join(",")),
        DeviceKind::Gpu => {
            // Ray chooses the GPUs and sets CUDA_VISIBLE_DEVICES itself.
            vars.remove(env::CUDA_VISIBLE_DEVICES);
            vars.remove(env::CPU_SLOTS);
        }
    }
    vars
}

/// Sets [`STOP_WAIT_VAR`] to the grace period in whole seconds, rounded up (Ray parses an
/// integer; rounding down would cut a job's checkpoint short).
pub fn with_stop_wait(vars: &mut BTreeMap<String, String>, grace: Duration) {
    let seconds = grace.as_secs_f64().ceil() as u64;
    vars.insert(STOP_WAIT_VAR.to_string(), seconds.to_string());
}

/// One piece's submission.
#[derive(Clone, Debug, PartialEq)]
pub struct Submission {
    pub submission_id: String,
    pub entrypoint: String,
    pub resources: BTreeMap<String, f64>,
    pub gpus: f64,
    pub env: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
}

/// The body of `POST /api/jobs/`.
pub fn submission_body(submission: &Submission) -> Value {
    let mut body = json!({
        "entrypoint": submission.entrypoint,
        "submission_id": submission.submission_id,
        "entrypoint_num_cpus": 0,
        "entrypoint_resources": submission.resources,
        "runtime_env": {"env_vars": submission.env},
        "metadata": submission.metadata,
    });
    if submission.gpus > 0.0 {
        body["entrypoint_num_gpus"] = json!(submission.gpus);
    }
    body
}

/// A piece as Ray reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PieceState {
    /// Not yet submitted (queued on the monitor), or PENDING in Ray.
    Pending,
    Running,
    Ended(ExitStatus),
}

/// Maps the reply of `GET /api/jobs/{id}` (Ray's `status`, `driver_exit_code`) to a piece
/// state: SUCCEEDED is exit 0; FAILED its exit code (1 when Ray has none, e.g. the runtime
/// env failed); STOPPED its exit code if the entrypoint exited by itself after the SIGTERM,
/// else SIGTERM.
pub fn piece_state(body: &Value) -> PieceState {
    let code = body
        .get("driver_exit_code")
        .and_then(Value::as_i64)
        .map(|c| c as i32);
    let ended = |code, signal| PieceState::Ended(ExitStatus { code, signal });
    match body.get("status").and_then(Value::as_str).unwrap_or("") {
        "PENDING" => PieceState::Pending,
        "RUNNING" => PieceState::Running,
        "SUCCEEDED" => ended(Some(0), None),
        "FAILED" => ended(Some(code.filter(|&c| c != 0).unwrap_or(1)), None),
        "STOPPED" => match code {
            Some(code) => ended(Some(code), None),
            None => ended(None, Some(15)),
        },
        _ => PieceState::Pending,
    }
}

/// The status of an attempt from its pieces' (all ended): the first failure by rank, else
/// success.
pub fn combine(statuses: &[ExitStatus]) -> ExitStatus {
    statuses
        .iter()
        .copied()
        .find(|s| !s.success())
        .unwrap_or(ExitStatus {
            code: Some(0),
            signal: None,
        })
}

/// The exit of a piece whose node left the cluster.
pub const NODE_LOST: ExitStatus = ExitStatus {
    code: None,
    signal: Some(9),
};

/// A short stable tag of the data dir, so two servers can share a Ray cluster.
pub fn data_dir_tag(data_dir: &Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(data_dir.display().to_string().as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// Where rank `rank`'s output goes: rank 0 into the job's log, others beside it.
pub fn rank_log(stdout: &Path, rank: usize) -> PathBuf {
    if rank == 0 {
        stdout.to_path_buf()
    } else {
        stdout.with_file_name(format!("stdout.rank{rank}.log"))
    }
}

// ---- the Ray client -----------------------------------------------------------------------

/// A blocking client of the dashboard's REST APIs.
#[derive(Clone)]
pub struct RayClient {
    agent: ureq::Agent,
    base: String,
}

impl RayClient {
    pub fn new(address: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        RayClient {
            agent,
            base: address.trim_end_matches('/').to_string(),
        }
    }

    fn finish(path: &str, response: ureq::http::Response<ureq::Body>) -> anyhow::Result<Value> {
        let status = response.status();
        let body = response
            .into_body()
            .into_with_config()
            .limit(64 << 20)
            .read_to_vec()
            .with_context(|| format!("reading the reply to {path}"))?;
        anyhow::ensure!(
            status.is_success(),
            "{path}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(500)
                .collect::<String>()
        );
        serde_json::from_slice(&body).with_context(|| format!("{path}: reply is not JSON"))
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let response = self
            .agent
            .get(&url)
            .call()
            .with_context(|| format!("GET {url}"))?;
        Self::finish(path, response)
    }

    pub fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let response = self
            .agent
            .post(&url)
            .content_type("application/json")
            .send(serde_json::to_vec(body)?)
            .with_context(|| format!("POST {url}"))?;
        Self::finish(path, response)
    }

    pub fn nodes(&self) -> anyhow::Result<Vec<RayNode>> {
        parse_nodes(&self.get("/api/v0/nodes?limit=10000")?)
    }

    pub fn submit(&self, submission: &Submission) -> anyhow::Result<()> {
        self.post("/api/jobs/", &submission_body(submission))
            .map(drop)
    }

    pub fn status(&self, id: &str) -> anyhow::Result<Value> {
        self.get(&format!("/api/jobs/{id}"))
    }

    pub fn logs(&self, id: &str) -> anyhow::Result<String> {
        let body = self.get(&format!("/api/jobs/{id}/logs"))?;
        Ok(body
            .get("logs")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string())
    }

    pub fn stop(&self, id: &str) -> anyhow::Result<()> {
        self.post(&format!("/api/jobs/{id}/stop"), &json!({}))
            .map(drop)
    }

    /// Per-node utilization from `GET /nodes?view=summary` (keyed by node id).
    pub fn node_usage(&self) -> anyhow::Result<HashMap<String, NodeUsage>> {
        Ok(parse_usage(&self.get("/nodes?view=summary")?))
    }
}

/// What Ray's reporter says about a node's use.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeUsage {
    pub cpu_percent: f64,
    pub memory_used_bytes: f64,
    pub memory_total_bytes: f64,
    /// (utilization %, memory used bytes, memory total bytes) per GPU.
    pub gpus: Vec<(f64, f64, f64)>,
}

/// Parses `GET /nodes?view=summary`: `cpu`, `mem` ([total, available, percent, used]) and
/// `gpus` (`utilizationGpu`, `memoryUsed`/`memoryTotal` in MiB) per node.
pub fn parse_usage(body: &Value) -> HashMap<String, NodeUsage> {
    let mut usage = HashMap::new();
    let list = body
        .pointer("/data/summary")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for entry in list {
        let Some(id) = entry.pointer("/raylet/nodeId").and_then(Value::as_str) else {
            continue;
        };
        let mem = |i: usize| {
            entry
                .pointer(&format!("/mem/{i}"))
                .and_then(Value::as_f64)
                .unwrap_or(0.0)
        };
        let gpus = entry
            .get("gpus")
            .and_then(Value::as_array)
            .map(|gpus| {
                gpus.iter()
                    .map(|g| {
                        let f = |k: &str| g.get(k).and_then(Value::as_f64).unwrap_or(0.0);
                        (
                            f("utilizationGpu"),
                            f("memoryUsed") * 1048576.0,
                            f("memoryTotal") * 1048576.0,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        usage.insert(
            id.to_string(),
            NodeUsage {
                cpu_percent: entry.get("cpu").and_then(Value::as_f64).unwrap_or(0.0),
                memory_total_bytes: mem(0),
                memory_used_bytes: mem(0) - mem(1),
                gpus,
            },
        );
    }
    usage
}

// ---- the executor -------------------------------------------------------------------------

struct Piece {
    submission: Submission,
    node: String,
    devices: u32,
    state: PieceState,
    log: PathBuf,
    log_written: usize,
}

struct RayJob {
    attempt: u32,
    pieces: Vec<Piece>,
    /// Stops were sent to every piece (a stop asked for, or a piece failed).
    stopping: bool,
    stderr: PathBuf,
}

impl RayJob {
    /// How the pieces that have ended ended.
    fn ended(&self) -> Vec<ExitStatus> {
        self.pieces
            .iter()
            .filter_map(|p| match p.state {
                PieceState::Ended(status) => Some(status),
                _ => None,
            })
            .collect()
    }
}

/// What the executor and its monitor thread share.
#[derive(Default)]
struct Shared {
    nodes: Vec<RayNode>,
    usage: HashMap<String, NodeUsage>,
    /// When `usage` was read (seconds since the epoch).
    usage_at: Option<f64>,
    jobs: HashMap<DurableJobId, RayJob>,
}

impl Shared {
    fn nodes(&self) -> Vec<(RayNode, Option<NodeUsage>)> {
        self.nodes
            .iter()
            .map(|n| (n.clone(), self.usage.get(&n.node_id).cloned()))
            .collect()
    }

    fn placements(&self) -> BTreeMap<DurableJobId, Vec<(String, u32)>> {
        self.jobs
            .iter()
            .map(|(job, ray)| {
                let pieces = ray.pieces.iter().map(|p| (p.node.clone(), p.devices));
                (*job, pieces.collect())
            })
            .collect()
    }
}

enum Command {
    Submit(DurableJobId),
    Stop(DurableJobId),
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The cluster as the control loop sees it: devices over all usable nodes.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterTotals {
    pub devices: u32,
    pub kind: DeviceKind,
    pub cpus: f64,
    pub memory_gb: f64,
    pub nodes: usize,
}

/// Totals over the usable nodes: GPUs when every usable node offers GPUs, else slots.
pub fn totals(nodes: &[RayNode]) -> ClusterTotals {
    let usable: Vec<&RayNode> = usable(nodes).collect();
    let kind = if !usable.is_empty() && usable.iter().all(|n| n.kind == DeviceKind::Gpu) {
        DeviceKind::Gpu
    } else {
        DeviceKind::CpuSlot
    };
    ClusterTotals {
        devices: usable.iter().map(|n| n.slots).sum(),
        kind,
        cpus: usable.iter().map(|n| n.cpus).sum(),
        memory_gb: usable.iter().map(|n| n.memory_bytes).sum::<f64>() / 1e9,
        nodes: usable.len(),
    }
}

/// The Ray cluster's usable nodes as the one pool of devices the loop schedules (named
/// `ray`): the control loop places device counts, the executor spreads them over nodes.
pub fn describe_pool(totals: &ClusterTotals) -> crate::node::NodeInfo {
    let cores = totals.cpus.floor() as u32;
    match totals.kind {
        DeviceKind::CpuSlot => {
            crate::node::describe_node("ray", Some(totals.devices), None, cores, totals.memory_gb)
        }
        DeviceKind::Gpu => crate::node::describe_node(
            "ray",
            None,
            Some((totals.devices, RAY_GPU_LABEL)),
            cores,
            totals.memory_gb,
        ),
    }
}

/// `GET /v1/nodes` in Ray mode: one view per usable Ray node, with the devices adaptsched's
/// running pieces hold there and Ray's reported use (read at `at`), so the dashboard and
/// `adaptsched nodes` show the nodes jobs really run on rather than the one pool. Ray does
/// not report per-job use on a node, so `telemetry.jobs` stays empty.
pub fn node_views(
    nodes: &[(RayNode, Option<NodeUsage>)],
    placements: &BTreeMap<DurableJobId, Vec<(String, u32)>>,
    at: Option<f64>,
) -> Vec<NodeView> {
    let mut held: HashMap<&str, u32> = HashMap::new();
    for (node, devices) in placements.values().flatten() {
        *held.entry(node.as_str()).or_default() += devices;
    }
    let usable: Vec<&(RayNode, Option<NodeUsage>)> = nodes
        .iter()
        .filter(|(n, _)| n.alive && n.slots > 0 && n.pin.is_some())
        .collect();
    let allocated = |n: &RayNode| held.get(n.name.as_str()).copied().unwrap_or(0);
    let total_held: u32 = usable.iter().map(|(n, _)| allocated(n)).sum();
    let total_slots: u32 = usable.iter().map(|(n, _)| n.slots).sum();
    usable
        .into_iter()
        .map(|(node, usage)| {
            let label = match node.kind {
                DeviceKind::CpuSlot => crate::node::CPU_SLOT_TYPE,
                DeviceKind::Gpu => RAY_GPU_LABEL,
            };
            let mine = allocated(node);
            let telemetry = usage.as_ref().zip(at).map(|(usage, at)| NodeTelemetry {
                at,
                cpu_percent: usage.cpu_percent,
                memory_used_gb: usage.memory_used_bytes / 1e9,
                memory_total_gb: usage.memory_total_bytes / 1e9,
                network: Vec::new(),
                gpus: (!usage.gpus.is_empty()).then(|| {
                    usage
                        .gpus
                        .iter()
                        .enumerate()
                        .map(|(index, (percent, used, total))| GpuTelemetry {
                            index: index as u32,
                            name: RAY_GPU_LABEL.to_string(),
                            utilization_percent: *percent,
                            memory_used_gb: used / 1e9,
                            memory_total_gb: total / 1e9,
                            temperature_c: None,
                            power_w: None,
                        })
                        .collect()
                }),
                gpu_note: usage
                    .gpus
                    .is_empty()
                    .then(|| "Ray reports no GPUs on this node".to_string()),
                jobs: Vec::new(),
            });
            NodeView {
                name: node.name.clone(),
                gpu_type: label.to_string(),
                gpus: node.slots,
                gpus_allocated: mine,
                cpu_cores: node.cpus,
                memory_gb: node.memory_bytes / 1e9,
                // p_i = (x_i/Σx)/(y_i/Σy), as for local nodes; absent while nothing runs.
                balance_ratio: (total_held > 0).then(|| {
                    (f64::from(mine) / f64::from(total_held))
                        / (f64::from(node.slots) / f64::from(total_slots))
                }),
                telemetry,
            }
        })
        .collect()
}

/// Runs jobs on a Ray cluster. See the module docs.
pub struct RayExecutor {
    client: RayClient,
    shared: Arc<Mutex<Shared>>,
    commands: std::sync::mpsc::Sender<Command>,
    data_dir: PathBuf,
    tag: String,
    grace: Duration,
}

/// Settings of the Ray executor.
#[derive(Clone, Debug)]
pub struct RayConfig {
    /// The dashboard's URL, e.g. `http://127.0.0.1:8265`.
    pub address: String,
    pub data_dir: PathBuf,
    /// How often nodes, pieces and logs are polled.
    pub poll: Duration,
    /// `--grace-period`: SIGTERM to SIGKILL when a piece is stopped ([`STOP_WAIT_VAR`]).
    pub grace: Duration,
}

impl RayExecutor {
    /// Connects (blocking: run it off the async workers), reads the nodes, stops any Ray job
    /// a previous server on this data dir left running (and waits until they have ended, so
    /// nothing runs twice), and starts the monitor thread.
    pub fn connect(
        config: &RayConfig,
        exits: tokio_mpsc::UnboundedSender<ExitEvent>,
    ) -> anyhow::Result<RayExecutor> {
        let client = RayClient::new(&config.address);
        let version = client
            .get("/api/version")
            .with_context(|| format!("cannot reach the Ray dashboard at {}", config.address))?;
        let ray_version = version
            .get("ray_version")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        tracing::info!("ray: connected to {} (Ray {ray_version})", config.address);
        let nodes = client.nodes()?;
        stop_leftovers(&client, &config.data_dir)?;
        let shared = Arc::new(Mutex::new(Shared {
            nodes,
            ..Shared::default()
        }));
        let (commands, queue) = std::sync::mpsc::channel();
        let monitor = Monitor {
            client: client.clone(),
            shared: Arc::clone(&shared),
            exits,
            poll: config.poll,
            last_error: None,
        };
        std::thread::Builder::new()
            .name("ray-monitor".to_string())
            .spawn(move || monitor.run(&queue))?;
        Ok(RayExecutor {
            client,
            shared,
            commands,
            tag: data_dir_tag(&config.data_dir),
            data_dir: config.data_dir.clone(),
            grace: config.grace,
        })
    }

    /// The usable nodes' totals, as last read.
    pub fn totals(&self) -> ClusterTotals {
        totals(&lock(&self.shared).nodes)
    }

    /// Known nodes (alive and dead) with their last reported use.
    pub fn nodes(&self) -> Vec<(RayNode, Option<NodeUsage>)> {
        lock(&self.shared).nodes()
    }

    /// A handle that reads the nodes later (for telemetry).
    pub fn watcher(&self) -> RayWatcher {
        RayWatcher {
            shared: Arc::clone(&self.shared),
        }
    }

    pub fn client(&self) -> &RayClient {
        &self.client
    }

    /// The nodes each running job's pieces are on (rank order).
    pub fn placements(&self) -> BTreeMap<DurableJobId, Vec<(String, u32)>> {
        lock(&self.shared).placements()
    }
}

/// Reads the Ray executor's view of the nodes from another task.
#[derive(Clone)]
pub struct RayWatcher {
    shared: Arc<Mutex<Shared>>,
}

impl RayWatcher {
    pub fn nodes(&self) -> Vec<(RayNode, Option<NodeUsage>)> {
        lock(&self.shared).nodes()
    }

    /// The usable nodes as `/v1/nodes` shows them (see [`node_views`]).
    pub fn views(&self) -> Vec<NodeView> {
        let shared = lock(&self.shared);
        node_views(&shared.nodes(), &shared.placements(), shared.usage_at)
    }

    /// The nodes each running job's pieces are on (rank order).
    pub fn placements(&self) -> BTreeMap<DurableJobId, Vec<(String, u32)>> {
        lock(&self.shared).placements()
    }

    /// When Ray's per-node use was last read (seconds since the epoch).
    pub fn usage_at(&self) -> Option<f64> {
        lock(&self.shared).usage_at
    }
}

/// Stops the Ray jobs of this data dir that are still pending or running, and waits (up to a
/// minute) until Ray reports them ended.
fn stop_leftovers(client: &RayClient, data_dir: &Path) -> anyhow::Result<()> {
    let ours = data_dir.display().to_string();
    let list = client.get("/api/jobs/")?;
    let mut left: Vec<String> = Vec::new();
    for job in list.as_array().into_iter().flatten() {
        let mine = job
            .pointer(&format!("/metadata/{META_DATA_DIR}"))
            .and_then(Value::as_str)
            == Some(ours.as_str());
        let live = matches!(piece_state(job), PieceState::Pending | PieceState::Running);
        if let (true, true, Some(id)) =
            (mine, live, job.get("submission_id").and_then(Value::as_str))
        {
            tracing::warn!("ray: stopping job {id} left over from a previous server");
            client.stop(id)?;
            left.push(id.to_string());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !left.is_empty() {
        left.retain(|id| {
            client.status(id).map_or(true, |s| {
                matches!(piece_state(&s), PieceState::Pending | PieceState::Running)
            })
        });
        anyhow::ensure!(
            Instant::now() < deadline,
            "Ray jobs {left:?} left over from a previous server did not stop"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn append(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path);
    if let Ok(mut file) = file {
        let _ = file.write_all(text.as_bytes());
    }
}

impl Executor for RayExecutor {
    fn name(&self) -> &'static str {
        "ray"
    }

    fn start(&mut self, launch: LaunchSpec) -> Result<StartedProcess, ExecutorError> {
        let no_room = |why: String| ExecutorError::Spawn {
            program: launch.command.first().cloned().unwrap_or_default(),
            working_dir: launch.working_dir.display().to_string(),
            source: std::io::Error::other(why),
        };
        let mut shared = lock(&self.shared);
        if shared.jobs.contains_key(&launch.job) {
            return Err(ExecutorError::AlreadyRunning(launch.job));
        }
        let wanted = launch
            .env
            .get(env::REPLICAS)
            .and_then(|r| r.parse::<u32>().ok())
            .unwrap_or(1);
        let mut used: HashMap<&str, u32> = HashMap::new();
        for job in shared.jobs.values() {
            for piece in &job.pieces {
                *used.entry(piece.node.as_str()).or_default() += piece.devices;
            }
        }
        let free: Vec<(String, u32)> = usable(&shared.nodes)
            .map(|n| {
                let taken = used.get(n.name.as_str()).copied().unwrap_or(0);
                (n.name.clone(), n.slots.saturating_sub(taken))
            })
            .collect();
        let placement = place(&free, wanted).ok_or_else(|| {
            no_room(format!(
                "{wanted} device(s) do not fit on the Ray cluster's free devices {free:?}"
            ))
        })?;
        let world = placement.len();
        let node = |name: &str| shared.nodes.iter().find(|n| n.alive && n.name == name);
        let master_addr = node(&placement[0].0).map_or("127.0.0.1".to_string(), |n| n.ip.clone());
        let command = entrypoint(&launch.working_dir, &launch.command);
        let mut pieces = Vec::new();
        for (rank, (name, devices)) in placement.iter().enumerate() {
            let Some(ray_node) = node(name) else {
                return Err(no_room(format!("node {name} is gone")));
            };
            let (resources, gpus) = piece_resources(ray_node, *devices);
            let submission_id = format!(
                "adaptsched-{}-{}-{}-{rank}",
                self.tag, launch.job, launch.attempt
            );
            let metadata = BTreeMap::from([
                (
                    META_DATA_DIR.to_string(),
                    self.data_dir.display().to_string(),
                ),
                ("adaptsched_job".to_string(), launch.job.to_string()),
                ("adaptsched_attempt".to_string(), launch.attempt.to_string()),
                ("adaptsched_rank".to_string(), rank.to_string()),
                ("adaptsched_node".to_string(), name.clone()),
            ]);
            pieces.push(Piece {
                submission: Submission {
                    submission_id,
                    entrypoint: command.clone(),
                    resources,
                    gpus,
                    env: {
                        let mut vars = piece_env(
                            &launch.env,
                            rank,
                            world,
                            &master_addr,
                            *devices,
                            ray_node.kind,
                        );
                        with_stop_wait(&mut vars, self.grace);
                        vars
                    },
                    metadata,
                },
                node: name.clone(),
                devices: *devices,
                state: PieceState::Pending,
                log: rank_log(&launch.stdout, rank),
                log_written: 0,
            });
        }
        tracing::info!(
            "job {}: attempt {} on Ray nodes {placement:?}",
            launch.job,
            launch.attempt
        );
        shared.jobs.insert(
            launch.job,
            RayJob {
                attempt: launch.attempt,
                pieces,
                stopping: false,
                stderr: launch.stderr.clone(),
            },
        );
        drop(shared);
        let _ = self.commands.send(Command::Submit(launch.job));
        Ok(StartedProcess {
            // No local process: pid 0 is never taken for a live process by crash recovery
            // (the boot id below matches no boot).
            pid: 0,
            start_ticks: 0,
            boot_id: format!("ray:{}", self.tag),
        })
    }

    fn stop(&mut self, job: DurableJobId, _grace: Duration) {
        // Ray sends SIGTERM, then SIGKILL after RAY_JOB_STOP_WAIT_TIME_S, which each piece
        // was submitted with (the grace of `RayConfig`).
        let _ = self.commands.send(Command::Stop(job));
    }

    fn pids(&self) -> Vec<(DurableJobId, u32)> {
        Vec::new()
    }

    /// The usable nodes as one pool, as last read: nodes that joined or left since the last
    /// round change what the policy plans for.
    fn pool(&self) -> Option<crate::node::NodeInfo> {
        Some(describe_pool(&self.totals()))
    }
}

struct Monitor {
    client: RayClient,
    shared: Arc<Mutex<Shared>>,
    exits: tokio_mpsc::UnboundedSender<ExitEvent>,
    poll: Duration,
    last_error: Option<String>,
}

impl Monitor {
    fn run(mut self, queue: &std::sync::mpsc::Receiver<Command>) {
        let mut next = Instant::now();
        loop {
            let wait = next.saturating_duration_since(Instant::now());
            match queue.recv_timeout(wait) {
                Ok(Command::Submit(job)) => self.submit(job),
                Ok(Command::Stop(job)) => self.stop(job),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    self.refresh();
                    next = Instant::now() + self.poll;
                }
                // The executor is gone (server stopped).
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
            if self.exits.is_closed() {
                return;
            }
        }
    }

    fn warn_once(&mut self, error: String) {
        if self.last_error.as_ref() != Some(&error) {
            tracing::warn!("ray: {error}");
            self.last_error = Some(error);
        }
    }

    fn submit(&mut self, job: DurableJobId) {
        let submissions: Vec<Submission> = {
            let shared = lock(&self.shared);
            let Some(ray) = shared.jobs.get(&job) else {
                return;
            };
            ray.pieces.iter().map(|p| p.submission.clone()).collect()
        };
        for (rank, submission) in submissions.iter().enumerate() {
            if let Err(error) = self.client.submit(submission) {
                let message = format!(
                    "adaptsched: cannot submit rank {rank} ({}) to Ray: {error:#}\n",
                    submission.submission_id
                );
                tracing::warn!("job {job}: {}", message.trim_end());
                let mut shared = lock(&self.shared);
                if let Some(ray) = shared.jobs.get_mut(&job) {
                    append(&ray.stderr, &message);
                    ray.pieces[rank].state = PieceState::Ended(ExitStatus {
                        code: Some(127),
                        signal: None,
                    });
                }
            }
        }
    }

    fn stop(&mut self, job: DurableJobId) {
        let ids: Vec<String> = {
            let mut shared = lock(&self.shared);
            let Some(ray) = shared.jobs.get_mut(&job) else {
                return;
            };
            ray.stopping = true;
            ray.pieces
                .iter()
                .filter(|p| !matches!(p.state, PieceState::Ended(_)))
                .map(|p| p.submission.submission_id.clone())
                .collect()
        };
        tracing::info!("job {job}: stopping its Ray jobs {ids:?}");
        for id in ids {
            if let Err(error) = self.client.stop(&id) {
                tracing::warn!("job {job}: stopping Ray job {id}: {error:#}");
            }
        }
    }

    /// Reads the nodes, then every live piece's status and new log output; fails pieces whose
    /// node is gone; stops the rest of an attempt when a piece ended badly; reports attempts
    /// whose pieces have all ended.
    fn refresh(&mut self) {
        match self.client.nodes() {
            Ok(nodes) => {
                let mut shared = lock(&self.shared);
                let before = totals(&shared.nodes);
                let after = totals(&nodes);
                if before.devices != after.devices || before.nodes != after.nodes {
                    tracing::info!(
                        "ray: {} usable node(s) with {} device(s) (were {} with {})",
                        after.nodes,
                        after.devices,
                        before.nodes,
                        before.devices
                    );
                }
                shared.nodes = nodes;
            }
            Err(error) => self.warn_once(format!("reading the nodes: {error:#}")),
        }
        if let Ok(usage) = self.client.node_usage() {
            let mut shared = lock(&self.shared);
            shared.usage = usage;
            shared.usage_at = Some(crate::control::wall_now());
        }
        let work: Vec<(DurableJobId, usize, String, String, bool, usize, PathBuf)> = {
            let shared = lock(&self.shared);
            let alive: Vec<&str> = shared
                .nodes
                .iter()
                .filter(|n| n.alive)
                .map(|n| n.name.as_str())
                .collect();
            shared
                .jobs
                .iter()
                .flat_map(|(job, ray)| {
                    let alive = &alive;
                    ray.pieces
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| !matches!(p.state, PieceState::Ended(_)))
                        .map(move |(rank, p)| {
                            (
                                *job,
                                rank,
                                p.submission.submission_id.clone(),
                                p.node.clone(),
                                alive.contains(&p.node.as_str()),
                                p.log_written,
                                p.log.clone(),
                            )
                        })
                })
                .collect()
        };
        for (job, rank, id, node, alive, written, log) in work {
            let state = match self.client.status(&id) {
                Ok(body) => piece_state(&body),
                Err(error) => {
                    self.warn_once(format!("status of {id}: {error:#}"));
                    PieceState::Pending
                }
            };
            let mut new_written = written;
            if let Ok(text) = self.client.logs(&id)
                && text.len() > written
                && text.is_char_boundary(written)
            {
                append(&log, &text[written..]);
                new_written = text.len();
            }
            let state = if !alive && !matches!(state, PieceState::Ended(_)) {
                tracing::warn!("job {job}: Ray node {node} of rank {rank} is gone");
                let shared = lock(&self.shared);
                if let Some(ray) = shared.jobs.get(&job) {
                    append(
                        &ray.stderr,
                        &format!("adaptsched: Ray node {node} (rank {rank}) left the cluster\n"),
                    );
                }
                PieceState::Ended(NODE_LOST)
            } else {
                state
            };
            let mut shared = lock(&self.shared);
            if let Some(piece) = shared
                .jobs
                .get_mut(&job)
                .and_then(|r| r.pieces.get_mut(rank))
            {
                piece.state = state;
                piece.log_written = new_written;
            }
        }
        self.settle();
    }

    fn settle(&mut self) {
        let mut to_stop = Vec::new();
        let mut ended = Vec::new();
        {
            let shared = lock(&self.shared);
            for (job, ray) in &shared.jobs {
                let statuses = ray.ended();
                if statuses.len() == ray.pieces.len() {
                    ended.push(*job);
                } else if !ray.stopping && statuses.iter().any(|s| !s.success()) {
                    to_stop.push(*job);
                }
            }
        }
        for job in to_stop {
            tracing::info!("job {job}: a piece failed; stopping the others");
            self.stop(job);
        }
        for job in ended {
            let Some(ray) = lock(&self.shared).jobs.remove(&job) else {
                continue;
            };
            let statuses = ray.ended();
            let _ = self.exits.send(ExitEvent {
                job,
                attempt: ray.attempt,
                status: combine(&statuses),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_so_the_shell_passes_them_unchanged() {
        assert_eq!(shell_quote("python3"), "python3");
        assert_eq!(shell_quote("--lr=0.5"), "--lr=0.5");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$HOME;rm -rf /"), "'$HOME;rm -rf /'");
        let line = entrypoint(
            Path::new("/work dir"),
            &["sh".into(), "-c".into(), "echo \"$X\" 'y'".into()],
        );
        assert_eq!(
            line,
            r#"cd '/work dir' && exec sh -c 'echo "$X" '\''y'\'''"#
        );
    }

    #[test]
    fn quoted_entrypoints_survive_a_real_shell() {
        let argv: Vec<String> = ["printf", "%s|", "a b", "it's", "$(id)", "`x`", "*", "\n"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let line = entrypoint(Path::new("/"), &argv);
        let out = std::process::Command::new("sh")
            .args(["-c", &line])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "a b|it's|$(id)|`x`|*|\n|"
        );
    }

    fn node_json(id: &str, ip: &str, state: &str, resources: Value) -> Value {
        json!({"node_id": id, "node_ip": ip, "state": state, "resources_total": resources})
    }

    fn nodes_reply(nodes: Vec<Value>) -> Value {
        json!({"result": true, "data": {"result": {"total": nodes.len(), "result": nodes}}})
    }

    #[test]
    fn nodes_are_named_by_their_resource_and_pinned_apart() {
        let reply = nodes_reply(vec![
            node_json(
                "n1",
                "10.0.0.1",
                "ALIVE",
                json!({"CPU": 1.0, "memory": 2e9, "adaptsched_slot": 2.0, "adaptsched_node_a": 1.0, "node:10.0.0.1": 1.0}),
            ),
            node_json(
                "n2",
                "10.0.0.1",
                "ALIVE",
                json!({"CPU": 4.0, "GPU": 2.0, "node:10.0.0.1": 1.0}),
            ),
            node_json(
                "n3",
                "10.0.0.3",
                "ALIVE",
                json!({"CPU": 8.0, "GPU": 4.0, "node:10.0.0.3": 1.0}),
            ),
            node_json(
                "n4",
                "10.0.0.4",
                "DEAD",
                json!({"adaptsched_slot": 1.0, "adaptsched_node_b": 1.0}),
            ),
        ]);
        let nodes = parse_nodes(&reply).unwrap();
        assert_eq!(nodes[0].name, "a");
        assert_eq!(nodes[0].slots, 2);
        assert_eq!(nodes[0].kind, DeviceKind::CpuSlot);
        assert_eq!(
            nodes[0].pin,
            Some(Pin::Resource("adaptsched_node_a".into()))
        );
        // Same IP as another live node and no naming resource: cannot be pinned.
        assert_eq!(nodes[1].pin, None);
        assert_eq!(nodes[2].pin, Some(Pin::Resource("node:10.0.0.3".into())));
        assert_eq!((nodes[2].slots, nodes[2].kind), (4, DeviceKind::Gpu));
        assert!(!nodes[3].alive);
        let names: Vec<&str> = usable(&nodes).map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["a", "10.0.0.3"]);
        let total = totals(&nodes);
        assert_eq!(
            (total.devices, total.kind, total.nodes),
            (6, DeviceKind::CpuSlot, 2)
        );
        assert!(parse_nodes(&json!({"oops": 1})).is_err());
    }

    #[test]
    fn placement_prefers_one_node_then_the_fewest_nodes() {
        let free = |list: &[(&str, u32)]| -> Vec<(String, u32)> {
            list.iter().map(|(n, s)| (n.to_string(), *s)).collect()
        };
        let one = place(&free(&[("a", 4), ("b", 2), ("c", 3)]), 2).unwrap();
        assert_eq!(one, vec![("b".to_string(), 2)]);
        let spread = place(&free(&[("a", 1), ("b", 1), ("head", 1)]), 2).unwrap();
        assert_eq!(spread, vec![("a".to_string(), 1), ("b".to_string(), 1)]);
        let big = place(&free(&[("a", 1), ("b", 3), ("c", 2)]), 5).unwrap();
        assert_eq!(big, vec![("b".to_string(), 3), ("c".to_string(), 2)]);
        assert_eq!(place(&free(&[("a", 1), ("b", 0)]), 2), None);
        assert_eq!(place(&free(&[("a", 1)]), 0), None);
    }

    #[test]
    fn pieces_are_pinned_by_the_node_resource_and_take_their_slots() {
        let node = RayNode {
            name: "a".into(),
            node_id: "n1".into(),
            ip: "10.0.0.1".into(),
            alive: true,
            slots: 2,
            kind: DeviceKind::CpuSlot,
            cpus: 1.0,
            memory_bytes: 1e9,
            pin: Some(Pin::Resource("adaptsched_node_a".into())),
        };
        let (resources, gpus) = piece_resources(&node, 2);
        assert_eq!(
            resources,
            BTreeMap::from([
                ("adaptsched_node_a".to_string(), PIN_AMOUNT),
                ("adaptsched_slot".to_string(), 2.0)
            ])
        );
        assert_eq!(gpus, 0.0);
        let gpu = RayNode {
            kind: DeviceKind::Gpu,
            ..node
        };
        let (resources, gpus) = piece_resources(&gpu, 3);
        assert_eq!(resources.len(), 1);
        assert_eq!(gpus, 3.0);
        let body = submission_body(&Submission {
            submission_id: "s".into(),
            entrypoint: "cd / && exec true".into(),
            resources,
            gpus,
            env: BTreeMap::from([("A".to_string(), "1".to_string())]),
            metadata: BTreeMap::new(),
        });
        assert_eq!(body["entrypoint_num_gpus"], json!(3.0));
        assert_eq!(body["runtime_env"]["env_vars"]["A"], "1");
        assert_eq!(
            body["entrypoint_resources"]["adaptsched_node_a"],
            json!(PIN_AMOUNT)
        );
    }

    #[test]
    fn each_piece_gets_its_rank_and_the_rendezvous_address() {
        let base = BTreeMap::from([
            ("WORLD_SIZE".to_string(), "1".to_string()),
            ("ADAPTSCHED_REPLICAS".to_string(), "3".to_string()),
            ("CUDA_VISIBLE_DEVICES".to_string(), "0,1,2".to_string()),
        ]);
        let vars = piece_env(&base, 1, 2, "10.0.0.1", 2, DeviceKind::CpuSlot);
        assert_eq!(vars["RANK"], "1");
        assert_eq!(vars["WORLD_SIZE"], "2");
        assert_eq!(vars["ADAPTSCHED_NODES"], "2");
        assert_eq!(vars["MASTER_ADDR"], "10.0.0.1");
        assert_eq!(vars["ADAPTSCHED_REPLICAS"], "3");
        assert_eq!(vars["ADAPTSCHED_CPU_SLOTS"], "0,1");
        let gpu = piece_env(&base, 0, 1, "h", 1, DeviceKind::Gpu);
        assert!(!gpu.contains_key("CUDA_VISIBLE_DEVICES"));
    }

    #[test]
    fn ray_states_map_to_adaptsched_exits() {
        let state = |status: &str, code: Value| {
            piece_state(&json!({"status": status, "driver_exit_code": code}))
        };
        let exit = |code, signal| PieceState::Ended(ExitStatus { code, signal });
        assert_eq!(state("PENDING", Value::Null), PieceState::Pending);
        assert_eq!(state("RUNNING", Value::Null), PieceState::Running);
        assert_eq!(state("SUCCEEDED", json!(0)), exit(Some(0), None));
        assert_eq!(state("FAILED", json!(3)), exit(Some(3), None));
        assert_eq!(state("FAILED", Value::Null), exit(Some(1), None));
        assert_eq!(state("STOPPED", json!(0)), exit(Some(0), None));
        assert_eq!(state("STOPPED", Value::Null), exit(None, Some(15)));
        let ok = ExitStatus {
            code: Some(0),
            signal: None,
        };
        assert!(combine(&[ok, ok]).success());
        assert_eq!(combine(&[ok, NODE_LOST]), NODE_LOST);
    }

    #[test]
    fn usage_comes_from_the_node_summary() {
        let reply = json!({"data": {"summary": [
            {"raylet": {"nodeId": "n1"}, "cpu": 37.5, "mem": [8e9, 6e9, 25.0, 2e9],
             "gpus": [{"utilizationGpu": 80.0, "memoryUsed": 1024.0, "memoryTotal": 2048.0}]},
            {"cpu": 1.0}
        ]}});
        let usage = parse_usage(&reply);
        assert_eq!(usage.len(), 1);
        let n1 = &usage["n1"];
        assert_eq!(n1.cpu_percent, 37.5);
        assert_eq!(n1.memory_used_bytes, 2e9);
        assert_eq!(
            n1.gpus,
            vec![(80.0, 1024.0 * 1048576.0, 2048.0 * 1048576.0)]
        );
    }

    #[test]
    fn the_grace_period_reaches_rays_supervisor_in_whole_seconds_rounded_up() {
        let mut vars = BTreeMap::from([(STOP_WAIT_VAR.to_string(), "3".to_string())]);
        with_stop_wait(&mut vars, Duration::from_secs(30));
        assert_eq!(vars[STOP_WAIT_VAR], "30");
        with_stop_wait(&mut vars, Duration::from_secs_f64(2.1));
        assert_eq!(vars[STOP_WAIT_VAR], "3");
        with_stop_wait(&mut vars, Duration::ZERO);
        assert_eq!(vars[STOP_WAIT_VAR], "0");
        // It travels in the submission's runtime env, which Ray gives the supervisor too.
        let body = submission_body(&Submission {
            submission_id: "s".into(),
            entrypoint: "true".into(),
            resources: BTreeMap::new(),
            gpus: 0.0,
            env: vars,
            metadata: BTreeMap::new(),
        });
        assert_eq!(body["runtime_env"]["env_vars"][STOP_WAIT_VAR], "0");
    }

    #[test]
    fn each_usable_node_is_a_view_with_its_allocation_and_rays_use() {
        let reply = nodes_reply(vec![
            node_json(
                "n1",
                "10.0.0.1",
                "ALIVE",
                json!({"CPU": 2.0, "memory": 4e9, "adaptsched_slot": 2.0, "adaptsched_node_a": 1.0}),
            ),
            node_json(
                "n2",
                "10.0.0.2",
                "ALIVE",
                json!({"CPU": 8.0, "GPU": 2.0, "memory": 8e9, "node:10.0.0.2": 1.0}),
            ),
            node_json(
                "n3",
                "10.0.0.3",
                "DEAD",
                json!({"adaptsched_slot": 1.0, "adaptsched_node_c": 1.0}),
            ),
        ]);
        let usage = parse_usage(&json!({"data": {"summary": [
            {"raylet": {"nodeId": "n1"}, "cpu": 50.0, "mem": [16e9, 12e9, 25.0, 4e9]},
            {"raylet": {"nodeId": "n2"}, "cpu": 10.0, "mem": [32e9, 30e9, 6.0, 2e9],
             "gpus": [{"utilizationGpu": 90.0, "memoryUsed": 1000.0, "memoryTotal": 2000.0},
                      {"utilizationGpu": 0.0, "memoryUsed": 0.0, "memoryTotal": 2000.0}]}
        ]}}));
        let nodes: Vec<(RayNode, Option<NodeUsage>)> = parse_nodes(&reply)
            .unwrap()
            .into_iter()
            .map(|n| {
                let u = usage.get(&n.node_id).cloned();
                (n, u)
            })
            .collect();
        let placements = BTreeMap::from([
            (
                DurableJobId(1),
                vec![("a".to_string(), 1), ("10.0.0.2".to_string(), 2)],
            ),
            (DurableJobId(2), vec![("a".to_string(), 1)]),
        ]);
        let views = node_views(&nodes, &placements, Some(100.0));
        let names: Vec<&str> = views.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["a", "10.0.0.2"], "the dead node is left out");
        let (a, gpu) = (&views[0], &views[1]);
        assert_eq!(
            (a.gpu_type.as_str(), a.gpus, a.gpus_allocated),
            ("cpu-slot", 2, 2)
        );
        assert_eq!((a.cpu_cores, a.memory_gb), (2.0, 4.0));
        let t = a.telemetry.as_ref().unwrap();
        assert_eq!((t.at, t.cpu_percent), (100.0, 50.0));
        assert_eq!((t.memory_used_gb, t.memory_total_gb), (4.0, 16.0));
        assert!(t.gpus.is_none() && t.gpu_note.is_some());
        // Half of the held devices on half of the capacity: p = 1 on both.
        assert_eq!(a.balance_ratio, Some(1.0));
        assert_eq!(
            (gpu.gpu_type.as_str(), gpu.gpus_allocated),
            (RAY_GPU_LABEL, 2)
        );
        let gpus = gpu.telemetry.as_ref().unwrap().gpus.as_ref().unwrap();
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].utilization_percent, 90.0);
        assert!((gpus[0].memory_used_gb - 1.048576).abs() < 1e-9);
        // Before Ray reported any use there is no telemetry; with nothing running, no balance.
        let idle = node_views(&nodes, &BTreeMap::new(), None);
        assert!(
            idle.iter()
                .all(|v| v.telemetry.is_none() && v.balance_ratio.is_none())
        );
    }

    #[test]
    fn other_ranks_log_beside_rank_zero() {
        let out = Path::new("/d/logs/7/stdout.log");
        assert_eq!(rank_log(out, 0), out);
        assert_eq!(rank_log(out, 2), Path::new("/d/logs/7/stdout.rank2.log"));
        assert_eq!(data_dir_tag(Path::new("/x")).len(), 8);
    }
}
