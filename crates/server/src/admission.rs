//! Admission: turns a [`JobRequest`] into the [`JobSubmission`] the store keeps, or a 400 that
//! names the field and value at fault. Pure: the one filesystem question (does the working
//! dir exist?) is asked through a closure, so every rule is unit-tested without IO.

use crate::error::ApiError;
use adaptsched_api::JobRequest;
use adaptsched_core::JobCategory;
use adaptsched_store::JobSubmission;
use std::path::Path;

/// What the cluster offers, as far as admission needs to know: a job that could never fit
/// is refused now rather than left queued forever.
#[derive(Clone, Debug, PartialEq)]
pub struct Capacity {
    /// Devices (GPUs or CPU slots) of the largest node.
    pub devices: u32,
    /// `gpu` or `cpu-slot`, for messages.
    pub device_word: String,
    pub cpu_cores: f64,
    pub memory_gb: f64,
}

/// Limits that keep one request from being absurd (and the database from holding megabytes
/// of argv); generous for real training jobs.
const MAX_NAME_CHARS: usize = 128;
const MAX_ARGS: usize = 4096;
const MAX_COMMAND_BYTES: usize = 128 * 1024;
const MAX_ENV_VARS: usize = 1024;
const MAX_PRIORITY: i32 = 1000;
const MAX_RETRIES: u32 = 100;
const MAX_BATCH: u32 = 1 << 24;

/// The key under which the spec column keeps the request as accepted (defaults resolved),
/// so `GET /v1/jobs/{id}` returns what the job really runs with.
pub const SPEC_REQUEST_KEY: &str = "request";

