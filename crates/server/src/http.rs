//! The HTTP API under `/v1` (wire types in `adaptsched-api`): routes, handlers, and the
//! mapping of request-body errors to [`ErrorBody`] replies that name the field.

use crate::admission::{self, Capacity, stored_request};
use crate::auth::{self, Caller};
use crate::control::wall_now;
use crate::error::ApiError;
use crate::state::AppState;
use crate::telemetry;
use adaptsched_api::{
    AllocationChange, AllocationPart, ClusterSummary, EventView, Health, JobDetail, JobRequest,
    JobSummary, MetricsAccepted, MetricsReport, NodeTelemetry, NodeView, StepReport,
    SubmitResponse, TokenRequest, TokenResponse, WhoAmI, job_pages, logs,
};
use adaptsched_store::{DurableJobId, JobFilter, JobState, MetricSample, StoredJob, TokenRecord};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};

/// Largest request body accepted (job specs and metric batches are far smaller).
pub const BODY_LIMIT: usize = 1 << 20;

/// The API router over `state`.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/health", get(health))
        .route("/openapi.json", get(openapi))
        .route("/whoami", get(whoami))
        .route("/tokens", post(create_token))
        .route("/jobs", post(submit).get(list_jobs))
        .route("/jobs/{id}", get(show_job))
        .route("/jobs/{id}/cancel", post(cancel_job))
        .route("/jobs/{id}/logs", get(job_logs))
        .route(
            "/jobs/{id}/metrics",
            post(report_metrics).get(crate::dashboard::job_metrics),
        )
        .route("/events", get(crate::dashboard::events))
        .route("/nodes", get(nodes))
        .route("/nodes/{name}/telemetry", get(node_telemetry))
        .route("/cluster", get(cluster));
    Router::new()
        .nest(adaptsched_api::API_PREFIX, api)
        .route("/metrics", get(crate::metrics::handler))
        .merge(crate::dashboard::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route (the API lives under /v1)")
}

/// Parses a JSON body, turning every failure into an [`ErrorBody`]: too large (413), not
/// JSON, an unknown field or a bad value (400, naming the field path and serde's message).
fn parse_json<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes =
        body.map_err(|rejection| ApiError::new(rejection.status(), rejection.body_text()))?;
    let deserializer = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = inner.to_string();
        // `unknown field `gpu`` names the field itself; the path then points at its parent.
        let field = unknown_field(&message).or_else(|| (path != ".").then_some(path));
        let mut api = ApiError::bad_request(format!("invalid request body: {message}"));
        api.body.field = field;
        api
    })
}

fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_string())
}

fn parse_id(text: &str) -> Result<DurableJobId, ApiError> {
    text.parse::<u64>().map(DurableJobId).map_err(|_| {
        let mut error = ApiError::bad_request(format!("invalid job id {text:?}"));
        error.body.field = Some("id".to_string());
        error.body.value = Some(text.to_string());
        error
    })
}

async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    })
}

async fn openapi(_caller: Caller) -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}

async fn whoami(caller: Caller) -> Json<WhoAmI> {
    Json(WhoAmI {
        user: caller.user,
        admin: caller.admin,
    })
}

async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<TokenResponse>), ApiError> {
    if !caller.admin {
        return Err(ApiError::forbidden("only an admin token may create tokens"));
    }
    let request: TokenRequest = parse_json(body)?;
    let user = request.user.trim().to_string();
    let valid = !user.is_empty()
        && user.len() <= 64
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
    if !valid {
        return Err(ApiError::field(
            "user",
            format!("{:?}", request.user),
            "must be 1-64 characters of [A-Za-z0-9._-@]",
        ));
    }
    let token = auth::new_token().map_err(ApiError::internal)?;
    let key = auth::digest(&token);
    let record = TokenRecord {
        user: user.clone(),
        admin: request.admin,
        job: None,
    };
    let at = wall_now();
    state
        .db(move |store| store.add_token(&key, &record, at))
        .await??;
    Ok((
        StatusCode::CREATED,
        Json(TokenResponse {
            user,
            admin: request.admin,
            token,
        }),
    ))
}

