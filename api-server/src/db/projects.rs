//! Projects, their graph and their kanban board.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::AssertSqlSafe;
use sqlx::types::Json;
use uuid::Uuid;

use super::{Db, DbResult, WritePool, now, with_db};

/// A `projects` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProjectRow {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub project_path: Option<String>,
    pub github_url: Option<String>,
    pub execution_mode: String,
    pub revision: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A `graphs` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GraphRow {
    pub id: Uuid,
    pub project_id: Uuid,
    pub nodes: Json<Value>,
    pub edges: Json<Value>,
    pub version: i32,
}

/// A `kanban_boards` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KanbanRow {
    pub id: Uuid,
    pub project_id: Uuid,
    pub columns: Json<Value>,
}

/// Fields of a new project.
#[derive(Debug, Clone)]
pub struct NewProject {
    pub name: String,
    pub description: Option<String>,
    pub github_url: Option<String>,
    pub execution_mode: String,
    pub project_path: Option<String>,
    /// The default tickets to create with it (none for an existing repository).
    pub default_tickets: Vec<DefaultTicket>,
}

/// A ticket created together with a new project.
#[derive(Debug, Clone)]
pub struct DefaultTicket {
    pub title: String,
    pub description: String,
    pub associated_node_ids: Value,
    pub associated_edge_ids: Value,
    pub priority: String,
    pub status: String,
}

/// A partial update of a project. `None` keeps the stored value; for nullable columns
/// `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct ProjectChanges {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub github_url: Option<Option<String>>,
    pub execution_mode: Option<String>,
    pub project_path: Option<Option<String>>,
}

const PROJECT_COLUMNS: &str = "id, name, description, project_path, github_url, execution_mode, revision, created_at, updated_at";

/// The four columns every new board gets.
pub fn default_kanban_columns() -> Value {
    json!([
        {"id": "backlog", "title": "Backlog", "order": 0},
        {"id": "in_progress", "title": "In Progress", "order": 1},
        {"id": "in_review", "title": "In Review", "order": 2},
        {"id": "done", "title": "Done", "order": 3}
    ])
}