/// Checks `request` against `capacity` and builds the submission owned by `user`.
///
/// `default_dir` is used when the request names no working dir; `is_dir` answers whether a
/// path is an existing directory.
pub fn admit(
    mut request: JobRequest,
    user: &str,
    capacity: &Capacity,
    default_dir: &str,
    is_dir: impl Fn(&Path) -> bool,
) -> Result<JobSubmission, ApiError> {
    check_command(&request.command)?;
    let name = match &request.name {
        Some(name) => {
            check_name(name)?;
            name.clone()
        }
        None => default_name(&request.command[0]),
    };
    request.name = Some(name.clone());

    let working_dir = request
        .working_dir
        .clone()
        .unwrap_or_else(|| default_dir.to_string());
    if !Path::new(&working_dir).is_absolute() {
        return Err(ApiError::field(
            "working_dir",
            format!("{working_dir:?}"),
            "must be an absolute path",
        ));
    }
    if !is_dir(Path::new(&working_dir)) {
        return Err(ApiError::field(
            "working_dir",
            format!("{working_dir:?}"),
            "no such directory on this node",
        ));
    }
    request.working_dir = Some(working_dir.clone());

    check_env(&request)?;

    let devices = &capacity.device_word;
    let min_gpus = request.min_gpus.unwrap_or(1);
    if min_gpus == 0 {
        return Err(ApiError::field(
            "min_gpus",
            "0",
            &format!("a job needs at least one {devices}"),
        ));
    }
    if min_gpus > capacity.devices {
        return Err(ApiError::field(
            "min_gpus",
            min_gpus.to_string(),
            &format!(
                "more than the cluster has ({} {devices}s)",
                capacity.devices
            ),
        ));
    }
    let max_gpus = request.max_gpus.unwrap_or(min_gpus);
    if max_gpus < min_gpus {
        return Err(ApiError::field(
            "max_gpus",
            max_gpus.to_string(),
            &format!("below min_gpus {min_gpus}"),
        ));
    }
    if max_gpus > capacity.devices {
        return Err(ApiError::field(
            "max_gpus",
            max_gpus.to_string(),
            &format!(
                "more than the cluster has ({} {devices}s)",
                capacity.devices
            ),
        ));
    }
    request.min_gpus = Some(min_gpus);
    request.max_gpus = Some(max_gpus);

    let cpus = request.cpus.unwrap_or(1.0);
    if !cpus.is_finite() || cpus < 0.0 {
        return Err(ApiError::field(
            "cpus",
            cpus.to_string(),
            "must be a non-negative number",
        ));
    }
    if cpus > capacity.cpu_cores {
        return Err(ApiError::field(
            "cpus",
            cpus.to_string(),
            &format!(
                "more cores per replica than the node has ({})",
                capacity.cpu_cores
            ),
        ));
    }
    request.cpus = Some(cpus);
    let memory_gb = request.memory_gb.unwrap_or(0.0);
    if !memory_gb.is_finite() || memory_gb < 0.0 {
        return Err(ApiError::field(
            "memory_gb",
            memory_gb.to_string(),
            "must be a non-negative number",
        ));
    }
    if memory_gb > capacity.memory_gb {
        return Err(ApiError::field(
            "memory_gb",
            memory_gb.to_string(),
            &format!(
                "more memory per replica than the node has ({:.1} GB)",
                capacity.memory_gb
            ),
        ));
    }
    request.memory_gb = Some(memory_gb);

    let priority = request.priority.unwrap_or(0);
    if !(-MAX_PRIORITY..=MAX_PRIORITY).contains(&priority) {
        return Err(ApiError::field(
            "priority",
            priority.to_string(),
            &format!("must be within -{MAX_PRIORITY}..={MAX_PRIORITY}"),
        ));
    }
    request.priority = Some(priority);
    let max_retries = request.max_retries.unwrap_or(0);
    if max_retries > MAX_RETRIES {
        return Err(ApiError::field(
            "max_retries",
            max_retries.to_string(),
            &format!("at most {MAX_RETRIES}"),
        ));
    }
    request.max_retries = Some(max_retries);

    if let Some(batch) = &request.batch {
        check_batch(batch)?;
    }
    let category = match (&request.batch, min_gpus == max_gpus) {
        (Some(_), _) => JobCategory::Adaptive,
        (None, true) => JobCategory::Rigid,
        (None, false) => JobCategory::ScaleGpus,
    };

    let mut submission = JobSubmission::new(name, user, request.command.clone())
        .gpus(min_gpus, max_gpus)
        .working_dir(working_dir)
        .priority(priority)
        .max_retries(max_retries);
    submission.env = request.env.clone();
    // The store counts resources for the whole job; the request's are per replica (the
    // per-replica values stay in the spec, where the scheduling loop reads them).
    submission.cpus = cpus * f64::from(min_gpus);
    submission.memory_gb = memory_gb * f64::from(min_gpus);
    submission.category = category;
    submission.spec = Some(serde_json::json!({ SPEC_REQUEST_KEY: request }));
    // Whatever the store would refuse is reported here the same way (name the field).
    submission.validate()?;
    Ok(submission)
}

/// The request as accepted, read back from a stored job's spec.
pub fn stored_request(submission: &JobSubmission) -> JobRequest {
    submission
        .spec
        .as_ref()
        .and_then(|spec| spec.get(SPEC_REQUEST_KEY))
        .and_then(|value| serde_json::from_value(value.clone()).ok())
        .unwrap_or_else(|| JobRequest {
            name: Some(submission.name.clone()),
            command: submission.command.clone(),
            working_dir: Some(submission.working_dir.clone()),
            env: submission.env.clone(),
            min_gpus: Some(submission.min_gpus),
            max_gpus: Some(submission.max_gpus),
            cpus: Some(submission.cpus / f64::from(submission.min_gpus.max(1))),
            memory_gb: Some(submission.memory_gb / f64::from(submission.min_gpus.max(1))),
            priority: Some(submission.priority),
            max_retries: Some(submission.max_retries),
            batch: None,
        })
}

