//! The Claude Code worker: `claude -p <prompt> --output-format json --allowedTools … [--model M]
//! [--resume <session>]` in the project directory, with `ANTHROPIC_API_KEY` from
//! `WORKER_API_KEY` (unless it is `dummy`). The process is killed when its call is dropped
//! (cancellation) or times out. The CLI's environment is the allowlist of
//! [`crate::sandbox::worker_env`] plus `ANTHROPIC_BASE_URL` pointing at the agent's key proxy and
//! `ANTHROPIC_API_KEY=dummy`: the proxy adds the real key (`x-api-key`) on its way to Anthropic
//! (or the agent's own `ANTHROPIC_BASE_URL`), so no secret reaches the CLI.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use super::WorkerError;
use super::proxy::{KeyProxy, KeyStyle};
use crate::config::{Env, Secret, Settings};
use crate::sandbox::worker_command;

/// Anthropic's API, unless the agent's environment sets `ANTHROPIC_BASE_URL`.
pub const ANTHROPIC_API: &str = "https://api.anthropic.com";

/// Tools the worker may use.
pub const ALLOWED_TOOLS: &str = "Bash,Read,Edit,Write,MultiEdit,Glob,Grep,LS";

/// A Claude Code CLI worker.
#[derive(Debug)]
pub struct ClaudeWorker {
    bin: String,
    model: String,
    api_key: Option<Secret>,
    directory: PathBuf,
    timeout: Duration,
    env: Env,
    proxy: Option<KeyProxy>,
    /// Process groups of the calls so far (killed by [`ClaudeWorker::kill_leftovers`]).
    groups: Vec<i32>,
    session: Option<String>,
    turns: u32,
}

impl ClaudeWorker {
    /// A worker from the settings; its processes are built from the allowlisted part of `env`.
    pub fn new(settings: &Settings, project_dir: &Path, env: Env) -> Self {
        Self {
            env,
            proxy: None,
            groups: Vec::new(),
            bin: settings.claude_bin.clone(),
            model: settings.worker_model.clone(),
            api_key: settings.worker_api_key.clone(),
            directory: project_dir.to_owned(),
            timeout: settings.worker_timeout,
            session: None,
            turns: 0,
        }
    }

