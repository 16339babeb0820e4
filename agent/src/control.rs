//! Cancellation and time limits. [`RunControl::check`] is called between turns;
//! [`RunControl::guard`] wraps long calls (worker turns, Director requests) and interrupts them
//! when the ticket's cancellation is requested (polled from the API), when the agent is told to
//! stop (SIGTERM/SIGINT), or when the run's time limit passes.

use std::future::Future;
use std::time::Duration;

use terarchitect_worker_api::AgentOutcome;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::Reporter;
use crate::error::Failure;

/// Decides whether the run may go on.
#[derive(Clone, Debug)]
pub struct RunControl {
    stop: CancellationToken,
    deadline: Option<Instant>,
    time_limit: Option<Duration>,
    poll: Duration,
    reporter: Reporter,
}

impl RunControl {
    /// A control for a run that started now.
    pub fn new(
        stop: CancellationToken,
        time_limit: Option<Duration>,
        poll: Duration,
        reporter: Reporter,
    ) -> Self {
        Self {
            stop,
            deadline: time_limit.map(|l| Instant::now() + l),
            time_limit,
            poll,
            reporter,
        }
    }

    fn stopped(&self) -> Failure {
        Failure::cancelled("the agent was told to stop (termination signal)")
    }

    fn cancelled(&self, during: &str) -> Failure {
        Failure::cancelled(format!("cancellation requested {during}"))
    }

    fn over_time(&self) -> Failure {
        Failure::new(
            AgentOutcome::TimeLimit,
            format!(
                "the run exceeded its time limit of {:?} (AGENT_TIME_LIMIT_SEC)",
                self.time_limit.unwrap_or_default()
            ),
        )
    }

    /// Fails when the run must stop now; `during` says where (for the message).
    pub async fn check(&self, during: &str) -> Result<(), Failure> {
        if self.stop.is_cancelled() {
            return Err(self.stopped());
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(self.over_time());
        }
        if self.reporter.cancel_requested().await {
            return Err(self.cancelled(during));
        }
        Ok(())
    }

    /// Runs `fut` unless the run is stopped first; the future is dropped when it is.
    pub async fn guard<T>(&self, during: &str, fut: impl Future<Output = T>) -> Result<T, Failure> {
        let poll = async {
            loop {
                tokio::time::sleep(self.poll).await;
                if self.reporter.cancel_requested().await {
                    return;
                }
            }
        };
        let deadline = async {
            match self.deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => Err(self.stopped()),
            v = fut => Ok(v),
            _ = deadline => Err(self.over_time()),
            _ = poll => Err(self.cancelled(during)),
        }
    }

    /// Time left before the run's time limit, if it has one.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }
}
