//! The client side of the `adaptsched` command line: `submit`, `ls`, `show`, `logs`,
//! `cancel`, `nodes` and `top`, each a small function over the v1 HTTP API.

mod cluster;
pub mod connect;
pub mod format;
mod jobs;
pub mod spec;

pub use cluster::{NodesArgs, TopArgs, nodes, top};
pub use jobs::{
    CancelArgs, LogsArgs, LsArgs, ShowArgs, SubmitArgs, all_pages, batch_sizes, cancel, logs, ls,
    show, submit,
};

use anyhow::{Result, anyhow};

/// Job states the API knows, in lifecycle order.
pub const STATES: [&str; 5] = ["queued", "running", "succeeded", "failed", "cancelled"];

/// States a job never leaves.
pub fn is_terminal(state: &str) -> bool {
    matches!(state, "succeeded" | "failed" | "cancelled")
}

/// A `JOB` argument: the numeric id `submit` printed.
pub fn parse_job_id(text: &str) -> Result<u64> {
    text.trim()
        .trim_start_matches('#')
        .parse()
        .map_err(|_| anyhow!("JOB: `{text}` is not a job id (a number, as `submit` printed)"))
}

/// Prints JSON the way every `--json` flag does: pretty, one document.
pub fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids() {
        assert_eq!(parse_job_id("12").unwrap(), 12);
        assert_eq!(parse_job_id("#7").unwrap(), 7);
        let error = parse_job_id("abc").unwrap_err().to_string();
        assert!(error.contains("`abc`"), "{error}");
        assert!(is_terminal("failed") && !is_terminal("running"));
    }
}
