//! Request and response bodies of the worker API.
//!
//! Field names, optionality and JSON shapes follow the original Terarchitect contract
//! (`shared/seed`, behaviour reference §2.6–§2.7, §2.14). Additions made by this implementation
//! (leases, attempts, failure reasons, long polling) are optional on the wire, so a client that
//! ignores them keeps working.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Largest `wait_seconds` a claim may ask for.
pub const MAX_WAIT_SECONDS: u32 = 30;

/// The kind of work a queued job asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Implement a ticket and open a pull request.
    Ticket,
    /// Address a review comment on the ticket's pull request.
    Review,
}

impl JobKind {
    /// The wire spelling (`ticket` or `review`).
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Ticket => "ticket",
            JobKind::Review => "review",
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ticket" => Ok(JobKind::Ticket),
            "review" => Ok(JobKind::Review),
            other => Err(format!(
                "unknown job kind {other:?} (expected ticket or review)"
            )),
        }
    }
}

/// Lifecycle state of a queued job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting to be claimed.
    Pending,
    /// Claimed and holding a lease.
    Running,
    /// Reported successful.
    Completed,
    /// Reported failed, cancelled, or out of attempts.
    Failed,
}

impl JobStatus {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
        }
    }

    /// Whether the job has reached a final state.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(JobStatus::Pending),
            "running" => Ok(JobStatus::Running),
            "completed" => Ok(JobStatus::Completed),
            "failed" => Ok(JobStatus::Failed),
            other => Err(format!("unknown job status {other:?}")),
        }
    }
}

/// Body of `POST /api/worker/jobs/start`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimRequest {
    /// Only claim jobs of this project; all projects when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<Uuid>,
    /// Only claim jobs of these projects (extension; the original server ignores it, so send it
    /// only to servers that announce the extended protocol).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_ids: Option<Vec<Uuid>>,
    /// Long poll: wait up to this many seconds (at most 30) for a job before answering 204.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_seconds: Option<u32>,
    /// Lease length the claimer will keep alive with heartbeats. The server default applies when
    /// absent (long enough for clients that never heartbeat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_seconds: Option<u32>,
}

/// Review-only fields of a claimed job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReviewFields {
    /// Number of the pull request to work on.
    pub pr_number: i64,
    /// The reviewer comment to address (`""` when none).
    #[serde(default)]
    pub comment_body: String,
    /// GitHub id of the comment, when known.
    #[serde(default)]
    pub github_comment_id: Option<i64>,
}

/// A job handed out by `POST /api/worker/jobs/start` (200).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimedJob {
    /// Queue job id.
    pub job_id: Uuid,
    /// Ticket the job works on.
    pub ticket_id: Uuid,
    /// Project of the ticket.
    pub project_id: Uuid,
    /// `ticket` or `review`.
    pub kind: JobKind,
    /// The project's GitHub URL, or `""`.
    #[serde(default)]
    pub repo_url: String,
    /// `docker` or `local`.
    #[serde(default = "default_execution_mode")]
    pub execution_mode: String,
    /// Host path for local execution, or null.
    #[serde(default)]
    pub project_path: Option<String>,
    /// Present only for review jobs.
    #[serde(flatten)]
    pub review: Option<ReviewFields>,
    /// Environment for the agent (settings and secrets). Present only when non-empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_env: Option<BTreeMap<String, String>>,
    /// When the job was enqueued (addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    /// How many times the job has been claimed, this claim included (addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i32>,
    /// When the lease of this claim runs out unless extended by a heartbeat (addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Run credential minted for this claim (addition): a bearer token valid only for this job's
    /// attempt, its ticket and its project, until the job finishes or is re-claimed. Hand it to
    /// the agent instead of the worker key. Absent from servers that do not mint run tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_token: Option<String>,
}

fn default_execution_mode() -> String {
    "docker".to_owned()
}

