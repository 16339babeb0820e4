//! The OpenCode worker: `GET /global/health`, `POST /session`, `POST /session/{id}/message`,
//! `POST /session/{id}/summarize` every 30 turns and `POST /session/{id}/abort`, with basic auth
//! when `OPENCODE_SERVER_PASSWORD` is set.
//!
//! What the real server (1.18.33) does that this client handles: a failed model call is an
//! HTTP 200 answer with `info.error` (checked before an answer counts as a turn; retried when
//! OpenCode says `isRetryable`); the `question` tool blocks a turn (every message sends
//! `"tools": {"question": false}`); a permission request blocks a turn (while a message is
//! pending, pending permission requests and questions of the session are rejected, see
//! [`PERMISSION_POLL`]); an unknown provider/model is a bare HTTP 500 `UnknownError` whose
//! cause is only in OpenCode's log (looked up by its `ref`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::WorkerError;
use crate::config::{Secret, Settings};

/// Summarise the worker session every this many turns.
pub const SUMMARIZE_EVERY: u32 = 30;

/// The OpenCode version the agent is tested with (`opencode-ai` on npm; Dockerfile.agent pins
/// the same). A server reporting another version gets a warning at start-up.
pub const TESTED_OPENCODE_VERSION: &str = "1.18.33";

/// How often pending permission requests and questions are looked for during a message.
pub const PERMISSION_POLL: Duration = Duration::from_millis(250);

/// Retries of a message whose answer carries a retryable error.
pub const MESSAGE_RETRIES: u32 = 2;

/// The text sent with every rejected permission request.
pub const PERMISSION_DENIED: &str = "Denied by the Terarchitect agent's policy: work only inside the repository (no access outside it), and never wait for a person.";

/// An error OpenCode reported inside an answer (`info.error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerError {
    /// Error name (`APIError`, `ProviderAuthError`, `UnknownError`, …).
    pub name: String,
    /// The provider's or OpenCode's message.
    pub message: String,
    /// The provider's HTTP status, when there was one.
    pub status: Option<u64>,
    /// Whether OpenCode says a retry may succeed.
    pub retryable: bool,
}

/// The error of a message answer (`info.error`), if any. A list answer uses its last element.
pub fn answer_error(answer: &Value) -> Option<AnswerError> {
    let answer = match answer {
        Value::Array(items) => items.last()?,
        other => other,
    };
    let err = answer.get("info")?.get("error")?;
    if err.is_null() {
        return None;
    }
    let data = err.get("data").unwrap_or(&Value::Null);
    let name = err
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("Error")
        .to_owned();
    let message = data
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| match name.as_str() {
            "MessageOutputLengthError" => "the model's answer hit its output length limit".into(),
            _ => err.to_string().chars().take(500).collect(),
        });
    Some(AnswerError {
        message,
        status: data.get("statusCode").and_then(Value::as_u64),
        retryable: data
            .get("isRetryable")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        name,
    })
}

/// A warning when the server's version differs from [`TESTED_OPENCODE_VERSION`].
pub fn version_warning(version: Option<&str>) -> Option<String> {
    match version {
        Some(v) if v == TESTED_OPENCODE_VERSION => None,
        Some(v) => Some(format!(
            "OpenCode {v} differs from the tested version {TESTED_OPENCODE_VERSION}: its API may behave differently"
        )),
        None => Some(format!(
            "OpenCode reported no version (tested with {TESTED_OPENCODE_VERSION})"
        )),
    }
}

/// The last `lines` lines of a log file, each cut to 400 characters (empty when unreadable).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| crate::api::truncate_chars(l, 400))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The cause OpenCode logged for an error reference (`ref=err_…` … `error="…"`).
pub fn logged_cause(log: &str, reference: &str) -> Option<String> {
    let needle = format!("ref={reference}");
    let line = log.lines().find(|l| l.contains(&needle))?;
    let start = line.find("error=\"")? + "error=\"".len();
    let rest = &line[start..];
    let end = rest.find('"').unwrap_or(rest.len());
    Some(rest[..end].to_owned())
}

