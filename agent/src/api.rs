//! The agent's use of the worker API: loading the worker context, posting log entries, polling
//! the cancel flag and completing the ticket. Everything sent is redacted first.

use std::time::Duration;

use terarchitect_worker_api::{
    AgentOutcome, CompleteTicketRequest, LogEntry, WorkerApiClient, WorkerApiError, WorkerContext,
};
use uuid::Uuid;

use crate::error::Failure;
use crate::redact::Redactor;
use crate::trace::Trace;

/// Largest `raw_output` posted with a log entry (characters).
pub const MAX_RAW_OUTPUT: usize = 200_000;

/// Cuts `text` to at most `max` characters.
pub fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => text[..i].to_owned(),
        None => text.to_owned(),
    }
}

/// Loads the worker context, retrying transient failures `attempts` times.
pub async fn load_context(
    client: &WorkerApiClient,
    project_id: Uuid,
    ticket_id: Uuid,
    attempts: u32,
    backoff: Duration,
) -> Result<WorkerContext, Failure> {
    let mut delay = backoff;
    let mut attempt = 1;
    loop {
        match client.worker_context(project_id, ticket_id).await {
            Ok(ctx) => return Ok(ctx),
            Err(e) if e.is_retryable() && attempt < attempts => {
                tracing::warn!(error = %e, attempt, "worker-context failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(e) => {
                let outcome = match e.status().map(|s| s.as_u16()) {
                    Some(404) => AgentOutcome::Misconfigured,
                    _ => AgentOutcome::ApiUnavailable,
                };
                return Err(Failure::new(
                    outcome,
                    format!("could not load the worker context: {e}"),
                ));
            }
        }
    }
}

/// Posts the run's log entries and talks to the ticket endpoints, for one Director session.
#[derive(Clone, Debug)]
pub struct Reporter {
    client: WorkerApiClient,
    project_id: Uuid,
    ticket_id: Uuid,
    session_id: String,
    redactor: Redactor,
    trace: Trace,
}

impl Reporter {
    /// A reporter for one session.
    pub fn new(
        client: WorkerApiClient,
        project_id: Uuid,
        ticket_id: Uuid,
        session_id: String,
        redactor: Redactor,
        trace: Trace,
    ) -> Self {
        Self {
            client,
            project_id,
            ticket_id,
            session_id,
            redactor,
            trace,
        }
    }

    /// The Director session id.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The redactor in use.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// The trace file.
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// The worker API client.
    pub fn client(&self) -> &WorkerApiClient {
        &self.client
    }

    /// The project id.
    pub fn project_id(&self) -> Uuid {
        self.project_id
    }

    /// Posts a log entry (redacted). Failures are logged locally and otherwise ignored: the
    /// run goes on without its log rather than stopping.
    pub async fn log(&self, step: &str, summary: &str, raw_output: Option<&str>) {
        self.post(step, summary, raw_output, None).await;
    }

    /// Posts the final entry of a failed run (`success: false`), redacted like [`Reporter::log`].
    pub async fn log_failure(&self, step: &str, summary: &str, raw_output: Option<&str>) {
        self.post(step, summary, raw_output, Some(false)).await;
    }

    async fn post(
        &self,
        step: &str,
        summary: &str,
        raw_output: Option<&str>,
        success: Option<bool>,
    ) {
        let summary = self.redactor.redact(summary);
        tracing::info!(step, summary = %truncate_chars(&summary, 300), "step");
        let entry = LogEntry {
            session_id: self.session_id.clone(),
            step: Some(step.to_owned()),
            summary: Some(summary),
            raw_output: raw_output
                .map(|r| truncate_chars(&self.redactor.redact(r), MAX_RAW_OUTPUT)),
            success,
        };
        if let Some(raw) = &entry.raw_output {
            self.trace.write(&format!("[{step}]"), raw);
        }
        for attempt in 1..=2 {
            match self
                .client
                .post_log(self.project_id, self.ticket_id, &entry)
                .await
            {
                Ok(_) => return,
                Err(e) if e.is_retryable() && attempt == 1 => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    tracing::warn!(step, error = %self.redactor.redact(&e.to_string()), "could not post the log entry");
                    return;
                }
            }
        }
    }

    /// Whether the ticket's cancellation was requested (false when the API cannot say).
    pub async fn cancel_requested(&self) -> bool {
        match self
            .client
            .cancel_requested(self.project_id, self.ticket_id)
            .await
        {
            Ok(flag) => flag,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the cancel flag");
                false
            }
        }
    }

    /// Completes the ticket, retrying transient failures.
    pub async fn complete(&self, req: CompleteTicketRequest) -> Result<(), Failure> {
        let req = CompleteTicketRequest {
            summary: req.summary.map(|s| self.redactor.redact(&s)),
            review_comment_body: req.review_comment_body.map(|s| self.redactor.redact(&s)),
            ..req
        };
        let mut last: Option<WorkerApiError> = None;
        for attempt in 0..4u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            }
            match self
                .client
                .complete_ticket(self.project_id, self.ticket_id, &req)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if e.is_retryable() => last = Some(e),
                Err(e) => {
                    last = Some(e);
                    break;
                }
            }
        }
        Err(Failure::new(
            AgentOutcome::ApiUnavailable,
            format!(
                "could not complete the ticket: {}",
                last.map(|e| e.to_string()).unwrap_or_default()
            ),
        ))
    }
}
