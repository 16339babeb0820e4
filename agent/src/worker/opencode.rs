//! The OpenCode worker: `GET /global/health`, `POST /session`, `POST /session/{id}/message`,
//! `POST /session/{id}/summarize` every 30 turns and `POST /session/{id}/abort`, with basic auth
//! when `OPENCODE_SERVER_PASSWORD` is set.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::WorkerError;
use crate::config::{Secret, Settings};

/// Summarise the worker session every this many turns.
pub const SUMMARIZE_EVERY: u32 = 30;

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
    session: Option<String>,
    turns: u32,
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
            session: None,
            turns: 0,
        }
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

    fn unreachable(&self, phase: &str, detail: impl std::fmt::Display) -> WorkerError {
        WorkerError::Unavailable(format!(
            "OpenCode server unreachable ({phase}): {detail}. Is opencode serve running at {}?",
            self.base
        ))
    }

    async fn read(&self, phase: &str, resp: reqwest::Response) -> Result<Value, WorkerError> {
        let status = resp.status();
        let text = resp.text().await.map_err(|e| {
            if e.is_timeout() {
                WorkerError::Timeout(self.timeout)
            } else {
                self.unreachable(phase, e.without_url())
            }
        })?;
        if !status.is_success() {
            let body: String = text.chars().take(500).collect();
            return Err(self.unreachable(phase, format!("HTTP {status}: {body}")));
        }
        serde_json::from_str(&text)
            .map_err(|e| self.unreachable(phase, format!("invalid JSON: {e}")))
    }

    /// `GET /global/health`.
    pub async fn health(&self) -> Result<(), WorkerError> {
        let resp = self
            .request(reqwest::Method::GET, "/global/health")
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| self.unreachable("health", e.without_url()))?;
        let v = self.read("health", resp).await?;
        if v.get("healthy").and_then(Value::as_bool) == Some(false) {
            return Err(self.unreachable("health", "the server reports it is not healthy"));
        }
        Ok(())
    }

    fn directory_str(&self) -> Option<String> {
        self.directory
            .is_dir()
            .then(|| self.directory.to_string_lossy().into_owned())
    }

    async fn create_session(&mut self) -> Result<String, WorkerError> {
        let mut path = "/session".to_owned();
        if let Some(dir) = self.directory_str() {
            let mut u = url::Url::parse("http://x/").expect("static URL");
            u.query_pairs_mut().append_pair("directory", &dir);
            path = format!("/session?{}", u.query().unwrap_or_default());
        }
        let resp = self
            .request(reqwest::Method::POST, &path)
            .timeout(Duration::from_secs(30))
            .json(&json!({"title": self.title}))
            .send()
            .await
            .map_err(|e| self.unreachable("session", e.without_url()))?;
        let v = self.read("session", resp).await?;
        v.get("id")
            .or_else(|| v.get("sessionID"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| self.unreachable("session", "the answer has no session id"))
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

    /// Sends one prompt (a new session unless `resume` and one exists).
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
        let mut req = self
            .request(
                reqwest::Method::POST,
                &format!("/session/{session}/message"),
            )
            .timeout(self.timeout)
            .json(&json!({
                "parts": [{"type": "text", "text": prompt}],
                "model": {"providerID": self.provider_id, "modelID": self.model_id},
            }));
        if let Some(dir) = self.directory_str() {
            req = req.header("x-opencode-directory", dir);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                WorkerError::Timeout(self.timeout)
            } else {
                self.unreachable("message", e.without_url())
            }
        })?;
        let v = self.read("message", resp).await?;
        self.turns += 1;
        Ok(message_text(&v))
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
}
