//! Facts about processes from Linux's `/proc`, and signals to process groups: how the local
//! executor and crash recovery tell a job's process from an unrelated one that reused its pid.

use rustix::process::{Pid, Signal};
use std::path::Path;
use std::time::Duration;

/// How often a stopping process group is checked for being gone.
const POLL: Duration = Duration::from_millis(50);
/// After SIGKILL the kernel needs a moment; waiting longer means something is stuck (a
/// process in uninterruptible sleep), and the caller is told instead of hanging.
const AFTER_KILL: Duration = Duration::from_secs(5);

/// The fields of `/proc/<pid>/stat` we use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    pub state: char,
    pub ppid: u32,
    pub pgrp: u32,
    /// Clock ticks after boot when the process started (field 22).
    pub start_ticks: u64,
}

impl ProcStat {
    /// A zombie (`Z`) or dead (`X`) process holds no resources and runs no code.
    pub fn is_live(&self) -> bool {
        !matches!(self.state, 'Z' | 'X')
    }
}

/// Parses the text of `/proc/<pid>/stat`. The command name (field 2) may contain spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

pub fn stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// This boot's id: after a reboot no recorded process can still be running.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Whether `pid` is still the process that was started at `start_ticks` in boot `boot`.
pub fn is_same_process(pid: u32, start_ticks: u64, boot: &str) -> bool {
    boot == boot_id() && stat(pid).is_some_and(|s| s.is_live() && s.start_ticks == start_ticks)
}

/// Every pid in `/proc`.
fn all_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Whether any live (non-zombie) process is in process group `pgid`.
pub fn group_alive(pgid: u32) -> bool {
    all_pids()
        .into_iter()
        .filter_map(stat)
        .any(|s| s.pgrp == pgid && s.is_live())
}

/// Live processes whose initial environment holds `key=value`, with their process groups.
/// Finds job processes even when the server crashed before recording their pid.
pub fn processes_with_env(key: &str, value: &str) -> Vec<(u32, u32)> {
    let wanted = format!("{key}={value}");
    all_pids()
        .into_iter()
        .filter(|&pid| pid != std::process::id())
        .filter_map(|pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let found = environ
                .split(|&b| b == 0)
                .any(|entry| entry == wanted.as_bytes());
            let stat = stat(pid)?;
            (found && stat.is_live()).then_some((pid, stat.pgrp))
        })
        .collect()
}

/// The value of `key` in the initial environment of `pid`.
pub fn env_of(pid: u32, key: &str) -> Option<String> {
    let environ = std::fs::read(Path::new("/proc").join(pid.to_string()).join("environ")).ok()?;
    let prefix = format!("{key}=");
    environ.split(|&b| b == 0).find_map(|entry| {
        entry
            .strip_prefix(prefix.as_bytes())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}

/// Sends `signal` to process group `pgid`; a group that is already gone is not an error.
pub fn signal_group(pgid: u32, signal: Signal) {
    let Some(pid) = i32::try_from(pgid).ok().and_then(Pid::from_raw) else {
        return;
    };
    if let Err(error) = rustix::process::kill_process_group(pid, signal)
        && error != rustix::io::Errno::SRCH
    {
        tracing::warn!("signal {signal:?} to process group {pgid}: {error}");
    }
}

/// SIGTERM to the group, up to `grace` for it to exit, then SIGKILL. Returns whether the
/// group is gone. For processes that are not our children (found after a restart); our own
/// children are stopped by the executor, which also reaps them.
pub async fn terminate_group(pgid: u32, grace: Duration) -> bool {
    signal_group(pgid, Signal::TERM);
    if wait_gone(pgid, grace).await {
        return true;
    }
    signal_group(pgid, Signal::KILL);
    wait_gone(pgid, AFTER_KILL).await
}

async fn wait_gone(pgid: u32, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if !group_alive(pgid) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let text = "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 987654 1000 10";
        let stat = parse_stat(text).unwrap();
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.ppid, 1);
        assert_eq!(stat.pgrp, 4242);
        assert_eq!(stat.start_ticks, 987654);
        assert!(stat.is_live());
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn this_process_is_itself_and_not_another_start() {
        let me = std::process::id();
        let mine = stat(me).unwrap();
        assert!(is_same_process(me, mine.start_ticks, &boot_id()));
        assert!(!is_same_process(me, mine.start_ticks + 1, &boot_id()));
        assert!(!is_same_process(me, mine.start_ticks, "another-boot"));
    }
}
