//! The PR poller: every `TERARCHITECT_PR_POLL_SEC` seconds, one replica (holding the
//! `pr-poller` lease) looks at the pull request of every ticket in review. Unlike the original
//! it reads every page, asks conditionally (a 304 costs no rate limit), stops for the rate limit
//! when GitHub says so, starts with a cycle instead of a sleep, and logs and counts each cycle.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::store::{self, GhComment, ReviewTarget};
use super::sync::{approved, comment_from_json};
use super::{Review, ReviewError, repo_slug};
use crate::github::GitHubError;

/// Name of the poller's lease.
pub const LEASE: &str = "pr-poller";
/// Calls the poller leaves to the UI and the webhook: below this it waits for the reset.
pub const RATE_RESERVE: u64 = 50;
/// Pull requests polled at the same time.
pub const POLL_CONCURRENCY: usize = 4;

/// What one cycle did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CycleReport {
    /// Pull requests looked at.
    pub prs: u64,
    /// Tickets moved to done.
    pub done: u64,
    /// Review jobs enqueued.
    pub enqueued: u64,
    /// Pull requests whose every read was answered 304 Not Modified.
    pub not_modified: u64,
    /// Pull requests skipped after an error (logged).
    pub errors: u64,
    /// Set when the cycle stopped for the rate limit: how long until GitHub accepts calls.
    pub rate_limited: Option<Duration>,
}

impl CycleReport {
    fn count(&mut self, outcome: PrOutcome) {
        self.prs += 1;
        match outcome {
            PrOutcome::Done => self.done += 1,
            PrOutcome::Closed => {}
            PrOutcome::Synced {
                enqueued,
                not_modified,
            } => {
                self.enqueued += u64::from(enqueued);
                self.not_modified += u64::from(not_modified);
            }
        }
    }

    fn outcome(&self) -> &'static str {
        match (self.rate_limited, self.errors) {
            (Some(_), _) => "rate_limited",
            (None, 0) => "ok",
            (None, _) => "partial",
        }
    }
}

/// What polling one pull request did.
enum PrOutcome {
    Done,
    Closed,
    Synced { enqueued: bool, not_modified: bool },
}

impl Review {
    /// Runs one poller cycle over every pull request of a ticket in review.
    pub async fn poll_once(&self) -> Result<CycleReport, ReviewError> {
        let started = Instant::now();
        let token = self.token().await?;
        let targets = store::in_review_prs(self.db()).await?;
        let mut report = CycleReport::default();
        let token: Option<std::sync::Arc<str>> = token.map(Into::into);
        // A few pull requests at a time; in-flight ones are dropped when the limit is hit.
        let mut polls = futures::stream::iter(targets.iter().cloned())
            .map(|target| {
                let token = token.clone();
                async move {
                    let limits = self.github().limits();
                    let result = match limits
                        .blocked_for()
                        .or_else(|| limits.below_reserve(RATE_RESERVE))
                    {
                        Some(retry_after) => Err(GitHubError::RateLimited { retry_after }.into()),
                        None => self.poll_pr(&target, token.as_deref()).await,
                    };
                    (target, result)
                }
            })
            .buffer_unordered(POLL_CONCURRENCY);
        while let Some((target, result)) = polls.next().await {
            match result {
                Ok(outcome) => report.count(outcome),
                Err(ReviewError::GitHub(e)) if e.retry_after().is_some() => {
                    report.rate_limited = e.retry_after();
                    break;
                }
                Err(e) => {
                    report.prs += 1;
                    report.errors += 1;
                    tracing::warn!(
                        ticket_id = %target.ticket_id,
                        pr_number = target.pr_number,
                        error = %e,
                        "PR poller: skipping this pull request"
                    );
                }
            }
        }
        drop(polls);
        let elapsed = started.elapsed();
        self.metrics()
            .poll_cycle(report.outcome(), elapsed.as_secs_f64(), report.prs);
        tracing::info!(
            prs = report.prs,
            in_review = targets.len(),
            done = report.done,
            enqueued = report.enqueued,
            not_modified = report.not_modified,
            errors = report.errors,
            rate_limited_sec = report.rate_limited.map(|d| d.as_secs()),
            rate_remaining = self.github().limits().remaining(),
            elapsed_ms = elapsed.as_millis() as u64,
            "PR poll cycle"
        );
        Ok(report)
    }

    async fn poll_pr(
        &self,
        target: &ReviewTarget,
        token: Option<&str>,
    ) -> Result<PrOutcome, ReviewError> {
        let Some(slug) = target.github_url.as_deref().and_then(repo_slug) else {
            return Ok(PrOutcome::Closed);
        };
        let n = target.pr_number;
        let gh = self.github();
        let pull = gh.get(token, &format!("/repos/{slug}/pulls/{n}")).await?;
        if pull.value.get("merged").and_then(Value::as_bool) == Some(true) {
            self.finish(target, "poller", "merged").await?;
            return Ok(PrOutcome::Done);
        }
        if pull.value.get("state").and_then(Value::as_str) == Some("closed") {
            return Ok(PrOutcome::Closed);
        }
        let paths = [
            format!("/repos/{slug}/pulls/{n}/reviews"),
            format!("/repos/{slug}/issues/{n}/comments"),
            format!("/repos/{slug}/pulls/{n}/comments"),
        ];
        let (reviews, issue, lines) = tokio::try_join!(
            gh.get_all(token, &paths[0]),
            gh.get_all(token, &paths[1]),
            gh.get_all(token, &paths[2]),
        )?;
        if approved(&reviews.value) {
            self.finish(target, "poller", "approved").await?;
            return Ok(PrOutcome::Done);
        }
        let comments: Vec<GhComment> = issue
            .value
            .iter()
            .chain(&lines.value)
            .chain(&reviews.value)
            .filter_map(comment_from_json)
            .collect();
        let applied = self.apply_comments(target, &comments, "poller").await?;
        Ok(PrOutcome::Synced {
            enqueued: applied.enqueued.is_some(),
            not_modified: pull.not_modified
                && reviews.not_modified
                && issue.not_modified
                && lines.not_modified,
        })
    }
}

/// Runs the poller until `shutdown`: a cycle at start, then every `interval` (longer while
/// GitHub's rate limit is exhausted), only while this replica holds the lease.
pub async fn run(review: Arc<Review>, interval: Duration, shutdown: CancellationToken) {
    tracing::info!(
        interval_sec = interval.as_secs(),
        github_api = review.github().api_base(),
        "PR poller started (one replica polls at a time)"
    );
    loop {
        let mut delay = interval;
        let ttl = interval * 2 + Duration::from_secs(30);
        match store::try_lease(review.db(), LEASE, review.holder(), ttl).await {
            Ok(true) => match review.poll_once().await {
                Ok(report) => {
                    if let Some(wait) = report.rate_limited {
                        delay = delay.max(wait);
                        // Keep the lease over the longer pause.
                        let ttl = delay * 2 + Duration::from_secs(30);
                        let _ = store::try_lease(review.db(), LEASE, review.holder(), ttl).await;
                    }
                }
                Err(e) => {
                    review.metrics().poll_cycle("failed", 0.0, 0);
                    tracing::warn!(error = %e, "PR poll cycle failed");
                }
            },
            Ok(false) => tracing::debug!("PR poller: another replica holds the lease"),
            Err(e) => tracing::warn!(error = %e, "PR poller: cannot read the lease"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    if let Err(e) = store::release_lease(review.db(), LEASE, review.holder()).await {
        tracing::debug!(error = %e, "PR poller: could not release the lease");
    }
}
