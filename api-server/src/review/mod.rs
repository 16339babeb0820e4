//! The review loop: pull requests of tickets in review are watched on GitHub (by the PR poller
//! and, immediately, through webhooks). A merged or approved pull request moves its ticket to
//! done; a new human comment enqueues one `review` job, whose completion marks the comment
//! addressed. Bot replies carry [`BOT_SIGNATURE`] and are never enqueued.

pub mod metrics;
pub mod poller;
pub mod slug;
pub mod store;
pub mod sync;
pub mod view;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::db::{Db, DbError, JobRow, NewReviewJob};
use crate::github::GitHubClient;
use crate::queue::JobEvents;
use crate::settings::Settings;
pub use metrics::ReviewMetrics;
pub use poller::CycleReport;
pub use slug::repo_slug;
use store::{GhComment, ReviewTarget};

/// The signature the agent appends to its pull request replies.
pub const BOT_SIGNATURE: &str = "<!-- terarchitect-bot -->";
/// Failed review jobs after which a comment is no longer enqueued.
pub const MAX_REVIEW_FAILURES: i64 = 3;

/// Options of the review loop.
#[derive(Clone, clap::Args)]
pub struct ReviewArgs {
    /// GitHub REST API base URL (GitHub Enterprise: `https://HOST/api/v3`).
    #[arg(
        long = "github-api-url",
        env = "GITHUB_API_URL",
        default_value = "https://api.github.com"
    )]
    pub github_api_url: String,

    /// Seconds between PR poller cycles (0 turns the poller off). At most one replica polls at
    /// a time (a lease in the database).
    #[arg(
        long = "pr-poll-sec",
        env = "TERARCHITECT_PR_POLL_SEC",
        default_value_t = 600
    )]
    pub pr_poll_sec: u64,

    /// Secret of the GitHub webhook (`POST /api/github/webhook`); without it the endpoint
    /// answers 503.
    #[arg(
        long = "github-webhook-secret",
        env = "GITHUB_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    pub github_webhook_secret: Option<String>,

    /// How long webhook delivery ids are remembered to ignore redeliveries, in hours.
    #[arg(
        long = "webhook-delivery-retention-hours",
        env = "TERARCHITECT_WEBHOOK_DELIVERY_RETENTION_HOURS",
        default_value_t = 72
    )]
    pub delivery_retention_hours: u32,
}

impl Default for ReviewArgs {
    fn default() -> Self {
        Self {
            github_api_url: "https://api.github.com".into(),
            pr_poll_sec: 0,
            github_webhook_secret: None,
            delivery_retention_hours: 72,
        }
    }
}

/// Shows the options but not the webhook secret.
impl std::fmt::Debug for ReviewArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReviewArgs")
            .field("github_api_url", &self.github_api_url)
            .field("pr_poll_sec", &self.pr_poll_sec)
            .field(
                "github_webhook_secret",
                &self.github_webhook_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("delivery_retention_hours", &self.delivery_retention_hours)
            .finish()
    }
}

/// Errors of the review loop.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// Storage failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// GitHub failed.
    #[error(transparent)]
    GitHub(#[from] crate::github::GitHubError),
}

/// The review loop's shared state and logic (used by the poller, the webhook and the UI's
/// review endpoints).
#[derive(Debug)]
pub struct Review {
    db: Db,
    settings: Arc<Settings>,
    events: JobEvents,
    metrics: ReviewMetrics,
    github: GitHubClient,
    args: ReviewArgs,
    holder: String,
}

/// What applying comments did.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// The review job enqueued, if one was.
    pub enqueued: Option<JobRow>,
}

impl Review {
    /// The review loop over `db`, with GitHub at `args.github_api_url`.
    pub fn new(
        db: Db,
        settings: Arc<Settings>,
        events: JobEvents,
        metrics: ReviewMetrics,
        args: ReviewArgs,
    ) -> Result<Self, reqwest::Error> {
        let github = GitHubClient::new(&args.github_api_url, metrics.clone())?;
        if args
            .github_webhook_secret
            .as_deref()
            .is_none_or(str::is_empty)
        {
            tracing::info!(
                "GitHub webhook off (no GITHUB_WEBHOOK_SECRET): POST /api/github/webhook answers 503"
            );
        }
        let host = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "api-server".into());
        Ok(Self {
            db,
            settings,
            events,
            metrics,
            github,
            args,
            holder: format!("{host}-{}", Uuid::new_v4().simple()),
        })
    }

    /// The GitHub client.
    pub fn github(&self) -> &GitHubClient {
        &self.github
    }

    /// The options.
    pub fn args(&self) -> &ReviewArgs {
        &self.args
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The metrics.
    pub fn metrics(&self) -> &ReviewMetrics {
        &self.metrics
    }

    /// The GitHub token: the `github_agent_token` setting, else `GITHUB_TOKEN`, `GH_TOKEN`,
    /// `GITHUB_AGENT_TOKEN` from the environment.
    pub async fn token(&self) -> Result<Option<String>, DbError> {
        Ok(self
            .settings
            .resolve()
            .await?
            .github_token()
            .map(|t| t.trim().to_owned()))
    }

    /// The webhook secret, when configured.
    pub fn webhook_secret(&self) -> Option<&str> {
        self.args
            .github_webhook_secret
            .as_deref()
            .filter(|s| !s.is_empty())
    }

    /// Upserts comments of the target's pull request, marks bot replies addressed, and enqueues
    /// a review job for the newest unaddressed human comment unless the ticket already has a
    /// pending or running job. `source` labels the metric.
    pub async fn apply_comments(
        &self,
        target: &ReviewTarget,
        comments: &[GhComment],
        source: &str,
    ) -> Result<Applied, DbError> {
        store::upsert_comments(&self.db, target, comments).await?;
        let Some(open) = store::next_open_comment(&self.db, target, MAX_REVIEW_FAILURES).await?
        else {
            return Ok(Applied::default());
        };
        let job = NewReviewJob {
            pr_number: target.pr_number,
            comment_body: open.body,
            github_comment_id: Some(open.github_comment_id),
        };
        match self
            .db
            .enqueue_review_job(target.project_id, target.ticket_id, &job)
            .await
        {
            Ok(row) => {
                self.events.notify();
                self.metrics.enqueued(source);
                tracing::info!(
                    job_id = %row.id,
                    ticket_id = %target.ticket_id,
                    pr_number = target.pr_number,
                    github_comment_id = open.github_comment_id,
                    source,
                    "review job enqueued"
                );
                Ok(Applied {
                    enqueued: Some(row),
                })
            }
            // The ticket already has a pending or running job (one at a time).
            Err(DbError::Conflict(_)) => Ok(Applied::default()),
            Err(e) => Err(e),
        }
    }

    /// Moves the target's ticket to done (merged or approved); false when it was not in review.
    pub async fn finish(
        &self,
        target: &ReviewTarget,
        source: &str,
        why: &str,
    ) -> Result<bool, DbError> {
        let moved = store::mark_done(&self.db, target.project_id, target.ticket_id).await?;
        if moved {
            self.metrics.done(source);
            tracing::info!(
                ticket_id = %target.ticket_id,
                pr_number = target.pr_number,
                source,
                why,
                "ticket done"
            );
        }
        Ok(moved)
    }

    /// The lease holder name of this process.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The poll interval, when the poller is on.
    pub fn poll_interval(&self) -> Option<Duration> {
        (self.args.pr_poll_sec > 0).then(|| Duration::from_secs(self.args.pr_poll_sec))
    }
}
