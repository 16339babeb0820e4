//! The job queue: atomic claims with leases, heartbeats, lease expiry and outcomes.

use chrono::{DateTime, Duration, Utc};
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use super::{Db, DbError, DbResult, Dialect, WritePool, now, placeholders, with_db};

/// An `agent_jobs` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: Uuid,
    pub ticket_id: Uuid,
    pub project_id: Uuid,
    pub kind: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub attempt: i32,
    pub claimed_at: Option<DateTime<Utc>>,
    pub lease_seconds: Option<i32>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub fail_reason: Option<String>,
    pub fail_message: Option<String>,
    pub pr_number: Option<i32>,
    pub comment_body: Option<String>,
    pub github_comment_id: Option<i64>,
}

pub(crate) const JOB_COLUMNS: &str = "id, ticket_id, project_id, kind, status, created_at, updated_at, \
    attempt, claimed_at, lease_seconds, lease_expires_at, finished_at, fail_reason, fail_message, \
    pr_number, comment_body, github_comment_id";

/// Which pending jobs a claim may take.
#[derive(Debug, Clone, Default)]
pub struct ClaimFilter {
    /// Only these projects' jobs (any project when empty).
    pub project_ids: Vec<Uuid>,
}

/// A review job to enqueue.
#[derive(Debug, Clone)]
pub struct NewReviewJob {
    pub pr_number: i32,
    pub comment_body: String,
    pub github_comment_id: Option<i64>,
}

/// Outcome of complete, fail, release and heartbeat.
#[derive(Debug, Clone)]
pub enum TransitionOutcome {
    /// Applied; the job after the change.
    Applied(Box<JobRow>),
    /// No such job.
    NotFound,
    /// The job is not running (its current status), or runs under another attempt.
    NotRunning { status: String, attempt: i32 },
}

/// Counts from one pass of lease expiry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpiryPass {
    /// Jobs put back to pending.
    pub requeued: u64,
    /// Jobs failed because they ran out of attempts.
    pub exhausted: u64,
}

