//! Finding the server (URL and token) and talking to it: a small blocking JSON client over
//! ureq that turns every non-2xx reply into the server's own [`ErrorBody`] message.
//!
//! Where the URL and token come from, first found wins (command line beats environment, and at
//! each level an explicit value beats a data dir):
//! 1. `--url`; `--data-dir DIR` (its `server.url` and `token` files);
//! 2. `ADAPTSCHED_URL` / `ADAPTSCHED_TOKEN`; `ADAPTSCHED_DATA_DIR` (its files);
//! 3. the default data dir's files (the same default `adaptsched serve` uses).

use adaptsched_api::{API_PREFIX, ErrorBody, data_dir, env};
use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How a client command finds the server; flattened into every client subcommand.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ConnectArgs {
    /// Data dir of the server to talk to: the client reads its `server.url` and `token`
    /// [default: $ADAPTSCHED_DATA_DIR, else the server's default]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Server base URL, e.g. http://127.0.0.1:7400 [default: $ADAPTSCHED_URL, else the data
    /// dir's server.url]
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

/// A resolved server address and credential, with where each came from (for error messages).
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub url: String,
    pub url_from: String,
    pub token: String,
    pub token_from: String,
}

/// One place a value may come from, in precedence order.
enum Source {
    Value(String, String),
    File(PathBuf),
}

/// Resolves URL and token by the precedence in the module docs. `getenv` is injected so the
/// rules can be tested without touching the process environment.
pub fn resolve(
    args: &ConnectArgs,
    getenv: impl Fn(&str) -> Option<String>,
    default_dir: &Path,
) -> Result<Endpoint> {
    let env_dir = getenv(env::DATA_DIR)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from);
    let dirs_after_env: Vec<PathBuf> = match &env_dir {
        Some(dir) => vec![dir.clone()],
        None => vec![default_dir.to_path_buf()],
    };
    let chain = |flag: Option<&String>, file: &str, var: &str| -> Vec<Source> {
        let mut chain = Vec::new();
        if let Some(value) = flag {
            chain.push(Source::Value(value.clone(), "--url".into()));
        }
        if let Some(dir) = &args.data_dir {
            chain.push(Source::File(dir.join(file)));
        }
        if let Some(value) = getenv(var).filter(|v| !v.is_empty()) {
            chain.push(Source::Value(value, format!("${var}")));
        }
        chain.extend(
            dirs_after_env
                .iter()
                .map(|dir| Source::File(dir.join(file))),
        );
        chain
    };
    let (url, url_from) = first_found(
        chain(args.url.as_ref(), data_dir::URL_FILE, env::URL),
        "server URL",
    )?;
    let (token, token_from) = first_found(chain(None, data_dir::TOKEN_FILE, env::TOKEN), "token")?;
    let url = url.trim_end_matches('/').to_string();
    if !url.starts_with("http://") {
        bail!("server URL `{url}` (from {url_from}) must start with http://");
    }
    Ok(Endpoint {
        url,
        url_from,
        token,
        token_from,
    })
}

/// The first source that has a value; a data dir that lacks the file is skipped, since a
/// later source may still answer.
fn first_found(chain: Vec<Source>, what: &str) -> Result<(String, String)> {
    let mut looked = Vec::new();
    for source in chain {
        match source {
            Source::Value(value, from) => return Ok((value.trim().to_string(), from)),
            Source::File(path) => match std::fs::read_to_string(&path) {
                Ok(text) if !text.trim().is_empty() => {
                    return Ok((text.trim().to_string(), path.display().to_string()));
                }
                _ => looked.push(path.display().to_string()),
            },
        }
    }
    Err(anyhow!(
        "no {what} found (looked in {}); is `adaptsched serve` running? Point --data-dir or \
         ADAPTSCHED_DATA_DIR at its data dir, or set ADAPTSCHED_URL and ADAPTSCHED_TOKEN",
        looked.join(", ")
    ))
}

/// The data dir `adaptsched serve` uses when given none (one definition, the server's).
pub fn default_data_dir() -> PathBuf {
    adaptsched_server::default_data_dir()
}

/// A blocking client for one server.
pub struct Client {
    agent: ureq::Agent,
    endpoint: Endpoint,
}