/// An OpenCode server client holding the worker session of one Director session.
#[derive(Debug)]
pub struct OpenCodeWorker {
    http: reqwest::Client,
    base: String,
    username: String,
    password: Option<Secret>,
    provider_id: String,
    model_id: String,
    directory: PathBuf,
    title: String,
    timeout: Duration,
    backoff: Duration,
    log: Option<PathBuf>,
    session: Option<String>,
    turns: u32,
    /// Permission requests and questions rejected since the last [`OpenCodeWorker::take_rejected`].
    rejected: std::sync::Mutex<Vec<String>>,
}

/// The text of an OpenCode message answer: the trimmed, non-empty `text` of every `text` or
/// `reasoning` part, joined by newlines. A list answer uses its last element.
pub fn message_text(answer: &Value) -> String {
    let answer = match answer {
        Value::Array(items) => items.last().unwrap_or(&Value::Null),
        other => other,
    };
    answer
        .get("parts")
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .filter(|p| {
                    matches!(
                        p.get("type").and_then(Value::as_str),
                        Some("text" | "reasoning")
                    )
                })
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

impl OpenCodeWorker {
    /// A client for the configured server (or `server_url`).
    pub fn new(
        settings: &Settings,
        project_dir: &Path,
        session_id: &str,
        server_url: Option<&str>,
    ) -> Self {
        terarchitect_worker_api::ensure_crypto_provider();
        Self {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            base: server_url
                .unwrap_or(&settings.opencode.url)
                .trim_end_matches('/')
                .to_owned(),
            username: settings.opencode.username.clone(),
            password: settings.opencode.password.clone(),
            provider_id: settings.opencode.provider_id.clone(),
            model_id: settings.opencode_model_id(),
            directory: project_dir.to_owned(),
            title: format!("terarchitect-{session_id}"),
            timeout: settings.worker_timeout,
            backoff: settings.limits.retry_backoff,
            log: None,
            session: None,
            turns: 0,
            rejected: Default::default(),
        }
    }

    /// Uses `log` (the started server's log file) for error details.
    pub fn with_log(mut self, log: Option<PathBuf>) -> Self {
        self.log = log;
        self
    }

    /// The current worker session id.
    pub fn session_id(&self) -> Option<&str> {
        self.session.as_deref()
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(p) = &self.password {
            req = req.basic_auth(&self.username, Some(p.expose()));
        }
        req
    }

    /// The tail of the started server's log, when there is one.
    fn log_detail(&self) -> Option<String> {
        let tail = log_tail(self.log.as_deref()?, 30);
        (!tail.trim().is_empty()).then(|| format!("Tail of the opencode serve log:\n{tail}"))
    }

    fn failed(&self, message: String) -> WorkerError {
        WorkerError::Failed {
            message,
            detail: self.log_detail(),
        }
    }

    /// A request that got no answer: refused, unreachable or timed out.
    fn send_error(&self, phase: &str, e: reqwest::Error) -> WorkerError {
        if e.is_timeout() {
            return self.failed(format!(
                "OpenCode did not answer the {phase} request in time at {}",
                self.base
            ));
        }
        let what = if e.is_connect() {
            "connection refused or host unreachable".to_owned()
        } else {
            e.without_url().to_string()
        };
        self.failed(format!(
            "OpenCode server unreachable ({phase}): {what}. Is opencode serve running at {}?",
            self.base
        ))
    }

    /// An HTTP error status, explained.
    fn status_error(&self, phase: &str, status: reqwest::StatusCode, body: &str) -> WorkerError {
        let short: String = body.chars().take(500).collect();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return self.failed(format!(
                "OpenCode refused the agent's credentials (HTTP 401) on {phase} at {}: OPENCODE_SERVER_PASSWORD (user OPENCODE_SERVER_USERNAME, default opencode) must match the server's",
                self.base
            ));
        }
        let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        if v.get("name").and_then(Value::as_str) == Some("UnknownError") {
            let reference = v["data"]["ref"].as_str().unwrap_or_default();
            let cause = self
                .log
                .as_deref()
                .and_then(|p| std::fs::read_to_string(p).ok())
                .and_then(|log| logged_cause(&log, reference));
            let cause = match cause {
                Some(c) => format!("OpenCode logged: {c}"),
                None => format!(
                    "its log holds the cause under {reference}; an unknown provider or model is the usual one"
                ),
            };
            return self.failed(format!(
                "OpenCode failed on {phase} with HTTP {status} UnknownError ({cause}). The agent asked for provider {:?} and model {:?} (OPENCODE_PROVIDER_ID, WORKER_MODEL)",
                self.provider_id, self.model_id
            ));
        }
        self.failed(format!(
            "OpenCode answered HTTP {status} on {phase} at {}: {short}",
            self.base
        ))
    }

    async fn read(&self, phase: &str, resp: reqwest::Response) -> Result<Value, WorkerError> {
        let status = resp.status();
        let text = resp.text().await.map_err(|e| {
            if e.is_timeout() && phase == "message" {
                WorkerError::Timeout(self.timeout)
            } else {
                self.send_error(phase, e)
            }
        })?;
        if !status.is_success() {
            return Err(self.status_error(phase, status, &text));
        }
        serde_json::from_str(&text).map_err(|e| {
            self.failed(format!(
                "OpenCode's answer to the {phase} request is not JSON: {e}"
            ))
        })
    }

    /// `GET /global/health` with a per-request timeout; returns the server's version.
    pub async fn health_within(&self, timeout: Duration) -> Result<Option<String>, WorkerError> {
        let resp = self
            .request(reqwest::Method::GET, "/global/health")
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| self.send_error("health", e))?;
        let v = self.read("health", resp).await?;
        if v.get("healthy").and_then(Value::as_bool) == Some(false) {
            return Err(self.failed(format!(
                "OpenCode at {} reports it is not healthy",
                self.base
            )));
        }
        Ok(v.get("version").and_then(Value::as_str).map(str::to_owned))
    }

    /// `GET /global/health`; warns when the version differs from the tested one.
    pub async fn health(&self) -> Result<(), WorkerError> {
        let version = self.health_within(Duration::from_secs(10)).await?;
        match version_warning(version.as_deref()) {
            Some(w) => tracing::warn!("{w}"),
            None => tracing::info!(version = TESTED_OPENCODE_VERSION, "OpenCode version"),
        }
        Ok(())
    }

    fn directory_str(&self) -> Option<String> {
        self.directory
            .is_dir()
            .then(|| self.directory.to_string_lossy().into_owned())
    }

    /// `path` with `?directory=<project dir>` when the directory exists.
    fn with_directory(&self, path: &str) -> String {
        match self.directory_str() {
            Some(dir) => {
                let mut u = url::Url::parse("http://x/").expect("static URL");
                u.query_pairs_mut().append_pair("directory", &dir);
                format!("{path}?{}", u.query().unwrap_or_default())
            }
            None => path.to_owned(),
        }
    }

    async fn create_session(&mut self) -> Result<String, WorkerError> {
        let path = self.with_directory("/session");
        let resp = self
            .request(reqwest::Method::POST, &path)
            .timeout(Duration::from_secs(30))
            .json(&json!({"title": self.title}))
            .send()
            .await
            .map_err(|e| self.send_error("session", e))?;
        let v = self.read("session", resp).await?;
        v.get("id")
            .or_else(|| v.get("sessionID"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| self.failed("OpenCode's session answer has no session id".into()))
    }

    async fn summarize(&self, session: &str) {
        let resp = self
            .request(
                reqwest::Method::POST,
                &format!("/session/{session}/summarize"),
            )
            .timeout(Duration::from_secs(120))
            .json(&json!({"providerID": self.provider_id, "modelID": self.model_id}))
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => {
                tracing::info!(session, "worker session summarized")
            }
            Ok(r) => tracing::warn!(session, status = %r.status(), "summarize failed"),
            Err(e) => tracing::warn!(session, error = %e.without_url(), "summarize failed"),
        }
    }

    /// Rejects the pending permission requests and questions of `session`; returns what was
    /// rejected (e.g. `external_directory /tmp/*`).
    pub async fn reject_pending(&self, session: &str) -> Vec<String> {
        let mut rejected = Vec::new();
        for (kind, list, reply, body) in [
            (
                "permission",
                "/permission",
                "reply",
                json!({"reply": "reject", "message": PERMISSION_DENIED}),
            ),
            ("question", "/question", "reject", json!({})),
        ] {
            let pending = self
                .request(reqwest::Method::GET, &self.with_directory(list))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            let Ok(resp) = pending else { continue };
            if !resp.status().is_success() {
                continue;
            }
            let Ok(Value::Array(items)) = resp.json::<Value>().await else {
                continue;
            };
            for item in items {
                if item.get("sessionID").and_then(Value::as_str) != Some(session) {
                    continue;
                }
                let Some(id) = item.get("id").and_then(Value::as_str) else {
                    continue;
                };
                let what = match kind {
                    "permission" => format!(
                        "permission {} {}",
                        item["permission"].as_str().unwrap_or("?"),
                        item["patterns"]
                            .as_array()
                            .map(|p| p
                                .iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(", "))
                            .unwrap_or_default()
                    ),
                    _ => "question".to_owned(),
                };
                let path = self.with_directory(&format!("{list}/{id}/{reply}"));
                // Recorded before the reply: the answer it unblocks may end the watch (and drop
                // this future) before the reply's own answer arrives.
                self.record_rejected(Some(what.clone()));
                let answer = self
                    .request(reqwest::Method::POST, &path)
                    .timeout(Duration::from_secs(5))
                    .json(&body)
                    .send()
                    .await;
                match answer {
                    Ok(r) if r.status().is_success() => {
                        tracing::warn!(session, rejected = %what, "rejected a worker request that would block the turn");
                        rejected.push(what);
                    }
                    Ok(r) => {
                        self.record_rejected(None);
                        tracing::warn!(session, status = %r.status(), "could not reject {what}")
                    }
                    Err(e) => {
                        self.record_rejected(None);
                        tracing::warn!(session, error = %e.without_url(), "could not reject {what}")
                    }
                }
            }
        }
        rejected
    }

    /// Records a rejection (`Some`), or withdraws the last one (`None`: the reply failed).
    fn record_rejected(&self, what: Option<String>) {
        let mut list = self.rejected.lock().unwrap_or_else(|e| e.into_inner());
        match what {
            Some(w) => list.push(w),
            None => {
                list.pop();
            }
        }
    }

    /// Rejects every blocking request of `session` until the future holding it is dropped.
    async fn watch_blocking_requests(&self, session: &str) {
        loop {
            tokio::time::sleep(PERMISSION_POLL).await;
            self.reject_pending(session).await;
        }
    }

    /// One `POST /session/{id}/message`; the answer as JSON.
    async fn post_message(&self, session: &str, prompt: &str) -> Result<Value, WorkerError> {
        let mut req = self
            .request(
                reqwest::Method::POST,
                &format!("/session/{session}/message"),
            )
            .timeout(self.timeout)
            .json(&json!({
                "parts": [{"type": "text", "text": prompt}],
                "model": {"providerID": self.provider_id, "modelID": self.model_id},
                // The question tool waits for a person; there is none.
                "tools": {"question": false},
            }));
        if let Some(dir) = self.directory_str() {
            req = req.header("x-opencode-directory", dir);
        }
        let call = async {
            let resp = req.send().await.map_err(|e| {
                if e.is_timeout() {
                    WorkerError::Timeout(self.timeout)
                } else {
                    self.send_error("message", e)
                }
            })?;
            self.read("message", resp).await
        };
        tokio::select! {
            r = call => r,
            _ = self.watch_blocking_requests(session) => unreachable!("the watcher never ends"),
        }
    }

    /// Sends one prompt (a new session unless `resume` and one exists). An answer carrying an
    /// error is retried when OpenCode says it is retryable, else it fails the call.
    pub async fn send(&mut self, prompt: &str, resume: bool) -> Result<String, WorkerError> {
        let session = match (&self.session, resume) {
            (Some(s), true) => s.clone(),
            _ => {
                let s = self.create_session().await?;
                self.session = Some(s.clone());
                self.turns = 0;
                s
            }
        };
        if self.turns > 0 && self.turns.is_multiple_of(SUMMARIZE_EVERY) {
            self.summarize(&session).await;
        }
        let mut backoff = self.backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let v = self.post_message(&session, prompt).await?;
            let Some(err) = answer_error(&v) else {
                self.turns += 1;
                return Ok(message_text(&v));
            };
            if err.retryable && attempt <= MESSAGE_RETRIES {
                tracing::warn!(
                    attempt,
                    error = %err.message,
                    "the worker's model call failed (retryable); retrying"
                );
                tokio::time::sleep(backoff).await;
                backoff *= 2;
                continue;
            }
            return Err(self.answer_failed(&err, attempt));
        }
    }

    fn answer_failed(&self, err: &AnswerError, attempts: u32) -> WorkerError {
        let status = err
            .status
            .map(|s| format!(", provider HTTP {s}"))
            .unwrap_or_default();
        let retry = if err.retryable {
            format!(", still failing after {attempts} attempts")
        } else {
            String::new()
        };
        self.failed(format!(
            "the worker's model call failed ({}{status}{retry}; OpenCode provider {:?}, model {:?}): {}",
            err.name, self.provider_id, self.model_id, err.message
        ))
    }

    /// What was rejected since the last call (see [`OpenCodeWorker::reject_pending`]).
    pub fn take_rejected(&mut self) -> Vec<String> {
        std::mem::take(self.rejected.get_mut().unwrap_or_else(|e| e.into_inner()))
    }

    /// Aborts the current session's work (`POST /session/{id}/abort`); errors are logged.
    pub async fn abort(&mut self) {
        let Some(session) = self.session.clone() else {
            return;
        };
        let resp = self
            .request(reqwest::Method::POST, &format!("/session/{session}/abort"))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => tracing::info!(session, "worker session aborted"),
            Ok(r) => tracing::warn!(session, status = %r.status(), "abort failed"),
            Err(e) => tracing::warn!(session, error = %e.without_url(), "abort failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_text_joins_text_and_reasoning() {
        let v = json!({"info": {}, "parts": [
            {"type": "reasoning", "text": " think "},
            {"type": "tool", "text": "x"},
            {"type": "text", "text": ""},
            {"type": "text", "text": "done\n"}
        ]});
        assert_eq!(message_text(&v), "think\ndone");
        assert_eq!(message_text(&json!([{"parts": []}, v])), "think\ndone");
        assert_eq!(message_text(&json!({})), "");
    }

    #[test]
    fn errors_inside_answers_are_found() {
        let v = json!({"info": {"error": {"name": "APIError", "data": {"message": "bad key", "statusCode": 401, "isRetryable": false}}}, "parts": []});
        assert_eq!(
            answer_error(&v),
            Some(AnswerError {
                name: "APIError".into(),
                message: "bad key".into(),
                status: Some(401),
                retryable: false
            })
        );
        let v = json!([{"info": {"error": {"name": "MessageOutputLengthError", "data": {}}}}]);
        let e = answer_error(&v).unwrap();
        assert!(e.message.contains("output length") && !e.retryable);
        assert_eq!(
            answer_error(&json!({"info": {"error": null}, "parts": []})),
            None
        );
        assert_eq!(answer_error(&json!({"info": {}, "parts": []})), None);
    }

    #[test]
    fn the_image_pins_the_tested_version() {
        let dockerfile = include_str!("../../../Dockerfile.agent");
        assert!(dockerfile.contains(&format!("ARG OPENCODE_VERSION={TESTED_OPENCODE_VERSION}\n")));
    }

    #[test]
    fn versions_and_logged_causes() {
        assert_eq!(version_warning(Some(TESTED_OPENCODE_VERSION)), None);
        assert!(version_warning(Some("1.2.3")).unwrap().contains("1.2.3"));
        assert!(version_warning(None).is_some());
        let log = "timestamp=x level=ERROR message=failed ref=err_9ca1075a error=\"ProviderModelNotFoundError: Model not found: tp/nosuch.\" cause=...";
        assert_eq!(
            logged_cause(log, "err_9ca1075a").as_deref(),
            Some("ProviderModelNotFoundError: Model not found: tp/nosuch.")
        );
        assert_eq!(logged_cause(log, "err_other"), None);
    }
}