fn default_name(program: &str) -> String {
    let base = Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base: String = base.chars().take(MAX_NAME_CHARS).collect();
    if base.trim().is_empty() {
        "job".to_string()
    } else {
        base
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() {
        return Err(ApiError::field(
            "name",
            format!("{name:?}"),
            "must not be empty",
        ));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::field(
            "name",
            format!("{:?}...", name.chars().take(20).collect::<String>()),
            &format!("longer than {MAX_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::field(
            "name",
            format!("{name:?}"),
            "contains control characters",
        ));
    }
    Ok(())
}

fn check_command(command: &[String]) -> Result<(), ApiError> {
    let Some(program) = command.first() else {
        return Err(ApiError::field(
            "command",
            "[]",
            "must not be empty (argv, exec'd directly)",
        ));
    };
    if program.trim().is_empty() {
        return Err(ApiError::field(
            "command",
            format!("{program:?}"),
            "the program (first element) is empty",
        ));
    }
    if command.len() > MAX_ARGS {
        return Err(ApiError::field(
            "command",
            format!("{} arguments", command.len()),
            &format!("at most {MAX_ARGS}"),
        ));
    }
    if command.iter().map(String::len).sum::<usize>() > MAX_COMMAND_BYTES {
        return Err(ApiError::field(
            "command",
            format!("{:?}...", program),
            &format!("longer than {MAX_COMMAND_BYTES} bytes"),
        ));
    }
    if let Some(arg) = command.iter().find(|arg| arg.contains('\0')) {
        return Err(ApiError::field(
            "command",
            format!("{arg:?}"),
            "contains a NUL byte",
        ));
    }
    Ok(())
}

fn check_env(request: &JobRequest) -> Result<(), ApiError> {
    if request.env.len() > MAX_ENV_VARS {
        return Err(ApiError::field(
            "env",
            format!("{} variables", request.env.len()),
            &format!("at most {MAX_ENV_VARS}"),
        ));
    }
    for (key, value) in &request.env {
        let valid = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(ApiError::field(
                "env",
                format!("{key:?}"),
                "not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)",
            ));
        }
        if value.contains('\0') {
            return Err(ApiError::field(
                "env",
                format!("{key}={value:?}"),
                "value contains a NUL byte",
            ));
        }
    }
    Ok(())
}

