//! Pure parsing for `adaptsched submit`: sizes, GPU ranges, `KEY=VALUE` pairs and job files,
//! merged into one [`JobRequest`]. No IO here besides reading the job file, so every rule is
//! unit-tested; each error names the flag or field and the value it refused.

use adaptsched_api::JobRequest;
use anyhow::{Context, Result, anyhow, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The submit flags as the user typed them (strings, so that a bad value is reported by us in
/// one line naming the flag, not by the argument parser).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SubmitFlags {
    pub name: Option<String>,
    pub gpus: Option<String>,
    pub cpus: Option<String>,
    pub memory: Option<String>,
    pub priority: Option<String>,
    pub max_retries: Option<String>,
    pub workdir: Option<PathBuf>,
    pub env: Vec<String>,
    pub command: Vec<String>,
}

/// `--gpus MIN[:MAX]`: the fewest and (optionally) the most GPUs or CPU slots.
pub fn parse_gpus(text: &str) -> Result<(u32, Option<u32>)> {
    let count = |part: &str| -> Result<u32> {
        part.trim().parse::<u32>().map_err(|_| {
            anyhow!("--gpus: invalid value `{text}` (expected MIN or MIN:MAX, e.g. 2 or 1:8)")
        })
    };
    let (min, max) = match text.split_once(':') {
        Some((min, max)) => (count(min)?, Some(count(max)?)),
        None => (count(text)?, None),
    };
    if min == 0 {
        bail!("--gpus: invalid value `{text}` (a job needs at least 1 GPU or slot)");
    }
    if let Some(max) = max
        && max < min
    {
        bail!("--gpus: invalid value `{text}` (MAX {max} is below MIN {min})");
    }
    Ok((min, max))
}

/// `--memory SIZE` in GB (10⁹ bytes): `4G`, `4GB`, `512M`, `2GiB`, `1.5T`; a bare number is GB.
/// Decimal units (K, M, G, T) are powers of 1000, binary ones (Ki, Mi, Gi, Ti, with or without a
/// trailing B) powers of 1024, as in Kubernetes quantities.
pub fn parse_memory_gb(text: &str) -> Result<f64> {
    let invalid = || {
        anyhow!(
            "--memory: invalid size `{text}` (expected a number with an optional unit: 512M, 4G, 2GiB)"
        )
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: f64 = number.parse().map_err(|_| invalid())?;
    let unit = unit.trim().to_ascii_lowercase();
    let bytes_per_unit: f64 = match unit.as_str() {
        "" | "g" | "gb" => 1e9,
        "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "t" | "tb" => 1e12,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "ti" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(invalid()),
    };
    let gb = number * bytes_per_unit / 1e9;
    if !gb.is_finite() {
        return Err(invalid());
    }
    Ok(gb)
}

/// `--cpus N`: CPU cores per replica, a positive number (fractions allowed).
pub fn parse_cpus(text: &str) -> Result<f64> {
    match text.trim().parse::<f64>() {
        Ok(cpus) if cpus.is_finite() && cpus > 0.0 => Ok(cpus),
        _ => bail!("--cpus: invalid value `{text}` (expected a positive number of cores)"),
    }
}

/// `--priority P`: an integer; the server enforces its range.
pub fn parse_priority(text: &str) -> Result<i32> {
    text.trim()
        .parse()
        .map_err(|_| anyhow!("--priority: invalid value `{text}` (expected an integer)"))
}

/// `--max-retries N`: a non-negative integer.
pub fn parse_max_retries(text: &str) -> Result<u32> {
    text.trim()
        .parse()
        .map_err(|_| anyhow!("--max-retries: invalid value `{text}` (expected an integer ≥ 0)"))
}

/// `--env KEY=VALUE` (the value may be empty and may contain `=`).
pub fn parse_env(text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() && !key.contains(char::is_whitespace) => {
            Ok((key.to_string(), value.to_string()))
        }
        _ => bail!("--env: invalid value `{text}` (expected KEY=VALUE)"),
    }
}

/// Job file formats, chosen by extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobFileFormat {
    Toml,
    Yaml,
    Json,
}

