//! The web dashboard in a real headless Chromium, driven over the DevTools protocol (CDP,
//! JSON over a websocket, spoken with `tungstenite`): the real `adaptsched serve`, a job that
//! reports a loss curve, then log in with the token, see the job running in the list, open
//! its page, see its loss curve grow (live updates) and save a screenshot as a test artifact
//! (`target/dashboard-screenshot.png`, and `target/dashboard-overview.png`).
//!
//! Needs `chromium` (CI installs it: `apt-get install -y chromium`); `ADAPTSCHED_CHROMIUM`
//! names another binary. Without one the test fails, unless `ADAPTSCHED_SKIP_BROWSER=1`
//! says to skip it (it then says so on stderr).

mod common;

use base64::Engine;
use common::{Server, submit, wait_for, wait_for_explained};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A trainer in a few lines of Python: reports 5 steps of a decaying loss every 0.1 s to
/// the server that launched it, for at most two minutes.
const TRAINER: &str = r#"
import json, math, os, time, urllib.request
url = "%s/v1/jobs/%s/metrics" % (os.environ["ADAPTSCHED_URL"], os.environ["ADAPTSCHED_JOB_ID"])
headers = {"Authorization": "Bearer " + os.environ["ADAPTSCHED_TOKEN"],
           "Content-Type": "application/json"}
step, end = 0, time.time() + 120
while time.time() < end:
    steps = []
    for _ in range(5):
        step += 1
        steps.append({"step": step, "samples": 64, "step_time": 0.02,
                      "loss": 2.0 * math.exp(-step / 60.0) + 0.1})
    body = json.dumps({"steps": steps}).encode()
    urllib.request.urlopen(urllib.request.Request(url, body, headers)).read()
    print("step %d loss %.4f" % (step, steps[-1]["loss"]), flush=True)
    time.sleep(0.1)
"#;

fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ADAPTSCHED_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Headless Chromium, killed when dropped.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts Chromium on a free DevTools port; returns it and its browser websocket URL.
    fn start(binary: &Path) -> (Browser, String) {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(binary)
            .args([
                "--headless",
                // CI runs as root, where Chromium's sandbox cannot start; the page is ours.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-extensions",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                "--window-size=1280,1600",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    // Keep draining so Chromium never blocks on a full pipe.
                    continue;
                }
            }
        });
        let browser = Browser {
            child,
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("DevTools listening on ") {
                        return (browser, url.trim().to_string());
                    }
                    seen.push_str(&line);
                    seen.push('\n');
                }
                Err(_) => panic!("Chromium printed no DevTools URL within 60 s:\n{seen}"),
            }
        }
    }
}

type Socket = tungstenite::WebSocket<TcpStream>;

/// One CDP connection to the browser, with a page attached (flat session).
struct Cdp {
    socket: Socket,
    next_id: u64,
    session: Option<String>,
    /// Events that arrived while waiting for replies.
    events: Vec<Value>,
}

impl Cdp {
    fn connect(url: &str) -> Cdp {
        let rest = url.strip_prefix("ws://").expect("a ws:// URL");
        let host = &rest[..rest.find('/').unwrap()];
        let stream = TcpStream::connect(host).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let (socket, _) = tungstenite::client(url, stream).expect("websocket handshake");
        Cdp {
            socket,
            next_id: 0,
            session: None,
            events: Vec::new(),
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = &self.session {
            message["sessionId"] = json!(session);
        }
        self.socket
            .send(tungstenite::Message::text(message.to_string()))
            .unwrap();
        loop {
            let message = self
                .socket
                .read()
                .unwrap_or_else(|e| panic!("{method}: {e}"));
            let tungstenite::Message::Text(text) = message else {
                continue;
            };
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["id"] == json!(id) {
                if let Some(error) = value.get("error") {
                    panic!("{method} failed: {error}");
                }
                return value["result"].clone();
            }
            self.events.push(value);
        }
    }

    /// Evaluates `expression` in the page (awaiting promises) and returns its value.
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(details) = result.get("exceptionDetails") {
            panic!("{expression} threw: {details}");
        }
        result["result"]["value"].clone()
    }

