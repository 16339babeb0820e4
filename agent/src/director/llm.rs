//! An OpenAI-compatible chat-completions client for the Director model, with retries on
//! transient failures (network errors, timeouts, 5xx, 429, malformed answers).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::{Secret, Settings};
use crate::redact::Redactor;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: "system".into(),
            content: content.into(),
        }
    }
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: "user".into(),
            content: content.into(),
        }
    }
    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: "assistant".into(),
            content: content.into(),
        }
    }
}

/// Errors of a chat call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    /// The request failed or timed out (after retries).
    #[error("Director LLM unreachable at {endpoint}: {message}")]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// What failed.
        message: String,
    },
    /// The server answered with an error status.
    #[error("Director LLM at {endpoint} answered HTTP {status}: {message}")]
    Status {
        /// The endpoint.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// Start of the body.
        message: String,
    },
    /// The answer is not a chat completion.
    #[error("Director LLM answer is malformed: {0}")]
    Malformed(String),
}

/// Parameters of one call.
#[derive(Debug, Clone, Copy)]
pub struct CallOptions {
    /// `max_tokens`.
    pub max_tokens: u32,
    /// `temperature`.
    pub temperature: f32,
    /// Request timeout.
    pub timeout: Duration,
    /// Whether transient failures are retried.
    pub retry: bool,
}

/// The Director model's client.
#[derive(Clone)]
pub struct ChatClient {
    http: reqwest::Client,
    endpoint: String,
    model: String,
    api_key: Option<Secret>,
    retries: u32,
    backoff: Duration,
    default_timeout: Duration,
    redactor: Redactor,
}

impl std::fmt::Debug for ChatClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatClient")
            .field("endpoint", &self.endpoint)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl ChatClient {
    /// A client from the settings. Every message is redacted before it is sent.
    pub fn new(settings: &Settings, redactor: Redactor) -> Self {
        terarchitect_worker_api::ensure_crypto_provider();
        Self {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            endpoint: settings.director_endpoint.clone(),
            model: settings.agent_model.clone(),
            api_key: settings.agent_api_key.clone(),
            retries: settings.limits.llm_retries,
            backoff: settings.limits.retry_backoff,
            default_timeout: settings.limits.llm_timeout,
            redactor,
        }
    }

    /// Options for the main assessment calls.
    pub fn assessment_options(&self) -> CallOptions {
        CallOptions {
            max_tokens: 1024,
            temperature: 0.2,
            timeout: self.default_timeout,
            retry: true,
        }
    }

    /// Options for small auxiliary calls (commit messages, descriptions, replies).
    pub fn aux_options(&self, max_tokens: u32, temperature: f32, timeout: Duration) -> CallOptions {
        CallOptions {
            max_tokens,
            temperature,
            timeout: timeout.min(self.default_timeout),
            retry: false,
        }
    }

    /// Sends the messages and returns `choices[0].message.content`.
    pub async fn chat(
        &self,
        messages: &[ChatMessage],
        opts: CallOptions,
    ) -> Result<String, LlmError> {
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| json!({"role": m.role, "content": self.redactor.redact(&m.content)}))
            .collect();
        let body = json!({
            "model": self.model,
            "messages": messages,
            "max_tokens": opts.max_tokens,
            "temperature": opts.temperature,
        });
        let attempts = if opts.retry { self.retries + 1 } else { 1 };
        let mut delay = self.backoff;
        let mut last = None;
        for attempt in 0..attempts {
            if attempt > 0 {
                tracing::warn!(attempt, error = %last.as_ref().map(ToString::to_string).unwrap_or_default(), "retrying the Director LLM");
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
            }
            match self.once(&body, opts.timeout).await {
                Ok(text) => return Ok(text),
                Err((err, retryable)) => {
                    last = Some(err);
                    if !retryable {
                        break;
                    }
                }
            }
        }
        Err(last.expect("at least one attempt"))
    }

    async fn once(&self, body: &Value, timeout: Duration) -> Result<String, (LlmError, bool)> {
        let mut req = self.http.post(&self.endpoint).timeout(timeout).json(body);
        if let Some(k) = &self.api_key {
            req = req.bearer_auth(k.expose());
        }
        let unreachable = |message: String| LlmError::Unreachable {
            endpoint: self.endpoint.clone(),
            message,
        };
        let resp = req
            .send()
            .await
            .map_err(|e| (unreachable(e.without_url().to_string()), true))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| (unreachable(e.without_url().to_string()), true))?;
        if !status.is_success() {
            let retryable =
                status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408;
            return Err((
                LlmError::Status {
                    endpoint: self.endpoint.clone(),
                    status: status.as_u16(),
                    message: self
                        .redactor
                        .redact(&text.chars().take(300).collect::<String>()),
                },
                retryable,
            ));
        }
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| (LlmError::Malformed(format!("not JSON: {e}")), true))?;
        v.pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| {
                (
                    LlmError::Malformed("no choices[0].message.content".into()),
                    true,
                )
            })
    }
}
