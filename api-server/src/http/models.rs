//! JSON shapes of the UI-facing resources (projects, graph, board, tickets, notes, logs), with
//! the original's field names.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::extract::double_option;
use crate::db::{LogRow, NoteRow, ProjectRow, TicketRow};

/// A project.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Project {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub github_url: Option<String>,
    /// `docker` or `local`.
    pub execution_mode: String,
    pub project_path: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<ProjectRow> for Project {
    fn from(r: ProjectRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            description: r.description,
            github_url: r.github_url,
            execution_mode: r.execution_mode,
            project_path: r.project_path,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// Body of `POST /api/projects`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(examples(json!({"name": "Shop", "github_url": "https://github.com/acme/shop", "is_existing_repo": true})))]
pub struct ProjectCreate {
    /// Defaults to `Untitled Project`.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = String, max_length = 255)]
    pub name: Option<Option<String>>,
    pub description: Option<String>,
    pub github_url: Option<String>,
    /// `local` (any case) or anything else for `docker`.
    pub execution_mode: Option<String>,
    pub project_path: Option<String>,
    /// Exactly `true` skips the default "Project setup" ticket; any other value (or none)
    /// creates it.
    #[schema(value_type = Value, required = false)]
    pub is_existing_repo: Option<Value>,
}

/// Body of `PUT /api/projects/<id>`: absent keys keep their value.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct ProjectUpdate {
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = String, max_length = 255)]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub github_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub execution_mode: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub project_path: Option<Option<String>>,
}

/// Body of `DELETE /api/projects/<id>`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct DeleteConfirmation {
    /// Must equal the project's name (surrounding blanks are ignored).
    #[schema(required = true, value_type = String)]
    pub confirm_name: Option<String>,
}

/// A plain `{"message": ...}` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Message {
    pub message: String,
}

impl Message {
    /// A message body.
    pub fn new(m: &str) -> Self {
        Self {
            message: m.to_owned(),
        }
    }
}

/// The project graph.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Graph {
    pub id: Uuid,
    pub project_id: Uuid,
    pub nodes: Vec<Value>,
    pub edges: Vec<Value>,
    pub version: i32,
}

/// Body of `PUT …/graph`: each key present replaces that list (null means empty).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct GraphUpdate {
    /// React-Flow nodes (stored as given).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Vec<Value>>)]
    pub nodes: Option<Option<Vec<Value>>>,
    /// React-Flow edges (stored as given).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Vec<Value>>)]
    pub edges: Option<Option<Vec<Value>>>,
}

/// Answer of a graph update.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GraphVersion {
    pub version: i32,
}

/// The kanban board.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Kanban {
    pub id: Uuid,
    pub project_id: Uuid,
    pub columns: Vec<Value>,
}

/// Body of `PUT …/kanban`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct KanbanUpdate {
    /// The columns (stored as given; absent or null: none).
    #[schema(value_type = Option<Vec<Value>>)]
    pub columns: Option<Vec<Value>>,
}

/// Answer of a board update.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KanbanColumns {
    pub columns: Vec<Value>,
}

/// A ticket.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Ticket {
    pub id: Uuid,
    pub project_id: Uuid,
    pub column_id: String,
    pub title: String,
    pub description: Option<String>,
    pub associated_node_ids: Value,
    pub associated_edge_ids: Value,
    pub priority: Option<String>,
    pub status: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub pr_url: Option<String>,
    pub pr_number: Option<i32>,
}

impl From<TicketRow> for Ticket {
    fn from(r: TicketRow) -> Self {
        let list = |v: Option<sqlx::types::Json<Value>>| {
            v.map_or_else(|| Value::Array(Vec::new()), |j| j.0)
        };
        Self {
            id: r.id,
            project_id: r.project_id,
            column_id: r.column_id,
            title: r.title,
            description: r.description,
            associated_node_ids: list(r.associated_node_ids),
            associated_edge_ids: list(r.associated_edge_ids),
            priority: r.priority,
            status: r.status,
            created_at: r.created_at,
            updated_at: r.updated_at,
            pr_url: r.pr_url,
            pr_number: r.pr_number,
        }
    }
}

/// Body of `POST …/tickets`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(examples(json!({"title": "Add a /version endpoint", "column_id": "backlog", "priority": "medium"})))]
pub struct TicketCreate {
    #[schema(required = true, value_type = String, min_length = 1, max_length = 255)]
    pub title: Option<String>,
    /// Kanban column, e.g. `backlog` (creating a ticket in `in_progress` queues no job).
    #[schema(required = true, value_type = String, min_length = 1)]
    pub column_id: Option<String>,
    pub description: Option<String>,
    pub associated_node_ids: Option<Vec<String>>,
    pub associated_edge_ids: Option<Vec<String>>,
    pub priority: Option<String>,
    pub status: Option<String>,
}

/// Body of `PATCH …/tickets/<id>`: absent keys keep their value. Moving `column_id` to
/// `in_progress` enqueues an agent job.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(examples(json!({"column_id": "in_progress"})))]
pub struct TicketPatch {
    /// Moving to `in_progress` checks the project is ready (400 with the reason otherwise).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = String, min_length = 1)]
    pub column_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = String, min_length = 1, max_length = 255)]
    pub title: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub priority: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub status: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Vec<String>>)]
    pub associated_node_ids: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Vec<String>>)]
    pub associated_edge_ids: Option<Option<Vec<String>>>,
}

/// A log entry as the UI reads it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LogView {
    pub id: Uuid,
    pub step: Option<String>,
    pub summary: Option<String>,
    pub raw_output: Option<String>,
    pub success: bool,
    pub created_at: DateTime<Utc>,
}

impl From<LogRow> for LogView {
    fn from(r: LogRow) -> Self {
        Self {
            id: r.id,
            step: r.step,
            summary: r.summary,
            raw_output: r.raw_output,
            success: r.success,
            created_at: r.created_at,
        }
    }
}

/// A note.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Note {
    pub id: Uuid,
    pub project_id: Uuid,
    pub node_ids: Vec<String>,
    pub edge_ids: Vec<String>,
    pub title: Option<String>,
    pub content: Option<String>,
    pub created_at: DateTime<Utc>,
}

fn split_ids(joined: Option<&str>) -> Vec<String> {
    joined
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

impl From<NoteRow> for Note {
    fn from(r: NoteRow) -> Self {
        Self {
            id: r.id,
            project_id: r.project_id,
            node_ids: split_ids(r.node_id.as_deref()),
            edge_ids: split_ids(r.edge_id.as_deref()),
            title: r.title,
            content: r.content,
            created_at: r.created_at,
        }
    }
}

/// Body of note create and update. `node_ids`/`edge_ids` are a list or a comma-separated string.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct NoteBody {
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = id_list_schema)]
    pub node_ids: Option<Option<Value>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = id_list_schema)]
    pub edge_ids: Option<Option<Value>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, max_length = 255)]
    pub title: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub content: Option<Option<String>>,
}

/// Schema of a note's id list: ids (strings or numbers), a comma-separated string, or null.
fn id_list_schema() -> utoipa::openapi::schema::Schema {
    serde_json::from_value(serde_json::json!({
        "type": ["array", "string", "null"],
        "items": {"type": ["string", "number"]},
        "description": "Ids as a list (strings or numbers) or a comma-separated string; null clears them",
    }))
    .expect("a valid schema")
}
