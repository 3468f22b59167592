//! The HTTP API end to end in-process: real store, real scheduling loop, real local
//! processes, driven through the router.

mod common;

use adaptsched_api::{ClusterSummary, ErrorBody, NodeView, TokenResponse};
use axum::http::{Method, StatusCode};
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_process_runs_and_its_logs_and_exit_code_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let plane = start(dir.path(), 2).await;
    let work = dir.path().to_str().unwrap().to_string();
    let id = submit(
        &plane,
        &plane.token.clone(),
        json!({
            "command": command("echo hi; echo \"slots=$ADAPTSCHED_CPU_SLOTS world=$WORLD_SIZE replicas=$ADAPTSCHED_REPLICAS job=$ADAPTSCHED_JOB_ID\"; echo oops >&2; exit 3"),
            "working_dir": work,
        }),
    )
    .await;
    let detail = wait_job(&plane, id, "failed", state_is("failed")).await;
    assert_eq!(detail.summary.exit_code, Some(3));
    assert_eq!(detail.summary.name, "sh");
    assert!(
        detail
            .events
            .iter()
            .any(|e| e.kind == "exit" && e.message.contains("exit code 3"))
    );
    assert!(!detail.allocation_history.is_empty());

    let stdout = get(&plane, &format!("/v1/jobs/{id}/logs")).await;
    assert_eq!(stdout.status, StatusCode::OK);
    let expected = format!("hi\nslots=0 world=1 replicas=1 job={id}\n");
    assert_eq!(stdout.text(), expected);
    assert_eq!(
        stdout.header("x-log-offset"),
        Some(expected.len().to_string().as_str())
    );
    assert_eq!(stdout.header("x-job-state"), Some("failed"));
    let rest = get(&plane, &format!("/v1/jobs/{id}/logs?offset=3")).await;
    assert_eq!(rest.text(), &expected[3..]);
    let stderr = get(&plane, &format!("/v1/jobs/{id}/logs?stream=stderr")).await;
    assert_eq!(stderr.text(), "oops\n");
    let bad = get(&plane, &format!("/v1/jobs/{id}/logs?stream=both")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json::<ErrorBody>().field.as_deref(), Some("stream"));
    plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_job_succeeds_and_filters_find_it() {
    let dir = tempfile::tempdir().unwrap();
    let plane = start(dir.path(), 2).await;
    let token = plane.token.clone();
    let id = submit(&plane, &token, json!({"command": ["true"], "name": "ok"})).await;
    let detail = wait_job(&plane, id, "succeeded", state_is("succeeded")).await;
    assert_eq!(detail.summary.exit_code, Some(0));
    assert_eq!(detail.summary.user, "admin");
    let listed = jobs(&plane, "?state=succeeded").await;
    assert_eq!(listed.iter().map(|j| j.id).collect::<Vec<_>>(), vec![id]);
    assert!(jobs(&plane, "?state=queued").await.is_empty());
    assert!(jobs(&plane, "?user=nobody").await.is_empty());
    let bad = get(&plane, "/v1/jobs?state=sleeping").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json::<ErrorBody>().value.as_deref(), Some("sleeping"));
    plane.stop().await;
}

