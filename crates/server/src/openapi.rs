//! The OpenAPI 3.1 document of the v1 API, assembled by hand from the routes in `http.rs`
//! (a derive-based generator would put a dependency on every wire type in `adaptsched-api`).
//! Schemas are named after the `adaptsched-api` types; their fields are documented there.

use serde_json::{Value, json};

fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn json_body(name: &str) -> Value {
    json!({ "content": { "application/json": { "schema": schema(name) } } })
}

fn json_list(name: &str) -> Value {
    json!({ "content": { "application/json": {
        "schema": { "type": "array", "items": schema(name) } } } })
}

fn errors() -> Value {
    let error = json!({ "description": "error", "content": { "application/json": {
        "schema": schema("ErrorBody") } } });
    json!({ "400": error, "401": error, "403": error, "404": error, "409": error, "413": error })
}

fn operation(summary: &str, ok_status: &str, ok: Value) -> Value {
    let mut responses = errors();
    responses[ok_status] = ok;
    json!({ "summary": summary, "responses": responses, "security": [{ "bearer": [] }] })
}

fn with(mut op: Value, key: &str, value: Value) -> Value {
    op[key] = value;
    op
}

fn id_param() -> Value {
    json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "integer" } })
}

fn query(name: &str, kind: &str, description: &str) -> Value {
    json!({ "name": name, "in": "query", "required": false,
            "schema": { "type": kind }, "description": description })
}

/// Object schemas by type name: field names and JSON types, from `adaptsched-api`.
fn object(fields: &[(&str, &str)]) -> Value {
    let properties: serde_json::Map<String, Value> = fields
        .iter()
        .map(|(name, kind)| {
            let value = if let Some(reference) = kind.strip_prefix('#') {
                schema(reference)
            } else if let Some(item) = kind.strip_prefix("[]") {
                if let Some(reference) = item.strip_prefix('#') {
                    json!({ "type": "array", "items": schema(reference) })
                } else {
                    json!({ "type": "array", "items": { "type": item } })
                }
            } else {
                json!({ "type": kind })
            };
            (name.to_string(), value)
        })
        .collect();
    json!({ "type": "object", "properties": properties })
}