impl fmt::Debug for ClaimedJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // agent_env carries secrets: print its keys only.
        f.debug_struct("ClaimedJob")
            .field("job_id", &self.job_id)
            .field("ticket_id", &self.ticket_id)
            .field("project_id", &self.project_id)
            .field("kind", &self.kind)
            .field("repo_url", &self.repo_url)
            .field("execution_mode", &self.execution_mode)
            .field("project_path", &self.project_path)
            .field("review", &self.review)
            .field(
                "agent_env_keys",
                &self
                    .agent_env
                    .as_ref()
                    .map(|env| env.keys().collect::<Vec<_>>()),
            )
            .field("created_at", &self.created_at)
            .field("attempt", &self.attempt)
            .field("lease_expires_at", &self.lease_expires_at)
            .field("run_token", &self.run_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Body of `POST /api/worker/jobs/<id>/fail` (optional; the original accepts none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FailRequest {
    /// Machine-readable reason, e.g. `AgentFailed`, `DeadlineExceeded`, `Cancelled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Only fail the job if this is still its current attempt (guards against a stale claimer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i32>,
}

/// Body of `POST /api/worker/jobs/<id>/complete` (optional; the original accepts none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CompleteJobRequest {
    /// Only complete the job if this is still its current attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i32>,
}

/// Body of `POST /api/worker/jobs/<id>/release` (an addition; optional): gives a running job back
/// to the queue without failing it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReleaseJobRequest {
    /// Only release the job if this is still its current attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i32>,
    /// Why the claimer gives the job back, e.g. `Unschedulable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// 200 answer of job complete and fail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobTransitionResponse {
    /// `Job completed`, `Job failed` or `Job released`.
    pub message: String,
    /// The job id.
    pub job_id: Uuid,
}

/// 409 answer when a job is not in the state an operation needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobConflict {
    /// `Job not running`.
    pub error: String,
    /// The job's current status.
    pub status: String,
}

/// Body of `POST /api/worker/jobs/<id>/heartbeat`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatRequest {
    /// New lease length from now; the claim's lease length when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_seconds: Option<u32>,
    /// Only extend the lease if this is still the job's current attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i32>,
}

/// 200 answer of a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatResponse {
    /// The job id.
    pub job_id: Uuid,
    /// Always `running`.
    pub status: JobStatus,
    /// The current attempt.
    pub attempt: i32,
    /// The new lease deadline.
    pub lease_expires_at: DateTime<Utc>,
    /// Whether the job's ticket has a pending cancellation request.
    pub cancel_requested: bool,
}

/// `GET /api/worker/jobs/<id>`: the full state of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobState {
    /// Queue job id.
    pub job_id: Uuid,
    /// Ticket id.
    pub ticket_id: Uuid,
    /// Project id.
    pub project_id: Uuid,
    /// `ticket` or `review`.
    pub kind: JobKind,
    /// Lifecycle state.
    pub status: JobStatus,
    /// Claims so far.
    pub attempt: i32,
    /// Enqueue time.
    pub created_at: DateTime<Utc>,
    /// Last state change.
    pub updated_at: DateTime<Utc>,
    /// Time of the latest claim.
    pub claimed_at: Option<DateTime<Utc>>,
    /// Lease deadline while running.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// When the job reached completed or failed.
    pub finished_at: Option<DateTime<Utc>>,
    /// Failure reason, when failed.
    pub fail_reason: Option<String>,
    /// Failure detail, when failed.
    pub fail_message: Option<String>,
    /// Review jobs: pull request number.
    pub pr_number: Option<i64>,
    /// Review jobs: the comment to address.
    pub comment_body: Option<String>,
    /// Review jobs: GitHub comment id.
    pub github_comment_id: Option<i64>,
    /// Whether the ticket has a pending cancellation request.
    pub cancel_requested: bool,
}

/// Body of `POST /api/projects/<pid>/tickets/<tid>/review-jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnqueueReviewRequest {
    /// Pull request number (required, positive).
    pub pr_number: i64,
    /// The reviewer's comment.
    #[serde(default)]
    pub comment_body: String,
    /// GitHub id of the comment.
    #[serde(default)]
    pub github_comment_id: Option<i64>,
}