    /// The command-line arguments of one call.
    pub fn args(&self, prompt: &str, resume: bool) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "-p".into(),
            prompt.into(),
            "--output-format".into(),
            "json".into(),
            "--allowedTools".into(),
            ALLOWED_TOOLS.into(),
        ];
        if !self.model.is_empty() {
            args.extend(["--model".into(), self.model.clone()]);
        }
        if resume && let Some(s) = &self.session {
            args.extend(["--resume".into(), s.clone()]);
        }
        args
    }

    /// Checks that the CLI can be started (`claude --version`).
    pub async fn check(&self) -> Result<(), WorkerError> {
        let mut cmd = worker_command(&self.bin, &self.env);
        cmd.arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if self.directory.is_dir() {
            cmd.current_dir(&self.directory);
        }
        let out = cmd.status();
        match tokio::time::timeout(Duration::from_secs(30), out).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(WorkerError::Unavailable(format!(
                "claude CLI not found or not runnable ({}): {e}",
                self.bin
            ))),
            Err(_) => Err(WorkerError::Unavailable(
                "claude --version did not answer".into(),
            )),
        }
    }

    /// The real key: `WORKER_API_KEY`, or with `dummy` an `ANTHROPIC_API_KEY` the agent was
    /// given.
    fn real_key(&self) -> Option<Secret> {
        match &self.api_key {
            Some(key) if key.expose() != "dummy" => Some(key.clone()),
            _ => self.env.get("ANTHROPIC_API_KEY").map(Secret::new),
        }
    }

    /// `ANTHROPIC_BASE_URL` (the key proxy, started on first use) and a dummy
    /// `ANTHROPIC_API_KEY`; nothing without a key.
    async fn key_env(&mut self) -> Result<Vec<(&'static str, String)>, WorkerError> {
        let Some(key) = self.real_key() else {
            return Ok(Vec::new());
        };
        if self.proxy.is_none() {
            let upstream = self.env.get("ANTHROPIC_BASE_URL").unwrap_or(ANTHROPIC_API);
            let proxy = KeyProxy::start(upstream, key, KeyStyle::XApiKey)
                .await
                .map_err(|e| {
                    WorkerError::Unavailable(format!("cannot start the Anthropic key proxy: {e}"))
                })?;
            self.proxy = Some(proxy);
        }
        let url = self.proxy.as_ref().map(|p| p.url().to_owned());
        Ok(vec![
            ("ANTHROPIC_BASE_URL", url.unwrap_or_default()),
            ("ANTHROPIC_API_KEY", "dummy".to_owned()),
        ])
    }

    /// Kills the process groups of every call (background processes its tools left running).
    pub fn kill_leftovers(&mut self) {
        for pgid in self.groups.drain(..) {
            // SAFETY: kill(2) with a negative pid signals that process group; the group ids are
            // the CLI processes this worker started.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }

    /// Runs one prompt.
    pub async fn send(&mut self, prompt: &str, resume: bool) -> Result<String, WorkerError> {
        let mut cmd = worker_command(&self.bin, &self.env);
        cmd.args(self.args(prompt, resume))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if self.directory.is_dir() {
            cmd.current_dir(&self.directory);
        }
        for (k, v) in self.key_env().await? {
            cmd.env(k, v);
        }
        // Its own process group: what its tools leave running can be found (and killed) later.
        cmd.process_group(0);
        let child = cmd.spawn().map_err(|e| {
            WorkerError::Unavailable(format!("claude CLI not found ({}): {e}", self.bin))
        })?;
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            self.groups.push(pid);
        }
        let out = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Err(WorkerError::Unavailable(format!("Claude Code failed: {e}"))),
            Err(_) => return Err(WorkerError::Timeout(self.timeout)),
        };
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let detail = if stderr.trim().is_empty() {
                &stdout
            } else {
                stderr.as_ref()
            };
            return Err(WorkerError::Unavailable(format!(
                "Claude Code exited with {}: {}",
                out.status,
                crate::api::truncate_chars(detail.trim(), 1000)
            )));
        }
        match serde_json::from_str::<Value>(stdout.trim()) {
            Ok(v) if v.is_object() => {
                if let Some(s) = v.get("session_id").and_then(Value::as_str) {
                    self.session = Some(s.to_owned());
                }
                self.turns += 1;
                Ok(v.get("result")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .trim()
                    .to_owned())
            }
            _ => Ok(stdout.trim().to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    fn worker(model: &str) -> ClaudeWorker {
        let env = Env::from_pairs([
            ("WORKER_MODEL", model),
            ("WORKER_API_KEY", "sk-ant-123456"),
            ("GITHUB_TOKEN", "ghp_must_not_leak"),
            ("PATH", &std::env::var("PATH").unwrap_or_default()),
        ]);
        let s = Settings::resolve(&env, &Default::default()).unwrap();
        ClaudeWorker::new(&s, Path::new("/nonexistent"), env)
    }

    #[test]
    fn flags_model_and_resume() {
        let mut w = worker("");
        assert_eq!(
            w.args("hi", true),
            [
                "-p",
                "hi",
                "--output-format",
                "json",
                "--allowedTools",
                ALLOWED_TOOLS
            ]
        );
        w = worker("sonnet");
        w.session = Some("s1".into());
        let a = w.args("hi", true);
        assert_eq!(&a[6..], ["--model", "sonnet", "--resume", "s1"]);
        assert!(!w.args("hi", false).contains(&"--resume".to_owned()));
    }

    #[tokio::test]
    async fn runs_a_fake_cli_and_parses_json_or_text() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("claude");
        std::fs::write(
            &bin,
            "#!/bin/sh\nif [ \"$2\" = fail ]; then echo boom >&2; exit 3; fi\nif [ \"$2\" = text ]; then echo plain; exit 0; fi\necho \"{\\\"session_id\\\":\\\"abc\\\",\\\"result\\\":\\\" key=$ANTHROPIC_API_KEY base=$ANTHROPIC_BASE_URL gh=$GITHUB_TOKEN \\\"}\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut w = worker("");
        w.bin = bin.to_string_lossy().into_owned();
        // No secret arrives: a dummy key and the agent's key proxy, which adds the real key on
        // its way to Anthropic (here a fake upstream).
        let seen: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let s2 = seen.clone();
        let upstream = axum::Router::new().route(
            "/v1/messages",
            axum::routing::post(move |h: axum::http::HeaderMap| {
                let seen = s2.clone();
                async move {
                    let key = h.get("x-api-key").and_then(|v| v.to_str().ok());
                    seen.lock()
                        .unwrap()
                        .push(key.unwrap_or_default().to_owned());
                    "{}"
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream_url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, upstream).await });
        w.env.set("ANTHROPIC_BASE_URL", &upstream_url);
        let out = w.send("go", false).await.unwrap();
        let base = out
            .strip_prefix("key=dummy base=")
            .and_then(|r| r.strip_suffix(" gh="))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(
            base.starts_with("http://127.0.0.1:") && base != upstream_url,
            "{out}"
        );
        let r = reqwest::Client::new()
            .post(format!("{base}/v1/messages"))
            .header("x-api-key", "dummy")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(seen.lock().unwrap().as_slice(), ["sk-ant-123456"]);
        assert_eq!(w.session.as_deref(), Some("abc"));
        assert_eq!(w.send("text", true).await.unwrap(), "plain");
        let err = w.send("fail", true).await.unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
        w.bin = "/nonexistent/claude".into();
        assert!(matches!(
            w.send("x", true).await,
            Err(WorkerError::Unavailable(_))
        ));
        w.api_key = Some(Secret::new("dummy"));
    }
}
