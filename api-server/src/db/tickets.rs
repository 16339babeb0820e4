//! Tickets, their pull request row and their cancel flag.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::AssertSqlSafe;
use sqlx::types::Json;
use uuid::Uuid;

use super::jobs::{JOB_COLUMNS, JobRow};
use super::projects::bump_revision;
use super::{Db, DbError, DbResult, Dialect, WritePool, now, with_db};

/// A ticket with its pull request (if any).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TicketRow {
    pub id: Uuid,
    pub project_id: Uuid,
    pub column_id: String,
    pub title: String,
    pub description: Option<String>,
    pub associated_node_ids: Option<Json<Value>>,
    pub associated_edge_ids: Option<Json<Value>>,
    pub priority: Option<String>,
    pub status: Option<String>,
    pub cancel_requested: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub pr_url: Option<String>,
    pub pr_number: Option<i32>,
}

/// The ticket fields worker-context lists carry.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TicketSummaryRow {
    pub id: Uuid,
    pub title: String,
    pub description: Option<String>,
    pub priority: Option<String>,
    pub column_id: String,
    pub status: Option<String>,
    pub associated_node_ids: Option<Json<Value>>,
}

/// Fields of a new ticket.
#[derive(Debug, Clone)]
pub struct NewTicket {
    pub column_id: String,
    pub title: String,
    pub description: Option<String>,
    pub associated_node_ids: Value,
    pub associated_edge_ids: Value,
    pub priority: Option<String>,
    pub status: Option<String>,
}

/// A partial ticket update; `None` keeps the stored value.
#[derive(Debug, Clone, Default)]
pub struct TicketChanges {
    pub column_id: Option<String>,
    pub title: Option<String>,
    pub description: Option<Option<String>>,
    pub priority: Option<Option<String>>,
    pub status: Option<Option<String>>,
    pub associated_node_ids: Option<Value>,
    pub associated_edge_ids: Option<Value>,
}

/// Result of a ticket update.
#[derive(Debug, Clone)]
pub struct TicketUpdate {
    /// The ticket after the update.
    pub ticket: TicketRow,
    /// The job enqueued because the ticket moved to `in_progress`, if one was.
    pub enqueued: Option<JobRow>,
}

const TICKET_SELECT: &str = "SELECT t.id, t.project_id, t.column_id, t.title, t.description, \
    t.associated_node_ids, t.associated_edge_ids, t.priority, t.status, t.cancel_requested, \
    t.created_at, t.updated_at, p.pr_url, p.pr_number \
    FROM tickets t LEFT JOIN prs p ON p.ticket_id = t.id";

/// The column that moving into enqueues a ticket job.
pub const IN_PROGRESS: &str = "in_progress";

impl Db {
    /// Every ticket of a project, oldest first.
    pub async fn list_tickets(&self, project_id: Uuid) -> DbResult<Vec<TicketRow>> {
        let sql = format!("{TICKET_SELECT} WHERE t.project_id = $1 ORDER BY t.created_at, t.id");
        with_db!(self, pool => Ok(sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(project_id).fetch_all(pool).await?))
    }

    /// One ticket of a project.
    pub async fn get_ticket(
        &self,
        project_id: Uuid,
        ticket_id: Uuid,
    ) -> DbResult<Option<TicketRow>> {
        let sql = format!("{TICKET_SELECT} WHERE t.id = $1 AND t.project_id = $2");
        with_db!(self, pool => {
            Ok(sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(ticket_id).bind(project_id).fetch_optional(pool).await?)
        })
    }

    /// Whether the ticket exists in the project.
    pub async fn ticket_exists(&self, project_id: Uuid, ticket_id: Uuid) -> DbResult<bool> {
        with_db!(self, pool => {
            let found: Option<i32> =
                sqlx::query_scalar("SELECT 1 FROM tickets WHERE id = $1 AND project_id = $2")
                    .bind(ticket_id)
                    .bind(project_id)
                    .fetch_optional(pool)
                    .await?;
            Ok(found.is_some())
        })
    }