/// The job list comes in pages: a full page links to the next (filters kept), `after`
/// continues after an id, a short page ends the list, and a page size out of range is a 400
/// naming `limit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_list_pages_through_every_job_once() {
    let dir = tempfile::tempdir().unwrap();
    let plane = start(dir.path(), 2).await;
    let token = plane.token.clone();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(submit(&plane, &token, json!({"command": ["true"]})).await);
    }
    let everything = jobs(&plane, "").await;
    assert_eq!(everything.iter().map(|j| j.id).collect::<Vec<_>>(), ids);
    assert_eq!(get(&plane, "/v1/jobs").await.header("link"), None);

    let mut seen = Vec::new();
    let mut next = Some("/v1/jobs?user=admin&limit=2".to_string());
    let mut pages = 0;
    while let Some(path) = next.take() {
        let reply = get(&plane, &path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
        let page: Vec<adaptsched_api::JobSummary> = reply.json();
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|j| j.id));
        pages += 1;
        next = reply.header("link").map(|link| {
            assert!(link.ends_with("rel=\"next\""), "{link}");
            assert!(link.contains("user=admin"), "the filter is kept: {link}");
            let last = page.last().unwrap().id;
            assert!(link.contains(&format!("after={last}")), "{link}");
            link.trim_start_matches('<')
                .split('>')
                .next()
                .unwrap()
                .to_string()
        });
    }
    assert_eq!(seen, ids, "every job once, in order");
    assert_eq!(pages, 3, "2 + 2 + 1");
    let rest = jobs(&plane, &format!("?after={}", ids[2])).await;
    assert_eq!(rest.iter().map(|j| j.id).collect::<Vec<_>>(), ids[3..]);

    for limit in ["0", "10001"] {
        let bad = get(&plane, &format!("/v1/jobs?limit={limit}")).await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        let error: ErrorBody = bad.json();
        assert_eq!(error.field.as_deref(), Some("limit"));
        assert_eq!(error.value.as_deref(), Some(limit));
    }
    plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_job_stops_its_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let plane = start(dir.path(), 1).await;
    let token = plane.token.clone();
    let id = submit(&plane, &token, json!({"command": ["sleep", "60"]})).await;
    wait_job(&plane, id, "running", state_is("running")).await;
    let pid = running_pid(&plane, id).await;
    assert!(adaptsched_server::procinfo::group_alive(pid));
    // A second job waits behind it and says why.
    let second = submit(&plane, &token, json!({"command": ["true"]})).await;
    let waiting = wait_job(&plane, second, "waiting with a reason", |d| {
        d.summary
            .waiting_reason
            .as_deref()
            .is_some_and(|r| r.contains("free"))
    })
    .await;
    assert_eq!(waiting.summary.state, "queued");

    let reply = post(&plane, &format!("/v1/jobs/{id}/cancel"), json!(null)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    wait_job(&plane, id, "stopped", |d| {
        d.summary.state == "cancelled" && d.summary.exit_code.is_some()
    })
    .await;
    assert!(!adaptsched_server::procinfo::group_alive(pid));
    // Its slot went to the waiting job.
    wait_job(&plane, second, "succeeded", state_is("succeeded")).await;
    let again = post(&plane, &format!("/v1/jobs/{id}/cancel"), json!(null)).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_with_backoff_up_to_max_retries() {
    let dir = tempfile::tempdir().unwrap();
    let plane = start(dir.path(), 1).await;
    let token = plane.token.clone();
    let marker = dir.path().join("attempts");
    let script = format!(
        "echo \"$ADAPTSCHED_RESTARTS\" >> {}; exit 1",
        marker.display()
    );
    let id = submit(
        &plane,
        &token,
        json!({"command": command(&script), "max_retries": 2}),
    )
    .await;
    let detail = wait_job(&plane, id, "failed", state_is("failed")).await;
    assert_eq!(detail.summary.restarts, 2);
    assert_eq!(detail.summary.exit_code, Some(1));
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "0\n1\n2\n");
    assert_eq!(
        detail
            .events
            .iter()
            .filter(|e| e.kind == "failed-attempt")
            .count(),
        3
    );
    plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_but_health_needs_a_known_token() {
    let dir = tempfile::tempdir().unwrap();
    let plane = start(dir.path(), 1).await;
    let health = call(&plane, Method::GET, "/v1/health", None, None).await;
    assert_eq!(health.status, StatusCode::OK);
    for path in ["/v1/jobs", "/v1/nodes", "/v1/cluster", "/v1/openapi.json"] {
        let none = call(&plane, Method::GET, path, None, None).await;
        assert_eq!(none.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(!none.json::<ErrorBody>().error.is_empty());
        let wrong = call(&plane, Method::GET, path, Some("not-a-token"), None).await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let token_file = std::fs::read_to_string(dir.path().join("token")).unwrap();
    assert_eq!(token_file.trim(), plane.token);
    plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_may_not_read_logs_of_or_cancel_each_others_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let plane = start(dir.path(), 2).await;
    let alice: TokenResponse = post(&plane, "/v1/tokens", json!({"user": "alice"}))
        .await
        .json();
    let bob: TokenResponse = post(&plane, "/v1/tokens", json!({"user": "bob"}))
        .await
        .json();
    assert!(!alice.admin);
    let id = submit(&plane, &alice.token, json!({"command": ["sleep", "60"]})).await;
    assert_eq!(job(&plane, id).await.summary.user, "alice");

    let logs = format!("/v1/jobs/{id}/logs");
    let cancel = format!("/v1/jobs/{id}/cancel");
    let as_bob = call(&plane, Method::GET, &logs, Some(&bob.token), None).await;
    assert_eq!(as_bob.status, StatusCode::FORBIDDEN);
    let as_bob = call(&plane, Method::POST, &cancel, Some(&bob.token), None).await;
    assert_eq!(as_bob.status, StatusCode::FORBIDDEN);
    assert_ne!(job(&plane, id).await.summary.state, "cancelled");
    // Bob may still see that the job exists.
    let listed = call(&plane, Method::GET, "/v1/jobs", Some(&bob.token), None).await;
    assert_eq!(listed.status, StatusCode::OK);
    // Only admins create tokens.
    let mint = call(
        &plane,
        Method::POST,
        "/v1/tokens",
        Some(&bob.token),
        Some(json!({"user": "bob", "admin": true}).to_string()),
    )
    .await;
    assert_eq!(mint.status, StatusCode::FORBIDDEN);

    let as_alice = call(&plane, Method::GET, &logs, Some(&alice.token), None).await;
    assert_eq!(as_alice.status, StatusCode::OK);
    let as_alice = call(&plane, Method::POST, &cancel, Some(&alice.token), None).await;
    assert_eq!(as_alice.status, StatusCode::OK, "{}", as_alice.text());
    plane.stop().await;
}

/// Submits `body` and expects a 400 naming `field`; afterwards no job may exist.
async fn rejected(plane: &adaptsched_server::ControlPlane, body: String, field: &str) -> ErrorBody {
    let reply = call(
        plane,
        Method::POST,
        "/v1/jobs",
        Some(&plane.token),
        Some(body.clone()),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::BAD_REQUEST,
        "{body}: {}",
        reply.text()
    );
    let error: ErrorBody = reply.json();
    assert_eq!(error.field.as_deref(), Some(field), "{body}: {error:?}");
    assert!(jobs(plane, "").await.is_empty(), "{body} was stored");
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_submissions_are_4xx_naming_the_field_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let plane = start(dir.path(), 2).await;
    let too_many = rejected(
        &plane,
        json!({"command": ["true"], "min_gpus": 3}).to_string(),
        "min_gpus",
    )
    .await;
    assert_eq!(too_many.value.as_deref(), Some("3"));
    assert!(
        too_many.error.contains("more than the cluster has"),
        "{too_many:?}"
    );
    rejected(
        &plane,
        json!({"command": ["true"], "max_gpus": 1000}).to_string(),
        "max_gpus",
    )
    .await;
    let negative = rejected(
        &plane,
        json!({"command": ["true"], "min_gpus": -1}).to_string(),
        "min_gpus",
    )
    .await;
    assert!(negative.error.contains("-1"), "{negative:?}");
    rejected(
        &plane,
        json!({"command": ["true"], "cpus": -2.5}).to_string(),
        "cpus",
    )
    .await;
    rejected(
        &plane,
        json!({"command": ["true"], "priority": 100000}).to_string(),
        "priority",
    )
    .await;
    let unknown = rejected(
        &plane,
        json!({"command": ["true"], "gpu": 2}).to_string(),
        "gpu",
    )
    .await;
    assert!(unknown.error.contains("unknown field `gpu`"), "{unknown:?}");
    rejected(&plane, json!({"command": []}).to_string(), "command").await;
    rejected(&plane, json!({"command": [""]}).to_string(), "command").await;
    let missing = rejected(
        &plane,
        json!({"command": ["true"], "working_dir": "/no/such/dir"}).to_string(),
        "working_dir",
    )
    .await;
    assert_eq!(missing.value.as_deref(), Some("\"/no/such/dir\""));
    rejected(
        &plane,
        json!({"command": ["true"], "batch": {"initial": 64, "max": 32}}).to_string(),
        "batch.max",
    )
    .await;
    // Not JSON at all, and a missing required field.
    let reply = call(
        &plane,
        Method::POST,
        "/v1/jobs",
        Some(&plane.token),
        Some("{not json".to_string()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply
            .json::<ErrorBody>()
            .error
            .contains("invalid request body")
    );
    let reply = call(
        &plane,
        Method::POST,
        "/v1/jobs",
        Some(&plane.token),
        Some("{}".to_string()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.json::<ErrorBody>().error.contains("command"));
    // Bodies over 1 MiB are refused before parsing.
    let huge = json!({"command": ["true"], "name": "x".repeat(2 << 20)}).to_string();
    let reply = call(
        &plane,
        Method::POST,
        "/v1/jobs",
        Some(&plane.token),
        Some(huge),
    )
    .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    let _: ErrorBody = reply.json();
    assert!(jobs(&plane, "").await.is_empty());
    plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_stored_and_shown_as_the_last_report() {
    let dir = tempfile::tempdir().unwrap();
    let plane = start(dir.path(), 1).await;
    let token = plane.token.clone();
    let id = submit(&plane, &token, json!({"command": ["sleep", "60"]})).await;
    let report = json!({"steps": [
        {"step": 1, "samples": 64, "loss": 2.0, "step_time": 0.5},
        {"step": 2, "samples": 64, "loss": 1.5, "step_time": 0.4, "grad_sqr": 1.0, "grad_var": 3.0}
    ]});
    let reply = post(&plane, &format!("/v1/jobs/{id}/metrics"), report).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json::<adaptsched_api::MetricsAccepted>().accepted, 2);
    let last = job(&plane, id).await.last_report.unwrap();
    assert_eq!((last.step, last.loss, last.grad_var), (2, 1.5, Some(3.0)));
    let bad = post(
        &plane,
        &format!("/v1/jobs/{id}/metrics"),
        json!({"steps": [{"step": 3, "samples": 1, "loss": 1.0, "step_time": -1.0}]}),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json::<ErrorBody>().field.as_deref(), Some("step_time"));
    let unknown = post(&plane, "/v1/jobs/999/metrics", json!({"steps": []})).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_and_cluster_show_capacity_allocation_and_telemetry_without_gpus() {
    let dir = tempfile::tempdir().unwrap();
    let plane = start(dir.path(), 3).await;
    let token = plane.token.clone();
    let id = submit(
        &plane,
        &token,
        json!({"command": ["sleep", "60"], "min_gpus": 2}),
    )
    .await;
    wait_job(&plane, id, "running", state_is("running")).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let node = loop {
        let nodes: Vec<NodeView> = get(&plane, "/v1/nodes").await.json();
        let node = nodes.into_iter().next().unwrap();
        let has_job = node
            .telemetry
            .as_ref()
            .is_some_and(|t| t.jobs.iter().any(|j| j.job == id));
        if has_job {
            break node;
        }
        assert!(tokio::time::Instant::now() < deadline, "{node:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(
        (node.gpu_type.as_str(), node.gpus, node.gpus_allocated),
        ("cpu-slot", 3, 2)
    );
    let telemetry = node.telemetry.unwrap();
    assert_eq!(telemetry.gpus, None);
    assert!(telemetry.gpu_note.unwrap().contains("NVML"));
    assert!(telemetry.memory_total_gb > 0.0);
    let cluster: ClusterSummary = get(&plane, "/v1/cluster").await.json();
    assert_eq!((cluster.gpus_total, cluster.gpus_allocated), (3, 2));
    assert_eq!(cluster.policy, "fifo");
    assert_eq!(cluster.jobs_by_state["running"], 1);
    assert!(cluster.rounds >= 1);
    let openapi = get(&plane, "/v1/openapi.json").await;
    assert_eq!(openapi.status, StatusCode::OK);
    assert_eq!(openapi.json::<serde_json::Value>()["openapi"], "3.1.0");
    plane.stop().await;
}

/// Slow (about 35 s): Pollux charges a restart penalty of (age - restarts·30 s)/(age + 30 s),
/// so it grows a job only once it has run about 30 s. Run with `--ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "about 35 s: waits out Pollux's restart penalty"]
async fn the_default_policy_grows_an_elastic_job_by_restarting_it_with_more_slots() {
    let dir = tempfile::tempdir().unwrap();
    let args = adaptsched_server::ServeArgs {
        policy: adaptsched_policies::DEFAULT_POLICY.to_string(),
        ..common::args(dir.path(), 2)
    };
    let plane = adaptsched_server::ControlPlane::start(&args, "http://127.0.0.1:9")
        .await
        .unwrap();
    let token = plane.token.clone();
    // Checkpoints (here: nothing) and exits 0 on SIGTERM, as the resize protocol asks.
    let script = "echo \"replicas=$ADAPTSCHED_REPLICAS slots=$ADAPTSCHED_CPU_SLOTS batch=$ADAPTSCHED_BATCH_SIZE\"; \
                  trap 'echo checkpoint; exit 0' TERM; while :; do sleep 0.05; done";
    let id = submit(
        &plane,
        &token,
        json!({"command": command(script), "min_gpus": 1, "max_gpus": 2,
               "batch": {"initial": 32, "max": 256}}),
    )
    .await;
    let limit = std::time::Duration::from_secs(90);
    let detail = wait_job_for(&plane, id, "running on 2 slots", limit, |d| {
        d.summary.state == "running" && d.summary.gpus == 2
    })
    .await;
    assert_eq!(detail.summary.restarts, 1);
    assert!(
        detail
            .events
            .iter()
            .any(|e| e.message.contains("resizing from 1 to 2")),
        "{:?}",
        detail.events
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let log = get(&plane, &format!("/v1/jobs/{id}/logs")).await.text();
        if log.contains("replicas=2") {
            assert!(
                log.starts_with(
                    "replicas=1 slots=0 batch=32\ncheckpoint\nreplicas=2 slots=0,1 batch="
                ),
                "{log}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{log}");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_own_token_reports_for_that_job_only_and_cannot_submit() {
    let dir = tempfile::tempdir().unwrap();
    let plane = start(dir.path(), 2).await;
    let token = plane.token.clone();
    let file = dir.path().join("job-token");
    let script = format!("echo \"$ADAPTSCHED_TOKEN\" > {}", file.display());
    let id = submit(&plane, &token, json!({"command": command(&script)})).await;
    let other = submit(&plane, &token, json!({"command": ["true"]})).await;
    wait_job(&plane, id, "succeeded", state_is("succeeded")).await;
    let job_token = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert_eq!(job_token.len(), 64);
    assert_ne!(job_token, token);
    let steps =
        json!({"steps": [{"step": 1, "samples": 8, "loss": 1.0, "step_time": 0.1}]}).to_string();
    let own = call(
        &plane,
        Method::POST,
        &format!("/v1/jobs/{id}/metrics"),
        Some(&job_token),
        Some(steps.clone()),
    )
    .await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.text());
    let foreign = call(
        &plane,
        Method::POST,
        &format!("/v1/jobs/{other}/metrics"),
        Some(&job_token),
        Some(steps),
    )
    .await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    let submit_with_it = call(
        &plane,
        Method::POST,
        "/v1/jobs",
        Some(&job_token),
        Some(json!({"command": ["true"]}).to_string()),
    )
    .await;
    assert_eq!(submit_with_it.status, StatusCode::FORBIDDEN);
    let who: adaptsched_api::WhoAmI =
        call(&plane, Method::GET, "/v1/whoami", Some(&job_token), None)
            .await
            .json();
    assert_eq!((who.user.as_str(), who.admin), ("admin", false));
    plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_telemetry_history_is_bounded_and_filtered_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let args = adaptsched_server::ServeArgs {
        telemetry_interval: 0.1,
        telemetry_history: 3,
        ..common::args(dir.path(), 1)
    };
    let plane = adaptsched_server::ControlPlane::start(&args, "http://127.0.0.1:9")
        .await
        .unwrap();
    let name = plane.state.node().node.name.clone();
    let path = format!("/v1/nodes/{name}/telemetry");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let samples: Vec<adaptsched_api::NodeTelemetry> = loop {
        let samples: Vec<adaptsched_api::NodeTelemetry> = get(&plane, &path).await.json();
        // More than three samples have been taken by the time the fourth would show.
        if samples.len() == 3 && samples[0].at > 0.0 {
            let again: Vec<adaptsched_api::NodeTelemetry> = loop {
                let again: Vec<adaptsched_api::NodeTelemetry> = get(&plane, &path).await.json();
                if again.last().map(|s| s.at) != samples.last().map(|s| s.at) {
                    break again;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            };
            assert_eq!(again.len(), 3, "the ring buffer holds 3");
            break again;
        }
        assert!(tokio::time::Instant::now() < deadline, "{samples:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(samples.windows(2).all(|w| w[0].at < w[1].at));
    let since = samples[1].at;
    let newer: Vec<adaptsched_api::NodeTelemetry> =
        get(&plane, &format!("{path}?since={since}")).await.json();
    assert!(newer.iter().all(|s| s.at > since) && !newer.is_empty());
    let unknown = get(&plane, "/v1/nodes/elsewhere/telemetry").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    plane.stop().await;
}