fn check_batch(batch: &adaptsched_api::BatchSpec) -> Result<(), ApiError> {
    if batch.initial == 0 || batch.initial > MAX_BATCH {
        return Err(ApiError::field(
            "batch.initial",
            batch.initial.to_string(),
            &format!("must be within 1..={MAX_BATCH}"),
        ));
    }
    if batch.max < batch.initial || batch.max > MAX_BATCH {
        return Err(ApiError::field(
            "batch.max",
            batch.max.to_string(),
            &format!("must be within {}..={MAX_BATCH}", batch.initial),
        ));
    }
    let min_local = batch.min_local.unwrap_or(1);
    if min_local == 0 || min_local > batch.max {
        return Err(ApiError::field(
            "batch.min_local",
            min_local.to_string(),
            &format!("must be within 1..={}", batch.max),
        ));
    }
    if let Some(max_local) = batch.max_local
        && (max_local < min_local || max_local > batch.max)
    {
        return Err(ApiError::field(
            "batch.max_local",
            max_local.to_string(),
            &format!("must be within {min_local}..={}", batch.max),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use adaptsched_api::BatchSpec;
    use axum::http::StatusCode;

    fn capacity() -> Capacity {
        Capacity {
            devices: 4,
            device_word: "cpu-slot".to_string(),
            cpu_cores: 8.0,
            memory_gb: 16.0,
        }
    }

    fn request() -> JobRequest {
        JobRequest {
            command: vec!["python3".into(), "train.py".into()],
            working_dir: Some("/work".into()),
            ..JobRequest::default()
        }
    }

    fn admit_one(request: JobRequest) -> Result<JobSubmission, ApiError> {
        admit(request, "alice", &capacity(), "/srv", |p| {
            p == Path::new("/work") || p == Path::new("/srv")
        })
    }

    fn rejected_field(request: JobRequest) -> (String, String) {
        let error = admit_one(request).unwrap_err();
        assert_eq!(error.status, StatusCode::BAD_REQUEST, "{error}");
        (
            error.body.field.clone().unwrap_or_default(),
            error.body.value.clone().unwrap_or_default(),
        )
    }

    #[test]
    fn defaults_are_filled_and_kept_in_the_spec() {
        let submission = admit_one(request()).unwrap();
        assert_eq!(submission.name, "python3");
        assert_eq!(submission.user, "alice");
        assert_eq!((submission.min_gpus, submission.max_gpus), (1, 1));
        assert_eq!(submission.category, JobCategory::Rigid);
        let kept = stored_request(&submission);
        assert_eq!(kept.cpus, Some(1.0));
        assert_eq!(kept.working_dir.as_deref(), Some("/work"));
        assert_eq!(kept.name.as_deref(), Some("python3"));
    }

    #[test]
    fn a_missing_working_dir_defaults_to_the_servers() {
        let submission = admit_one(JobRequest {
            working_dir: None,
            ..request()
        })
        .unwrap();
        assert_eq!(submission.working_dir, "/srv");
    }

    #[test]
    fn category_follows_batch_and_gpu_range() {
        let scale = admit_one(JobRequest {
            max_gpus: Some(4),
            ..request()
        })
        .unwrap();
        assert_eq!(scale.category, JobCategory::ScaleGpus);
        let adaptive = admit_one(JobRequest {
            batch: Some(BatchSpec {
                initial: 64,
                max: 1024,
                min_local: None,
                max_local: Some(256),
            }),
            ..request()
        })
        .unwrap();
        assert_eq!(adaptive.category, JobCategory::Adaptive);
    }

    #[test]
    fn each_bad_field_is_named_with_its_value() {
        let cases: Vec<(JobRequest, &str, &str)> = vec![
            (
                JobRequest {
                    command: vec![],
                    ..request()
                },
                "command",
                "[]",
            ),
            (
                JobRequest {
                    command: vec!["".into()],
                    ..request()
                },
                "command",
                "\"\"",
            ),
            (
                JobRequest {
                    working_dir: Some("/nope".into()),
                    ..request()
                },
                "working_dir",
                "\"/nope\"",
            ),
            (
                JobRequest {
                    working_dir: Some("rel/dir".into()),
                    ..request()
                },
                "working_dir",
                "\"rel/dir\"",
            ),
            (
                JobRequest {
                    min_gpus: Some(5),
                    ..request()
                },
                "min_gpus",
                "5",
            ),
            (
                JobRequest {
                    min_gpus: Some(0),
                    ..request()
                },
                "min_gpus",
                "0",
            ),
            (
                JobRequest {
                    min_gpus: Some(2),
                    max_gpus: Some(1),
                    ..request()
                },
                "max_gpus",
                "1",
            ),
            (
                JobRequest {
                    max_gpus: Some(64),
                    ..request()
                },
                "max_gpus",
                "64",
            ),
            (
                JobRequest {
                    cpus: Some(-1.0),
                    ..request()
                },
                "cpus",
                "-1",
            ),
            (
                JobRequest {
                    cpus: Some(1e9),
                    ..request()
                },
                "cpus",
                "1000000000",
            ),
            (
                JobRequest {
                    memory_gb: Some(f64::NAN),
                    ..request()
                },
                "memory_gb",
                "NaN",
            ),
            (
                JobRequest {
                    priority: Some(5000),
                    ..request()
                },
                "priority",
                "5000",
            ),
            (
                JobRequest {
                    max_retries: Some(1_000_000),
                    ..request()
                },
                "max_retries",
                "1000000",
            ),
            (
                JobRequest {
                    name: Some("  ".into()),
                    ..request()
                },
                "name",
                "\"  \"",
            ),
            (
                JobRequest {
                    env: [("BAD-KEY".to_string(), "1".to_string())].into(),
                    ..request()
                },
                "env",
                "\"BAD-KEY\"",
            ),
            (
                JobRequest {
                    batch: Some(BatchSpec {
                        initial: 128,
                        max: 64,
                        min_local: None,
                        max_local: None,
                    }),
                    ..request()
                },
                "batch.max",
                "64",
            ),
            (
                JobRequest {
                    batch: Some(BatchSpec {
                        initial: 0,
                        max: 64,
                        min_local: None,
                        max_local: None,
                    }),
                    ..request()
                },
                "batch.initial",
                "0",
            ),
        ];
        for (request, field, value) in cases {
            assert_eq!(
                rejected_field(request),
                (field.to_string(), value.to_string())
            );
        }
    }
}
