//! The scheduling loop against a fake executor, on tokio's paused clock: plans become starts
//! and stops exactly once, retries wait out their backoff, invalid plans change nothing.

use super::*;
use crate::executor::{ExecutorError, ExitStatus, StartedProcess};
use crate::node::describe_node;
use adaptsched_core::Plan;
use adaptsched_store::{JobSubmission, SqliteStore};
use rand::RngCore;

/// Records what the loop asked for; exits are sent by the test.
struct FakeExecutor {
    log: Arc<Mutex<Vec<String>>>,
    running: Arc<Mutex<BTreeMap<DurableJobId, u32>>>,
}

impl Executor for FakeExecutor {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn start(&mut self, launch: LaunchSpec) -> Result<StartedProcess, ExecutorError> {
        let mut running = self.running.lock().unwrap();
        if running.contains_key(&launch.job) {
            return Err(ExecutorError::AlreadyRunning(launch.job));
        }
        running.insert(launch.job, launch.attempt);
        self.log.lock().unwrap().push(format!(
            "start {} attempt {} replicas {}",
            launch.job, launch.attempt, launch.env["ADAPTSCHED_REPLICAS"]
        ));
        Ok(StartedProcess {
            pid: 1000 + launch.job.0 as u32,
            start_ticks: 1,
            boot_id: "fake".to_string(),
        })
    }

    fn stop(&mut self, job: DurableJobId, _grace: Duration) {
        self.log.lock().unwrap().push(format!("stop {job}"));
    }

    fn pids(&self) -> Vec<(DurableJobId, u32)> {
        Vec::new()
    }
}

struct Harness {
    control: ControlLoop,
    store: Arc<SqliteStore>,
    log: Arc<Mutex<Vec<String>>>,
    running: Arc<Mutex<BTreeMap<DurableJobId, u32>>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new(policy: Box<dyn Policy>, slots: u32) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let running = Arc::new(Mutex::new(BTreeMap::new()));
        let executor = FakeExecutor {
            log: Arc::clone(&log),
            running: Arc::clone(&running),
        };
        let (_tx, rx) = mpsc::unbounded_channel();
        let config = ControlConfig {
            interval: Duration::from_secs(60),
            grace: Duration::from_secs(1),
            url: "http://test".to_string(),
            data_dir: dir.path().to_path_buf(),
            retry_base: Duration::from_secs(10),
            retry_max: Duration::from_secs(300),
            restart_seconds: 30.0,
        };
        let control = ControlLoop::new(
            Arc::clone(&store) as Arc<dyn Store>,
            Box::new(executor),
            rx,
            policy,
            describe_node("test", Some(slots), None, 2, 8.0),
            config,
            Arc::new(ControlShared::default()),
        );
        Harness {
            control,
            store,
            log,
            running,
            _dir: dir,
        }
    }

    fn submit(&self, name: &str, gpus: u32, retries: u32) -> DurableJobId {
        let submission = JobSubmission::new(name, "alice", ["train"])
            .gpus(gpus, gpus)
            .max_retries(retries);
        self.store.submit_job(&submission, wall_now()).unwrap().id
    }

    fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    fn state(&self, job: DurableJobId) -> JobState {
        self.store.get_job(job).unwrap().state
    }

    /// The executor reports that `job`'s current attempt ended with `code`.
    async fn exit(&mut self, job: DurableJobId, code: i32) {
        let attempt = self.running.lock().unwrap().remove(&job).unwrap();
        self.control
            .on_exit(ExitEvent {
                job,
                attempt,
                status: ExitStatus {
                    code: Some(code),
                    signal: None,
                },
            })
            .await;
    }

    fn waiting(&self, job: DurableJobId) -> Option<String> {
        self.control.shared.status().waiting.get(&job).cloned()
    }
}

