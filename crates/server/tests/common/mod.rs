//! Helpers for the in-process API tests: a control plane on a temp data dir, requests
//! through the router, and waiting (with a timeout) for a condition.
#![allow(dead_code)]

use adaptsched_api::{JobDetail, JobSummary};
use adaptsched_server::{ControlPlane, ServeArgs};
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use std::time::Duration;
use tower::ServiceExt;

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json<T: DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "{error}: {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub fn args(dir: &std::path::Path, slots: u32) -> ServeArgs {
    ServeArgs {
        data_dir: Some(dir.to_path_buf()),
        policy: "fifo".to_string(),
        interval: 0.2,
        cpu_slots: Some(slots),
        grace_period: 1.0,
        telemetry_interval: 0.2,
        retry_delay: 0.05,
        // Force the no-GPU path whatever the machine has.
        nvml_lib: Some("/nonexistent/libnvidia-ml.so.1".into()),
        ..ServeArgs::defaults()
    }
}

pub async fn start(dir: &std::path::Path, slots: u32) -> ControlPlane {
    ControlPlane::start(&args(dir, slots), "http://127.0.0.1:9")
        .await
        .unwrap()
}

pub async fn call(
    plane: &ControlPlane,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> Reply {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(body.map_or_else(Body::empty, Body::from))
        .unwrap();
    let response = plane.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

pub async fn get(plane: &ControlPlane, path: &str) -> Reply {
    call(plane, Method::GET, path, Some(&plane.token), None).await
}

pub async fn post(plane: &ControlPlane, path: &str, body: serde_json::Value) -> Reply {
    call(
        plane,
        Method::POST,
        path,
        Some(&plane.token),
        Some(body.to_string()),
    )
    .await
}

pub async fn submit(plane: &ControlPlane, token: &str, body: serde_json::Value) -> u64 {
    let reply = call(
        plane,
        Method::POST,
        "/v1/jobs",
        Some(token),
        Some(body.to_string()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    reply.json::<adaptsched_api::SubmitResponse>().id
}

pub async fn job(plane: &ControlPlane, id: u64) -> JobDetail {
    let reply = get(plane, &format!("/v1/jobs/{id}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()
}

pub async fn jobs(plane: &ControlPlane, query: &str) -> Vec<JobSummary> {
    let reply = get(plane, &format!("/v1/jobs{query}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()
}

/// Polls `job` until `done` holds, failing after 20 s (real processes, a loaded machine).
pub async fn wait_job(
    plane: &ControlPlane,
    id: u64,
    what: &str,
    done: impl Fn(&JobDetail) -> bool,
) -> JobDetail {
    wait_job_for(plane, id, what, Duration::from_secs(20), done).await
}

pub async fn wait_job_for(
    plane: &ControlPlane,
    id: u64,
    what: &str,
    limit: Duration,
    done: impl Fn(&JobDetail) -> bool,
) -> JobDetail {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let detail = job(plane, id).await;
        if done(&detail) {
            return detail;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} never became {what}: {detail:#?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn state_is(state: &'static str) -> impl Fn(&JobDetail) -> bool {
    move |detail| detail.summary.state == state
}

pub fn command(script: &str) -> serde_json::Value {
    serde_json::json!(["sh", "-c", script])
}

/// The pid of `id`'s running process, once the loop has started it.
pub async fn running_pid(plane: &ControlPlane, id: u64) -> u32 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let pid = plane
            .state
            .control
            .status()
            .running
            .get(&adaptsched_store::DurableJobId(id))
            .map(|running| running.pid);
        if let Some(pid) = pid {
            return pid;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