/// A ticket in one of the worker-context ticket lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TicketSummary {
    /// Ticket id.
    pub id: Uuid,
    /// Title.
    pub title: String,
    /// Description.
    pub description: Option<String>,
    /// Priority (`low`, `medium`, `high`, free text).
    pub priority: Option<String>,
    /// Kanban column.
    pub column_id: String,
    /// Status (`todo`, `completed`, free text).
    pub status: Option<String>,
    /// Set on the ticket the job works on.
    #[serde(
        rename = "_current_ticket",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub current_ticket: Option<bool>,
    /// Set on the ticket the job works on: its raw node id list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub associated_node_ids: Option<Value>,
}

/// `current_ticket` of the worker context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CurrentTicket {
    /// Ticket id.
    pub id: Uuid,
    /// Title.
    pub title: String,
    /// Description.
    pub description: Option<String>,
    /// Priority.
    pub priority: Option<String>,
    /// Kanban column.
    pub column_id: String,
    /// Status.
    pub status: Option<String>,
    /// Always true.
    #[serde(rename = "_current_ticket")]
    pub current_ticket: bool,
    /// Raw stored node id list (may be `["*"]`).
    pub associated_node_ids: Value,
    /// `"<label or id>: <id>"` for every associated node.
    pub associated_nodes_labeled: Vec<String>,
    /// `"<source label> → <target label>: <id>"` for every associated edge.
    pub associated_edges_labeled: Vec<String>,
}

/// A graph as React-Flow nodes and edges.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GraphView {
    /// Nodes (opaque objects).
    pub nodes: Vec<Value>,
    /// Edges (opaque objects, enriched with labels).
    pub edges: Vec<Value>,
}

/// A note as the worker sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ContextNote {
    /// Title.
    pub title: Option<String>,
    /// Content.
    pub content: Option<String>,
    /// Comma-joined node ids, or null.
    pub node_id: Option<String>,
}

/// `GET /api/projects/<pid>/tickets/<tid>/worker-context`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkerContext {
    /// Project name.
    pub project_name: String,
    /// Project description.
    pub project_description: Option<String>,
    /// Project GitHub URL.
    pub github_url: Option<String>,
    /// The ticket the job works on.
    pub current_ticket: CurrentTicket,
    /// The whole graph with edge labels, or null when the project has none.
    pub graph: Option<GraphView>,
    /// Nodes and edges associated with the ticket.
    pub graph_relevant_to_current_ticket: GraphView,
    /// Every project note.
    pub notes: Vec<ContextNote>,
    /// Up to 10 most recently updated backlog tickets.
    pub backlog_tickets: Vec<TicketSummary>,
    /// Up to 5 in-progress tickets, the current one first.
    pub in_progress_tickets: Vec<TicketSummary>,
    /// Up to 5 most recently updated done tickets.
    pub done_tickets: Vec<TicketSummary>,
    /// The GitHub URL or `""`.
    pub repo_url: String,
    /// Project id as a string.
    pub project_id: String,
    /// Agent settings (DB over env; `""` when unset).
    pub agent_settings: BTreeMap<String, String>,
}

impl fmt::Debug for WorkerContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // agent_settings may hold secrets: print its keys only.
        f.debug_struct("WorkerContext")
            .field("project_id", &self.project_id)
            .field("project_name", &self.project_name)
            .field("current_ticket", &self.current_ticket.id)
            .field("repo_url", &self.repo_url)
            .field(
                "agent_settings_keys",
                &self.agent_settings.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Body of `POST /api/projects/<pid>/tickets/<tid>/logs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogEntry {
    /// Director session id (required).
    pub session_id: String,
    /// Step name (truncated to 100 characters by the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// One-line summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Full prompt or output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_output: Option<String>,
    /// Whether the step succeeded: `false` for the entry of a failed run; absent means `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<bool>,
}

/// 200 answer of a log POST.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogResponse {
    /// Id of the stored entry.
    pub id: Uuid,
    /// `Logged`.
    pub message: String,
}