async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<SubmitResponse>), ApiError> {
    caller.not_a_job_token("submit jobs")?;
    let request: JobRequest = parse_json(body)?;
    let node = state.node();
    let capacity = Capacity {
        devices: node.capacity(),
        device_word: node.device_word().to_string(),
        cpu_cores: node.machine_cores,
        memory_gb: node.machine_memory_gb,
    };
    let default_dir = state.default_dir.clone();
    let submission = tokio::task::spawn_blocking(move || {
        admission::admit(request, &caller.user, &capacity, &default_dir, |path| {
            path.is_dir()
        })
    })
    .await
    .map_err(ApiError::internal)??;
    let at = wall_now();
    // Committed (fsync'd) before we answer: an accepted job survives a crash.
    let job = state
        .db(move |store| store.submit_job(&submission, at))
        .await??;
    state.control.wake();
    Ok((
        StatusCode::CREATED,
        Json(SubmitResponse {
            id: job.id.0,
            name: job.submission.name,
            state: job.state.as_str().to_string(),
        }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    user: Option<String>,
    after: Option<u64>,
    limit: Option<u32>,
}

/// One page of jobs, oldest first (`job_pages`); a full page carries a `Link: <…>; rel="next"`
/// header to the next one.
async fn list_jobs(
    State(state): State<AppState>,
    _caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let mut filter = JobFilter::all();
    if let Some(text) = query.state.filter(|s| !s.is_empty()) {
        filter.state = Some(text.parse::<JobState>()?);
    }
    filter.user = query.user.filter(|u| !u.is_empty());
    filter.after = query.after.map(DurableJobId);
    let limit = page_limit(query.limit)?;
    filter.limit = Some(limit);
    let next_filter = filter.clone();
    let jobs = state.db(move |store| store.list_jobs(&filter)).await??;
    let summaries: Vec<JobSummary> = jobs.iter().map(|job| summary(&state, job)).collect();
    let mut reply = Json(summaries).into_response();
    if let Some(last) = jobs.last().filter(|_| jobs.len() == limit as usize) {
        let next = next_page_link(&next_filter, last.id, limit);
        if let Some(value) = next.and_then(|n| HeaderValue::from_str(&n).ok()) {
            reply.headers_mut().insert(header::LINK, value);
        }
    }
    Ok(reply)
}

/// The page size asked for: the default when unset, refused (not cut) outside 1..=max, so
/// that a short page always means the end.
fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(job_pages::DEFAULT_LIMIT);
    if limit == 0 || limit > job_pages::MAX_LIMIT {
        return Err(ApiError::field(
            "limit",
            limit.to_string(),
            &format!("must be between 1 and {}", job_pages::MAX_LIMIT),
        ));
    }
    Ok(limit)
}

/// `Link` header value for the page after job `last` (RFC 8288), keeping the filters.
fn next_page_link(filter: &JobFilter, last: DurableJobId, limit: u32) -> Option<String> {
    #[derive(serde::Serialize)]
    struct Next<'a> {
        state: Option<&'a str>,
        user: Option<&'a str>,
        after: u64,
        limit: u32,
    }
    let query = serde_urlencoded::to_string(Next {
        state: filter.state.map(|s| s.as_str()),
        user: filter.user.as_deref(),
        after: last.0,
        limit,
    })
    .ok()?;
    Some(format!("</v1/jobs?{query}>; rel=\"next\""))
}

fn summary(state: &AppState, job: &StoredJob) -> JobSummary {
    let status = state.control.status();
    let gpus = status
        .running
        .get(&job.id)
        .map_or(0, |running| running.devices.len() as u32);
    let waiting_reason = match job.state {
        JobState::Queued => Some(
            status
                .waiting
                .get(&job.id)
                .cloned()
                .unwrap_or_else(|| job.state_reason.clone()),
        ),
        _ => None,
    };
    JobSummary {
        id: job.id.0,
        name: job.submission.name.clone(),
        user: job.submission.user.clone(),
        state: job.state.as_str().to_string(),
        priority: job.submission.priority,
        min_gpus: job.submission.min_gpus,
        max_gpus: job.submission.max_gpus,
        gpus,
        submitted_at: job.created_at,
        updated_at: job.updated_at,
        restarts: job.attempts.saturating_sub(1),
        exit_code: job.exit_code,
        waiting_reason,
    }
}

fn parts(node: &str, devices: u32) -> Vec<AllocationPart> {
    if devices == 0 {
        Vec::new()
    } else {
        vec![AllocationPart {
            node: node.to_string(),
            gpus: devices,
        }]
    }
}

async fn show_job(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<JobDetail>, ApiError> {
    let id = parse_id(&id)?;
    let (job, allocations, events, samples) = state
        .db(move |store| -> adaptsched_store::Result<_> {
            let job = store.get_job(id)?;
            let allocations = store.allocations(id)?;
            let events = store.events(id)?;
            let mut samples = store.metrics(id, 0)?;
            let skip = samples.len().saturating_sub(crate::model::MAX_SAMPLES);
            samples.drain(..skip);
            Ok((job, allocations, events, samples))
        })
        .await??;
    let node_name = state.node().node.name;
    let summary = summary(&state, &job);
    // On Ray, where the job's pieces run now (one part per Ray node).
    let placed = state
        .ray
        .as_ref()
        .and_then(|ray| ray.placements().remove(&id))
        .filter(|_| summary.gpus > 0);
    let running = state.control.status().running.get(&id).cloned();
    let request = stored_request(&job.submission);
    let model = (!samples.is_empty()).then(|| {
        let (fitted, count) =
            crate::model::job_model(request.batch.as_ref(), &allocations, &samples);
        crate::model::view(&fitted, count)
    });
    let allocation_history = allocations
        .iter()
        .map(|record| AllocationChange {
            at: record.at,
            allocation: parts(&node_name, record.allocation.total_gpus()),
            batch: record.batch.and_then(|decision| {
                // The gain is recomputed from the latest gradient statistics.
                crate::control::batch_view(
                    request.batch.as_ref(),
                    record.allocation.total_gpus(),
                    Some(decision),
                    crate::model::gradient_stats(&samples),
                )
            }),
            reason: record.reason.clone(),
        })
        .collect();
    Ok(Json(JobDetail {
        allocation: match placed {
            Some(pieces) => pieces
                .into_iter()
                .map(|(node, gpus)| AllocationPart { node, gpus })
                .collect(),
            None => parts(&node_name, summary.gpus),
        },
        batch: running.as_ref().and_then(|r| r.batch),
        summary,
        request,
        allocation_history,
        events: events
            .into_iter()
            .map(|event| EventView {
                at: event.at,
                kind: event.kind,
                message: event.message,
            })
            .collect(),
        model,
        last_report: samples.last().map(step_report),
    }))
}

/// A stored step report as the API shows it.
pub fn step_report(sample: &adaptsched_store::MetricSample) -> StepReport {
    StepReport {
        step: sample.step,
        samples: sample.samples,
        loss: sample.loss,
        step_time: sample.step_time,
        sync_time: Some(sample.sync_time),
        grad_sqr: sample.grad_sqr,
        grad_var: sample.grad_var,
        batch_size: None,
    }
}

async fn cancel_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<JobSummary>, ApiError> {
    let id = parse_id(&id)?;
    caller.not_a_job_token("cancel jobs")?;
    let job = state.db(move |store| store.get_job(id)).await??;
    caller.may_act_on(&job.submission.user)?;
    let reason = format!("cancelled by {}", caller.user);
    let at = wall_now();
    let job = state
        .db(move |store| store.cancel_job(id, &reason, at))
        .await??;
    state.control.wake();
    Ok(Json(summary(&state, &job)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    stream: Option<String>,
    offset: Option<u64>,
    limit: Option<u64>,
}

async fn job_logs(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let stream = query.stream.unwrap_or_else(|| "stdout".to_string());
    if stream != "stdout" && stream != "stderr" {
        return Err(ApiError::field(
            "stream",
            format!("{stream:?}"),
            "must be stdout or stderr",
        ));
    }
    let job = state.db(move |store| store.get_job(id)).await??;
    caller.may_act_on_job(id, &job.submission.user)?;
    let offset = query.offset.unwrap_or(0);
    let limit = query.limit.unwrap_or(logs::MAX_CHUNK).min(logs::MAX_CHUNK);
    let path = state
        .data_dir
        .join(adaptsched_api::data_dir::LOGS_DIR)
        .join(id.to_string())
        .join(format!("{stream}.log"));
    let bytes = tokio::task::spawn_blocking(move || read_chunk(&path, offset, limit))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let next = offset + bytes.len() as u64;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(logs::OFFSET_HEADER, HeaderValue::from(next));
    headers.insert(
        logs::STATE_HEADER,
        HeaderValue::from_static(job.state.as_str()),
    );
    Ok((headers, bytes).into_response())
}

/// Up to `limit` bytes of `path` from `offset`; a log that does not exist yet is empty.
fn read_chunk(path: &std::path::Path, offset: u64, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes)?;
    Ok(bytes)
}

async fn report_metrics(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<MetricsAccepted>, ApiError> {
    let id = parse_id(&id)?;
    let report: MetricsReport = parse_json(body)?;
    let job = state.db(move |store| store.get_job(id)).await??;
    caller.may_act_on_job(id, &job.submission.user)?;
    let at = wall_now();
    let samples: Vec<MetricSample> = report
        .steps
        .iter()
        .map(|step| MetricSample {
            step: step.step,
            samples: step.samples,
            loss: step.loss,
            step_time: step.step_time,
            sync_time: step.sync_time.unwrap_or(0.0),
            grad_sqr: step.grad_sqr,
            grad_var: step.grad_var,
            at,
        })
        .collect();
    let accepted = state
        .db(move |store| store.record_metrics(id, &samples))
        .await??;
    Ok(Json(MetricsAccepted { accepted }))
}

/// The scheduling pool as one node: the local machine, or the Ray cluster's usable nodes
/// together (`/v1/cluster`, `/metrics`).
pub(crate) fn node_view(state: &AppState) -> NodeView {
    let node = state.node();
    let allocated: u32 = state
        .control
        .status()
        .running
        .values()
        .map(|running| running.devices.len() as u32)
        .sum();
    NodeView {
        name: node.node.name.clone(),
        gpu_type: node.device_label.clone(),
        gpus: node.capacity(),
        gpus_allocated: allocated,
        cpu_cores: node.machine_cores,
        memory_gb: node.machine_memory_gb,
        // One node holds all the load and all the capacity: p = 1 whenever anything runs.
        balance_ratio: (allocated > 0).then_some(1.0),
        telemetry: telemetry::latest(&state.telemetry),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TelemetryQuery {
    /// Only samples taken after this time (seconds since the epoch).
    since: Option<f64>,
}

/// The node's telemetry history (oldest first), for plots and `top`.
async fn node_telemetry(
    State(state): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
    query: Result<Query<TelemetryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<NodeTelemetry>>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let since = query.since.unwrap_or(f64::NEG_INFINITY);
    if let Some(ray) = &state.ray {
        // Ray keeps no history here: the latest report, when newer than `since` (the
        // dashboard polls and keeps the history itself).
        let view = ray.views().into_iter().find(|view| view.name == name);
        let Some(view) = view else {
            return Err(ApiError::not_found(format!("unknown Ray node {name:?}")));
        };
        return Ok(Json(
            view.telemetry
                .into_iter()
                .filter(|sample| sample.at > since)
                .collect(),
        ));
    }
    if name != state.node().node.name {
        return Err(ApiError::not_found(format!("unknown node {name:?}")));
    }
    let history = state
        .telemetry
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Ok(Json(
        history
            .samples()
            .filter(|sample| sample.at > since)
            .cloned()
            .collect(),
    ))
}

/// The local machine, or each usable Ray node with its allocation and Ray's reported use.
async fn nodes(State(state): State<AppState>, _caller: Caller) -> Json<Vec<NodeView>> {
    match &state.ray {
        Some(ray) => Json(ray.views()),
        None => Json(vec![node_view(&state)]),
    }
}

async fn cluster(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<ClusterSummary>, ApiError> {
    let jobs = state
        .db(|store| store.list_jobs(&JobFilter::all()))
        .await??;
    let mut jobs_by_state: BTreeMap<String, usize> = JobState::ALL
        .iter()
        .map(|s| (s.as_str().to_string(), 0))
        .collect();
    for job in &jobs {
        *jobs_by_state
            .entry(job.state.as_str().to_string())
            .or_default() += 1;
    }
    let node = node_view(&state);
    let status = state.control.status();
    Ok(Json(ClusterSummary {
        policy: state.policy.clone(),
        interval_s: state.interval_s,
        nodes: state.ray.as_ref().map_or(1, |ray| ray.views().len()),
        gpus_total: node.gpus,
        gpus_allocated: node.gpus_allocated,
        jobs_by_state,
        last_round_ms: status.last_round_ms,
        rounds: status.rounds,
    }))
}