impl JobFileFormat {
    pub fn of(path: &Path) -> Result<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => Ok(Self::Toml),
            Some("yaml" | "yml") => Ok(Self::Yaml),
            Some("json") => Ok(Self::Json),
            _ => bail!(
                "-f: cannot tell the format of `{}` (name it .toml, .yaml, .yml or .json)",
                path.display()
            ),
        }
    }
}

/// Parses a job file's text into a request. The file may leave out `command` when the command
/// line gives one, so it is parsed to a generic value first and then into [`JobRequest`], which
/// rejects unknown fields by name.
pub fn parse_job_file(text: &str, format: JobFileFormat) -> Result<JobRequest> {
    let mut value: serde_json::Value = match format {
        JobFileFormat::Toml => toml::from_str(text).map_err(|e| anyhow!("{}", e.message()))?,
        JobFileFormat::Yaml => serde_norway::from_str(text).map_err(|e| anyhow!("{e}"))?,
        JobFileFormat::Json => serde_json::from_str(text).map_err(|e| anyhow!("{e}"))?,
    };
    let object = value
        .as_object_mut()
        .ok_or_else(|| anyhow!("expected a table/mapping of job fields at the top level"))?;
    object
        .entry("command")
        .or_insert_with(|| serde_json::Value::Array(Vec::new()));
    serde_json::from_value(value).map_err(|e| anyhow!("{e}"))
}

/// Reads and parses `-f FILE`; its relative `working_dir` is taken relative to the file's own
/// directory, so a job file means the same thing wherever it is submitted from.
pub fn load_job_file(path: &Path) -> Result<JobRequest> {
    let format = JobFileFormat::of(path)?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("-f: cannot read `{}`", path.display()))?;
    let mut request =
        parse_job_file(&text, format).with_context(|| format!("job file `{}`", path.display()))?;
    if let Some(dir) = &request.working_dir {
        let base = path.parent().unwrap_or(Path::new("."));
        request.working_dir = Some(absolute(&base.join(dir))?);
    }
    Ok(request)
}

fn absolute(path: &Path) -> Result<String> {
    let absolute = std::path::absolute(path)
        .with_context(|| format!("cannot make `{}` absolute", path.display()))?;
    Ok(absolute.display().to_string())
}