impl Db {
    /// Creates a project with its graph, its board and its default tickets, atomically.
    pub async fn create_project(&self, p: &NewProject) -> DbResult<ProjectRow> {
        let id = Uuid::new_v4();
        let ts = now();
        with_db!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let row: ProjectRow = sqlx::query_as(AssertSqlSafe(format!(
                "INSERT INTO projects (id, name, description, project_path, github_url, execution_mode, \
                 revision, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $7) \
                 RETURNING {PROJECT_COLUMNS}"
            )))
            .bind(id)
            .bind(&p.name)
            .bind(&p.description)
            .bind(&p.project_path)
            .bind(&p.github_url)
            .bind(&p.execution_mode)
            .bind(ts)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO graphs (id, project_id, nodes, edges, version, created_at, updated_at) \
                 VALUES ($1, $2, $3, $3, 1, $4, $4)",
            )
            .bind(Uuid::new_v4())
            .bind(id)
            .bind(Json(json!([])))
            .bind(ts)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO kanban_boards (id, project_id, columns, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $4)",
            )
            .bind(Uuid::new_v4())
            .bind(id)
            .bind(Json(default_kanban_columns()))
            .bind(ts)
            .execute(&mut *tx)
            .await?;
            for t in &p.default_tickets {
                sqlx::query(
                    "INSERT INTO tickets (id, project_id, column_id, title, description, \
                     associated_node_ids, associated_edge_ids, priority, status, cancel_requested, \
                     created_at, updated_at) \
                     VALUES ($1, $2, 'backlog', $3, $4, $5, $6, $7, $8, FALSE, $9, $9)",
                )
                .bind(Uuid::new_v4())
                .bind(id)
                .bind(&t.title)
                .bind(&t.description)
                .bind(Json(&t.associated_node_ids))
                .bind(Json(&t.associated_edge_ids))
                .bind(&t.priority)
                .bind(&t.status)
                .bind(ts)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(row)
        })
    }

    /// Every project, oldest first.
    pub async fn list_projects(&self) -> DbResult<Vec<ProjectRow>> {
        let sql = format!("SELECT {PROJECT_COLUMNS} FROM projects ORDER BY created_at, id");
        with_db!(self, pool => Ok(sqlx::query_as(AssertSqlSafe(sql.as_str())).fetch_all(pool).await?))
    }

    /// One project.
    pub async fn get_project(&self, id: Uuid) -> DbResult<Option<ProjectRow>> {
        let sql = format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE id = $1");
        with_db!(self, pool => Ok(sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(id).fetch_optional(pool).await?))
    }

    /// Applies `changes` in one statement; None when the project does not exist.
    pub async fn update_project(
        &self,
        id: Uuid,
        c: &ProjectChanges,
    ) -> DbResult<Option<ProjectRow>> {
        let sql = format!(
            "UPDATE projects SET \
               name = COALESCE($2, name), \
               description = CASE WHEN $3 THEN $4 ELSE description END, \
               github_url = CASE WHEN $5 THEN $6 ELSE github_url END, \
               execution_mode = COALESCE($7, execution_mode), \
               project_path = CASE WHEN $8 THEN $9 ELSE project_path END, \
               revision = revision + 1, \
               updated_at = $10 \
             WHERE id = $1 RETURNING {PROJECT_COLUMNS}"
        );
        with_db!(self, pool => {
            Ok(sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .bind(id)
                .bind(&c.name)
                .bind(c.description.is_some())
                .bind(c.description.clone().flatten())
                .bind(c.github_url.is_some())
                .bind(c.github_url.clone().flatten())
                .bind(&c.execution_mode)
                .bind(c.project_path.is_some())
                .bind(c.project_path.clone().flatten())
                .bind(now())
                .fetch_optional(pool)
                .await?)
        })
    }

    /// Deletes a project and everything it owns (graph, board, tickets, jobs, logs, memory).
    pub async fn delete_project(&self, id: Uuid) -> DbResult<bool> {
        with_db!(self, pool => {
            let done = sqlx::query("DELETE FROM projects WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await?;
            Ok(done.rows_affected() > 0)
        })
    }

    /// The project's graph.
    pub async fn get_graph(&self, project_id: Uuid) -> DbResult<Option<GraphRow>> {
        with_db!(self, pool => {
            Ok(sqlx::query_as(
                "SELECT id, project_id, nodes, edges, version FROM graphs WHERE project_id = $1",
            )
            .bind(project_id)
            .fetch_optional(pool)
            .await?)
        })
    }

    /// Replaces the given parts of the graph and bumps its version; the new version, or None
    /// when the project has no graph.
    pub async fn update_graph(
        &self,
        project_id: Uuid,
        nodes: Option<&Value>,
        edges: Option<&Value>,
    ) -> DbResult<Option<i32>> {
        let ts = now();
        with_db!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let version: Option<i32> = sqlx::query_scalar(
                "UPDATE graphs SET \
                   nodes = CASE WHEN $2 THEN $3 ELSE nodes END, \
                   edges = CASE WHEN $4 THEN $5 ELSE edges END, \
                   version = version + 1, updated_at = $6 \
                 WHERE project_id = $1 RETURNING version",
            )
            .bind(project_id)
            .bind(nodes.is_some())
            .bind(Json(nodes.cloned().unwrap_or_else(|| json!([]))))
            .bind(edges.is_some())
            .bind(Json(edges.cloned().unwrap_or_else(|| json!([]))))
            .bind(ts)
            .fetch_optional(&mut *tx)
            .await?;
            if version.is_some() {
                bump_revision!(&mut *tx, project_id)?;
            }
            tx.commit().await?;
            Ok(version)
        })
    }

    /// The project's kanban board.
    pub async fn get_kanban(&self, project_id: Uuid) -> DbResult<Option<KanbanRow>> {
        with_db!(self, pool => {
            Ok(sqlx::query_as("SELECT id, project_id, columns FROM kanban_boards WHERE project_id = $1")
                .bind(project_id)
                .fetch_optional(pool)
                .await?)
        })
    }

    /// Replaces the board's columns; None when the project has no board.
    pub async fn update_kanban(
        &self,
        project_id: Uuid,
        columns: &Value,
    ) -> DbResult<Option<Value>> {
        with_db!(self, pool => {
            let stored: Option<Json<Value>> = sqlx::query_scalar(
                "UPDATE kanban_boards SET columns = $2, updated_at = $3 WHERE project_id = $1 RETURNING columns",
            )
            .bind(project_id)
            .bind(Json(columns))
            .bind(now())
            .fetch_optional(pool)
            .await?;
            Ok(stored.map(|j| j.0))
        })
    }

    /// The project's revision counter (it changes whenever worker-context content may change),
    /// or None unless the ticket belongs to the project.
    pub async fn context_revision(
        &self,
        project_id: Uuid,
        ticket_id: Uuid,
    ) -> DbResult<Option<i64>> {
        with_db!(self, pool => {
            Ok(sqlx::query_scalar(
                "SELECT p.revision FROM projects p JOIN tickets t ON t.project_id = p.id \
                 WHERE p.id = $1 AND t.id = $2",
            )
            .bind(project_id)
            .bind(ticket_id)
            .fetch_optional(pool)
            .await?)
        })
    }
}

/// Marks the project's worker-context content as changed, inside the caller's transaction.
/// (A macro rather than a generic function: it keeps handler futures provably `Send`.)
macro_rules! bump_revision {
    ($executor:expr, $project_id:expr) => {
        sqlx::query("UPDATE projects SET revision = revision + 1 WHERE id = $1")
            .bind($project_id)
            .execute($executor)
            .await
            .map(|_| ())
    };
}
pub(crate) use bump_revision;
