//! The adaptsched control plane: `adaptsched serve` (HTTP API, scheduling loop, executors,
//! node telemetry) over the durable store. See docs/control-plane.md.
//!
//! Layout: `http` (routes) → `state` (shared handles) → `control` (the loop) → `reconcile`
//! (pure diff) and `executor`/`local` (processes); `admission` (pure request checks),
//! `auth` (tokens), `node` and `telemetry` (the machine), `procinfo` (/proc and signals).

pub mod admission;
pub mod auth;
pub mod control;
pub mod dashboard;
pub mod error;
pub mod executor;
pub mod http;
pub mod local;
pub mod metrics;
pub mod model;
pub mod node;
pub mod openapi;
pub mod procinfo;
pub mod ray;
pub mod reconcile;
pub mod state;
pub mod telemetry;

use anyhow::Context;
use control::{ControlConfig, ControlLoop, ControlShared, wall_now};
use state::{AppInner, AppState};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Flags of `adaptsched serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (loopback by default; port 0 picks a free port).
    #[arg(long, default_value = adaptsched_api::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Data dir: database, logs, checkpoints, token, server URL
    /// [default: $XDG_DATA_HOME/adaptsched, else ~/.local/share/adaptsched].
    #[arg(long, env = "ADAPTSCHED_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Scheduling policy (registry name).
    #[arg(long, default_value = adaptsched_policies::DEFAULT_POLICY)]
    pub policy: String,
    /// Seconds between scheduling rounds (rounds also run on submissions and exits).
    #[arg(long, default_value_t = 60.0)]
    pub interval: f64,
    /// Offer this many CPU device slots on this node instead of GPUs (a machine without
    /// GPUs offers one slot per core when this is not given).
    #[arg(long)]
    pub cpu_slots: Option<u32>,
    /// Seconds a job gets between SIGTERM and SIGKILL when stopped or resized.
    #[arg(long, default_value_t = 30.0)]
    pub grace_period: f64,
    /// Seconds between node telemetry samples.
    #[arg(long, default_value_t = 5.0)]
    pub telemetry_interval: f64,
    /// Telemetry samples kept (a ring buffer; 720 × 5 s = one hour).
    #[arg(long, default_value_t = 720)]
    pub telemetry_history: usize,
    /// First retry delay in seconds after a failed attempt (doubles per failure, max 300).
    #[arg(long, default_value_t = 1.0)]
    pub retry_delay: f64,
    /// Path of libnvidia-ml.so (default: the driver's, found by the dynamic loader).
    #[arg(long)]
    pub nvml_lib: Option<PathBuf>,
    /// What runs jobs: `local` (processes on this machine) or `ray` (an existing Ray
    /// cluster, see docs/ray.md).
    #[arg(long, default_value = "local", value_parser = ["local", "ray"])]
    pub executor: String,
    /// The Ray dashboard's URL (`--executor ray`), e.g. http://127.0.0.1:8265.
    #[arg(long, env = "ADAPTSCHED_RAY_ADDRESS")]
    pub ray_address: Option<String>,
}

impl ServeArgs {
    /// The defaults of `adaptsched serve`, for tests and embedding.
    pub fn defaults() -> Self {
        ServeArgs {
            listen: adaptsched_api::DEFAULT_LISTEN
                .parse()
                .expect("valid default"),
            data_dir: None,
            policy: adaptsched_policies::DEFAULT_POLICY.to_string(),
            interval: 60.0,
            cpu_slots: None,
            grace_period: 30.0,
            telemetry_interval: 5.0,
            telemetry_history: 720,
            retry_delay: 1.0,
            nvml_lib: None,
            executor: "local".to_string(),
            ray_address: None,
        }
    }
}

/// The data dir `adaptsched serve` uses when given none (the CLI client looks there too).
pub fn default_data_dir() -> PathBuf {
    let xdg = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty());
    let home = || std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share"));
    xdg.map(PathBuf::from)
        .or_else(home)
        .unwrap_or_else(|| PathBuf::from("."))
        .join("adaptsched")
}

fn seconds(name: &str, value: f64) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        value.is_finite() && (0.0..=1e7).contains(&value),
        "invalid --{name} {value}: must be a number of seconds >= 0"
    );
    Ok(Duration::from_secs_f64(value))
}

/// A running control plane without its listener: the router to serve, and the tasks behind
/// it. `adaptsched serve` wraps it in a TCP listener; tests drive the router directly.
pub struct ControlPlane {
    pub state: AppState,
    pub router: axum::Router,
    /// The admin token.
    pub token: String,
    pub data_dir: PathBuf,
    shutdown: watch::Sender<bool>,
    control: JoinHandle<()>,
    telemetry: JoinHandle<()>,
    /// Held while the control plane lives (see `lock_data_dir`).
    _lock: std::fs::File,
}

impl ControlPlane {
    /// Opens (or creates) the data dir and the store, recovers from a crash, and starts the
    /// scheduling loop with the local executor and the telemetry sampler. `url` is what jobs
    /// are told to report to.
    pub async fn start(args: &ServeArgs, url: &str) -> anyhow::Result<ControlPlane> {
        let interval = seconds("interval", args.interval)?;
        anyhow::ensure!(
            interval >= Duration::from_millis(10),
            "invalid --interval {}: at least 0.01 s",
            args.interval
        );
        let grace = seconds("grace-period", args.grace_period)?;
        let telemetry_every =
            seconds("telemetry-interval", args.telemetry_interval)?.max(Duration::from_millis(100));
        let retry_base = seconds("retry-delay", args.retry_delay)?;
        let policy = adaptsched_policies::build_policy(&args.policy)?;
        let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
        prepare_data_dir(&data_dir)?;
        let data_dir = data_dir.canonicalize().context("data dir")?;
        let lock = {
            let dir = data_dir.clone();
            tokio::task::spawn_blocking(move || lock_data_dir(&dir)).await??
        };
        let db_path = data_dir.join(adaptsched_api::data_dir::DATABASE_FILE);
        // Two connections to the same file: the loop's writes (each an fsync) then never make
        // API reads wait, since WAL lets readers run beside the writer.
        let open = |path: PathBuf| async move {
            let store =
                tokio::task::spawn_blocking(move || adaptsched_store::SqliteStore::open(path))
                    .await??;
            anyhow::Ok(Arc::new(store) as Arc<dyn adaptsched_store::Store>)
        };
        let store = open(db_path.clone()).await?;
        let loop_store = open(db_path.clone()).await?;
        let token = {
            let (store, dir) = (Arc::clone(&store), data_dir.clone());
            tokio::task::spawn_blocking(move || {
                auth::ensure_admin_token(store.as_ref(), &dir, wall_now())
            })
            .await??
        };

        let nvml_lib = args.nvml_lib.clone();
        let probe = tokio::task::spawn_blocking(move || {
            node::probe_gpus(nvml_lib.as_deref().map(Path::as_os_str))
        })
        .await?;
        let (host, cores, memory_gb) = node::machine();
        let gpus = match &probe {
            node::GpuProbe::Available { count, name, .. } => Some((*count, name.as_str())),
            node::GpuProbe::Absent { .. } => None,
        };
        let (exit_tx, exit_rx) = mpsc::unbounded_channel();
        let (executor, node, ray): (Box<dyn executor::Executor>, _, _) = if args.executor == "ray" {
            let (executor, node) = ray_executor(args, &data_dir, grace, exit_tx).await?;
            let watcher = executor.watcher();
            (Box::new(executor), node, Some(watcher))
        } else {
            let node = node::describe_node(&host, args.cpu_slots, gpus, cores, memory_gb);
            (Box::new(local::LocalExecutor::new(exit_tx)), node, None)
        };
        tracing::info!(
            "node {}: {} {} device(s), {cores} cores, {memory_gb:.1} GB",
            node.node.name,
            node.capacity(),
            node.device_label
        );

        let shared = Arc::new(ControlShared::default());
        let config = ControlConfig {
            interval,
            grace,
            url: url.to_string(),
            data_dir: data_dir.clone(),
            retry_base,
            retry_max: Duration::from_secs(300),
            restart_seconds: grace.as_secs_f64().max(1.0),
        };
        let (shutdown, shutdown_rx) = watch::channel(false);
        let control_loop = ControlLoop::new(
            loop_store,
            executor,
            exit_rx,
            policy,
            node.clone(),
            config,
            Arc::clone(&shared),
        );
        let control = tokio::spawn(control_loop.run(shutdown_rx.clone()));

        let history = Arc::new(Mutex::new(telemetry::History::new(args.telemetry_history)));
        let telemetry = tokio::spawn(sample_telemetry(
            probe,
            Arc::clone(&history),
            Arc::clone(&shared),
            telemetry_every,
            shutdown_rx,
        ));

        let default_dir = std::env::current_dir()
            .ok()
            .and_then(|dir| dir.to_str().map(str::to_string))
            .unwrap_or_else(|| "/".to_string());
        let state = AppState::new(AppInner {
            store,
            start_node: node,
            ray,
            control: shared,
            telemetry: history,
            policy: args.policy.clone(),
            interval_s: args.interval,
            data_dir: data_dir.clone(),
            default_dir,
        });
        Ok(ControlPlane {
            router: http::router(state.clone()),
            state,
            token,
            data_dir,
            shutdown,
            control,
            telemetry,
            _lock: lock,
        })
    }

    /// Ends the loop and the sampler abruptly, leaving job processes running, as a crash of
    /// the server would: for crash-recovery tests.
    #[doc(hidden)]
    pub async fn abandon(self) {
        self.control.abort();
        self.telemetry.abort();
        let _ = self.control.await;
        let _ = self.telemetry.await;
    }

    /// Stops the loop (which stops every running job and queues it for the next start) and
    /// the sampler.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        if let Err(error) = self.control.await {
            tracing::error!("scheduling loop: {error}");
        }
        let _ = self.telemetry.await;
    }
}

/// Connects the Ray executor (`--executor ray`) and describes the Ray cluster's usable nodes
/// as the pool of devices the loop starts with (it re-reads them every round; docs/ray.md).
async fn ray_executor(
    args: &ServeArgs,
    data_dir: &Path,
    grace: Duration,
    exits: mpsc::UnboundedSender<executor::ExitEvent>,
) -> anyhow::Result<(ray::RayExecutor, node::NodeInfo)> {
    let address = args
        .ray_address
        .clone()
        .context("--executor ray needs --ray-address (the Ray dashboard's URL)")?;
    let config = ray::RayConfig {
        address,
        data_dir: data_dir.to_path_buf(),
        poll: Duration::from_millis(500),
        grace,
    };
    let executor =
        tokio::task::spawn_blocking(move || ray::RayExecutor::connect(&config, exits)).await??;
    let totals = executor.totals();
    anyhow::ensure!(
        totals.devices > 0,
        "the Ray cluster has no usable node: give nodes an `{}` or `GPU` resource (docs/ray.md)",
        ray::SLOT_RESOURCE
    );
    let node = ray::describe_pool(&totals);
    tracing::info!(
        "ray: {} node(s), {} {} device(s), {:.0} CPUs, {:.1} GB",
        totals.nodes,
        totals.devices,
        node.device_label,
        totals.cpus,
        totals.memory_gb
    );
    Ok((executor, node))
}

/// Creates the data dir (mode 0700: it holds the admin token) and its subdirectories. An
/// existing dir keeps its mode (it may be shared on purpose), with a warning if others can
/// read it; the token file itself is 0600 either way.
fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", dir.display()))?;
    } else if let Ok(metadata) = std::fs::metadata(dir)
        && metadata.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            "data dir {} is accessible to other users (mode {:o}); consider chmod 700",
            dir.display(),
            metadata.permissions().mode() & 0o777
        );
    }
    for sub in [
        adaptsched_api::data_dir::LOGS_DIR,
        adaptsched_api::data_dir::CHECKPOINTS_DIR,
    ] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }
    Ok(())
}

/// Takes `<data-dir>/server.lock` (an exclusive `flock`) for as long as the returned file is
/// open. A second server on the same data dir would take the first one's jobs for leftovers
/// of a crash and kill them; it is refused instead. The kernel drops the lock when the
/// server dies, however it dies, and jobs do not inherit it (close-on-exec).
fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    let path = dir.join("server.lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // A process forked by another thread of this program holds a copy of the descriptor
    // until it execs (close-on-exec); on a loaded machine that can take a moment, so a
    // lock that is still taken is retried briefly before we conclude another server has it.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let locked = loop {
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Err(rustix::io::Errno::WOULDBLOCK) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => break other,
        }
    };
    if let Err(error) = locked {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        anyhow::bail!(
            "data dir {} is in use by another adaptsched serve (pid {}): {error}",
            dir.display(),
            holder.trim()
        );
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    Ok(file)
}

/// Writes `contents` to `path` by renaming a temporary file over it, so a client reading
/// `server.url` never sees half a URL.
fn write_atomically(path: &Path, contents: &str) -> anyhow::Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, contents)
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

async fn sample_telemetry(
    probe: node::GpuProbe,
    history: telemetry::SharedHistory,
    shared: Arc<ControlShared>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut sampler = Some(telemetry::Sampler::new(probe));
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        let jobs: Vec<_> = shared
            .status()
            .running
            .iter()
            .map(|(&job, running)| (job, running.pid))
            .collect();
        let Some(mut current) = sampler.take() else {
            return;
        };
        // Reading /proc for every process takes milliseconds: keep it off the async workers.
        let result = tokio::task::spawn_blocking(move || {
            let sample = current.sample(wall_now(), &jobs);
            (current, sample)
        })
        .await;
        match result {
            Ok((back, sample)) => {
                sampler = Some(back);
                history
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(sample);
            }
            Err(error) => {
                tracing::error!("telemetry sampler stopped: {error}");
                return;
            }
        }
    }
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

/// Serves until SIGINT or SIGTERM; then stops the jobs (they are queued again and restart,
/// from their checkpoint dir, on the next start) and exits.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    let plane = ControlPlane::start(&args, &url).await?;
    let url_file = plane.data_dir.join(adaptsched_api::data_dir::URL_FILE);
    write_atomically(&url_file, &format!("{url}\n"))?;
    println!("adaptsched serve: listening on {url}");
    println!("data dir: {}", plane.data_dir.display());
    println!(
        "admin token: {}",
        plane
            .data_dir
            .join(adaptsched_api::data_dir::TOKEN_FILE)
            .display()
    );
    println!(
        "policy: {}, {} {} device(s)",
        args.policy,
        plane.state.node().capacity(),
        plane.state.node().device_label
    );
    let router = plane.router.clone();
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    eprintln!("adaptsched serve: shutting down; stopping running jobs");
    plane.stop().await;
    Ok(())
}

/// Runs the server until interrupted.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_max_level(tracing::Level::INFO)
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(serve(args));
    // Jobs are stopped by now; do not let a stuck blocking call hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}