/// A raw reply: status, body and the headers the log follower needs.
pub struct Reply {
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Client {
    pub fn connect(args: &ConnectArgs) -> Result<Self> {
        let endpoint = resolve(args, |name| std::env::var(name).ok(), &default_data_dir())?;
        Ok(Self::new(endpoint))
    }

    pub fn new(endpoint: Endpoint) -> Self {
        let agent = ureq::Agent::config_builder()
            // Non-2xx replies carry an ErrorBody we want to show, so they are not errors here.
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Self { agent, endpoint }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{API_PREFIX}{path}", self.endpoint.url)
    }

    fn unreachable(&self, error: ureq::Error) -> anyhow::Error {
        anyhow!(
            "cannot reach the adaptsched server at {} (URL from {}): {error}",
            self.endpoint.url,
            self.endpoint.url_from
        )
    }

    fn finish(&self, response: ureq::http::Response<ureq::Body>) -> Result<Reply> {
        let status = response.status();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let body = response
            .into_body()
            .into_with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .map_err(|e| self.unreachable(e))?;
        if !status.is_success() {
            return Err(anyhow!("{}", error_message(status.as_u16(), &body)));
        }
        Ok(Reply { body, headers })
    }

    /// `GET /v1{path}` with query pairs; returns the raw reply.
    pub fn get_raw(&self, path: &str, query: &[(&str, String)]) -> Result<Reply> {
        let mut request = self
            .agent
            .get(self.url(path))
            .header("Authorization", format!("Bearer {}", self.endpoint.token));
        for (key, value) in query {
            request = request.query(*key, value);
        }
        let response = request.call().map_err(|e| self.unreachable(e))?;
        self.finish(response)
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T> {
        let reply = self.get_raw(path, query)?;
        serde_json::from_slice(&reply.body)
            .with_context(|| format!("unexpected reply to GET {API_PREFIX}{path}"))
    }

    /// `POST /v1{path}` with a JSON body (or none).
    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&B>,
    ) -> Result<T> {
        let request = self
            .agent
            .post(self.url(path))
            .header("Authorization", format!("Bearer {}", self.endpoint.token));
        let response = match body {
            Some(body) => request
                .content_type("application/json")
                .send(serde_json::to_vec(body)?),
            None => request.send_empty(),
        }
        .map_err(|e| self.unreachable(e))?;
        let reply = self.finish(response)?;
        serde_json::from_slice(&reply.body)
            .with_context(|| format!("unexpected reply to POST {API_PREFIX}{path}"))
    }
}

/// One line for a failed call: the server's message verbatim, then the field and value it names.
pub fn error_message(status: u16, body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(error) => {
            // The server's words first, verbatim; field and value only when they are not
            // already in them.
            let named = |text: &str| error.error.contains(text);
            let suffix = match (&error.field, &error.value) {
                (Some(field), Some(value)) if !(named(field) && named(value)) => {
                    format!(" (field `{field}`, value `{value}`)")
                }
                (Some(field), None) if !named(field) => format!(" (field `{field}`)"),
                _ => String::new(),
            };
            format!("{}{suffix}", error.error)
        }
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                format!("server replied HTTP {status}")
            } else {
                format!(
                    "server replied HTTP {status}: {}",
                    text.lines().next().unwrap_or("")
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn dir_with(url: &str, token: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(data_dir::URL_FILE), format!("{url}\n")).unwrap();
        std::fs::write(dir.path().join(data_dir::TOKEN_FILE), format!("{token}\n")).unwrap();
        dir
    }

    fn resolve_with(args: &ConnectArgs, vars: &[(&str, &str)], default: &Path) -> Result<Endpoint> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        resolve(args, |name| vars.get(name).cloned(), default)
    }

    #[test]
    fn precedence_command_line_then_environment_then_default() {
        let default = dir_with("http://default:1", "t-default");
        let env_dir = dir_with("http://envdir:2", "t-envdir");
        let flag_dir = dir_with("http://flagdir:3/", "t-flagdir");

        let none = ConnectArgs::default();
        let got = resolve_with(&none, &[], default.path()).unwrap();
        assert_eq!(
            (got.url.as_str(), got.token.as_str()),
            ("http://default:1", "t-default")
        );

        let env_dir_str = env_dir.path().to_str().unwrap();
        let got = resolve_with(&none, &[(env::DATA_DIR, env_dir_str)], default.path()).unwrap();
        assert_eq!(
            (got.url.as_str(), got.token.as_str()),
            ("http://envdir:2", "t-envdir")
        );

        let vars = [
            (env::DATA_DIR, env_dir_str),
            (env::URL, "http://envurl:4"),
            (env::TOKEN, "t-env"),
        ];
        let got = resolve_with(&none, &vars, default.path()).unwrap();
        assert_eq!(
            (got.url.as_str(), got.token.as_str()),
            ("http://envurl:4", "t-env")
        );
        assert_eq!(got.url_from, "$ADAPTSCHED_URL");

        let flagged = ConnectArgs {
            data_dir: Some(flag_dir.path().to_path_buf()),
            url: None,
        };
        let got = resolve_with(&flagged, &vars, default.path()).unwrap();
        assert_eq!(
            (got.url.as_str(), got.token.as_str()),
            ("http://flagdir:3", "t-flagdir")
        );

        let url_flag = ConnectArgs {
            data_dir: Some(flag_dir.path().to_path_buf()),
            url: Some("http://flag:5".into()),
        };
        let got = resolve_with(&url_flag, &vars, default.path()).unwrap();
        assert_eq!(
            (got.url.as_str(), got.token.as_str()),
            ("http://flag:5", "t-flagdir")
        );
    }

    #[test]
    fn missing_files_fall_through_and_absence_is_explained() {
        let empty = tempfile::tempdir().unwrap();
        let args = ConnectArgs {
            data_dir: Some(empty.path().to_path_buf()),
            url: None,
        };
        let got = resolve_with(
            &args,
            &[(env::URL, "http://x:1"), (env::TOKEN, "t")],
            empty.path(),
        )
        .unwrap();
        assert_eq!(got.url, "http://x:1");
        let error = resolve_with(&args, &[], empty.path())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("no server URL found") && error.contains("server.url"),
            "{error}"
        );
        let error = resolve_with(
            &args,
            &[(env::URL, "https://x:1"), (env::TOKEN, "t")],
            empty.path(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("http://"), "{error}");
    }

    #[test]
    fn error_bodies_become_one_line_naming_field_and_value() {
        let body = br#"{"error":"no node has 99 GPUs","field":"min_gpus","value":"99"}"#;
        assert_eq!(
            error_message(400, body),
            "no node has 99 GPUs (field `min_gpus`, value `99`)"
        );
        assert_eq!(error_message(404, br#"{"error":"no job 7"}"#), "no job 7");
        let named = br#"{"error":"invalid min_gpus 99: too many","field":"min_gpus","value":"99"}"#;
        assert_eq!(error_message(400, named), "invalid min_gpus 99: too many");
        assert_eq!(
            error_message(502, b"bad gateway\nmore"),
            "server replied HTTP 502: bad gateway"
        );
        assert_eq!(error_message(500, b""), "server replied HTTP 500");
    }
}
