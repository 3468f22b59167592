//! The Ray executor against a real Ray cluster on loopback: a head and two workers, each with
//! one `adaptsched_slot` and its own `adaptsched_node_<name>` resource (docs/ray.md). Shows a
//! two-node job with its ranks on two Ray nodes, a job resized from one node to two that
//! continues from its checkpoint, the local end-to-end scenarios (a job that finishes, one
//! that fails, one cancelled within its grace period, bad submissions) with `/v1/nodes` per
//! Ray node, a fourth node joining after the server starts (the pool grows to 4 devices and
//! a job runs on it) and leaving, and a worker node killed mid-job (by process id) with the
//! job finishing elsewhere from its checkpoint, never overlapping its previous attempt.
//!
//! Ray comes from `ADAPTSCHED_RAY_PYTHON` (a venv's python with `ray[default]`; `.ci/run`
//! sets it). Unset, the test fails under CI (`CI` set) and is skipped, saying so, elsewhere.
//! Every process the test starts is killed by process id (the whole tree) even on failure.

mod common;

use adaptsched_api::{ClusterSummary, NodeView};
use adaptsched_server::ray::RayClient;
use adaptsched_server::{ControlPlane, ServeArgs};
use common::{get, job, post, submit, wait_job_for};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RAY_PYTHON: &str = "ADAPTSCHED_RAY_PYTHON";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// (pid, ppid) of every process.
fn process_table() -> Vec<(u32, u32)> {
    let mut table = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command may contain spaces and parentheses: fields start after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if let Some(ppid) = fields.get(1).and_then(|p| p.parse().ok()) {
            table.push((pid, ppid));
        }
    }
    table
}

/// `root` and all its descendants.
fn tree(root: u32) -> Vec<u32> {
    let table = process_table();
    let mut found = vec![root];
    let mut index = 0;
    while index < found.len() {
        let parent = found[index];
        found.extend(table.iter().filter(|(_, p)| *p == parent).map(|(c, _)| *c));
        index += 1;
    }
    found
}

fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Kills a process tree by pid: stops every member first (so none forks or is reparented
/// meanwhile), then SIGKILL.
fn kill_tree(root: u32) {
    let mut members = tree(root);
    for pid in &members {
        signal(*pid, "-STOP");
    }
    members.extend(tree(root));
    members.sort_unstable();
    members.dedup();
    for pid in &members {
        signal(*pid, "-KILL");
    }
}

/// A Ray cluster on loopback, killed (by pid) when dropped.
struct RayCluster {
    bin: PathBuf,
    nodes: Vec<(String, Child)>,
    gcs_port: u16,
    /// First of the worker-port blocks (200 ports per node), below the ephemeral range the
    /// other ports come from, so they cannot collide.
    worker_ports: u16,
    dashboard: String,
    _temp: tempfile::TempDir,
    temp_path: PathBuf,
}

impl Drop for RayCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            kill_tree(child.id());
            let _ = child.wait();
        }
    }
}

impl RayCluster {
    fn command(&self, name: &str) -> Command {
        let mut command = Command::new(self.bin.join("ray"));
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = std::fs::File::create(self.temp_path.join(format!("{name}.log"))).unwrap();
        command
            .env("PATH", path)
            // Notice a dead node within about two seconds.
            .env("RAY_health_check_period_ms", "500")
            .env("RAY_health_check_failure_threshold", "4")
            // No RAY_JOB_STOP_WAIT_TIME_S here: the server's --grace-period reaches Ray
            // through each piece's runtime env (Ray's default of 3 s would cut phase 3's
            // trap short).
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        command
    }

    fn resources(name: &str) -> String {
        json!({ format!("adaptsched_node_{name}"): 1, "adaptsched_slot": 1 }).to_string()
    }