/// Body of `POST /api/projects/<pid>/tickets/<tid>/complete`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CompleteTicketRequest {
    /// URL of the opened pull request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr_url: Option<String>,
    /// Number of the opened pull request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr_number: Option<i64>,
    /// Summary of the work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Review flow: the reply posted on the pull request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_comment_body: Option<String>,
}

/// 200 answer of ticket complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CompleteTicketResponse {
    /// `Complete`.
    pub message: String,
    /// The ticket id.
    pub ticket_id: Uuid,
}

/// `GET …/cancel-requested`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CancelRequested {
    /// Whether the ticket's run should stop.
    pub cancel_requested: bool,
}

/// Body of `POST /api/projects/<pid>/memory/retrieve`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemoryRetrieveRequest {
    /// One or more queries.
    pub queries: Vec<String>,
    /// Passages per query (default 200, like the original).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_to_retrieve: Option<u32>,
}

/// One query's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemoryQueryResult {
    /// The query.
    pub question: String,
    /// Passages, best first.
    pub docs: Vec<String>,
    /// Scores, aligned with `docs`.
    pub doc_scores: Vec<f64>,
}

/// 200 answer of memory retrieve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemoryRetrieveResponse {
    /// One entry per query, in query order.
    pub results: Vec<MemoryQueryResult>,
}

/// Body of memory index and delete.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemoryDocsRequest {
    /// Passages (exact texts for delete).
    pub docs: Vec<String>,
}

/// 200 answer of memory index and delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemoryDocsResponse {
    /// `Indexed` or `Deleted`.
    pub message: String,
    /// Number of docs in the request.
    pub count: usize,
}

/// A JSON error body: `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
    /// Extra detail, when there is any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ticket_claim_has_no_review_keys_and_review_claim_has_all() {
        let mut job = ClaimedJob {
            job_id: Uuid::nil(),
            ticket_id: Uuid::nil(),
            project_id: Uuid::nil(),
            kind: JobKind::Ticket,
            repo_url: String::new(),
            execution_mode: "docker".into(),
            project_path: None,
            review: None,
            agent_env: None,
            created_at: None,
            attempt: None,
            lease_expires_at: None,
            run_token: None,
        };
        let v = serde_json::to_value(&job).unwrap();
        let obj = v.as_object().unwrap();
        assert!(!obj.contains_key("pr_number"));
        assert!(!obj.contains_key("agent_env"));
        assert_eq!(obj["project_path"], Value::Null);

        job.kind = JobKind::Review;
        job.review = Some(ReviewFields {
            pr_number: 7,
            comment_body: String::new(),
            github_comment_id: None,
        });
        let v = serde_json::to_value(&job).unwrap();
        assert_eq!(v["pr_number"], 7);
        assert_eq!(v["comment_body"], "");
        assert!(v.as_object().unwrap().contains_key("github_comment_id"));
        let back: ClaimedJob = serde_json::from_value(v).unwrap();
        assert_eq!(back, job);
    }

    #[test]
    fn original_claim_body_parses() {
        // Exactly what the original app answers: no additions.
        let v = json!({"job_id": "6f1c9a9e-8d4b-4c1e-9b55-1d2f3a4b5c6d",
            "ticket_id": "6f1c9a9e-8d4b-4c1e-9b55-1d2f3a4b5c6e",
            "project_id": "6f1c9a9e-8d4b-4c1e-9b55-1d2f3a4b5c6f",
            "kind": "ticket", "repo_url": "https://github.com/o/r",
            "execution_mode": "docker", "project_path": null,
            "agent_env": {"GITHUB_TOKEN": "ghp_secret"}});
        let job: ClaimedJob = serde_json::from_value(v).unwrap();
        assert!(job.review.is_none());
        assert_eq!(job.attempt, None);
        let debug = format!("{job:?}");
        assert!(!debug.contains("ghp_secret"), "{debug}");
        assert!(debug.contains("GITHUB_TOKEN"));
    }
}