/// Merges the flags over the job file (or an empty request): every flag given wins over the
/// file's value; the working dir defaults to `cwd`.
pub fn build_request(
    file: Option<JobRequest>,
    flags: &SubmitFlags,
    cwd: &Path,
) -> Result<JobRequest> {
    let mut request = file.unwrap_or_default();
    if !flags.command.is_empty() {
        request.command = flags.command.clone();
    }
    if request.command.is_empty() {
        bail!(
            "no command: give one after `--` (submit -- CMD ARGS...) or as `command` in the job file"
        );
    }
    if let Some(name) = &flags.name {
        request.name = Some(name.clone());
    }
    if let Some(gpus) = &flags.gpus {
        let (min, max) = parse_gpus(gpus)?;
        request.min_gpus = Some(min);
        request.max_gpus = max;
    }
    if let Some(cpus) = &flags.cpus {
        request.cpus = Some(parse_cpus(cpus)?);
    }
    if let Some(memory) = &flags.memory {
        request.memory_gb = Some(parse_memory_gb(memory)?);
    }
    if let Some(priority) = &flags.priority {
        request.priority = Some(parse_priority(priority)?);
    }
    if let Some(retries) = &flags.max_retries {
        request.max_retries = Some(parse_max_retries(retries)?);
    }
    let mut env = BTreeMap::new();
    for pair in &flags.env {
        let (key, value) = parse_env(pair)?;
        env.insert(key, value);
    }
    request.env.extend(env);
    request.working_dir = Some(match (&flags.workdir, &request.working_dir) {
        (Some(dir), _) => absolute(&cwd.join(dir))?,
        (None, Some(dir)) => dir.clone(),
        (None, None) => absolute(cwd)?,
    });
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(command: &[&str]) -> SubmitFlags {
        SubmitFlags {
            command: command.iter().map(|s| s.to_string()).collect(),
            ..SubmitFlags::default()
        }
    }

    #[test]
    fn gpu_ranges() {
        assert_eq!(parse_gpus("2").unwrap(), (2, None));
        assert_eq!(parse_gpus("1:8").unwrap(), (1, Some(8)));
        assert_eq!(parse_gpus("4:4").unwrap(), (4, Some(4)));
        for bad in ["", "x", "2:", ":4", "-1", "1:2:3", "0", "0:4", "8:2", "1.5"] {
            let error = parse_gpus(bad).unwrap_err().to_string();
            assert!(
                error.starts_with("--gpus: ") && error.contains(&format!("`{bad}`")),
                "{bad}: {error}"
            );
        }
        assert!(parse_gpus("8:2").unwrap_err().to_string().contains("below"));
    }

    #[test]
    fn memory_sizes() {
        let cases = [
            ("4G", 4.0),
            ("4g", 4.0),
            ("4GB", 4.0),
            ("16", 16.0),
            ("512M", 0.512),
            ("512MB", 0.512),
            ("2GiB", 2.0 * 1.073_741_824),
            ("2Gi", 2.0 * 1.073_741_824),
            ("1.5T", 1500.0),
            ("1024Mi", 1.073_741_824),
            ("250000K", 0.25),
        ];
        for (text, gb) in cases {
            let got = parse_memory_gb(text).unwrap();
            assert!((got - gb).abs() < 1e-9, "{text}: {got} != {gb}");
        }
        for bad in ["", "G", "4X", "four", "-4G", "4 G B", "1e3G", "4..2G"] {
            let error = parse_memory_gb(bad).unwrap_err().to_string();
            assert!(
                error.starts_with("--memory: ") && error.contains(&format!("`{bad}`")),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn scalar_flags_name_flag_and_value() {
        assert_eq!(parse_cpus("2.5").unwrap(), 2.5);
        assert_eq!(parse_priority("-5").unwrap(), -5);
        assert_eq!(parse_max_retries("3").unwrap(), 3);
        let error = parse_cpus("0").unwrap_err().to_string();
        assert!(error.contains("--cpus") && error.contains("`0`"), "{error}");
        let error = parse_cpus("lots").unwrap_err().to_string();
        assert!(
            error.contains("--cpus") && error.contains("`lots`"),
            "{error}"
        );
        let error = parse_priority("high").unwrap_err().to_string();
        assert!(
            error.contains("--priority") && error.contains("`high`"),
            "{error}"
        );
        let error = parse_max_retries("-1").unwrap_err().to_string();
        assert!(
            error.contains("--max-retries") && error.contains("`-1`"),
            "{error}"
        );
    }

    #[test]
    fn env_pairs() {
        assert_eq!(parse_env("A=1").unwrap(), ("A".into(), "1".into()));
        assert_eq!(parse_env("A=").unwrap(), ("A".into(), "".into()));
        assert_eq!(parse_env("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        for bad in ["A", "=1", "A B=1"] {
            let error = parse_env(bad).unwrap_err().to_string();
            assert!(
                error.contains("--env") && error.contains(&format!("`{bad}`")),
                "{error}"
            );
        }
    }

    #[test]
    fn job_files_in_every_format() {
        let toml = "name = \"t\"\ncommand = [\"python3\", \"train.py\"]\nmin_gpus = 1\nmax_gpus = 4\ncpus = 2\n\n[env]\nA = \"1\"\n\n[batch]\ninitial = 64\nmax = 1024\n";
        let yaml = "name: t\ncommand: [python3, train.py]\nmin_gpus: 1\nmax_gpus: 4\ncpus: 2\nenv:\n  A: \"1\"\nbatch:\n  initial: 64\n  max: 1024\n";
        let json = r#"{"name":"t","command":["python3","train.py"],"min_gpus":1,"max_gpus":4,"cpus":2,"env":{"A":"1"},"batch":{"initial":64,"max":1024}}"#;
        let parsed: Vec<JobRequest> = [
            (toml, JobFileFormat::Toml),
            (yaml, JobFileFormat::Yaml),
            (json, JobFileFormat::Json),
        ]
        .into_iter()
        .map(|(text, format)| parse_job_file(text, format).unwrap())
        .collect();
        assert_eq!(parsed[0], parsed[1]);
        assert_eq!(parsed[1], parsed[2]);
        let job = &parsed[0];
        assert_eq!(job.command, ["python3", "train.py"]);
        assert_eq!(
            (job.min_gpus, job.max_gpus, job.cpus),
            (Some(1), Some(4), Some(2.0))
        );
        assert_eq!(job.env["A"], "1");
        assert_eq!(job.batch.unwrap().max, 1024);
    }

    #[test]
    fn job_files_reject_unknown_fields_by_name() {
        let error = parse_job_file("command = [\"x\"]\ngpus = 2\n", JobFileFormat::Toml)
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown field `gpus`"), "{error}");
        let error = parse_job_file(
            "command: [x]\nbatch:\n  initial: 1\n  max: 2\n  maximum: 3\n",
            JobFileFormat::Yaml,
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("unknown field `maximum`"), "{error}");
        let error = parse_job_file("min_gpus = \"two\"\n", JobFileFormat::Toml)
            .unwrap_err()
            .to_string();
        assert!(error.contains("two"), "{error}");
        assert!(parse_job_file("- a\n- b\n", JobFileFormat::Yaml).is_err());
        assert!(JobFileFormat::of(Path::new("job.txt")).is_err());
    }

    #[test]
    fn flags_override_the_file_and_workdir_defaults_to_cwd() {
        let file = parse_job_file(
            "name = \"from-file\"\ncommand = [\"a\"]\nmin_gpus = 2\npriority = 5\nworking_dir = \"/srv\"\n[env]\nA = \"file\"\nB = \"file\"\n",
            JobFileFormat::Toml,
        )
        .unwrap();
        let mut given = flags(&["b", "--x"]);
        given.gpus = Some("1:3".into());
        given.env = vec!["A=flag".into()];
        let merged = build_request(Some(file.clone()), &given, Path::new("/home/u")).unwrap();
        assert_eq!(merged.command, ["b", "--x"]);
        assert_eq!((merged.min_gpus, merged.max_gpus), (Some(1), Some(3)));
        assert_eq!(merged.priority, Some(5));
        assert_eq!(merged.name.as_deref(), Some("from-file"));
        assert_eq!(
            (merged.env["A"].as_str(), merged.env["B"].as_str()),
            ("flag", "file")
        );
        assert_eq!(merged.working_dir.as_deref(), Some("/srv"));

        let bare = build_request(None, &flags(&["true"]), Path::new("/home/u")).unwrap();
        assert_eq!(bare.working_dir.as_deref(), Some("/home/u"));
        let mut relative = flags(&["true"]);
        relative.workdir = Some("runs/1".into());
        let merged = build_request(None, &relative, Path::new("/home/u")).unwrap();
        assert_eq!(merged.working_dir.as_deref(), Some("/home/u/runs/1"));

        let no_command = build_request(
            Some(JobRequest::default()),
            &SubmitFlags::default(),
            Path::new("/"),
        );
        assert!(no_command.unwrap_err().to_string().contains("no command"));
        let mut bad = flags(&["true"]);
        bad.memory = Some("lots".into());
        let error = build_request(None, &bad, Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("--memory") && error.contains("`lots`"),
            "{error}"
        );
    }

    #[test]
    fn job_file_working_dir_is_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.yaml");
        std::fs::write(&path, "command: [\"true\"]\nworking_dir: sub\n").unwrap();
        let job = load_job_file(&path).unwrap();
        assert_eq!(
            job.working_dir.unwrap(),
            dir.path().join("sub").display().to_string()
        );
        let missing = load_job_file(&dir.path().join("nope.toml")).unwrap_err();
        assert!(format!("{missing:#}").contains("nope.toml"));
    }
}
