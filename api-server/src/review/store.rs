//! The review loop's storage: pull requests of tickets in review, the `pr_review_comments`
//! upsert, the choice of the next comment to address, moving tickets to done, webhook
//! deliveries and the poller's lease.

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use super::BOT_SIGNATURE;
use crate::db::{Db, DbResult, Dialect, WritePool, now, with_db};

/// A pull request of a ticket that is in review, with its project's repository URL.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReviewTarget {
    pub project_id: Uuid,
    pub ticket_id: Uuid,
    pub pr_number: i32,
    pub github_url: Option<String>,
}

/// A PR row of a project with its ticket, for the project's review list.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProjectPr {
    pub ticket_id: Uuid,
    pub title: String,
    pub pr_url: Option<String>,
    pub pr_number: i32,
}

/// A comment (issue comment, review line comment or review) as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct GhComment {
    pub id: i64,
    pub author: Option<String>,
    pub body: String,
    pub created_at: Option<DateTime<Utc>>,
}

/// The comment a review job should address next.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OpenComment {
    pub github_comment_id: i64,
    pub body: String,
}

const TARGET_SELECT: &str = "SELECT t.project_id, t.id AS ticket_id, p.pr_number, pj.github_url \
    FROM prs p JOIN tickets t ON t.id = p.ticket_id JOIN projects pj ON pj.id = t.project_id \
    WHERE t.column_id = 'in_review' AND p.pr_number IS NOT NULL AND pj.github_url IS NOT NULL";

/// Every pull request of a ticket in review, oldest first.
pub async fn in_review_prs(db: &Db) -> DbResult<Vec<ReviewTarget>> {
    let sql = format!("{TARGET_SELECT} ORDER BY p.created_at, p.id");
    with_db!(db, pool => Ok(sqlx::query_as(AssertSqlSafe(sql.as_str())).fetch_all(pool).await?))
}

/// The tickets in review whose pull request has number `pr_number` (any repository).
pub async fn in_review_by_number(db: &Db, pr_number: i32) -> DbResult<Vec<ReviewTarget>> {
    let sql = format!("{TARGET_SELECT} AND p.pr_number = $1");
    with_db!(db, pool => Ok(sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(pr_number).fetch_all(pool).await?))
}

/// The review target of one ticket when it is in review.
pub async fn target_of_ticket(
    db: &Db,
    project_id: Uuid,
    ticket_id: Uuid,
) -> DbResult<Option<ReviewTarget>> {
    let sql = format!("{TARGET_SELECT} AND t.id = $1 AND t.project_id = $2");
    with_db!(db, pool => Ok(sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(ticket_id).bind(project_id).fetch_optional(pool).await?))
}

/// Up to `limit` PR rows of a project with a number, newest first.
pub async fn project_prs(db: &Db, project_id: Uuid, limit: i64) -> DbResult<Vec<ProjectPr>> {
    with_db!(db, pool => Ok(sqlx::query_as(
        "SELECT t.id AS ticket_id, t.title, p.pr_url, p.pr_number FROM prs p \
         JOIN tickets t ON t.id = p.ticket_id \
         WHERE p.project_id = $1 AND p.pr_number IS NOT NULL \
         ORDER BY p.created_at DESC, p.id LIMIT $2",
    )
    .bind(project_id)
    .bind(limit)
    .fetch_all(pool)
    .await?))
}

/// Upserts `comments` of the target's pull request (a changed body, author or time updates the
/// row; the addressed mark stays), then marks the bot's own comments addressed.
pub async fn upsert_comments(
    db: &Db,
    target: &ReviewTarget,
    comments: &[GhComment],
) -> DbResult<()> {
    let ts = now();
    let distinct = match db.dialect() {
        Dialect::Postgres => "IS DISTINCT FROM",
        Dialect::Sqlite => "IS NOT",
    };
    let upsert = format!(
        "INSERT INTO pr_review_comments (id, project_id, ticket_id, pr_number, github_comment_id, \
           author_login, body, comment_created_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
         ON CONFLICT (project_id, pr_number, github_comment_id) DO UPDATE SET \
           author_login = excluded.author_login, body = excluded.body, \
           comment_created_at = excluded.comment_created_at, updated_at = excluded.updated_at \
         WHERE pr_review_comments.body {distinct} excluded.body \
           OR pr_review_comments.author_login {distinct} excluded.author_login \
           OR pr_review_comments.comment_created_at {distinct} excluded.comment_created_at"
    );
    let signature = format!("%{BOT_SIGNATURE}%");
    with_db!(db, pool => {
        let mut tx = pool.begin_write().await?;
        for c in comments {
            sqlx::query(AssertSqlSafe(upsert.as_str()))
                .bind(Uuid::new_v4())
                .bind(target.project_id)
                .bind(target.ticket_id)
                .bind(target.pr_number)
                .bind(c.id)
                .bind(&c.author)
                .bind(&c.body)
                .bind(c.created_at)
                .bind(ts)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "UPDATE pr_review_comments SET addressed_at = $3, updated_at = $3 \
             WHERE project_id = $1 AND pr_number = $2 AND addressed_at IS NULL AND body LIKE $4",
        )
        .bind(target.project_id)
        .bind(target.pr_number)
        .bind(ts)
        .bind(&signature)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    })
}

