//! The agent's step log (`execution_logs`).

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use super::{Db, DbResult, now, with_db};

/// A log entry to store.
#[derive(Debug, Clone)]
pub struct NewLog {
    pub project_id: Uuid,
    pub ticket_id: Uuid,
    pub session_id: String,
    pub step: String,
    pub summary: String,
    pub raw_output: Option<String>,
    /// `false` for the entry of a failed step.
    pub success: bool,
}

/// A stored log entry as the UI reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LogRow {
    pub id: Uuid,
    pub step: Option<String>,
    pub summary: Option<String>,
    pub raw_output: Option<String>,
    pub success: bool,
    pub created_at: DateTime<Utc>,
}

impl Db {
    /// Stores a log entry in one statement, only if the ticket belongs to the project.
    /// Returns the new id, or None when the ticket is not in the project.
    pub async fn insert_log(&self, log: &NewLog) -> DbResult<Option<Uuid>> {
        let id = Uuid::new_v4();
        with_db!(self, pool => {
            let done = sqlx::query(
                "INSERT INTO execution_logs (id, project_id, ticket_id, session_id, step, summary, raw_output, \
                   success, created_at) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $9, $8 \
                 WHERE EXISTS (SELECT 1 FROM tickets WHERE id = $3 AND project_id = $2)",
            )
            .bind(id)
            .bind(log.project_id)
            .bind(log.ticket_id)
            .bind(&log.session_id)
            .bind(&log.step)
            .bind(&log.summary)
            .bind(&log.raw_output)
            .bind(now())
            .bind(log.success)
            .execute(pool)
            .await?;
            Ok((done.rows_affected() == 1).then_some(id))
        })
    }

    /// Stores several entries in one statement, each only if its ticket belongs to its
    /// project, in the given order. Returns, per entry, its new id or None.
    pub async fn insert_logs(&self, logs: &[NewLog]) -> DbResult<Vec<Option<Uuid>>> {
        if logs.is_empty() {
            return Ok(Vec::new());
        }
        const COLS: usize = 10;
        let rows: Vec<String> = (0..logs.len())
            .map(|i| {
                let b = i * COLS;
                format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6,
                    b + 7,
                    b + 8,
                    b + 9,
                    b + 10
                )
            })
            .collect();
        let sql = format!(
            "WITH v (ord, id, project_id, ticket_id, session_id, step, summary, raw_output, created_at, success) AS \
               (VALUES {}) \
             INSERT INTO execution_logs (id, project_id, ticket_id, session_id, step, summary, raw_output, success, created_at) \
             SELECT v.id, v.project_id, v.ticket_id, v.session_id, v.step, v.summary, v.raw_output, v.success, v.created_at \
             FROM v JOIN tickets t ON t.id = v.ticket_id AND t.project_id = v.project_id ORDER BY v.ord \
             RETURNING id",
            rows.join(", ")
        );
        let ids: Vec<Uuid> = logs.iter().map(|_| Uuid::new_v4()).collect();
        let ts = now();
        with_db!(self, pool => {
            let mut q = sqlx::query_scalar::<_, Uuid>(AssertSqlSafe(sql.as_str()));
            for (i, (log, id)) in logs.iter().zip(&ids).enumerate() {
                q = q
                    .bind(i as i32)
                    .bind(*id)
                    .bind(log.project_id)
                    .bind(log.ticket_id)
                    .bind(&log.session_id)
                    .bind(&log.step)
                    .bind(&log.summary)
                    .bind(&log.raw_output)
                    .bind(ts)
                    .bind(log.success);
            }
            let inserted: std::collections::HashSet<Uuid> = q.fetch_all(pool).await?.into_iter().collect();
            Ok(ids.into_iter().map(|id| inserted.contains(&id).then_some(id)).collect())
        })
    }

    /// A ticket's log entries, oldest first.
    pub async fn list_logs(&self, project_id: Uuid, ticket_id: Uuid) -> DbResult<Vec<LogRow>> {
        with_db!(self, pool => {
            Ok(sqlx::query_as(
                "SELECT id, step, summary, raw_output, success, created_at FROM execution_logs \
                 WHERE ticket_id = $1 AND project_id = $2 ORDER BY created_at, seq",
            )
            .bind(ticket_id)
            .bind(project_id)
            .fetch_all(pool)
            .await?)
        })
    }
}
