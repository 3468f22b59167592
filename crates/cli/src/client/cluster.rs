//! Cluster commands: `nodes` (capacity, allocation and telemetry per node) and `top` (a live
//! view of cluster, nodes and active jobs, redrawn every few seconds).

use super::connect::{Client, ConnectArgs};
use super::format::{now, or_dash, table, utc};
use super::jobs::{jobs_table, list_jobs};
use super::print_json;
use adaptsched_api::{ClusterSummary, JobSummary, NodeView};
use anyhow::{Result, bail};
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct NodesArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Print the nodes (NodeView) as JSON.
    #[arg(long)]
    json: bool,
}

pub fn nodes(args: NodesArgs) -> Result<()> {
    let client = Client::connect(&args.connect)?;
    let nodes: serde_json::Value = client.get("/nodes", &[])?;
    if args.json {
        return print_json(&nodes);
    }
    let nodes: Vec<NodeView> = serde_json::from_value(nodes)?;
    print!("{}", nodes_table(&nodes));
    Ok(())
}

pub fn nodes_table(nodes: &[NodeView]) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let telemetry = n.telemetry.as_ref();
            vec![
                n.name.clone(),
                n.gpu_type.clone(),
                format!("{}/{}", n.gpus_allocated, n.gpus),
                format!("{}", n.cpu_cores),
                format!("{:.1}", n.memory_gb),
                or_dash(telemetry.map(|t| format!("{:.0}", t.cpu_percent))),
                or_dash(
                    telemetry.map(|t| format!("{:.1}/{:.1}", t.memory_used_gb, t.memory_total_gb)),
                ),
                or_dash(n.balance_ratio.map(|p| format!("{p:.2}"))),
                or_dash(telemetry.map(|t| t.jobs.len())),
            ]
        })
        .collect();
    table(
        &[
            "NODE", "TYPE", "GPUS", "CORES", "MEM GB", "CPU%", "MEM USED", "BALANCE", "JOBS",
        ],
        &rows,
    )
}

#[derive(Debug, clap::Args)]
pub struct TopArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Print one frame and exit (no screen control codes).
    #[arg(long)]
    once: bool,
    /// Seconds between frames.
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    interval: f64,
}

/// One frame: cluster line, nodes, then queued and running jobs.
pub fn frame(
    cluster: &ClusterSummary,
    nodes: &[NodeView],
    jobs: &[JobSummary],
    now: f64,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "adaptsched  {}  policy {}  every {}s  rounds {}  last round {}",
        utc(now),
        cluster.policy,
        cluster.interval_s,
        cluster.rounds,
        or_dash(cluster.last_round_ms.map(|ms| format!("{ms:.2} ms")))
    );
    let states: Vec<String> = cluster
        .jobs_by_state
        .iter()
        .filter(|&(_, &count)| count > 0)
        .map(|(state, count)| format!("{state} {count}"))
        .collect();
    let _ = writeln!(
        out,
        "nodes {}  GPUs {}/{} allocated  jobs: {}",
        cluster.nodes,
        cluster.gpus_allocated,
        cluster.gpus_total,
        if states.is_empty() {
            "none".to_string()
        } else {
            states.join(", ")
        }
    );
    let _ = writeln!(out);
    out.push_str(&nodes_table(nodes));
    let _ = writeln!(out);
    out.push_str(&jobs_table(jobs, now));
    out
}

pub fn top(args: TopArgs) -> Result<()> {
    if !(args.interval.is_finite() && args.interval > 0.0) {
        bail!(
            "--interval: invalid value `{}` (expected seconds > 0)",
            args.interval
        );
    }
    let client = Client::connect(&args.connect)?;
    let active = [Some("running".to_string()), Some("queued".to_string())];
    loop {
        let cluster: ClusterSummary = client.get("/cluster", &[])?;
        let nodes: Vec<NodeView> = client.get("/nodes", &[])?;
        let jobs = list_jobs(&client, &active, None, None)?;
        let text = frame(&cluster, &nodes, &jobs, now());
        if args.once {
            print!("{text}");
            return Ok(());
        }
        // Home the cursor and clear the screen, so the view redraws in place like top(1).
        let mut stdout = std::io::stdout().lock();
        write!(stdout, "\x1b[H\x1b[2J{text}")?;
        stdout.flush()?;
        drop(stdout);
        std::thread::sleep(Duration::from_secs_f64(args.interval));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_frame_shows_cluster_nodes_and_jobs() {
        let cluster = ClusterSummary {
            policy: "pollux".into(),
            interval_s: 1.0,
            nodes: 1,
            gpus_total: 4,
            gpus_allocated: 3,
            jobs_by_state: BTreeMap::from([
                ("running".into(), 2),
                ("queued".into(), 1),
                ("failed".into(), 0),
            ]),
            last_round_ms: Some(0.25),
            rounds: 7,
        };
        let node = NodeView {
            name: "local".into(),
            gpu_type: "cpu-slot".into(),
            gpus: 4,
            gpus_allocated: 3,
            cpu_cores: 2.0,
            memory_gb: 8.0,
            balance_ratio: Some(1.0),
            telemetry: None,
        };
        let out = frame(&cluster, &[node], &[], 0.0);
        assert!(out.contains("policy pollux"), "{out}");
        assert!(
            out.contains("GPUs 3/4 allocated  jobs: queued 1, running 2"),
            "{out}"
        );
        assert!(out.contains("last round 0.25 ms"), "{out}");
        let node_row: Vec<&str> = out
            .lines()
            .find(|l| l.starts_with("local"))
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(
            node_row,
            [
                "local", "cpu-slot", "3/4", "2", "8.0", "-", "-", "1.00", "-"
            ]
        );
        assert!(out.lines().any(|l| l.starts_with("ID  NAME")), "{out}");
    }
}
