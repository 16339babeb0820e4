//! How an agent run ends: the exit codes of `terarchitect-agent` and the reason names the
//! operator reports to the queue. The agent also writes a one-line summary
//! (`<Reason>: <message>`) to its termination-message file, which Kubernetes copies into the
//! pod status, so the operator can report the reason and message without reading logs.

use std::fmt;

/// The outcome of an agent run, one per exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentOutcome {
    /// The work finished: a pull request is open (ticket) or the reply is posted (review).
    Succeeded,
    /// An unexpected failure.
    Failed,
    /// Missing or malformed input or configuration.
    Misconfigured,
    /// The ticket's cancellation was requested.
    Cancelled,
    /// The Director used all its turns without finishing.
    TurnLimit,
    /// The run or a worker call exceeded its time limit.
    TimeLimit,
    /// Cloning or checking out the repository failed.
    CloneFailed,
    /// Pushing the branch failed.
    PushFailed,
    /// Opening the pull request (or posting the review reply) failed.
    PullRequestFailed,
    /// The worker (OpenCode or Claude Code) was unavailable.
    WorkerUnavailable,
    /// The Director LLM failed or kept answering malformed output.
    DirectorFailed,
    /// The worker API could not be reached or refused the agent.
    ApiUnavailable,
}

impl AgentOutcome {
    /// Every outcome.
    pub const ALL: [AgentOutcome; 12] = [
        AgentOutcome::Succeeded,
        AgentOutcome::Failed,
        AgentOutcome::Misconfigured,
        AgentOutcome::Cancelled,
        AgentOutcome::TurnLimit,
        AgentOutcome::TimeLimit,
        AgentOutcome::CloneFailed,
        AgentOutcome::PushFailed,
        AgentOutcome::PullRequestFailed,
        AgentOutcome::WorkerUnavailable,
        AgentOutcome::DirectorFailed,
        AgentOutcome::ApiUnavailable,
    ];

    /// The process exit code.
    pub fn exit_code(self) -> i32 {
        match self {
            AgentOutcome::Succeeded => 0,
            AgentOutcome::Failed => 1,
            AgentOutcome::Misconfigured => 2,
            AgentOutcome::Cancelled => 3,
            AgentOutcome::TurnLimit => 4,
            AgentOutcome::TimeLimit => 5,
            AgentOutcome::CloneFailed => 6,
            AgentOutcome::PushFailed => 7,
            AgentOutcome::PullRequestFailed => 8,
            AgentOutcome::WorkerUnavailable => 9,
            AgentOutcome::DirectorFailed => 10,
            AgentOutcome::ApiUnavailable => 11,
        }
    }

    /// The outcome of an exit code (unknown non-zero codes are `Failed`).
    pub fn from_exit_code(code: i32) -> Self {
        Self::ALL
            .into_iter()
            .find(|o| o.exit_code() == code)
            .unwrap_or(AgentOutcome::Failed)
    }

    /// The reason name (`PushFailed`, …).
    pub fn reason(self) -> &'static str {
        match self {
            AgentOutcome::Succeeded => "Succeeded",
            AgentOutcome::Failed => "AgentFailed",
            AgentOutcome::Misconfigured => "Misconfigured",
            AgentOutcome::Cancelled => "Cancelled",
            AgentOutcome::TurnLimit => "TurnLimit",
            AgentOutcome::TimeLimit => "TimeLimit",
            AgentOutcome::CloneFailed => "CloneFailed",
            AgentOutcome::PushFailed => "PushFailed",
            AgentOutcome::PullRequestFailed => "PullRequestFailed",
            AgentOutcome::WorkerUnavailable => "WorkerUnavailable",
            AgentOutcome::DirectorFailed => "DirectorFailed",
            AgentOutcome::ApiUnavailable => "ApiUnavailable",
        }
    }

    /// The outcome named `reason`.
    pub fn from_reason(reason: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.reason() == reason)
    }

    /// The termination-message line for this outcome.
    pub fn message_line(self, message: &str) -> String {
        let one_line: String = message.split_whitespace().collect::<Vec<_>>().join(" ");
        format!("{}: {}", self.reason(), one_line)
    }

    /// Parses a termination-message line written by [`AgentOutcome::message_line`].
    pub fn parse_message_line(line: &str) -> Option<(Self, String)> {
        let (reason, message) = line.trim().split_once(':')?;
        Some((Self::from_reason(reason.trim())?, message.trim().to_owned()))
    }
}

impl fmt::Display for AgentOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_reasons_round_trip() {
        for o in AgentOutcome::ALL {
            assert_eq!(AgentOutcome::from_exit_code(o.exit_code()), o);
            assert_eq!(AgentOutcome::from_reason(o.reason()), Some(o));
        }
        assert_eq!(AgentOutcome::from_exit_code(137), AgentOutcome::Failed);
        let line = AgentOutcome::PushFailed.message_line("git push\nrejected:  non-fast-forward");
        assert_eq!(line, "PushFailed: git push rejected: non-fast-forward");
        assert_eq!(
            AgentOutcome::parse_message_line(&line),
            Some((
                AgentOutcome::PushFailed,
                "git push rejected: non-fast-forward".into()
            ))
        );
        assert_eq!(AgentOutcome::parse_message_line("garbage"), None);
    }
}
