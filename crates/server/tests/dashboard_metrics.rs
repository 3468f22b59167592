//! The server side of the dashboard, in-process through the router: `/metrics` parsed by a
//! real Prometheus text-format parser (prometheus-parse), the pages and their assets, a job's
//! metric history (`GET /v1/jobs/{id}/metrics`) and the event stream (`GET /v1/events`).

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{call, command, get, post, start, state_is, submit, wait_job};
use http_body_util::BodyExt;
use prometheus_parse::{Scrape, Value};
use std::time::Duration;
use tower::ServiceExt;

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|line| Ok(line.to_string()))).expect("valid exposition")
}

/// The one sample named `name` whose labels include `labels`.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    match &found[0].value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("{name} is not a number: {other:?}"),
    }
}

fn report(step: u64, loss: f64) -> serde_json::Value {
    serde_json::json!({"step": step, "samples": 64, "loss": loss, "step_time": 0.5,
        "grad_sqr": 1.0, "grad_var": 1.0})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_token_and_parse_as_prometheus_text() {
    let dir = tempfile::tempdir().unwrap();
    let plane = start(dir.path(), 2).await;
    let id = submit(
        &plane,
        &plane.token,
        // No batch limits: the job is never re-batched (restarted) by the live adaptation,
        // and its goodput is its throughput (the efficiency factor has unit tests).
        serde_json::json!({"name": "mlp", "command": command("sleep 30")}),
    )
    .await;
    wait_job(&plane, id, "running", state_is("running")).await;
    let steps: Vec<_> = (1..=3).map(|s| report(s, 2.0 / s as f64)).collect();
    let reply = post(
        &plane,
        &format!("/v1/jobs/{id}/metrics"),
        serde_json::json!({ "steps": steps }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    let unauthorized = call(&plane, Method::GET, "/metrics", None, None).await;
    assert_eq!(unauthorized.status, StatusCode::UNAUTHORIZED);
    let wrong = call(&plane, Method::GET, "/metrics", Some("nope"), None).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);

    // Wait (with a deadline) until a telemetry sample exists, so node gauges are present.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        let reply = get(&plane, "/metrics").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert!(
            reply
                .header("content-type")
                .is_some_and(|t| t.starts_with("application/openmetrics-text")),
            "{:?}",
            reply.headers
        );
        let text = reply.text();
        if text.contains("adaptsched_node_cpu_utilization_ratio{") {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no telemetry:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Naming conventions: one prefix, counters end in _total, every family typed.
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split(' ');
            let (name, kind) = (words.next().unwrap(), words.next().unwrap());
            assert!(name.starts_with("adaptsched_"), "{line}");
            assert!(["gauge", "counter", "histogram"].contains(&kind), "{line}");
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(name.starts_with("adaptsched_"), "{line}");
        }
    }
    assert!(
        text.contains("# TYPE adaptsched_restarts counter\n"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");

    let scrape = parse(&text);
    let job = id.to_string();
    assert_eq!(
        value(&scrape, "adaptsched_jobs", &[("state", "running")]),
        1.0
    );
    assert_eq!(
        value(&scrape, "adaptsched_jobs", &[("state", "queued")]),
        0.0
    );
    assert_eq!(value(&scrape, "adaptsched_node_devices", &[]), 2.0);
    assert_eq!(
        value(&scrape, "adaptsched_node_devices_allocated", &[]),
        1.0
    );
    assert_eq!(value(&scrape, "adaptsched_node_balance_ratio", &[]), 1.0);
    let cpu = value(&scrape, "adaptsched_node_cpu_utilization_ratio", &[]);
    assert!((0.0..=1.0).contains(&cpu), "{cpu}");
    assert!(value(&scrape, "adaptsched_node_memory_total_bytes", &[]) > 1e8);
    assert_eq!(value(&scrape, "adaptsched_restarts_total", &[]), 0.0);
    assert_eq!(
        value(
            &scrape,
            "adaptsched_job_restarts_total",
            &[("job", &job), ("name", "mlp")]
        ),
        0.0
    );
    assert_eq!(
        value(&scrape, "adaptsched_job_devices", &[("job", &job)]),
        1.0
    );
    assert_eq!(
        value(
            &scrape,
            "adaptsched_job_throughput_samples_per_second",
            &[("job", &job)]
        ),
        128.0
    );
    assert_eq!(
        value(
            &scrape,
            "adaptsched_job_goodput_samples_per_second",
            &[("job", &job)]
        ),
        128.0
    );
    assert!(value(&scrape, "adaptsched_rounds_total", &[]) >= 1.0);
    let histogram = scrape
        .samples
        .iter()
        .find(|s| s.metric == "adaptsched_round_duration_seconds")
        .expect("round latency histogram");
    let Value::Histogram(buckets) = &histogram.value else {
        panic!("not a histogram: {histogram:?}");
    };
    let inf = buckets.iter().find(|b| b.less_than.is_infinite()).unwrap();
    assert!(inf.count >= 1.0, "{buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count));

    // A finished job leaves the per-job series.
    post(
        &plane,
        &format!("/v1/jobs/{id}/cancel"),
        serde_json::json!({}),
    )
    .await;
    wait_job(&plane, id, "cancelled", state_is("cancelled")).await;
    let text = get(&plane, "/metrics").await.text();
    let scrape = parse(&text);
    assert_eq!(
        value(&scrape, "adaptsched_jobs", &[("state", "cancelled")]),
        1.0
    );
    assert!(
        !text.contains("adaptsched_job_goodput_samples_per_second{"),
        "{text}"
    );
    plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_served_and_job_metrics_are_read_after_a_step() {
    let dir = tempfile::tempdir().unwrap();
    let plane = start(dir.path(), 1).await;
    let page = call(&plane, Method::GET, "/", None, None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.text().contains(r#"src="/assets/app.js""#));
    for (path, kind, needle) in [
        (
            "/assets/app.js",
            "text/javascript",
            "export function lineChart",
        ),
        ("/assets/app.css", "text/css", "svg.chart"),
    ] {
        let reply = call(&plane, Method::GET, path, None, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert!(reply.header("content-type").unwrap().starts_with(kind));
        assert!(reply.text().contains(needle), "{path}");
    }
    assert_eq!(
        call(&plane, Method::GET, "/assets/nope.js", None, None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    let id = submit(
        &plane,
        &plane.token,
        serde_json::json!({"command": command("sleep 30")}),
    )
    .await;
    let steps: Vec<_> = (1..=5).map(|s| report(s, 1.0 / s as f64)).collect();
    post(
        &plane,
        &format!("/v1/jobs/{id}/metrics"),
        serde_json::json!({ "steps": steps }),
    )
    .await;
    let all: Vec<adaptsched_api::StepReport> =
        get(&plane, &format!("/v1/jobs/{id}/metrics")).await.json();
    assert_eq!(
        all.iter().map(|s| s.step).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(all[1].loss, 0.5);
    let later: Vec<adaptsched_api::StepReport> = get(
        &plane,
        &format!("/v1/jobs/{id}/metrics?since_step=3&limit=1"),
    )
    .await
    .json();
    assert_eq!(later.iter().map(|s| s.step).collect::<Vec<_>>(), [4]);
    let none = call(
        &plane,
        Method::GET,
        &format!("/v1/jobs/{id}/metrics"),
        None,
        None,
    )
    .await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    let bad = get(&plane, "/v1/jobs/x/metrics").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        get(&plane, "/v1/jobs/999/metrics").await.status,
        StatusCode::NOT_FOUND
    );
    let unknown = get(&plane, &format!("/v1/jobs/{id}/metrics?since=1")).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    post(
        &plane,
        &format!("/v1/jobs/{id}/cancel"),
        serde_json::json!({}),
    )
    .await;
    plane.stop().await;
}

/// Reads the event stream until `text` has appeared `count` times in it, failing after 20 s.
async fn read_until(body: &mut Body, seen: &mut String, text: &str, count: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.matches(text).count() < count {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("no {text:?} (x{count}) in the stream:\n{seen}"))
            .expect("the stream stays open")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_needs_a_token_and_announces_changes() {
    let dir = tempfile::tempdir().unwrap();
    let plane = start(dir.path(), 1).await;
    let refused = call(&plane, Method::GET, "/v1/events", None, None).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let refused = call(&plane, Method::GET, "/v1/events?token=nope", None, None).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);

    // The token as a query parameter (what EventSource can send).
    let request = Request::builder()
        .uri(format!("/v1/events?token={}", plane.token))
        .body(Body::empty())
        .unwrap();
    let response = plane.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut body = response.into_body();
    let mut seen = String::new();
    read_until(
        &mut body,
        &mut seen,
        "event: hello\ndata: {\"admin\":true,\"user\":\"admin\"}",
        1,
    )
    .await;
    read_until(&mut body, &mut seen, "event: jobs\n", 1).await;
    read_until(&mut body, &mut seen, "event: telemetry\n", 1).await;

    // A submission runs a round: the stream says so.
    let id = submit(
        &plane,
        &plane.token,
        serde_json::json!({"command": command("sleep 30")}),
    )
    .await;
    let before = seen.matches("event: jobs\n").count();
    read_until(&mut body, &mut seen, "event: jobs\n", before + 1).await;
    post(
        &plane,
        &format!("/v1/jobs/{id}/cancel"),
        serde_json::json!({}),
    )
    .await;
    drop(body);
    plane.stop().await;
}