fn fifo() -> Box<dyn Policy> {
    adaptsched_policies::build_policy("fifo").unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_round_starts_what_fits_and_a_second_round_changes_nothing() {
    let mut h = Harness::new(fifo(), 2);
    let a = h.submit("a", 1, 0);
    let b = h.submit("b", 1, 0);
    let c = h.submit("c", 2, 0);
    h.control.round().await;
    assert_eq!(
        h.take_log(),
        vec![
            format!("start {a} attempt 1 replicas 1"),
            format!("start {b} attempt 1 replicas 1")
        ]
    );
    assert_eq!(h.state(a), JobState::Running);
    assert_eq!(h.state(c), JobState::Queued);
    let reason = h.waiting(c).expect("a queued job says why it waits");
    assert!(reason.contains("needs 2"), "{reason}");
    h.control.round().await;
    h.control.round().await;
    assert!(
        h.take_log().is_empty(),
        "rounds on the same state must not act"
    );
    assert_eq!(h.store.processes().unwrap().len(), 2);
    // Once both exit, the two-slot job starts on the freed slots.
    h.exit(a, 0).await;
    h.exit(b, 0).await;
    assert_eq!(h.state(a), JobState::Succeeded);
    h.control.round().await;
    assert_eq!(
        h.take_log(),
        vec![format!("start {c} attempt 1 replicas 2")]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_attempt_waits_out_its_backoff_then_retries_then_fails() {
    let mut h = Harness::new(fifo(), 1);
    let job = h.submit("flaky", 1, 1);
    h.control.round().await;
    assert_eq!(h.take_log().len(), 1);
    h.exit(job, 3).await;
    assert_eq!(h.state(job), JobState::Queued);
    assert_eq!(h.store.get_job(job).unwrap().exit_code, Some(3));
    h.control.round().await;
    assert!(
        h.take_log().is_empty(),
        "no restart before the backoff ends"
    );
    let reason = h.waiting(job).unwrap();
    assert!(reason.contains("retry 1 of 1"), "{reason}");
    // The first retry waits retry_base (10 s).
    tokio::time::advance(Duration::from_secs(9)).await;
    h.control.round().await;
    assert!(h.take_log().is_empty());
    tokio::time::advance(Duration::from_secs(2)).await;
    h.control.round().await;
    assert_eq!(
        h.take_log(),
        vec![format!("start {job} attempt 2 replicas 1")]
    );
    h.exit(job, 3).await;
    assert_eq!(h.state(job), JobState::Failed);
    h.control.round().await;
    assert!(h.take_log().is_empty());
}

#[tokio::test(start_paused = true)]
async fn cancelling_stops_once_and_the_exit_keeps_it_cancelled() {
    let mut h = Harness::new(fifo(), 1);
    let job = h.submit("long", 1, 3);
    h.control.round().await;
    h.take_log();
    h.store
        .cancel_job(job, "cancelled by alice", wall_now())
        .unwrap();
    h.control.round().await;
    assert_eq!(h.take_log(), vec![format!("stop {job}")]);
    h.control.round().await;
    assert!(h.take_log().is_empty(), "a stop is asked for once");
    h.exit(job, 143).await;
    assert_eq!(h.state(job), JobState::Cancelled);
    assert!(h.store.processes().unwrap().is_empty());
    h.control.round().await;
    assert!(h.take_log().is_empty(), "a cancelled job is not retried");
}

/// Always gives the first job more devices than the node has.
struct Greedy;

impl Policy for Greedy {
    fn name(&self) -> &'static str {
        "greedy"
    }

    fn decide(&mut self, snapshot: &Snapshot<'_>, _rng: &mut dyn RngCore) -> Plan {
        let mut plan = Plan::default();
        if let Some(job) = snapshot.jobs.first() {
            plan.allocate(job.id, Allocation::new(vec![(NodeId(0), 5)]));
        }
        plan
    }
}

#[tokio::test(start_paused = true)]
async fn an_invalid_plan_is_never_applied_and_the_reason_is_shown() {
    let mut h = Harness::new(Box::new(Greedy), 2);
    let job = h.submit("a", 1, 0);
    h.control.round().await;
    assert!(h.take_log().is_empty());
    assert_eq!(h.state(job), JobState::Queued);
    let reason = h.waiting(job).unwrap();
    assert!(reason.contains("invalid"), "{reason}");
}

#[tokio::test(start_paused = true)]
async fn under_an_invalid_plan_running_jobs_keep_running_but_cancelled_ones_stop() {
    let mut h = Harness::new(fifo(), 2);
    let keep = h.submit("keep", 1, 0);
    let cancel = h.submit("cancel", 1, 0);
    h.control.round().await;
    assert_eq!(h.take_log().len(), 2);
    h.control.policy = Box::new(Greedy);
    h.store.cancel_job(cancel, "cancelled", wall_now()).unwrap();
    h.control.round().await;
    assert_eq!(h.take_log(), vec![format!("stop {cancel}")]);
    assert_eq!(h.state(keep), JobState::Running);
}

/// Gives every job `gpus` devices (clamped to its bounds), to drive resizes.
struct Fixed(u32);

impl Policy for Fixed {
    fn name(&self) -> &'static str {
        "fixed"
    }

    fn decide(&mut self, snapshot: &Snapshot<'_>, _rng: &mut dyn RngCore) -> Plan {
        let mut plan = Plan::default();
        for job in snapshot.jobs {
            let gpus = self.0.clamp(job.min_gpus, job.max_gpus);
            plan.allocate(job.id, Allocation::new(vec![(NodeId(0), gpus)]));
        }
        plan
    }
}

#[tokio::test(start_paused = true)]
async fn a_resize_is_a_stop_then_a_start_with_the_new_size_after_the_exit() {
    let mut h = Harness::new(Box::new(Fixed(1)), 4);
    let submission = JobSubmission::new("elastic", "alice", ["train"]).gpus(1, 4);
    let job = h.store.submit_job(&submission, wall_now()).unwrap().id;
    h.control.round().await;
    assert_eq!(
        h.take_log(),
        vec![format!("start {job} attempt 1 replicas 1")]
    );
    h.control.policy = Box::new(Fixed(3));
    h.control.round().await;
    assert_eq!(h.take_log(), vec![format!("stop {job}")]);
    h.control.round().await;
    assert!(
        h.take_log().is_empty(),
        "the devices are held until the exit"
    );
    // The job checkpoints and exits 0 on SIGTERM: it goes back to the queue, not succeeded.
    h.exit(job, 0).await;
    assert_eq!(h.state(job), JobState::Queued);
    h.control.round().await;
    assert_eq!(
        h.take_log(),
        vec![format!("start {job} attempt 2 replicas 3")]
    );
    let reasons: Vec<String> = h
        .store
        .events(job)
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert!(
        reasons.iter().any(|m| m.contains("resizing from 1 to 3")),
        "{reasons:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_loop_wakes_on_submissions_and_runs_every_interval() {
    let h = Harness::new(fifo(), 1);
    let store = Arc::clone(&h.store);
    let shared = Arc::clone(&h.control.shared);
    let log = Arc::clone(&h.log);
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(h.control.run(stop_rx));
    // Wait (on the paused clock, without wall time) for the first round.
    while shared.status().rounds == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let submission = JobSubmission::new("a", "alice", ["train"]);
    store.submit_job(&submission, wall_now()).unwrap();
    shared.wake();
    while log.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rounds = shared.status().rounds;
    assert!(rounds <= 3, "woken, not polled: {rounds} rounds");
    tokio::time::sleep(Duration::from_secs(121)).await;
    let later = shared.status().rounds;
    assert!(later >= rounds + 2, "interval rounds: {rounds} -> {later}");
    stop_tx.send(true).unwrap();
    task.await.unwrap();
    // Shutdown asked the running job to stop.
    assert!(log.lock().unwrap().iter().any(|l| l.starts_with("stop")));
}

fn record(at: f64, gpus: u32) -> AllocationRecord {
    AllocationRecord {
        seq: 0,
        job: DurableJobId(1),
        at,
        allocation: node_allocation(gpus),
        batch: None,
        reason: String::new(),
    }
}

#[test]
fn attained_service_sums_gpus_times_the_time_each_allocation_held() {
    // (allocation history as (at, gpus), now, expected GPU-seconds)
    type Case = (&'static [(f64, u32)], f64, f64);
    let cases: [Case; 4] = [
        (&[], 100.0, 0.0),
        (&[(10.0, 2)], 15.0, 10.0),
        (&[(0.0, 1), (10.0, 0), (20.0, 4)], 25.0, 10.0 + 20.0),
        (&[(0.0, 2), (5.0, 3)], 5.0, 10.0),
    ];
    for (history, now, expected) in cases {
        let records: Vec<AllocationRecord> =
            history.iter().map(|&(at, gpus)| record(at, gpus)).collect();
        assert_eq!(attained_gpu_seconds(&records, now), expected, "{history:?}");
    }
}

#[test]
fn retry_delays_double_up_to_the_cap() {
    let base = Duration::from_secs(1);
    let cap = Duration::from_secs(300);
    let delays: Vec<u64> = (1..=10)
        .map(|n| retry_delay(base, cap, n).as_secs())
        .collect();
    assert_eq!(delays, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
    assert_eq!(retry_delay(base, cap, u32::MAX), cap);
}

#[test]
fn batch_views_split_the_initial_batch_or_follow_the_decision() {
    let spec = BatchSpec {
        initial: 100,
        max: 1000,
        min_local: None,
        max_local: Some(32),
    };
    assert_eq!(batch_view(None, 2, None, None), None);
    let split = batch_view(Some(&spec), 2, None, None).unwrap();
    // 50 per replica does not fit in 32: two micro-batches of 25.
    assert_eq!(
        (
            split.local_batch_size,
            split.accumulation_steps,
            split.global_batch_size
        ),
        (25, 1, 100)
    );
    assert_eq!(split.lr_scale, 1.0);
    let decided = batch_view(
        Some(&spec),
        4,
        Some(BatchDecision {
            local_batch_size: 32,
            accumulation_steps: 1,
        }),
        None,
    )
    .unwrap();
    assert_eq!(decided.global_batch_size, 256);
    assert_eq!(decided.lr_scale, 1.0, "no gradient statistics yet: gain 1");
    // With statistics: gain = (var + sqr)/(var/S + sqr), S = 256/100, where var is the
    // variance at the initial batch: the reported per-sample tr Σ = 300 over 100 samples.
    let grad = GradStats {
        sqr: 1.0,
        var: 300.0,
    };
    let scaled = batch_view(
        Some(&spec),
        4,
        Some(BatchDecision {
            local_batch_size: 32,
            accumulation_steps: 1,
        }),
        Some(grad),
    )
    .unwrap();
    let expected = 4.0 / (3.0 / 2.56 + 1.0);
    assert!((scaled.lr_scale - expected).abs() < 1e-12, "{scaled:?}");
    // Pure noise (sqr -> 0) scales linearly; no noise not at all.
    let linear = adascale_gain(
        Some(GradStats {
            sqr: 1e-12,
            var: 1.0,
        }),
        100,
        400,
    );
    assert!((linear - 4.0).abs() < 1e-6, "{linear}");
    let flat = adascale_gain(Some(GradStats { sqr: 1.0, var: 0.0 }), 100, 400);
    assert!((flat - 1.0).abs() < 1e-12, "{flat}");
}

/// Gives the node's one device to whichever job does not hold it: a plan that flips.
struct Flip;

impl Policy for Flip {
    fn name(&self) -> &'static str {
        "flip"
    }

    fn decide(&mut self, snapshot: &Snapshot<'_>, _rng: &mut dyn RngCore) -> Plan {
        let mut plan = Plan::default();
        if let Some(job) = snapshot.jobs.iter().find(|j| !j.is_running()) {
            plan.allocate(job.id, Allocation::new(vec![(NodeId(0), 1)]));
        }
        plan
    }
}

#[tokio::test(start_paused = true)]
async fn a_young_attempt_is_not_preempted_by_a_flipping_plan() {
    let mut h = Harness::new(Box::new(Flip), 1);
    let a = h.submit("a", 1, 0);
    h.control.round().await;
    assert_eq!(
        h.take_log(),
        vec![format!("start {a} attempt 1 replicas 1")]
    );
    let b = h.submit("b", 1, 0);
    for _ in 0..3 {
        h.control.round().await;
        assert!(
            h.take_log().is_empty(),
            "within its minimum run time a keeps its device"
        );
    }
    assert_eq!(h.state(a), JobState::Running);
    let reason = h.waiting(b).unwrap();
    assert!(reason.contains("minimum run time"), "{reason}");
    // Once the attempt is old enough, the plan is followed: a is preempted, with a reason.
    h.control
        .started_at
        .insert(a, wall_now() - MIN_RUN_RESTARTS * 30.0 - 1.0);
    h.control.round().await;
    assert_eq!(h.take_log(), vec![format!("stop {a}")]);
    let events = h.store.events(a).unwrap();
    let preempt = events
        .iter()
        .find(|e| e.kind == "preempt")
        .expect("an event");
    assert!(
        preempt.message.starts_with("preempt: 1 → 0 cpu-slots: job")
            && preempt.message.contains("arrived"),
        "{}",
        preempt.message
    );
}

/// The fake executor with a pool of devices that changes while the loop runs, as a Ray
/// cluster's does when nodes join and leave.
struct PoolExecutor {
    inner: FakeExecutor,
    pool: Arc<Mutex<NodeInfo>>,
}

impl Executor for PoolExecutor {
    fn name(&self) -> &'static str {
        "fake-pool"
    }

    fn start(&mut self, launch: LaunchSpec) -> Result<StartedProcess, ExecutorError> {
        self.inner.start(launch)
    }

    fn stop(&mut self, job: DurableJobId, grace: Duration) {
        self.inner.stop(job, grace);
    }

    fn pids(&self) -> Vec<(DurableJobId, u32)> {
        Vec::new()
    }

    fn pool(&self) -> Option<NodeInfo> {
        Some(self.pool.lock().unwrap().clone())
    }
}

#[tokio::test(start_paused = true)]
async fn each_round_plans_for_the_pool_the_executor_has_now() {
    let mut h = Harness::new(fifo(), 2);
    let pool = Arc::new(Mutex::new(describe_node("ray", Some(2), None, 2, 8.0)));
    h.control.executor = Box::new(PoolExecutor {
        inner: FakeExecutor {
            log: Arc::clone(&h.log),
            running: Arc::clone(&h.running),
        },
        pool: Arc::clone(&pool),
    });
    let capacity = |h: &Harness| h.control.shared.node().map(|n| n.capacity());
    let (a, b) = (h.submit("a", 1, 0), h.submit("b", 1, 0));
    h.control.round().await;
    assert_eq!(h.take_log().len(), 2);
    // A node joins: the next round sees three devices and starts a third job.
    *pool.lock().unwrap() = describe_node("ray", Some(3), None, 3, 12.0);
    let c = h.submit("c", 1, 0);
    h.control.round().await;
    assert_eq!(
        h.take_log(),
        vec![format!("start {c} attempt 1 replicas 1")]
    );
    assert_eq!(capacity(&h), Some(3), "the API sees the new pool");
    // Two nodes leave: what runs is left to the executor (their pieces fail there), and
    // nothing more starts while three devices are held on a pool of one.
    *pool.lock().unwrap() = describe_node("ray", Some(1), None, 1, 4.0);
    let d = h.submit("d", 1, 0);
    h.control.round().await;
    assert!(h.take_log().iter().all(|line| !line.starts_with("start")));
    assert_eq!(capacity(&h), Some(1));
    assert_eq!(h.state(d), JobState::Queued);
    for job in [a, b, c] {
        h.exit(job, 0).await;
    }
    h.control.round().await;
    assert_eq!(
        h.take_log(),
        vec![format!("start {d} attempt 1 replicas 1")]
    );
}

#[tokio::test(start_paused = true)]
async fn no_policy_fails_when_every_node_of_the_pool_is_gone() {
    for name in adaptsched_policies::POLICY_NAMES {
        let mut h = Harness::new(adaptsched_policies::build_policy(name).unwrap(), 1);
        let pool = Arc::new(Mutex::new(describe_node("ray", Some(1), None, 1, 4.0)));
        h.control.executor = Box::new(PoolExecutor {
            inner: FakeExecutor {
                log: Arc::clone(&h.log),
                running: Arc::clone(&h.running),
            },
            pool: Arc::clone(&pool),
        });
        h.submit("a", 1, 0);
        h.control.round().await;
        h.take_log();
        // Every Ray node left: a pool of no devices. Rounds go on; nothing starts.
        *pool.lock().unwrap() = describe_node("ray", Some(0), None, 0, 0.0);
        let b = h.submit("b", 1, 0);
        h.control.round().await;
        h.control.round().await;
        let log = h.take_log();
        assert!(
            log.iter().all(|line| !line.starts_with("start")),
            "{name}: {log:?}"
        );
        assert_eq!(h.state(b), JobState::Queued, "{name}");
        assert!(h.waiting(b).is_some(), "{name}");
    }
}
