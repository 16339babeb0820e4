//! How a run fails: an [`AgentOutcome`] plus a message, and the step name logged for it.

use terarchitect_worker_api::AgentOutcome;

/// A run that stopped before finishing its work. The message is safe to log (redacted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{outcome}: {message}")]
pub struct Failure {
    /// Exit code and reason.
    pub outcome: AgentOutcome,
    /// What happened, in one or a few lines.
    pub message: String,
    /// Step name of the final log entry, when it differs from the outcome's default.
    pub step: Option<&'static str>,
    /// Longer detail for the final log entry's raw output (e.g. the tail of OpenCode's log).
    pub detail: Option<String>,
}

impl Failure {
    /// A failure with the outcome's default log step.
    pub fn new(outcome: AgentOutcome, message: impl Into<String>) -> Self {
        Self {
            outcome,
            message: message.into(),
            step: None,
            detail: None,
        }
    }

    /// Adds detail for the final log entry's raw output.
    pub fn with_detail(mut self, detail: Option<String>) -> Self {
        self.detail = detail;
        self
    }

    /// Overrides the step name of the final log entry.
    pub fn with_step(mut self, step: &'static str) -> Self {
        self.step = Some(step);
        self
    }

    /// Missing or malformed input or configuration.
    pub fn misconfigured(message: impl Into<String>) -> Self {
        Self::new(AgentOutcome::Misconfigured, message)
    }

    /// The ticket's cancellation was requested (or the agent was told to stop).
    pub fn cancelled(message: impl Into<String>) -> Self {
        Self::new(AgentOutcome::Cancelled, message)
    }

    /// The step name posted to `/logs` for this failure.
    pub fn step(&self) -> &'static str {
        self.step.unwrap_or(match self.outcome {
            AgentOutcome::Succeeded => "finished",
            AgentOutcome::Failed => "agent_failed",
            AgentOutcome::Misconfigured => "misconfigured",
            AgentOutcome::Cancelled => "cancelled",
            AgentOutcome::TurnLimit => "turn_limit",
            AgentOutcome::TimeLimit => "time_limit",
            AgentOutcome::CloneFailed => "clone_failed",
            AgentOutcome::PushFailed => "push_failed",
            AgentOutcome::PullRequestFailed => "pr_failed",
            AgentOutcome::WorkerUnavailable => "worker_unavailable",
            AgentOutcome::DirectorFailed => "director_failed",
            AgentOutcome::ApiUnavailable => "api_unavailable",
        })
    }
}

/// How a whole run ended: the outcome (exit code) and the message of the termination line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunResult {
    /// Exit code and reason.
    pub outcome: AgentOutcome,
    /// One-line description.
    pub message: String,
}

impl RunResult {
    /// A successful run.
    pub fn succeeded(message: impl Into<String>) -> Self {
        Self {
            outcome: AgentOutcome::Succeeded,
            message: message.into(),
        }
    }

    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        self.outcome.exit_code()
    }
}

impl From<Failure> for RunResult {
    fn from(f: Failure) -> Self {
        Self {
            outcome: f.outcome,
            message: f.message,
        }
    }
}