    fn start(python: &Path) -> RayCluster {
        let temp = tempfile::Builder::new()
            .prefix("asray")
            .tempdir_in("/tmp")
            .unwrap();
        let bin = python.parent().unwrap().to_path_buf();
        let dashboard_port = free_port();
        let mut cluster = RayCluster {
            bin,
            nodes: Vec::new(),
            gcs_port: free_port(),
            worker_ports: 20000 + (free_port() % 50) * 200,
            dashboard: format!("http://127.0.0.1:{dashboard_port}"),
            temp_path: temp.path().to_path_buf(),
            _temp: temp,
        };
        let mut head = cluster.command("head");
        head.args(["start", "--head", "--block", "--node-ip-address=127.0.0.1"])
            .arg(format!("--port={}", cluster.gcs_port))
            .args(["--num-cpus=1", "--object-store-memory=100000000"])
            .arg(format!("--resources={}", Self::resources("head")))
            .args(["--dashboard-host=127.0.0.1", "--include-dashboard=true"])
            .arg(format!("--dashboard-port={dashboard_port}"))
            .arg(format!(
                "--temp-dir={}",
                cluster.temp_path.join("r").display()
            ))
            .arg("--disable-usage-stats");
        for flag in [
            "--dashboard-agent-listen-port",
            "--dashboard-agent-grpc-port",
            "--metrics-export-port",
            "--runtime-env-agent-port",
            "--ray-client-server-port",
        ] {
            head.arg(format!("{flag}={}", free_port()));
        }
        head.arg(format!("--min-worker-port={}", cluster.worker_ports))
            .arg(format!("--max-worker-port={}", cluster.worker_ports + 199));
        cluster
            .nodes
            .push(("head".to_string(), head.spawn().expect("ray start --head")));
        cluster.wait_nodes(1);
        for name in ["a", "b"] {
            cluster.add_worker(name);
            cluster.wait_nodes(cluster.nodes.len());
        }
        cluster
    }

    fn add_worker(&mut self, name: &str) {
        let mut worker = self.command(name);
        let base = self.worker_ports + 200 * self.nodes.len() as u16;
        worker
            .args(["start", "--block", "--node-ip-address=127.0.0.1"])
            .arg(format!("--address=127.0.0.1:{}", self.gcs_port))
            .args(["--num-cpus=1", "--object-store-memory=100000000"])
            .arg(format!("--resources={}", Self::resources(name)))
            .arg("--disable-usage-stats");
        for flag in [
            "--dashboard-agent-listen-port",
            "--dashboard-agent-grpc-port",
            "--metrics-export-port",
            "--runtime-env-agent-port",
            "--node-manager-port",
            "--object-manager-port",
        ] {
            worker.arg(format!("{flag}={}", free_port()));
        }
        worker
            .arg(format!("--min-worker-port={base}"))
            .arg(format!("--max-worker-port={}", base + 199));
        self.nodes
            .push((name.to_string(), worker.spawn().expect("ray start")));
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for (name, _) in &self.nodes {
            let text = std::fs::read_to_string(self.temp_path.join(format!("{name}.log")))
                .unwrap_or_default();
            all.push_str(&format!("--- {name}\n{text}\n"));
        }
        all
    }

