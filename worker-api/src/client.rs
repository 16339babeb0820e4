//! A typed async client for the worker API, used by the operator and the agent.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::types::*;

/// Response header with which this implementation's api-server marks queue answers, so a client
/// can tell it apart from the original app (which has no long poll, leases or heartbeats).
pub const EXTENSIONS_HEADER: &str = "x-terarchitect-queue";

/// Value of [`EXTENSIONS_HEADER`] for the current queue protocol.
pub const EXTENSIONS_VERSION: &str = "2";

/// Errors of the worker API client. Messages never contain the bearer token.
#[derive(Debug, thiserror::Error)]
pub enum WorkerApiError {
    /// The base URL could not be parsed.
    #[error("invalid worker API base URL {url:?}: {reason}")]
    InvalidBaseUrl {
        /// The URL as given.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The request could not be sent or its answer not read.
    #[error("{method} {path}: {source}")]
    Transport {
        /// HTTP method.
        method: Method,
        /// Path of the request.
        path: String,
        /// Underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an unexpected status.
    #[error("{method} {path} answered {status}: {message}")]
    Status {
        /// HTTP method.
        method: Method,
        /// Path of the request.
        path: String,
        /// HTTP status.
        status: StatusCode,
        /// The `error` of a JSON body, or the start of the body.
        message: String,
    },
    /// The body could not be decoded.
    #[error("{method} {path}: could not decode the answer: {source}")]
    Decode {
        /// HTTP method.
        method: Method,
        /// Path of the request.
        path: String,
        /// Underlying error.
        #[source]
        source: serde_json::Error,
    },
}

impl WorkerApiError {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            WorkerApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the server answered 404.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(StatusCode::NOT_FOUND)
    }

    /// Whether trying again later may succeed (network errors, 5xx, 429, 408).
    pub fn is_retryable(&self) -> bool {
        match self {
            WorkerApiError::Transport { .. } => true,
            WorkerApiError::Status { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || *status == StatusCode::REQUEST_TIMEOUT
            }
            _ => false,
        }
    }
}

/// Outcome of a claim.
#[derive(Debug, Clone)]
pub struct ClaimOutcome {
    /// The claimed job, or None on 204.
    pub job: Option<ClaimedJob>,
    /// Whether the server speaks the extended queue protocol (long poll, leases, heartbeats).
    pub server_extensions: bool,
}

/// Outcome of job complete or fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobReport {
    /// The server recorded the outcome.
    Recorded,
    /// 409: the job was not running (already reported, re-queued or reclaimed).
    NotRunning {
        /// The job's current status as the server reported it.
        status: String,
    },
}

/// Outcome of a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    /// The lease was extended.
    Extended(HeartbeatResponse),
    /// 409: the job is no longer running under this claim.
    NotRunning {
        /// The job's current status.
        status: String,
    },
    /// The server has no heartbeat endpoint (the original app).
    Unsupported,
}

/// Outcome of a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// The job is pending again.
    Released,
    /// 409: the job is not running under this claim (finished, re-queued or reclaimed).
    NotRunning {
        /// The job's current status.
        status: String,
    },
    /// The server has no release endpoint (the original app).
    Unsupported,
}

/// Client for the worker API. Cheap to clone.
#[derive(Clone)]
pub struct WorkerApiClient {
    http: reqwest::Client,
    base: String,
    token: Option<SecretString>,
    timeout: Duration,
}

impl std::fmt::Debug for WorkerApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerApiClient")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Installs rustls' ring provider as the process default if none is installed yet.
/// reqwest is built without a provider so the whole workspace shares one TLS backend.
pub fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing the race to another thread installing one is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