/// The most recent unaddressed human comment of the pull request whose review jobs have not
/// failed `max_failures` times already (the original re-enqueued a failing comment forever).
pub async fn next_open_comment(
    db: &Db,
    target: &ReviewTarget,
    max_failures: i64,
) -> DbResult<Option<OpenComment>> {
    let signature = format!("%{BOT_SIGNATURE}%");
    with_db!(db, pool => Ok(sqlx::query_as(
        "SELECT c.github_comment_id, c.body FROM pr_review_comments c \
         WHERE c.project_id = $1 AND c.pr_number = $2 AND c.addressed_at IS NULL \
           AND c.body IS NOT NULL AND TRIM(c.body) <> '' AND c.body NOT LIKE $3 \
           AND (SELECT COUNT(*) FROM agent_jobs j WHERE j.ticket_id = $4 AND j.kind = 'review' \
                AND j.pr_number = c.pr_number AND j.github_comment_id = c.github_comment_id \
                AND j.status = 'failed') < $5 \
         ORDER BY c.comment_created_at DESC NULLS LAST, c.github_comment_id DESC LIMIT 1",
    )
    .bind(target.project_id)
    .bind(target.pr_number)
    .bind(&signature)
    .bind(target.ticket_id)
    .bind(max_failures)
    .fetch_optional(pool)
    .await?))
}

/// Moves a ticket that is in review to done (status `completed`). False when it is not in
/// review (anymore).
pub async fn mark_done(db: &Db, project_id: Uuid, ticket_id: Uuid) -> DbResult<bool> {
    let ts = now();
    with_db!(db, pool => {
        let mut tx = pool.begin_write().await?;
        let moved = sqlx::query(
            "UPDATE tickets SET column_id = 'done', status = 'completed', updated_at = $3 \
             WHERE id = $1 AND project_id = $2 AND column_id = 'in_review'",
        )
        .bind(ticket_id)
        .bind(project_id)
        .bind(ts)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved > 0 {
            // worker-context lists tickets by column: its cached documents are stale now.
            sqlx::query("UPDATE projects SET revision = revision + 1 WHERE id = $1")
                .bind(project_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(moved > 0)
    })
}

/// Records a webhook delivery id; false when it was already recorded (a redelivery). Rows
/// older than `retention` are pruned on the way.
pub async fn record_delivery(
    db: &Db,
    delivery_id: &str,
    event: &str,
    retention: chrono::Duration,
) -> DbResult<bool> {
    let ts = now();
    with_db!(db, pool => {
        let mut tx = pool.begin_write().await?;
        sqlx::query("DELETE FROM github_webhook_deliveries WHERE received_at < $1")
            .bind(ts - retention)
            .execute(&mut *tx)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO github_webhook_deliveries (delivery_id, event, received_at) VALUES ($1, $2, $3) \
             ON CONFLICT (delivery_id) DO NOTHING",
        )
        .bind(delivery_id)
        .bind(event)
        .bind(ts)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(inserted == 1)
    })
}

/// Forgets a delivery whose processing failed, so GitHub's redelivery is processed.
pub async fn forget_delivery(db: &Db, delivery_id: &str) -> DbResult<()> {
    with_db!(db, pool => {
        sqlx::query("DELETE FROM github_webhook_deliveries WHERE delivery_id = $1")
            .bind(delivery_id)
            .execute(pool)
            .await?;
        Ok(())
    })
}

/// Takes or renews the lease `name` for `holder` until now + `ttl`; false while another holder's
/// lease is still valid.
pub async fn try_lease(
    db: &Db,
    name: &str,
    holder: &str,
    ttl: std::time::Duration,
) -> DbResult<bool> {
    let ts = now();
    let until = ts + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(1));
    with_db!(db, pool => {
        let mut tx = pool.begin_write().await?;
        let n = sqlx::query(
            "INSERT INTO background_leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE background_leases.holder = excluded.holder OR background_leases.expires_at < $4",
        )
        .bind(name)
        .bind(holder)
        .bind(until)
        .bind(ts)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n == 1)
    })
}

/// Gives the lease up (when `holder` holds it), so another replica can take over at once.
pub async fn release_lease(db: &Db, name: &str, holder: &str) -> DbResult<()> {
    let ts = now();
    with_db!(db, pool => {
        sqlx::query("UPDATE background_leases SET expires_at = $3 WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .bind(ts)
            .execute(pool)
            .await?;
        Ok(())
    })
}