    /// Waits until `count` nodes are alive (2 minutes at most: a loaded 2-core machine).
    fn wait_nodes(&self, count: usize) {
        let client = RayClient::new(&self.dashboard);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let alive = client
                .nodes()
                .map(|nodes| nodes.iter().filter(|n| n.alive).count())
                .unwrap_or(0);
            if alive == count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the Ray cluster never had {count} live nodes (has {alive}):\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Kills node `name` (its `ray start` and everything under it: raylet, workers, the
    /// entrypoints it ran), as a machine that dies would.
    fn kill_node(&mut self, name: &str) {
        let index = self.nodes.iter().position(|(n, _)| n == name).unwrap();
        let (_, mut child) = self.nodes.remove(index);
        kill_tree(child.id());
        let _ = child.wait();
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn trainer(python: &Path, extra: &[&str]) -> Value {
    let mut argv = vec![
        python.display().to_string(),
        repo_root()
            .join("examples/mlp_trainer.py")
            .display()
            .to_string(),
        "--dataset-size".to_string(),
        "512".to_string(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    json!(argv)
}

async fn log_of(plane: &ControlPlane, id: u64) -> String {
    get(plane, &format!("/v1/jobs/{id}/logs")).await.text()
}

fn rank_log(plane: &ControlPlane, id: u64, rank: usize) -> String {
    std::fs::read_to_string(
        plane
            .data_dir
            .join(format!("logs/{id}/stdout.rank{rank}.log")),
    )
    .unwrap_or_default()
}

/// The trainer's JSON events in a log.
fn events(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| v.get("event").is_some())
        .collect()
}

/// Seconds from now until the job's log shows its first step.
async fn until_first_step(plane: &ControlPlane, id: u64, since: Instant) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if events(&log_of(plane, id).await)
            .iter()
            .any(|e| e["event"] == "step")
        {
            return since.elapsed().as_secs_f64();
        }
        assert!(Instant::now() < deadline, "job {id} never stepped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The Ray jobs (pieces) of adaptsched job `id`, as Ray reports them.
fn pieces(client: &RayClient, id: u64) -> Vec<Value> {
    let list = client.get("/api/jobs/").unwrap();
    let mut pieces: Vec<Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| {
            j.pointer("/metadata/adaptsched_job")
                .and_then(Value::as_str)
                == Some(&id.to_string())
        })
        .cloned()
        .collect();
    let key = |p: &Value, k: &str| -> u32 {
        p.pointer(&format!("/metadata/{k}"))
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    pieces.sort_by_key(|p| (key(p, "adaptsched_attempt"), key(p, "adaptsched_rank")));
    pieces
}

fn meta<'a>(piece: &'a Value, key: &str) -> &'a str {
    piece
        .pointer(&format!("/metadata/{key}"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// No overlap: every piece of a later attempt started after every first-attempt piece that
/// `counted` keeps had ended.
fn assert_no_overlap(all: &[Value], counted: impl Fn(&Value) -> bool) {
    let first_end = all
        .iter()
        .filter(|p| meta(p, "adaptsched_attempt") == "1" && counted(p))
        .map(|p| {
            p["end_time"]
                .as_u64()
                .expect("the first attempt's pieces ended")
        })
        .max()
        .expect("a first attempt");
    let later_start = all
        .iter()
        .filter(|p| meta(p, "adaptsched_attempt") != "1")
        .map(|p| p["start_time"].as_u64().unwrap())
        .min()
        .expect("a later attempt");
    assert!(later_start >= first_end, "attempts overlapped: {all:#?}");
}

/// Polls `check` every 100 ms until it returns a value; fails naming `what` after `limit`.
async fn poll<T>(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the job printed `line` (a whole line: Ray's log also echoes the entrypoint, which
/// holds the script's text).
fn has_line(log: &str, line: &str) -> bool {
    log.lines().any(|l| l.trim_end() == line)
}

fn sh(script: &str) -> Value {
    json!(["sh", "-c", script])
}

async fn nodes_of(plane: &ControlPlane) -> Vec<NodeView> {
    let reply = get(plane, "/v1/nodes").await;
    assert!(reply.status.is_success(), "{}", reply.text());
    reply.json()
}

async fn cluster_of(plane: &ControlPlane) -> ClusterSummary {
    get(plane, "/v1/cluster").await.json()
}

/// What `crates/cli/tests/e2e_local.rs` shows locally, on Ray: a job that finishes with its
/// output in its log, one that fails with its exit code, one cancelled while running (its
/// Ray pieces stopped after a SIGTERM handled within `--grace-period`), bad submissions
/// refused naming the field; and `/v1/nodes` listing the Ray nodes with their use.
async fn phase_local_scenarios(plane: &ControlPlane, client: &RayClient) {
    let token = plane.token.clone();
    let dir = repo_root().display().to_string();
    let spec = |script: &str| json!({"command": sh(script), "working_dir": dir, "max_retries": 0});
    let ok = submit(
        plane,
        &token,
        spec(r#"echo "sum=$((2 + 3)) rank=$RANK world=$WORLD_SIZE""#),
    )
    .await;
    let failing = submit(plane, &token, spec("echo about to fail; exit 3")).await;
    // SIGTERM starts a 4 s shutdown: longer than Ray's default 3 s, within our 10 s grace.
    let long = submit(
        plane,
        &token,
        spec(
            "trap 'echo got-term; sleep 4; echo graceful-exit; exit 0' TERM; \
             echo ready; while true; do sleep 0.2; done",
        ),
    )
    .await;
    let limit = Duration::from_secs(60);
    let done =
        |d: &adaptsched_api::JobDetail| d.summary.state != "running" && d.summary.state != "queued";
    let detail = wait_job_for(plane, ok, "finished", limit, done).await;
    assert_eq!(
        (detail.summary.state.as_str(), detail.summary.exit_code),
        ("succeeded", Some(0)),
        "{detail:#?}"
    );
    let log = log_of(plane, ok).await;
    assert!(has_line(&log, "sum=5 rank=0 world=1"), "{log:?}");
    let detail = wait_job_for(plane, failing, "failed", limit, done).await;
    assert_eq!(
        (detail.summary.state.as_str(), detail.summary.exit_code),
        ("failed", Some(3)),
        "{detail:#?}"
    );
    let log = log_of(plane, failing).await;
    assert!(has_line(&log, "about to fail"), "{log:?}");

    // The long job runs on one Ray node: /v1/nodes shows that node's device taken, and
    // Ray's reported use on every node.
    poll("the long job running", limit, async || {
        has_line(&log_of(plane, long).await, "ready").then_some(())
    })
    .await;
    let piece = pieces(client, long)
        .pop()
        .expect("a Ray job for the long job");
    assert_eq!(
        piece.pointer("/runtime_env/env_vars/RAY_JOB_STOP_WAIT_TIME_S"),
        Some(&json!("10")),
        "the grace period travels with the piece: {piece:#}"
    );
    let on = meta(&piece, "adaptsched_node").to_string();
    let nodes = poll(
        "/v1/nodes with Ray's use of every node",
        limit,
        async || {
            let nodes = nodes_of(plane).await;
            nodes.iter().all(|n| n.telemetry.is_some()).then_some(nodes)
        },
    )
    .await;
    let mut names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["a", "b", "head"], "{nodes:#?}");
    for node in &nodes {
        assert_eq!((node.gpu_type.as_str(), node.gpus), ("cpu-slot", 1));
        let telemetry = node.telemetry.as_ref().unwrap();
        assert!(telemetry.memory_total_gb > 0.0, "{node:#?}");
        let held = u32::from(node.name == on);
        assert_eq!(node.gpus_allocated, held, "{on}: {nodes:#?}");
    }
    let history = get(plane, &format!("/v1/nodes/{on}/telemetry")).await;
    assert_eq!(history.json::<Vec<Value>>().len(), 1, "{}", history.text());
    let detail = job_detail(plane, long).await;
    assert_eq!(detail.allocation.len(), 1, "{detail:#?}");
    assert_eq!(detail.allocation[0].node, on);

    let reply = post(plane, &format!("/v1/jobs/{long}/cancel"), json!({})).await;
    assert!(reply.status.is_success(), "{}", reply.text());
    let stopped = poll(
        "the cancelled job's Ray pieces stopped",
        limit,
        async || {
            let all = pieces(client, long);
            all.iter().all(|p| p["status"] == "STOPPED").then_some(all)
        },
    )
    .await;
    assert_eq!(stopped.len(), 1, "{stopped:#?}");
    let detail = job_detail(plane, long).await;
    assert_eq!(detail.summary.state, "cancelled", "{detail:#?}");
    // Its piece has ended; its last output reaches the log with the executor's next poll.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let log = log_of(plane, long).await;
        if has_line(&log, "got-term") && has_line(&log, "graceful-exit") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "killed before its grace period ended: {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Refused, naming the field: more devices than the Ray cluster has, an unknown field.
    for (body, field) in [
        (
            json!({"command": ["true"], "min_gpus": 4, "max_gpus": 4}),
            "min_gpus",
        ),
        (json!({"command": ["true"], "gpu": 1}), "gpu"),
    ] {
        let reply = post(plane, "/v1/jobs", body).await;
        assert_eq!(reply.status.as_u16(), 400, "{}", reply.text());
        let error: Value = reply.json();
        assert_eq!(error["field"], field, "{error}");
    }
}

async fn job_detail(plane: &ControlPlane, id: u64) -> adaptsched_api::JobDetail {
    job(plane, id).await
}

/// A fourth raylet started after the server: the loop's pool grows from 3 to 4 devices and a
/// four-device job is placed on all four nodes; the node then goes and the pool is 3 again.
async fn phase_node_joins(plane: &ControlPlane, client: &RayClient, cluster: &mut RayCluster) {
    tokio::task::block_in_place(|| {
        cluster.add_worker("c");
        cluster.wait_nodes(4);
    });
    let limit = Duration::from_secs(60);
    poll("the pool grown to 4 devices", limit, async || {
        let summary = cluster_of(plane).await;
        (summary.gpus_total == 4 && summary.nodes == 4).then_some(())
    })
    .await;
    assert!(nodes_of(plane).await.iter().any(|n| n.name == "c"));
    let wide = submit(
        plane,
        &plane.token.clone(),
        json!({"command": sh("echo placed rank=$RANK of $WORLD_SIZE"),
               "working_dir": repo_root().display().to_string(),
               "min_gpus": 4, "max_gpus": 4, "max_retries": 0}),
    )
    .await;
    let detail = wait_job_for(plane, wide, "finished", limit, |d| {
        d.summary.state != "running" && d.summary.state != "queued"
    })
    .await;
    assert_eq!(detail.summary.state, "succeeded", "{detail:#?}");
    let mut used: Vec<String> = pieces(client, wide)
        .iter()
        .map(|p| meta(p, "adaptsched_node").to_string())
        .collect();
    used.sort_unstable();
    assert_eq!(used, ["a", "b", "c", "head"]);
    let log = log_of(plane, wide).await;
    assert!(has_line(&log, "placed rank=0 of 4"), "{log:?}");

    tokio::task::block_in_place(|| cluster.kill_node("c"));
    poll("the pool back to 3 devices", limit, async || {
        let summary = cluster_of(plane).await;
        (summary.gpus_total == 3 && summary.nodes == 3).then_some(())
    })
    .await;
    assert!(nodes_of(plane).await.iter().all(|n| n.name != "c"));
    assert_eq!(plane.state.node().capacity(), 3);
}

fn ray_args(dir: &Path, dashboard: &str) -> ServeArgs {
    ServeArgs {
        data_dir: Some(dir.to_path_buf()),
        executor: "ray".to_string(),
        ray_address: Some(dashboard.to_string()),
        interval: 0.5,
        grace_period: 10.0,
        telemetry_interval: 0.5,
        retry_delay: 0.5,
        // Grows an elastic job once it has run about 30 s (its restart penalty).
        policy: "pollux".to_string(),
        nvml_lib: Some("/nonexistent/libnvidia-ml.so.1".into()),
        ..ServeArgs::defaults()
    }
}

/// 6. What `crates/cli/tests/e2e_crash.rs` shows locally: the server dies (its loop and API
///    aborted, its Ray jobs left running) mid-job and a new one starts on the same data dir.
///    The new server stops the leftover Ray job before anything else, queues the job again,
///    and it finishes from its checkpoint; no piece of the new attempt runs while one of the
///    old does. Returns the new server.
async fn phase_server_crash(
    plane: ControlPlane,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    client: &RayClient,
    dir: &Path,
    dashboard: &str,
    python: &Path,
) -> (ControlPlane, tokio::task::JoinHandle<std::io::Result<()>>) {
    let token = plane.token.clone();
    let d = submit(
        &plane,
        &token,
        json!({"command": trainer(python, &["--epochs", "150", "--log-every", "10", "--checkpoint-every", "5"]),
               "working_dir": repo_root().display().to_string(),
               "min_gpus": 2, "max_gpus": 2}),
    )
    .await;
    poll(
        "job d to reach step 20",
        Duration::from_secs(120),
        async || {
            let log = events(&log_of(&plane, d).await);
            log.iter()
                .any(|e| e["event"] == "step" && e["step"].as_u64() >= Some(20))
                .then_some(())
        },
    )
    .await;
    server.abort();
    plane.abandon().await;
    assert!(
        pieces(client, d).iter().any(|p| p["status"] == "RUNNING"),
        "a crash leaves the Ray job running"
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let plane = ControlPlane::start(&ray_args(dir, dashboard), &url)
        .await
        .unwrap();
    let server = tokio::spawn(axum::serve(listener, plane.router.clone()).into_future());
    let detail = wait_job_for(
        &plane,
        d,
        "finished after the restart",
        Duration::from_secs(180),
        |detail| detail.summary.state != "running" && detail.summary.state != "queued",
    )
    .await;
    assert_eq!(detail.summary.state, "succeeded", "{detail:#?}");
    let log = events(&log_of(&plane, d).await);
    let starts: Vec<&Value> = log.iter().filter(|e| e["event"] == "start").collect();
    assert!(starts.len() >= 2, "{log:?}");
    let resumed = starts.last().unwrap();
    assert_eq!(resumed["resumed"], true, "{log:?}");
    assert!(
        resumed["step"].as_u64() >= Some(20),
        "resumed from its checkpoint: {log:?}"
    );
    assert_no_overlap(&pieces(client, d), |_| true);
    (plane, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_resize_and_survive_a_lost_node_on_a_real_ray_cluster() {
    let Some(python) = std::env::var_os(RAY_PYTHON).filter(|p| !p.is_empty()) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{RAY_PYTHON} is not set: CI must provide Ray (.ci/run installs it)"
        );
        eprintln!(
            "SKIPPED ray_cluster: set {RAY_PYTHON}=/path/to/venv/bin/python (a venv with \
             `pip install 'ray[default]'`) to run the Ray executor against a real cluster"
        );
        return;
    };
    let python = PathBuf::from(python);
    assert!(
        python.parent().unwrap().join("ray").exists(),
        "{RAY_PYTHON}={} has no `ray` beside it",
        python.display()
    );
    let started = Instant::now();
    let mut cluster = tokio::task::block_in_place(|| RayCluster::start(&python));
    eprintln!("ray cluster up in {:.1} s", started.elapsed().as_secs_f64());
    let client = RayClient::new(&cluster.dashboard);

    let dir = tempfile::tempdir().unwrap();
    // Served for real: the trainers report their steps, so the policy fits their models.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let plane = ControlPlane::start(&ray_args(dir.path(), &cluster.dashboard), &url)
        .await
        .unwrap();
    let server = tokio::spawn(axum::serve(listener, plane.router.clone()).into_future());
    assert_eq!(plane.state.node().capacity(), 3, "one slot per Ray node");
    let token = plane.token.clone();

    // 1. A two-node job: one piece per Ray node, ranks 0 and 1, trains to the end.
    let submitted = Instant::now();
    let a = submit(
        &plane,
        &token,
        json!({"command": trainer(&python, &["--epochs", "3", "--log-every", "1"]),
               "working_dir": repo_root().display().to_string(),
               "min_gpus": 2, "max_gpus": 2, "max_retries": 0}),
    )
    .await;
    let ray_first_step = until_first_step(&plane, a, submitted).await;
    let limit = Duration::from_secs(120);
    let detail = wait_job_for(&plane, a, "succeeded", limit, |d| {
        d.summary.state != "running" && d.summary.state != "queued"
    })
    .await;
    assert_eq!(detail.summary.state, "succeeded", "{detail:#?}");
    let ray_pieces = pieces(&client, a as u64);
    assert_eq!(ray_pieces.len(), 2, "{ray_pieces:#?}");
    let nodes: Vec<&str> = ray_pieces
        .iter()
        .map(|p| p["driver_node_id"].as_str().unwrap())
        .collect();
    assert_ne!(
        nodes[0], nodes[1],
        "both ranks on one Ray node: {ray_pieces:#?}"
    );
    assert!(ray_pieces.iter().all(|p| p["status"] == "SUCCEEDED"));
    let rank0 = events(&log_of(&plane, a).await);
    let rank1 = events(&rank_log(&plane, a, 1));
    for (rank, log) in [(0, &rank0), (1, &rank1)] {
        assert!(
            log.iter()
                .any(|e| e["event"] == "done" && e["reason"] == "epochs"),
            "rank {rank} did not train to the end: {log:?}"
        );
    }
    eprintln!(
        "phase 1 (two-node job) done at {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // 2. An elastic job grows from one node to two: stop, checkpoint, restart on two nodes,
    //    resumed from the checkpoint.
    let b = submit(
        &plane,
        &token,
        json!({"command": trainer(&python, &["--epochs", "100000", "--log-every", "10", "--checkpoint-every", "5"]),
               "working_dir": repo_root().display().to_string(),
               "min_gpus": 1, "max_gpus": 2, "batch": {"initial": 32, "max": 256}}),
    )
    .await;
    let detail = wait_job_for(&plane, b, "resized to 2", Duration::from_secs(180), |d| {
        d.summary.state == "running" && d.summary.gpus == 2
    })
    .await;
    // Stopped on one node (a resize, or a re-batch decided with it) and started on two.
    let starts: Vec<&str> = detail
        .events
        .iter()
        .filter(|e| e.message.contains("-> running: started on"))
        .map(|e| e.message.as_str())
        .collect();
    assert!(
        starts.len() >= 2
            && starts[0].contains("started on 1 ")
            && starts.last().unwrap().contains("started on 2 "),
        "{:?}",
        detail.events
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let resumed_at = loop {
        let log = events(&log_of(&plane, b).await);
        let starts: Vec<&Value> = log.iter().filter(|e| e["event"] == "start").collect();
        if let Some(second) = starts.get(1) {
            let stepped_after = log
                .iter()
                .skip_while(|e| *e != *second)
                .any(|e| e["event"] == "step");
            if stepped_after {
                assert_eq!(second["resumed"], true, "{log:?}");
                assert_eq!(second["replicas"], 2, "{log:?}");
                break second["step"].as_u64().unwrap();
            }
        }
        assert!(
            Instant::now() < deadline,
            "job {b} did not continue: {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(resumed_at > 0, "the resized job started over");
    let attempt2: Vec<Value> = pieces(&client, b)
        .into_iter()
        .filter(|p| meta(p, "adaptsched_attempt") == "2")
        .collect();
    assert_eq!(attempt2.len(), 2, "{attempt2:#?}");
    assert_ne!(
        meta(&attempt2[0], "adaptsched_node"),
        meta(&attempt2[1], "adaptsched_node")
    );
    let reply = post(&plane, &format!("/v1/jobs/{b}/cancel"), json!({})).await;
    assert!(reply.status.is_success(), "{}", reply.text());
    wait_job_for(
        &plane,
        b,
        "cancelled and gone",
        Duration::from_secs(60),
        |_| {
            pieces(&client, b)
                .iter()
                .all(|p| p["status"] != "RUNNING" && p["status"] != "PENDING")
        },
    )
    .await;
    eprintln!(
        "phase 2 (resize 1 -> 2, resumed at step {resumed_at}) done at {:.1} s",
        started.elapsed().as_secs_f64()
    );

    phase_local_scenarios(&plane, &client).await;
    eprintln!(
        "phase 3 (finish, fail, cancel, bad submits) done at {:.1} s",
        started.elapsed().as_secs_f64()
    );
    phase_node_joins(&plane, &client, &mut cluster).await;
    eprintln!(
        "phase 4 (node c joined, used, removed) done at {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // 5. A worker node dies mid-job: the job is stopped everywhere, restarted elsewhere from
    //    its checkpoint, and finishes; its attempts never overlap.
    let c = submit(
        &plane,
        &token,
        json!({"command": trainer(&python, &["--epochs", "250", "--log-every", "10", "--checkpoint-every", "5"]),
               "working_dir": repo_root().display().to_string(),
               "min_gpus": 2, "max_gpus": 2, "max_retries": 3}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let log = events(&log_of(&plane, c).await);
        if log
            .iter()
            .any(|e| e["event"] == "step" && e["step"].as_u64() >= Some(30))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "job {c} never reached step 30: {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = pieces(&client, c);
    let victim = first
        .iter()
        .map(|p| meta(p, "adaptsched_node").to_string())
        .find(|n| n != "head")
        .expect("a piece on a worker node");
    eprintln!(
        "killing Ray node {victim} at {:.1} s",
        started.elapsed().as_secs_f64()
    );
    cluster.kill_node(&victim);
    let detail = wait_job_for(&plane, c, "finished", Duration::from_secs(180), |d| {
        d.summary.state != "running" && d.summary.state != "queued"
    })
    .await;
    assert_eq!(detail.summary.state, "succeeded", "{detail:#?}");
    let log = events(&log_of(&plane, c).await);
    let starts: Vec<&Value> = log.iter().filter(|e| e["event"] == "start").collect();
    assert!(starts.len() >= 2, "{log:?}");
    assert_eq!(starts[1]["resumed"], true, "{log:?}");
    assert!(starts[1]["step"].as_u64().unwrap() > 0, "{log:?}");
    let all = pieces(&client, c);
    let later: Vec<&Value> = all
        .iter()
        .filter(|p| meta(p, "adaptsched_attempt") != "1")
        .collect();
    assert!(
        later.iter().all(|p| meta(p, "adaptsched_node") != victim),
        "{all:#?}"
    );
    // The piece on the dead node never reports an end; the surviving ones must have ended.
    assert_no_overlap(&all, |p| meta(p, "adaptsched_node") != victim);
    eprintln!(
        "phase 5 (node {victim} killed) done at {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let (plane, server) = phase_server_crash(
        plane,
        server,
        &client,
        dir.path(),
        &cluster.dashboard,
        &python,
    )
    .await;
    eprintln!(
        "phase 6 (server crashed mid-job, restarted) done at {:.1} s",
        started.elapsed().as_secs_f64()
    );
    server.abort();
    plane.stop().await;

    // The same first job under the local executor, for the submit → first step latency.
    let local_dir = tempfile::tempdir().unwrap();
    let local = common::start(local_dir.path(), 2).await;
    let submitted = Instant::now();
    let l = submit(
        &local,
        &local.token.clone(),
        json!({"command": trainer(&python, &["--epochs", "3", "--log-every", "1"]),
               "working_dir": repo_root().display().to_string(),
               "min_gpus": 2, "max_gpus": 2}),
    )
    .await;
    let local_first_step = until_first_step(&local, l, submitted).await;
    let _ = job(&local, l).await;
    local.stop().await;
    eprintln!(
        "submit -> first step: ray {ray_first_step:.2} s, local {local_first_step:.2} s \
         (+{:.2} s on Ray)",
        ray_first_step - local_first_step
    );
    drop(cluster);
}