impl WorkerApiClient {
    /// A client for the API at `base_url` (e.g. `http://api:5010`), sending `token` as a Bearer
    /// token when it is set and non-empty.
    pub fn new(base_url: &str, token: Option<SecretString>) -> Result<Self, WorkerApiError> {
        ensure_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| WorkerApiError::InvalidBaseUrl {
                url: base_url.to_owned(),
                reason: e.to_string(),
            })?;
        Self::with_http_client(http, base_url, token)
    }

    /// Like [`WorkerApiClient::new`] with a caller-built reqwest client.
    pub fn with_http_client(
        http: reqwest::Client,
        base_url: &str,
        token: Option<SecretString>,
    ) -> Result<Self, WorkerApiError> {
        let trimmed = base_url.trim().trim_end_matches('/');
        let parsed = url::Url::parse(trimmed).map_err(|e| WorkerApiError::InvalidBaseUrl {
            url: base_url.to_owned(),
            reason: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(WorkerApiError::InvalidBaseUrl {
                url: base_url.to_owned(),
                reason: "scheme must be http or https".into(),
            });
        }
        let token = token.filter(|t| !t.expose_secret().trim().is_empty());
        Ok(Self {
            http,
            base: trimmed.to_owned(),
            token,
            timeout: Duration::from_secs(30),
        })
    }

    /// Sets the per-request timeout (default 30 s; long polls add their wait).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .timeout(self.timeout);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token.expose_secret().trim());
        }
        req
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        build: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, WorkerApiError> {
        build(self.request(method.clone(), path))
            .send()
            .await
            .map_err(|source| WorkerApiError::Transport {
                method,
                path: path.to_owned(),
                source,
            })
    }

    async fn read_json<T: DeserializeOwned>(
        method: Method,
        path: &str,
        resp: Response,
    ) -> Result<T, WorkerApiError> {
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| WorkerApiError::Transport {
                method: method.clone(),
                path: path.to_owned(),
                source,
            })?;
        serde_json::from_slice(&bytes).map_err(|source| WorkerApiError::Decode {
            method,
            path: path.to_owned(),
            source,
        })
    }

    async fn status_error(method: Method, path: &str, resp: Response) -> WorkerApiError {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| body.chars().take(300).collect());
        WorkerApiError::Status {
            method,
            path: path.to_owned(),
            status,
            message,
        }
    }

    /// Sends a JSON body and decodes a 2xx JSON answer.
    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, WorkerApiError> {
        let resp = self
            .send(method.clone(), path, |r| match body {
                Some(b) => r.json(b),
                None => r,
            })
            .await?;
        if !resp.status().is_success() {
            return Err(Self::status_error(method, path, resp).await);
        }
        Self::read_json(method, path, resp).await
    }

    /// `GET /health`.
    pub async fn health(&self) -> Result<serde_json::Value, WorkerApiError> {
        self.call::<(), _>(Method::GET, "/health", None).await
    }

    /// `GET /api/settings` (used for `MAX_CONCURRENT_AGENTS`).
    pub async fn settings(
        &self,
    ) -> Result<serde_json::Map<String, serde_json::Value>, WorkerApiError> {
        self.call::<(), _>(Method::GET, "/api/settings", None).await
    }

    /// `POST /api/worker/jobs/start`: claims one pending job.
    pub async fn claim_job(&self, req: &ClaimRequest) -> Result<ClaimOutcome, WorkerApiError> {
        let path = "/api/worker/jobs/start";
        let wait = Duration::from_secs(u64::from(req.wait_seconds.unwrap_or(0)));
        let resp = self
            .send(Method::POST, path, |r| {
                r.timeout(self.timeout + wait).json(req)
            })
            .await?;
        let server_extensions = resp
            .headers()
            .get(EXTENSIONS_HEADER)
            .is_some_and(|v| v.as_bytes() == EXTENSIONS_VERSION.as_bytes());
        match resp.status() {
            StatusCode::NO_CONTENT => Ok(ClaimOutcome {
                job: None,
                server_extensions,
            }),
            s if s.is_success() => Ok(ClaimOutcome {
                job: Some(Self::read_json(Method::POST, path, resp).await?),
                server_extensions,
            }),
            _ => Err(Self::status_error(Method::POST, path, resp).await),
        }
    }

    async fn transition<B: Serialize>(
        &self,
        job_id: Uuid,
        verb: &str,
        body: &B,
    ) -> Result<JobReport, WorkerApiError> {
        let path = format!("/api/worker/jobs/{job_id}/{verb}");
        let resp = self.send(Method::POST, &path, |r| r.json(body)).await?;
        match resp.status() {
            s if s.is_success() => Ok(JobReport::Recorded),
            StatusCode::CONFLICT => {
                let conflict: JobConflict = Self::read_json(Method::POST, &path, resp).await?;
                Ok(JobReport::NotRunning {
                    status: conflict.status,
                })
            }
            _ => Err(Self::status_error(Method::POST, &path, resp).await),
        }
    }

    /// `POST /api/worker/jobs/<id>/complete`.
    pub async fn complete_job(
        &self,
        job_id: Uuid,
        req: &CompleteJobRequest,
    ) -> Result<JobReport, WorkerApiError> {
        self.transition(job_id, "complete", req).await
    }

    /// `POST /api/worker/jobs/<id>/fail`.
    pub async fn fail_job(
        &self,
        job_id: Uuid,
        req: &FailRequest,
    ) -> Result<JobReport, WorkerApiError> {
        self.transition(job_id, "fail", req).await
    }

    /// `POST /api/worker/jobs/<id>/heartbeat`.
    pub async fn heartbeat(
        &self,
        job_id: Uuid,
        req: &HeartbeatRequest,
    ) -> Result<HeartbeatOutcome, WorkerApiError> {
        let path = format!("/api/worker/jobs/{job_id}/heartbeat");
        let resp = self.send(Method::POST, &path, |r| r.json(req)).await?;
        let extended = resp.headers().contains_key(EXTENSIONS_HEADER);
        match resp.status() {
            s if s.is_success() => Ok(HeartbeatOutcome::Extended(
                Self::read_json(Method::POST, &path, resp).await?,
            )),
            StatusCode::CONFLICT => {
                let conflict: JobConflict = Self::read_json(Method::POST, &path, resp).await?;
                Ok(HeartbeatOutcome::NotRunning {
                    status: conflict.status,
                })
            }
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED if !extended => {
                Ok(HeartbeatOutcome::Unsupported)
            }
            _ => Err(Self::status_error(Method::POST, &path, resp).await),
        }
    }

    /// `POST /api/worker/jobs/<id>/release` (an addition): gives a running job back to the queue.
    /// A 404 or 405 from a server that does not speak the extended protocol is `Unsupported`;
    /// from one that does, a 404 is an error (no such job).
    pub async fn release_job(
        &self,
        job_id: Uuid,
        req: &ReleaseJobRequest,
    ) -> Result<ReleaseOutcome, WorkerApiError> {
        let path = format!("/api/worker/jobs/{job_id}/release");
        let resp = self.send(Method::POST, &path, |r| r.json(req)).await?;
        let extended = resp.headers().contains_key(EXTENSIONS_HEADER);
        match resp.status() {
            s if s.is_success() => Ok(ReleaseOutcome::Released),
            StatusCode::CONFLICT => {
                let conflict: JobConflict = Self::read_json(Method::POST, &path, resp).await?;
                Ok(ReleaseOutcome::NotRunning {
                    status: conflict.status,
                })
            }
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED if !extended => {
                Ok(ReleaseOutcome::Unsupported)
            }
            _ => Err(Self::status_error(Method::POST, &path, resp).await),
        }
    }

    /// `GET /api/worker/jobs/<id>`.
    pub async fn job(&self, job_id: Uuid) -> Result<JobState, WorkerApiError> {
        self.call::<(), _>(Method::GET, &format!("/api/worker/jobs/{job_id}"), None)
            .await
    }

    /// `GET …/worker-context`.
    pub async fn worker_context(
        &self,
        project_id: Uuid,
        ticket_id: Uuid,
    ) -> Result<WorkerContext, WorkerApiError> {
        let path = format!("/api/projects/{project_id}/tickets/{ticket_id}/worker-context");
        self.call::<(), _>(Method::GET, &path, None).await
    }

    /// `POST …/logs`.
    pub async fn post_log(
        &self,
        project_id: Uuid,
        ticket_id: Uuid,
        entry: &LogEntry,
    ) -> Result<LogResponse, WorkerApiError> {
        let path = format!("/api/projects/{project_id}/tickets/{ticket_id}/logs");
        self.call(Method::POST, &path, Some(entry)).await
    }

    /// `POST …/complete` (the ticket, not the queue job).
    pub async fn complete_ticket(
        &self,
        project_id: Uuid,
        ticket_id: Uuid,
        req: &CompleteTicketRequest,
    ) -> Result<CompleteTicketResponse, WorkerApiError> {
        let path = format!("/api/projects/{project_id}/tickets/{ticket_id}/complete");
        self.call(Method::POST, &path, Some(req)).await
    }

    /// `GET …/cancel-requested`.
    pub async fn cancel_requested(
        &self,
        project_id: Uuid,
        ticket_id: Uuid,
    ) -> Result<bool, WorkerApiError> {
        let path = format!("/api/projects/{project_id}/tickets/{ticket_id}/cancel-requested");
        let answer: CancelRequested = self.call::<(), _>(Method::GET, &path, None).await?;
        Ok(answer.cancel_requested)
    }

    /// `POST /api/projects/<pid>/memory/retrieve`.
    pub async fn memory_retrieve(
        &self,
        project_id: Uuid,
        req: &MemoryRetrieveRequest,
    ) -> Result<MemoryRetrieveResponse, WorkerApiError> {
        let path = format!("/api/projects/{project_id}/memory/retrieve");
        self.call(Method::POST, &path, Some(req)).await
    }

    /// `POST /api/projects/<pid>/memory/index`.
    pub async fn memory_index(
        &self,
        project_id: Uuid,
        docs: Vec<String>,
    ) -> Result<MemoryDocsResponse, WorkerApiError> {
        let path = format!("/api/projects/{project_id}/memory/index");
        self.call(Method::POST, &path, Some(&MemoryDocsRequest { docs }))
            .await
    }

    /// `POST /api/projects/<pid>/tickets/<tid>/review-jobs`: enqueues a review job.
    pub async fn enqueue_review_job(
        &self,
        project_id: Uuid,
        ticket_id: Uuid,
        req: &EnqueueReviewRequest,
    ) -> Result<JobState, WorkerApiError> {
        let path = format!("/api/projects/{project_id}/tickets/{ticket_id}/review-jobs");
        self.call(Method::POST, &path, Some(req)).await
    }
}