pub fn document() -> Value {
    let paths = json!({
        "/v1/health": { "get": {
            "summary": "liveness (no token needed)",
            "responses": { "200": json_body("Health") } } },
        "/v1/openapi.json": { "get": operation("this document", "200",
            json!({ "description": "OpenAPI 3.1" })) },
        "/v1/whoami": { "get": operation("who the token acts for", "200", json_body("WhoAmI")) },
        "/v1/tokens": { "post": with(
            operation("create a token for a user (admin only)", "201", json_body("TokenResponse")),
            "requestBody", json_body("TokenRequest")) },
        "/v1/jobs": {
            "post": with(operation("submit a job", "201", json_body("SubmitResponse")),
                "requestBody", json_body("JobRequest")),
            "get": with(operation("list jobs, oldest first, a page at a time; a full page has \
                a `Link: <...>; rel=\"next\"` header to the next", "200", json_list("JobSummary")),
                "parameters", json!([
                query("state", "string", "queued, running, succeeded, failed or cancelled"),
                query("user", "string", "owner"),
                query("after", "integer", "only jobs with a higher id (the last id of the \
                    previous page)"),
                query("limit", "integer", "jobs per page, 1 to 10000 (default 1000)")])) },
        "/v1/jobs/{id}": { "get": with(operation("one job, with why it waits", "200",
            json_body("JobDetail")), "parameters", json!([id_param()])) },
        "/v1/jobs/{id}/cancel": { "post": with(operation("cancel a job (owner or admin)",
            "200", json_body("JobSummary")), "parameters", json!([id_param()])) },
        "/v1/jobs/{id}/logs": { "get": with(operation(
            "log bytes from offset; headers x-log-offset (next offset) and x-job-state",
            "200", json!({ "description": "text/plain log bytes" })), "parameters", json!([
                id_param(),
                query("stream", "string", "stdout (default) or stderr"),
                query("offset", "integer", "byte offset to read from"),
                query("limit", "integer", "at most this many bytes (max 1 MiB)")])) },
        "/v1/jobs/{id}/metrics": {
            "post": with(with(operation("report training steps",
                "200", json_body("MetricsAccepted")), "requestBody", json_body("MetricsReport")),
                "parameters", json!([id_param()])),
            "get": with(operation("the job's step reports, oldest first (a job's own token: \
                only its job's)", "200", json_list("StepReport")), "parameters", json!([
                id_param(),
                query("since_step", "integer", "only steps after this one"),
                query("limit", "integer", "at most this many, the earliest (default and \
                    maximum 20000)")])) },
        "/v1/events": { "get": with(operation(
            "server-sent events for the dashboard: `hello` on connect ({user, admin}), `jobs` \
             when a round ran or what runs changed ({rounds}), `telemetry` with each node \
             sample (NodeTelemetry; on Ray {at} only); a comment every 15 s",
            "200", json!({ "description": "text/event-stream" })), "parameters", json!([
                query("token", "string",
                    "the bearer token, for clients that cannot set headers (EventSource)")])) },
        "/v1/nodes": { "get": operation("nodes with telemetry", "200", json_list("NodeView")) },
        "/v1/nodes/{name}/telemetry": { "get": with(operation(
            "the node's telemetry history, oldest first", "200", json_list("NodeTelemetry")),
            "parameters", json!([
                { "name": "name", "in": "path", "required": true, "schema": { "type": "string" } },
                query("since", "number", "only samples taken after this time")])) },
        "/v1/cluster": { "get": operation("cluster summary", "200", json_body("ClusterSummary")) },
        "/metrics": { "get": operation("Prometheus metrics of the scheduler, jobs and nodes",
            "200", json!({ "description": "text/plain; version=0.0.4 (Prometheus text format)" })) },
    });
    let schemas = json!({
        "ErrorBody": object(&[("error", "string"), ("field", "string"), ("value", "string")]),
        "Health": object(&[("status", "string"), ("version", "string")]),
        "WhoAmI": object(&[("user", "string"), ("admin", "boolean")]),
        "TokenRequest": object(&[("user", "string"), ("admin", "boolean")]),
        "TokenResponse": object(&[("user", "string"), ("admin", "boolean"), ("token", "string")]),
        "BatchSpec": object(&[("initial", "integer"), ("max", "integer"),
            ("min_local", "integer"), ("max_local", "integer")]),
        "JobRequest": object(&[("name", "string"), ("command", "[]string"),
            ("working_dir", "string"), ("env", "object"), ("min_gpus", "integer"),
            ("max_gpus", "integer"), ("cpus", "number"), ("memory_gb", "number"),
            ("priority", "integer"), ("max_retries", "integer"), ("batch", "#BatchSpec")]),
        "SubmitResponse": object(&[("id", "integer"), ("name", "string"), ("state", "string")]),
        "JobSummary": object(&[("id", "integer"), ("name", "string"), ("user", "string"),
            ("state", "string"), ("priority", "integer"), ("min_gpus", "integer"),
            ("max_gpus", "integer"), ("gpus", "integer"), ("submitted_at", "number"),
            ("updated_at", "number"), ("restarts", "integer"), ("exit_code", "integer"),
            ("waiting_reason", "string")]),
        "AllocationPart": object(&[("node", "string"), ("gpus", "integer")]),
        "BatchView": object(&[("global_batch_size", "integer"), ("local_batch_size", "integer"),
            ("accumulation_steps", "integer"), ("lr_scale", "number")]),
        "AllocationChange": object(&[("at", "number"), ("allocation", "[]#AllocationPart"),
            ("batch", "#BatchView"), ("reason", "string")]),
        "EventView": object(&[("at", "number"), ("kind", "string"), ("message", "string")]),
        "StepReport": object(&[("step", "integer"), ("samples", "integer"), ("loss", "number"),
            ("step_time", "number"), ("sync_time", "number"), ("grad_sqr", "number"),
            ("grad_var", "number"), ("batch_size", "integer")]),
        "JobDetail": object(&[("id", "integer"), ("name", "string"), ("state", "string"),
            ("waiting_reason", "string"), ("request", "#JobRequest"),
            ("allocation", "[]#AllocationPart"), ("batch", "#BatchView"),
            ("allocation_history", "[]#AllocationChange"), ("events", "[]#EventView"),
            ("model", "object"), ("last_report", "#StepReport")]),
        "MetricsReport": object(&[("steps", "[]#StepReport")]),
        "MetricsAccepted": object(&[("accepted", "integer")]),
        "GpuTelemetry": object(&[("index", "integer"), ("name", "string"),
            ("utilization_percent", "number"), ("memory_used_gb", "number"),
            ("memory_total_gb", "number"), ("temperature_c", "number"), ("power_w", "number")]),
        "InterfaceRate": object(&[("interface", "string"), ("rx_bytes_per_s", "number"),
            ("tx_bytes_per_s", "number")]),
        "JobUsage": object(&[("job", "integer"), ("cpu_percent", "number"),
            ("memory_gb", "number")]),
        "NodeTelemetry": object(&[("at", "number"), ("cpu_percent", "number"),
            ("memory_used_gb", "number"), ("memory_total_gb", "number"),
            ("network", "[]#InterfaceRate"), ("gpus", "[]#GpuTelemetry"),
            ("gpu_note", "string"), ("jobs", "[]#JobUsage")]),
        "NodeView": object(&[("name", "string"), ("gpu_type", "string"), ("gpus", "integer"),
            ("gpus_allocated", "integer"), ("cpu_cores", "number"), ("memory_gb", "number"),
            ("balance_ratio", "number"), ("telemetry", "#NodeTelemetry")]),
        "ClusterSummary": object(&[("policy", "string"), ("interval_s", "number"),
            ("nodes", "integer"), ("gpus_total", "integer"), ("gpus_allocated", "integer"),
            ("jobs_by_state", "object"), ("last_round_ms", "number"), ("rounds", "integer")]),
    });
    json!({
        "openapi": "3.1.0",
        "info": { "title": "adaptsched control plane", "version": env!("CARGO_PKG_VERSION") },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for piece in text.split("#/components/schemas/").skip(1) {
            let name: String = piece.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(schemas.contains_key(&name), "dangling reference {name}");
        }
    }

    /// Every `.route(path, get(..).post(..))` of the API router in `http.rs`, with each
    /// method, is in the document: a new route cannot go undocumented.
    #[test]
    fn every_route_of_the_router_and_its_methods_are_documented() {
        let doc = document();
        let source = include_str!("http.rs");
        let mut checked = 0;
        for piece in source.split(".route(").skip(1) {
            let path = piece.split('"').nth(1).expect("a quoted path");
            // The call's arguments: up to the parenthesis that closes `.route(`.
            let mut depth = 1;
            let end = piece
                .find(|c| {
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .expect("a closed .route(");
            let handlers = &piece[..end];
            // Prometheus scrapes `/metrics` at the root; everything else is under the prefix.
            let full = if path == "/metrics" {
                path.to_string()
            } else {
                format!("{}{path}", adaptsched_api::API_PREFIX)
            };
            let entry = &doc["paths"][&full];
            assert!(entry.is_object(), "{full} is routed but not documented");
            for method in ["get", "post"] {
                if handlers.contains(&format!("{method}(")) {
                    assert!(
                        entry.get(method).is_some(),
                        "{method} {full} not documented"
                    );
                    checked += 1;
                }
            }
        }
        assert!(
            checked >= 16,
            "only {checked} route methods found in http.rs"
        );
    }
}
