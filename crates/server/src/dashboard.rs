//! The web dashboard: static assets built into the binary (`/`, `/assets/*`), the job metric
//! history it plots (`GET /v1/jobs/{id}/metrics?since_step=N`) and its live feed of changes
//! (`GET /v1/events`, server-sent events). The pages use the same `/v1` API and bearer token
//! as the CLI. See docs/dashboard.md.

use crate::auth::{self, Caller};
use crate::error::ApiError;
use crate::state::AppState;
use adaptsched_api::StepReport;
use adaptsched_store::DurableJobId;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

/// How often the event stream looks for changes.
const EVENT_POLL: Duration = Duration::from_millis(500);

/// Most step reports one `GET /v1/jobs/{id}/metrics` returns (and the default `limit`).
pub const MAX_METRICS: usize = 20_000;

/// Routes of the dashboard's pages (outside `/v1`; no token: the page asks for it).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| asset("text/html; charset=utf-8", INDEX_HTML)))
        .route(
            "/assets/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/assets/app.css",
            get(|| asset("text/css; charset=utf-8", APP_CSS)),
        )
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // Small files: revalidating costs little and a new binary is seen at once.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                     script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
                ),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

fn parse_id(text: &str) -> Result<DurableJobId, ApiError> {
    text.parse::<u64>().map(DurableJobId).map_err(|_| {
        let mut error = ApiError::bad_request(format!("invalid job id {text:?}"));
        error.body.field = Some("id".to_string());
        error.body.value = Some(text.to_string());
        error
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsQuery {
    /// Only steps after this one.
    since_step: Option<u64>,
    /// At most this many steps (the earliest ones), default and maximum [`MAX_METRICS`].
    limit: Option<usize>,
}

/// `GET /v1/jobs/{id}/metrics?since_step=N&limit=L`: the job's step reports after step `N`,
/// oldest first. Anyone with a token may read them (as `GET /v1/jobs/{id}` shows the last);
/// a job's own token only its job's.
pub async fn job_metrics(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<MetricsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<Vec<StepReport>>, ApiError> {
    let id = parse_id(&id)?;
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    if let Some(own) = caller.job
        && own != id
    {
        return Err(ApiError::forbidden(format!(
            "the token of job {own} may not read job {id}"
        )));
    }
    let from = query.since_step.map_or(0, |step| step.saturating_add(1));
    let limit = query.limit.unwrap_or(MAX_METRICS).min(MAX_METRICS);
    let samples = state.db(move |store| store.metrics(id, from)).await??;
    Ok(axum::Json(
        samples
            .into_iter()
            .take(limit)
            .map(|sample| crate::http::step_report(&sample))
            .collect(),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// The bearer token, for clients that cannot set headers (`EventSource`).
    token: Option<String>,
}

/// The token of a request: `Authorization: Bearer`, else `?token=` (this route only).
async fn caller_of(
    state: &AppState,
    headers: &HeaderMap,
    query: Option<String>,
) -> Result<Caller, ApiError> {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|token| token.trim().to_string());
    let token = from_header
        .or(query)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            ApiError::unauthorized("missing Authorization: Bearer <token> (or ?token=)")
        })?;
    let key = auth::digest(&token);
    let record = state.db(move |store| store.token(&key)).await??;
    let record = record.ok_or_else(|| ApiError::unauthorized("unknown token"))?;
    Ok(Caller {
        user: record.user,
        admin: record.admin,
        job: record.job,
    })
}

/// What the event stream compares between looks: the loop's round count and what runs.
fn fingerprint(state: &AppState) -> String {
    let status = state.control.status();
    let running: Vec<String> = status
        .running
        .iter()
        .map(|(id, view)| format!("{id}:{}:{}", view.devices.len(), view.stopping.is_some()))
        .collect();
    format!("{}|{}", status.rounds, running.join(","))
}

/// Ray's use is polled every half second; the page is told at most this often (seconds).
const RAY_TELEMETRY_EVERY_S: f64 = 5.0;

struct Feed {
    state: AppState,
    ticker: tokio::time::Interval,
    jobs: Option<String>,
    telemetry_at: Option<f64>,
    pending: VecDeque<Event>,
}

impl Feed {
    /// Looks once and queues what changed.
    fn look(&mut self) {
        let now = fingerprint(&self.state);
        if self.jobs.as_ref() != Some(&now) {
            let rounds = self.state.control.status().rounds;
            self.pending.push_back(
                Event::default()
                    .event("jobs")
                    .data(serde_json::json!({ "rounds": rounds }).to_string()),
            );
            self.jobs = Some(now);
        }
        if let Some(ray) = &self.state.ray {
            // On Ray the nodes are the Ray nodes, not this machine: announce each new report
            // without a sample, and the page reloads every node's telemetry.
            if let Some(at) = ray.usage_at()
                && self
                    .telemetry_at
                    .is_none_or(|last| at - last >= RAY_TELEMETRY_EVERY_S)
            {
                self.telemetry_at = Some(at);
                self.pending.push_back(
                    Event::default()
                        .event("telemetry")
                        .data(serde_json::json!({ "at": at }).to_string()),
                );
            }
        } else if let Some(sample) = crate::telemetry::latest(&self.state.telemetry)
            && self.telemetry_at != Some(sample.at)
        {
            self.telemetry_at = Some(sample.at);
            if let Ok(event) = Event::default().event("telemetry").json_data(&sample) {
                self.pending.push_back(event);
            }
        }
    }
}

/// `GET /v1/events`: server-sent events for the dashboard. `hello` on connect (who the token
/// acts for); `jobs` whenever a scheduling round ran or what runs changed (refetch
/// `/v1/jobs`); `telemetry` with each new node sample. A comment every 15 s keeps proxies
/// from closing the stream. Takes the token from `Authorization: Bearer` or, because
/// `EventSource` cannot set headers, from `?token=`.
pub async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let caller = caller_of(&state, &headers, query.token).await?;
    let hello = Event::default()
        .event("hello")
        .data(serde_json::json!({ "user": caller.user, "admin": caller.admin }).to_string());
    let mut ticker = tokio::time::interval(EVENT_POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let feed = Feed {
        state,
        ticker,
        jobs: None,
        telemetry_at: None,
        pending: VecDeque::from([hello]),
    };
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        loop {
            if let Some(event) = feed.pending.pop_front() {
                return Some((Ok::<Event, Infallible>(event), feed));
            }
            feed.ticker.tick().await;
            feed.look();
        }
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    // Tell buffering proxies (nginx) to pass events through as they come.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}