    /// Creates a ticket; `NotFound` when the project does not exist.
    pub async fn create_ticket(&self, project_id: Uuid, t: &NewTicket) -> DbResult<TicketRow> {
        let id = Uuid::new_v4();
        let ts = now();
        with_db!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM projects WHERE id = $1")
                .bind(project_id)
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_none() {
                return Err(DbError::NotFound("Project"));
            }
            sqlx::query(
                "INSERT INTO tickets (id, project_id, column_id, title, description, associated_node_ids, \
                 associated_edge_ids, priority, status, cancel_requested, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, COALESCE($8, 'medium'), COALESCE($9, 'todo'), FALSE, $10, $10)",
            )
            .bind(id)
            .bind(project_id)
            .bind(&t.column_id)
            .bind(&t.title)
            .bind(&t.description)
            .bind(Json(&t.associated_node_ids))
            .bind(Json(&t.associated_edge_ids))
            .bind(&t.priority)
            .bind(&t.status)
            .bind(ts)
            .execute(&mut *tx)
            .await?;
            bump_revision!(&mut *tx, project_id)?;
            let sql = format!("{TICKET_SELECT} WHERE t.id = $1");
            let row = sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(id).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok(row)
        })
    }

    /// Applies `changes`. When the ticket moves into `in_progress` from another column, clears its
    /// cancel flag and enqueues a ticket job unless one is already pending or running — all in
    /// one transaction. None when the ticket is not in the project.
    pub async fn update_ticket(
        &self,
        project_id: Uuid,
        ticket_id: Uuid,
        c: &TicketChanges,
    ) -> DbResult<Option<TicketUpdate>> {
        let ts = now();
        let lock = match self.dialect() {
            Dialect::Postgres => " FOR UPDATE",
            Dialect::Sqlite => "",
        };
        with_db!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let current: Option<String> = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT column_id FROM tickets WHERE id = $1 AND project_id = $2{lock}"
            )))
            .bind(ticket_id)
            .bind(project_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(current) = current else {
                return Ok(None);
            };
            let moved_to_in_progress =
                c.column_id.as_deref() == Some(IN_PROGRESS) && current != IN_PROGRESS;
            sqlx::query(
                "UPDATE tickets SET \
                   column_id = COALESCE($3, column_id), \
                   title = COALESCE($4, title), \
                   description = CASE WHEN $5 THEN $6 ELSE description END, \
                   priority = CASE WHEN $7 THEN $8 ELSE priority END, \
                   status = CASE WHEN $9 THEN $10 ELSE status END, \
                   associated_node_ids = CASE WHEN $11 THEN $12 ELSE associated_node_ids END, \
                   associated_edge_ids = CASE WHEN $13 THEN $14 ELSE associated_edge_ids END, \
                   cancel_requested = CASE WHEN $15 THEN FALSE ELSE cancel_requested END, \
                   updated_at = $16 \
                 WHERE id = $1 AND project_id = $2",
            )
            .bind(ticket_id)
            .bind(project_id)
            .bind(&c.column_id)
            .bind(&c.title)
            .bind(c.description.is_some())
            .bind(c.description.clone().flatten())
            .bind(c.priority.is_some())
            .bind(c.priority.clone().flatten())
            .bind(c.status.is_some())
            .bind(c.status.clone().flatten())
            .bind(c.associated_node_ids.is_some())
            .bind(c.associated_node_ids.as_ref().map(Json))
            .bind(c.associated_edge_ids.is_some())
            .bind(c.associated_edge_ids.as_ref().map(Json))
            .bind(moved_to_in_progress)
            .bind(ts)
            .execute(&mut *tx)
            .await?;
            bump_revision!(&mut *tx, project_id)?;
            let enqueued: Option<JobRow> = if moved_to_in_progress {
                sqlx::query_as(AssertSqlSafe(format!(
                    "INSERT INTO agent_jobs (id, ticket_id, project_id, kind, status, created_at, updated_at, attempt) \
                     VALUES ($1, $2, $3, 'ticket', 'pending', $4, $4, 0) \
                     ON CONFLICT DO NOTHING RETURNING {JOB_COLUMNS}"
                )))
                .bind(Uuid::new_v4())
                .bind(ticket_id)
                .bind(project_id)
                .bind(ts)
                .fetch_optional(&mut *tx)
                .await?
            } else {
                None
            };
            let sql = format!("{TICKET_SELECT} WHERE t.id = $1");
            let ticket = sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(ticket_id).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok(Some(TicketUpdate { ticket, enqueued }))
        })
    }

    /// Deletes a ticket with its logs, PR row and jobs.
    pub async fn delete_ticket(&self, project_id: Uuid, ticket_id: Uuid) -> DbResult<bool> {
        with_db!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let done = sqlx::query("DELETE FROM tickets WHERE id = $1 AND project_id = $2")
                .bind(ticket_id)
                .bind(project_id)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() > 0 {
                bump_revision!(&mut *tx, project_id)?;
            }
            tx.commit().await?;
            Ok(done.rows_affected() > 0)
        })
    }

    /// Marks the ticket completed and in review, recording its pull request when `pr_url` is
    /// set. False when the ticket is not in the project.
    pub async fn complete_ticket(
        &self,
        project_id: Uuid,
        ticket_id: Uuid,
        pr_url: Option<&str>,
        pr_number: Option<i32>,
    ) -> DbResult<bool> {
        let ts = now();
        with_db!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let done = sqlx::query(
                "UPDATE tickets SET status = 'completed', column_id = 'in_review', updated_at = $3 \
                 WHERE id = $1 AND project_id = $2",
            )
            .bind(ticket_id)
            .bind(project_id)
            .bind(ts)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                return Ok(false);
            }
            if let Some(url) = pr_url {
                sqlx::query(
                    "INSERT INTO prs (id, project_id, ticket_id, pr_number, pr_url, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (ticket_id) DO UPDATE SET pr_number = excluded.pr_number, pr_url = excluded.pr_url",
                )
                .bind(Uuid::new_v4())
                .bind(project_id)
                .bind(ticket_id)
                .bind(pr_number)
                .bind(url)
                .bind(ts)
                .execute(&mut *tx)
                .await?;
            }
            bump_revision!(&mut *tx, project_id)?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Sets the ticket's cancel flag and fails its pending jobs (reason `Cancelled`). Running jobs
    /// are stopped by whoever runs them, who sees the flag. None when the ticket is not in the
    /// project; otherwise the number of pending jobs failed.
    pub async fn request_cancel(&self, project_id: Uuid, ticket_id: Uuid) -> DbResult<Option<u64>> {
        let ts = now();
        with_db!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let done = sqlx::query(
                "UPDATE tickets SET cancel_requested = TRUE WHERE id = $1 AND project_id = $2",
            )
            .bind(ticket_id)
            .bind(project_id)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                return Ok(None);
            }
            let failed = sqlx::query(
                "UPDATE agent_jobs SET status = 'failed', fail_reason = 'Cancelled', \
                 fail_message = 'Cancelled before it was claimed', finished_at = $2, updated_at = $2 \
                 WHERE ticket_id = $1 AND status = 'pending'",
            )
            .bind(ticket_id)
            .bind(ts)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Some(failed.rows_affected()))
        })
    }

    /// The ticket's cancel flag; None when the ticket is not in the project.
    pub async fn cancel_requested(
        &self,
        project_id: Uuid,
        ticket_id: Uuid,
    ) -> DbResult<Option<bool>> {
        with_db!(self, pool => {
            Ok(sqlx::query_scalar("SELECT cancel_requested FROM tickets WHERE id = $1 AND project_id = $2")
                .bind(ticket_id)
                .bind(project_id)
                .fetch_optional(pool)
                .await?)
        })
    }

    /// The `limit` most recently updated tickets of a column.
    pub async fn recent_tickets_in_column(
        &self,
        project_id: Uuid,
        column_id: &str,
        limit: i64,
    ) -> DbResult<Vec<TicketSummaryRow>> {
        with_db!(self, pool => {
            Ok(sqlx::query_as(
                "SELECT id, title, description, priority, column_id, status, associated_node_ids \
                 FROM tickets WHERE project_id = $1 AND column_id = $2 \
                 ORDER BY updated_at DESC, id LIMIT $3",
            )
            .bind(project_id)
            .bind(column_id)
            .bind(limit)
            .fetch_all(pool)
            .await?)
        })
    }
}
