//! Child processes: the operator (`terarchitect-operator run`) and helpers shared with the agent
//! runs (parent-death signal, process-group signals, peak RSS).

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// Makes the child die with the thread that spawned it (no strays when a test process dies).
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Sends `signal` to the process group led by `pid`.
pub fn signal_group(pid: u32, signal: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is touched.
    unsafe {
        libc::kill(-(pid as i32), signal);
    }
}

/// `VmHWM` (peak resident set size) of a process, in KiB.
pub fn peak_rss_kib(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_owned(),
    };
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU time (user + system) a process has used so far.
pub fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_millis(ticks * 1000 / hz))
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A running `terarchitect-operator run`, killed when dropped.
#[derive(Debug)]
pub struct OperatorProcess {
    child: Child,
    /// Its combined stdout and stderr (JSON log lines).
    pub log: PathBuf,
    /// Address of its /healthz, /readyz and /metrics.
    pub http: SocketAddr,
    http_client: reqwest::Client,
}

impl OperatorProcess {
    /// Starts the operator with exactly `env` (nothing inherited; an `OPERATOR_HTTP_BIND` port of
    /// 0 is replaced by a free port) and waits until it serves `/healthz`.
    ///
    /// # Panics
    /// When it cannot start or exits before serving.
    pub async fn start(bin: &Path, env: &[(String, String)], log: PathBuf) -> Self {
        let mut env = env.to_vec();
        let mut http: SocketAddr = "127.0.0.1:0".parse().expect("an address");
        for (k, v) in env.iter_mut() {
            if k == "OPERATOR_HTTP_BIND" {
                http = v.parse().expect("OPERATOR_HTTP_BIND is an address");
                if http.port() == 0 {
                    http.set_port(terarchitect_test_fakes::closed_port());
                }
                *v = http.to_string();
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("opening the operator log");
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("cloning a file handle"))
            .stderr(file);
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().expect("starting terarchitect-operator");
        let http_client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let healthy = http_client
                .get(format!("http://{http}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if healthy {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "terarchitect-operator exited ({status}) before serving:\n{}",
                    tail(&log, 40)
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "terarchitect-operator did not serve its probes within 60 s:\n{}",
                tail(&log, 40)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            child,
            log,
            http,
            http_client,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills it at once (SIGKILL: no cleanup, as when a node dies).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops it with SIGTERM (graceful shutdown), killing it after 15 s.
    pub async fn stop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while tokio::time::Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill();
    }

    /// Its peak resident set size in KiB (while it runs).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        peak_rss_kib(Some(self.child.id()))
    }

    /// CPU time it has used so far.
    pub fn cpu_time(&self) -> Option<Duration> {
        cpu_time(Some(self.child.id()))
    }

    /// Its /metrics text.
    pub async fn metrics(&self) -> String {
        self.http_client
            .get(format!("http://{}/metrics", self.http))
            .send()
            .await
            .expect("scraping the operator's metrics")
            .text()
            .await
            .expect("reading the operator's metrics")
    }

    /// The value of one sample (`name{labels}` exactly as exposed), 0 when absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        crate::metric_value(&self.metrics().await, sample)
    }

    /// Log lines (parsed JSON objects) whose message is `message`.
    pub fn log_events(&self, message: &str) -> Vec<Value> {
        log_events(&self.log, message)
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// JSON log lines of `log` whose `message` is `message`.
pub fn log_events(log: &Path, message: &str) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == message)
        .collect()
}