    /// Polls `expression` until it is truthy, failing after `limit` with `what`.
    fn wait(&mut self, what: &str, limit: Duration, expression: &str) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let value = self.eval(expression);
            let truthy = !matches!(value, Value::Null | Value::Bool(false))
                && value != json!(0)
                && value != json!("");
            if truthy {
                return value;
            }
            if Instant::now() > deadline {
                let page = self.eval("document.body.innerText.slice(0, 2000)");
                panic!("timed out after {limit:?} waiting for {what}; the page shows:\n{page}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&mut self, path: &Path) {
        let result = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true }),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(result["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(path, png).unwrap();
        let path = path.canonicalize().unwrap();
        println!("screenshot: {}", path.display());
    }

    fn exceptions(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["method"] == "Runtime.exceptionThrown")
            .map(|e| e["params"]["exceptionDetails"].to_string())
            .collect()
    }
}

fn artifact(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&target).unwrap();
    target.join(name)
}

#[test]
fn the_dashboard_shows_a_running_jobs_loss_curve_in_headless_chromium() {
    let Some(binary) = chromium() else {
        if std::env::var("ADAPTSCHED_SKIP_BROWSER").as_deref() == Ok("1") {
            eprintln!(
                "SKIPPED: no chromium on PATH and ADAPTSCHED_SKIP_BROWSER=1 \
                 (apt-get install -y chromium to run this test)"
            );
            return;
        }
        panic!(
            "the dashboard browser test needs Chromium: apt-get install -y chromium, or \
             ADAPTSCHED_CHROMIUM=/path/to/chrome; set ADAPTSCHED_SKIP_BROWSER=1 to skip it"
        );
    };

    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let server = Server::start(&data_dir, &[]);
    let token = std::fs::read_to_string(data_dir.join("token"))
        .unwrap()
        .trim()
        .to_string();
    let work = dir.path().to_str().unwrap();
    let id = submit(
        &data_dir,
        &["--name", "loss-curve", "--workdir", work],
        &["python3", "-c", TRAINER],
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let steps_reported = || -> usize {
        agent
            .get(format!("{}/v1/jobs/{id}/metrics", server.url))
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .and_then(|text| serde_json::from_str::<Vec<Value>>(&text).ok())
            .map_or(0, |steps| steps.len())
    };
    wait_for_explained(
        "the job to report 20 steps",
        Duration::from_secs(60),
        || common::explain(&data_dir),
        || (steps_reported() >= 20).then_some(()),
    );

    let (_browser, ws) = Browser::start(&binary);
    let mut cdp = Cdp::connect(&ws);
    let target = cdp.call("Target.createTarget", json!({ "url": "about:blank" }));
    let attached = cdp.call(
        "Target.attachToTarget",
        json!({ "targetId": target["targetId"], "flatten": true }),
    );
    cdp.session = Some(attached["sessionId"].as_str().unwrap().to_string());
    cdp.call("Runtime.enable", json!({}));
    cdp.call("Page.enable", json!({}));
    cdp.call(
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": 1280, "height": 1500, "deviceScaleFactor": 1, "mobile": false }),
    );

    // The login page: its weight and load time, then sign in by typing the token.
    cdp.call(
        "Page.navigate",
        json!({ "url": format!("{}/", server.url) }),
    );
    cdp.wait(
        "the login form",
        Duration::from_secs(30),
        "document.readyState === 'complete' && !!document.getElementById('token')",
    );
    let timing = cdp.eval(
        "(() => { const n = performance.getEntriesByType('navigation')[0];
           const r = performance.getEntriesByType('resource');
           const bytes = [n, ...r].reduce((s, e) => s + (e.transferSize || 0), 0);
           const body = [n, ...r].reduce((s, e) => s + (e.decodedBodySize || 0), 0);
           return { load_ms: n.loadEventEnd, dom_ms: n.domContentLoadedEventEnd,
                    transfer_bytes: bytes, body_bytes: body, requests: 1 + r.length }; })()",
    );
    println!(
        "page: {} requests, {:.1} KB transferred ({:.1} KB of bodies), DOMContentLoaded {:.0} ms, load {:.0} ms",
        timing["requests"],
        timing["transfer_bytes"].as_f64().unwrap() / 1024.0,
        timing["body_bytes"].as_f64().unwrap() / 1024.0,
        timing["dom_ms"].as_f64().unwrap(),
        timing["load_ms"].as_f64().unwrap()
    );
    assert!(
        timing["body_bytes"].as_f64().unwrap() < 100.0 * 1024.0,
        "the dashboard grew past 100 KB: {timing}"
    );

    cdp.eval("document.getElementById('token').focus()");
    cdp.call("Input.insertText", json!({ "text": token }));
    cdp.eval("document.querySelector('#login button[type=submit]').click()");

    // The overview lists the running job, with the owner and its devices.
    let row = format!("tr.job[data-job='{id}']");
    cdp.wait(
        "the running job in the overview",
        Duration::from_secs(30),
        &format!("!!document.querySelector(\"#active {row} .state-running\")"),
    );
    let text = cdp.eval(&format!("document.querySelector(\"{row}\").innerText"));
    let text = text.as_str().unwrap();
    assert!(
        text.contains("loss-curve") && text.contains("admin"),
        "{text}"
    );
    assert_eq!(
        cdp.eval("document.getElementById('who').textContent"),
        json!("admin (admin)")
    );
    cdp.wait(
        "a utilization chart with points",
        Duration::from_secs(30),
        "Number(document.querySelector('#util path.series')?.dataset.points || 0) >= 1",
    );
    cdp.wait(
        "the live feed",
        Duration::from_secs(30),
        "document.getElementById('live').textContent === 'live'",
    );
    cdp.screenshot(&artifact("dashboard-overview.png"));

    // Open the job's page from the list; its loss curve is an SVG path with many points.
    cdp.eval(&format!("document.querySelector(\"{row} a\").click()"));
    let points_of_loss = "Number(document.querySelector(\"svg[data-chart='loss'] path.series[data-series='loss']\")?.dataset.points || 0)";
    let first = cdp.wait(
        "the loss curve",
        Duration::from_secs(30),
        &format!("location.hash === '#/job/{id}' && {points_of_loss} >= 20 && {points_of_loss}"),
    );
    let first = first.as_u64().unwrap();
    let d = cdp
        .eval("document.querySelector(\"svg[data-chart='loss'] path.series\").getAttribute('d')");
    let d = d.as_str().unwrap();
    assert!(
        d.starts_with('M') && d.matches('L').count() as u64 + 1 >= first,
        "{d}"
    );
    // The curve falls: its last point is lower on the chart (larger y) than its first.
    let ys: Vec<f64> = d
        .split(['M', 'L'])
        .filter(|p| !p.is_empty())
        .map(|p| p.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(ys.last().unwrap() > ys.first().unwrap(), "{d}");
    // Live: the curve grows without a reload while the job reports.
    cdp.wait(
        "the loss curve to grow by itself",
        Duration::from_secs(30),
        &format!("{points_of_loss} > {first}"),
    );
    cdp.wait(
        "the log tail",
        Duration::from_secs(30),
        "document.getElementById('job-log-stdout').textContent.includes('loss')",
    );
    let facts = cdp.eval("document.getElementById('job-facts').innerText");
    assert!(facts.as_str().unwrap().contains("python3"), "{facts}");
    cdp.screenshot(&artifact("dashboard-screenshot.png"));
    assert_eq!(cdp.exceptions(), Vec::<String>::new(), "the page threw");
    let error = cdp.eval("document.getElementById('error')?.textContent ?? null");
    assert_eq!(error, Value::Null, "the page shows an error");

    let out = common::cli(&data_dir, &["cancel", &id.to_string()]);
    assert!(out.status.success(), "{out:?}");
    wait_for("the job to be cancelled", Duration::from_secs(30), || {
        (common::state_of(&common::show(&data_dir, id)) == "cancelled").then_some(())
    });
    drop(server);
}