impl Db {
    /// Atomically claims the oldest pending job (by creation time, then insertion order), gives
    /// it a lease of `lease_seconds` and binds `run_token_hash` to the new attempt (replacing
    /// the previous attempt's). Safe under any number of concurrent claimers:
    /// `FOR UPDATE SKIP LOCKED` on PostgreSQL, a single-writer transaction on SQLite.
    pub async fn claim_job(
        &self,
        filter: &ClaimFilter,
        lease_seconds: u32,
        run_token_hash: &str,
    ) -> DbResult<Option<JobRow>> {
        let ts = now();
        let expires = ts + Duration::seconds(i64::from(lease_seconds));
        let project_clause = match filter.project_ids.len() {
            0 => String::new(),
            n => format!(" AND project_id IN ({})", placeholders(5, n)),
        };
        let sql = match self.dialect() {
            Dialect::Postgres => format!(
                "WITH next AS (SELECT id FROM agent_jobs WHERE status = 'pending'{project_clause} \
                   ORDER BY created_at, seq LIMIT 1 FOR UPDATE SKIP LOCKED) \
                 UPDATE agent_jobs SET status = 'running', attempt = attempt + 1, claimed_at = $1, \
                   updated_at = $1, lease_seconds = $2, lease_expires_at = $3, \
                   fail_reason = NULL, fail_message = NULL, \
                   run_token_hash = $4, run_token_attempt = attempt + 1 \
                 WHERE id = (SELECT id FROM next) RETURNING {JOB_COLUMNS}"
            ),
            Dialect::Sqlite => format!(
                "UPDATE agent_jobs SET status = 'running', attempt = attempt + 1, claimed_at = $1, \
                   updated_at = $1, lease_seconds = $2, lease_expires_at = $3, \
                   fail_reason = NULL, fail_message = NULL, \
                   run_token_hash = $4, run_token_attempt = attempt + 1 \
                 WHERE id = (SELECT id FROM agent_jobs WHERE status = 'pending'{project_clause} \
                   ORDER BY created_at, seq LIMIT 1) RETURNING {JOB_COLUMNS}"
            ),
        };
        with_db!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let mut q = sqlx::query_as::<_, JobRow>(AssertSqlSafe(sql.as_str()))
                .bind(ts)
                .bind(lease_seconds as i32)
                .bind(expires)
                .bind(run_token_hash);
            for pid in &filter.project_ids {
                q = q.bind(*pid);
            }
            let row = q.fetch_optional(&mut *tx).await?;
            tx.commit().await?;
            Ok(row)
        })
    }

    /// One job.
    pub async fn get_job(&self, job_id: Uuid) -> DbResult<Option<JobRow>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM agent_jobs WHERE id = $1");
        with_db!(self, pool => Ok(sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(job_id).fetch_optional(pool).await?))
    }

    /// Jobs of a ticket, newest first.
    pub async fn jobs_for_ticket(&self, ticket_id: Uuid) -> DbResult<Vec<JobRow>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM agent_jobs WHERE ticket_id = $1 ORDER BY created_at DESC, seq DESC"
        );
        with_db!(self, pool => Ok(sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(ticket_id).fetch_all(pool).await?))
    }

    async fn finish_job(
        &self,
        job_id: Uuid,
        attempt: Option<i32>,
        status: &str,
        reason: Option<&str>,
        message: Option<&str>,
    ) -> DbResult<TransitionOutcome> {
        let ts = now();
        let sql = format!(
            "UPDATE agent_jobs SET status = $2, finished_at = $3, updated_at = $3, lease_expires_at = NULL, \
               fail_reason = $4, fail_message = $5 \
             WHERE id = $1 AND status = 'running' AND ($6 OR attempt = $7) RETURNING {JOB_COLUMNS}"
        );
        with_db!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let row: Option<JobRow> = sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .bind(job_id)
                .bind(status)
                .bind(ts)
                .bind(reason)
                .bind(message)
                .bind(attempt.is_none())
                .bind(attempt.unwrap_or(0))
                .fetch_optional(&mut *tx)
                .await?;
            let outcome = match row {
                Some(job) => {
                    if status == "completed" && job.kind == "review"
                        && let (Some(pr), Some(comment)) = (job.pr_number, job.github_comment_id) {
                            sqlx::query(
                                "UPDATE pr_review_comments SET addressed_at = $4, updated_at = $4 \
                                 WHERE project_id = $1 AND pr_number = $2 AND github_comment_id = $3",
                            )
                            .bind(job.project_id)
                            .bind(pr)
                            .bind(comment)
                            .bind(ts)
                            .execute(&mut *tx)
                            .await?;
                        }
                    TransitionOutcome::Applied(Box::new(job))
                }
                // Not running, or running under another attempt.
                None => match current_state!(&mut *tx, job_id) {
                    TransitionOutcome::Applied(job) => TransitionOutcome::NotRunning {
                        status: job.status,
                        attempt: job.attempt,
                    },
                    other => other,
                },
            };
            tx.commit().await?;
            Ok(outcome)
        })
    }

    /// Marks a running job completed.
    pub async fn complete_job(
        &self,
        job_id: Uuid,
        attempt: Option<i32>,
    ) -> DbResult<TransitionOutcome> {
        self.finish_job(job_id, attempt, "completed", None, None)
            .await
    }

    /// Marks a running job failed with an optional reason and message.
    pub async fn fail_job(
        &self,
        job_id: Uuid,
        attempt: Option<i32>,
        reason: Option<&str>,
        message: Option<&str>,
    ) -> DbResult<TransitionOutcome> {
        self.finish_job(job_id, attempt, "failed", reason, message)
            .await
    }

    /// Gives a running job back to the queue: `pending` again with its lease cleared (so the
    /// claim's run token, bound to a running attempt, stops working; the next claim replaces
    /// it), and `releases` counted so the claim does not use up one of `max_attempts`.
    /// `attempt` is kept, so a stale attempt guard never matches a later claim.
    pub async fn release_job(
        &self,
        job_id: Uuid,
        attempt: Option<i32>,
    ) -> DbResult<TransitionOutcome> {
        let ts = now();
        let sql = format!(
            "UPDATE agent_jobs SET status = 'pending', updated_at = $2, claimed_at = NULL, \
               lease_expires_at = NULL, releases = releases + 1 \
             WHERE id = $1 AND status = 'running' AND ($3 OR attempt = $4) RETURNING {JOB_COLUMNS}"
        );
        with_db!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let row: Option<JobRow> = sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .bind(job_id)
                .bind(ts)
                .bind(attempt.is_none())
                .bind(attempt.unwrap_or(0))
                .fetch_optional(&mut *tx)
                .await?;
            let outcome = match row {
                Some(job) => TransitionOutcome::Applied(Box::new(job)),
                None => match current_state!(&mut *tx, job_id) {
                    TransitionOutcome::Applied(job) => TransitionOutcome::NotRunning {
                        status: job.status,
                        attempt: job.attempt,
                    },
                    other => other,
                },
            };
            tx.commit().await?;
            Ok(outcome)
        })
    }

    /// Extends a running job's lease to `lease_seconds` (or the claim's lease length) from now.
    pub async fn heartbeat_job(
        &self,
        job_id: Uuid,
        attempt: Option<i32>,
        lease_seconds: Option<u32>,
    ) -> DbResult<TransitionOutcome> {
        let ts = now();
        let sql = format!(
            "UPDATE agent_jobs SET lease_seconds = $3, lease_expires_at = $4, updated_at = $2 \
             WHERE id = $1 AND status = 'running' AND attempt = $5 RETURNING {JOB_COLUMNS}"
        );
        with_db!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let outcome = match current_state!(&mut *tx, job_id) {
                TransitionOutcome::Applied(job)
                    if job.status == "running" && attempt.is_none_or(|a| a == job.attempt) =>
                {
                    let seconds = lease_seconds
                        .map(|s| s as i32)
                        .or(job.lease_seconds)
                        .unwrap_or(60);
                    let row: JobRow = sqlx::query_as(AssertSqlSafe(sql.as_str()))
                        .bind(job_id)
                        .bind(ts)
                        .bind(seconds)
                        .bind(ts + Duration::seconds(i64::from(seconds)))
                        .bind(job.attempt)
                        .fetch_one(&mut *tx)
                        .await?;
                    TransitionOutcome::Applied(Box::new(row))
                }
                TransitionOutcome::Applied(job) => TransitionOutcome::NotRunning {
                    status: job.status,
                    attempt: job.attempt,
                },
                other => other,
            };
            tx.commit().await?;
            Ok(outcome)
        })
    }

    /// Puts running jobs whose lease ran out back to pending, or fails them (reason
    /// `LeaseExpired`) once they have used `max_attempts` claims (released claims excepted).
    pub async fn expire_leases(&self, max_attempts: i32) -> DbResult<ExpiryPass> {
        let ts = now();
        with_db!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let exhausted = sqlx::query(
                "UPDATE agent_jobs SET status = 'failed', fail_reason = 'LeaseExpired', \
                   fail_message = 'The claimer stopped renewing its lease and the job used all its attempts', \
                   finished_at = $1, updated_at = $1, lease_expires_at = NULL \
                 WHERE status = 'running' AND lease_expires_at < $1 AND attempt - releases >= $2",
            )
            .bind(ts)
            .bind(max_attempts)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let requeued = sqlx::query(
                "UPDATE agent_jobs SET status = 'pending', updated_at = $1, lease_expires_at = NULL, \
                   claimed_at = NULL \
                 WHERE status = 'running' AND lease_expires_at < $1",
            )
            .bind(ts)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            Ok(ExpiryPass { requeued, exhausted })
        })
    }

    /// Enqueues a review job for a ticket. `Conflict` when the ticket already has a pending or
    /// running job; `NotFound` when the ticket is not in the project.
    pub async fn enqueue_review_job(
        &self,
        project_id: Uuid,
        ticket_id: Uuid,
        review: &NewReviewJob,
    ) -> DbResult<JobRow> {
        let ts = now();
        let insert = format!(
            "INSERT INTO agent_jobs (id, ticket_id, project_id, kind, status, created_at, updated_at, attempt, \
               pr_number, comment_body, github_comment_id) \
             VALUES ($1, $2, $3, 'review', 'pending', $4, $4, 0, $5, $6, $7) \
             ON CONFLICT DO NOTHING RETURNING {JOB_COLUMNS}"
        );
        with_db!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let exists: Option<i32> =
                sqlx::query_scalar("SELECT 1 FROM tickets WHERE id = $1 AND project_id = $2")
                    .bind(ticket_id)
                    .bind(project_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_none() {
                return Err(DbError::NotFound("Ticket"));
            }
            let row: Option<JobRow> = sqlx::query_as(AssertSqlSafe(insert.as_str()))
                .bind(Uuid::new_v4())
                .bind(ticket_id)
                .bind(project_id)
                .bind(ts)
                .bind(review.pr_number)
                .bind(&review.comment_body)
                .bind(review.github_comment_id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else {
                let active: Option<Uuid> = sqlx::query_scalar(
                    "SELECT id FROM agent_jobs WHERE ticket_id = $1 AND status IN ('pending', 'running')",
                )
                .bind(ticket_id)
                .fetch_optional(&mut *tx)
                .await?;
                let active = active.map(|id| id.to_string()).unwrap_or_default();
                return Err(DbError::Conflict(active));
            };
            if let Some(comment_id) = review.github_comment_id {
                sqlx::query(
                    "INSERT INTO pr_review_comments (id, project_id, ticket_id, pr_number, github_comment_id, \
                       body, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
                     ON CONFLICT (project_id, pr_number, github_comment_id) DO NOTHING",
                )
                .bind(Uuid::new_v4())
                .bind(project_id)
                .bind(ticket_id)
                .bind(review.pr_number)
                .bind(comment_id)
                .bind(&review.comment_body)
                .bind(ts)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(row)
        })
    }

    /// Whether the review comment has been addressed (None when it is not tracked).
    pub async fn review_comment_addressed(
        &self,
        project_id: Uuid,
        pr_number: i32,
        github_comment_id: i64,
    ) -> DbResult<Option<bool>> {
        with_db!(self, pool => {
            let at: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(
                "SELECT addressed_at FROM pr_review_comments \
                 WHERE project_id = $1 AND pr_number = $2 AND github_comment_id = $3",
            )
            .bind(project_id)
            .bind(pr_number)
            .bind(github_comment_id)
            .fetch_optional(pool)
            .await?;
            Ok(at.map(|a| a.is_some()))
        })
    }

    /// Number of jobs in each status.
    pub async fn queue_depth(&self) -> DbResult<Vec<(String, i64)>> {
        with_db!(self, pool => {
            Ok(sqlx::query_as("SELECT status, COUNT(*) FROM agent_jobs GROUP BY status")
                .fetch_all(pool)
                .await?)
        })
    }
}

/// The job's current state as a `NotRunning`/`NotFound` outcome (or `Applied` with the row when
/// it is running, for callers that go on to change it). A macro so futures stay `Send`.
macro_rules! current_state {
    ($executor:expr, $job_id:expr) => {{
        let row: Option<JobRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM agent_jobs WHERE id = $1"
        )))
        .bind($job_id)
        .fetch_optional($executor)
        .await?;
        match row {
            None => TransitionOutcome::NotFound,
            Some(job) if job.status == "running" => TransitionOutcome::Applied(Box::new(job)),
            Some(job) => TransitionOutcome::NotRunning {
                status: job.status,
                attempt: job.attempt,
            },
        }
    }};
}
use current_state;
