//! One agent run: its options, the running process and what it left.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::process::Child;

use crate::process::{signal_group, tail};

/// Longest wait for one agent run.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(150);

/// The environment of every agent, over the claim's (test-only knobs and executables).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Extra agent environment.
    pub env: Vec<(String, String)>,
    /// Leave out the claim's `agent_env` (as an agent started by hand, with the worker key,
    /// whose settings come from worker-context alone).
    pub by_hand: bool,
}

impl RunOptions {
    /// An agent started by hand (see [`RunOptions::by_hand`]).
    pub fn by_hand() -> Self {
        Self {
            by_hand: true,
            ..Self::default()
        }
    }

    /// Sets an agent environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// Kills an `opencode serve --port <port>` the agent left behind (it runs in a process group of
/// its own), found by its command line.
fn kill_opencode_on(port: u16) {
    let wanted = format!("serve\0--port\0{port}\0");
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&wanted) {
            // SAFETY: kill(2) on a pid found above; no memory is touched.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// A running agent (its process group is killed when dropped).
#[derive(Debug)]
pub struct AgentRun {
    pub(crate) child: Child,
    /// When the agent was started.
    pub started: Instant,
    /// Its stdout and stderr.
    pub log: PathBuf,
    /// Its termination-message file.
    pub termination: PathBuf,
    /// The port of its `opencode serve`.
    pub port: u16,
    /// The claim's run token, when the server minted one.
    pub run_token: Option<String>,
    /// The queue job.
    pub job_id: String,
    /// The agent's directories (`home`, `tmp`, `ws`).
    pub root: PathBuf,
}

/// An agent run that ended.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// The termination line.
    pub termination: String,
    /// The agent's log.
    pub log: String,
    /// How long it ran.
    pub elapsed: Duration,
    /// The claim's run token.
    pub run_token: Option<String>,
    /// The agent's directories.
    pub root: PathBuf,
}

impl Finished {
    /// The agent's log and termination line, for assertion messages.
    pub fn describe(&self) -> String {
        let lines: Vec<&str> = self.log.lines().collect();
        format!(
            "exit {} after {:?}; termination: {}\n---- agent log (last 40 lines)\n{}",
            self.code,
            self.elapsed,
            self.termination,
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    }
}

impl Drop for AgentRun {
    fn drop(&mut self) {
        // A scenario that failed mid-run leaves neither the agent nor its OpenCode behind.
        if let Some(pid) = self.child.id() {
            signal_group(pid, libc::SIGKILL);
        }
        kill_opencode_on(self.port);
    }
}

impl AgentRun {
    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits for the agent to end (killing it after [`RUN_TIMEOUT`]).
    pub async fn wait(mut self) -> Finished {
        let status = match tokio::time::timeout(RUN_TIMEOUT, self.child.wait()).await {
            Ok(s) => s.ok(),
            Err(_) => {
                if let Some(pid) = self.pid() {
                    signal_group(pid, libc::SIGKILL);
                }
                let _ = self.child.wait().await;
                None
            }
        };
        self.finish(status)
    }

    /// Stops the agent (SIGTERM to its group, SIGKILL after 10 s) and waits for it.
    pub async fn stop(mut self) -> Finished {
        if let Some(pid) = self.pid() {
            signal_group(pid, libc::SIGTERM);
        }
        let status = match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(s) => s.ok(),
            Err(_) => None,
        };
        self.finish(status)
    }

    fn finish(mut self, status: Option<std::process::ExitStatus>) -> Finished {
        if let Some(pid) = self.pid() {
            signal_group(pid, libc::SIGKILL);
        }
        let _ = self.child.start_kill();
        kill_opencode_on(self.port);
        Finished {
            code: status.and_then(|s| s.code()).unwrap_or(-1),
            termination: std::fs::read_to_string(&self.termination)
                .unwrap_or_default()
                .trim()
                .to_owned(),
            log: tail(&self.log, 400),
            elapsed: self.started.elapsed(),
            run_token: self.run_token.clone(),
            root: self.root.clone(),
        }
    }
}
