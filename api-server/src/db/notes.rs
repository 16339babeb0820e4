//! Project notes.

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use super::projects::bump_revision;
use super::{Db, DbError, DbResult, WritePool, now, with_db};

/// A `notes` row. `node_id` and `edge_id` hold comma-joined id lists.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NoteRow {
    pub id: Uuid,
    pub project_id: Uuid,
    pub node_id: Option<String>,
    pub edge_id: Option<String>,
    pub title: Option<String>,
    pub content: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A note's fields for create, or a partial update (`None` keeps the stored value; the inner
/// Option is the stored value, NULL when None).
#[derive(Debug, Clone, Default)]
pub struct NoteChanges {
    pub node_id: Option<Option<String>>,
    pub edge_id: Option<Option<String>>,
    pub title: Option<Option<String>>,
    pub content: Option<Option<String>>,
}

const NOTE_COLUMNS: &str =
    "id, project_id, node_id, edge_id, title, content, created_at, updated_at";

impl Db {
    /// Every note of a project, oldest first.
    pub async fn list_notes(&self, project_id: Uuid) -> DbResult<Vec<NoteRow>> {
        let sql = format!(
            "SELECT {NOTE_COLUMNS} FROM notes WHERE project_id = $1 ORDER BY created_at, id"
        );
        with_db!(self, pool => Ok(sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(project_id).fetch_all(pool).await?))
    }

    /// One note of a project.
    pub async fn get_note(&self, project_id: Uuid, note_id: Uuid) -> DbResult<Option<NoteRow>> {
        let sql = format!("SELECT {NOTE_COLUMNS} FROM notes WHERE id = $1 AND project_id = $2");
        with_db!(self, pool => {
            Ok(sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(note_id).bind(project_id).fetch_optional(pool).await?)
        })
    }

    /// Creates a note; `NotFound` when the project does not exist.
    pub async fn create_note(&self, project_id: Uuid, n: &NoteChanges) -> DbResult<NoteRow> {
        let ts = now();
        let sql = format!(
            "INSERT INTO notes (id, project_id, node_id, edge_id, title, content, created_at, updated_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $7 WHERE EXISTS (SELECT 1 FROM projects WHERE id = $2) \
             RETURNING {NOTE_COLUMNS}"
        );
        with_db!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let row: Option<NoteRow> = sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .bind(Uuid::new_v4())
                .bind(project_id)
                .bind(n.node_id.clone().flatten())
                .bind(n.edge_id.clone().flatten())
                .bind(n.title.clone().flatten())
                .bind(n.content.clone().flatten())
                .bind(ts)
                .fetch_optional(&mut *tx)
                .await?;
            let row = row.ok_or(DbError::NotFound("Project"))?;
            bump_revision!(&mut *tx, project_id)?;
            tx.commit().await?;
            Ok(row)
        })
    }

    /// Applies `changes`; None when the note is not in the project.
    pub async fn update_note(
        &self,
        project_id: Uuid,
        note_id: Uuid,
        c: &NoteChanges,
    ) -> DbResult<Option<NoteRow>> {
        let sql = format!(
            "UPDATE notes SET \
               node_id = CASE WHEN $3 THEN $4 ELSE node_id END, \
               edge_id = CASE WHEN $5 THEN $6 ELSE edge_id END, \
               title = CASE WHEN $7 THEN $8 ELSE title END, \
               content = CASE WHEN $9 THEN $10 ELSE content END, \
               updated_at = $11 \
             WHERE id = $1 AND project_id = $2 RETURNING {NOTE_COLUMNS}"
        );
        with_db!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let row: Option<NoteRow> = sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .bind(note_id)
                .bind(project_id)
                .bind(c.node_id.is_some())
                .bind(c.node_id.clone().flatten())
                .bind(c.edge_id.is_some())
                .bind(c.edge_id.clone().flatten())
                .bind(c.title.is_some())
                .bind(c.title.clone().flatten())
                .bind(c.content.is_some())
                .bind(c.content.clone().flatten())
                .bind(now())
                .fetch_optional(&mut *tx)
                .await?;
            if row.is_some() {
                bump_revision!(&mut *tx, project_id)?;
            }
            tx.commit().await?;
            Ok(row)
        })
    }

    /// Deletes a note; false when it is not in the project.
    pub async fn delete_note(&self, project_id: Uuid, note_id: Uuid) -> DbResult<bool> {
        with_db!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let done = sqlx::query("DELETE FROM notes WHERE id = $1 AND project_id = $2")
                .bind(note_id)
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
}
