//! The `AgentJob` custom resource (`terarchitect.io/v1alpha1`): one agent run of a ticket or a
//! review, turned by the reconciler into a `batch/v1` Job.

use k8s_openapi::api::core::v1::{PodTemplateSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::core::crd::CustomResourceExt;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the operator's resources.
pub const GROUP: &str = "terarchitect.io";
/// Finalizer that makes deleting an unfinished AgentJob stop its Job and report the failure.
pub const FINALIZER: &str = "terarchitect.io/cleanup";
/// Condition saying whether the agent pod found room in the cluster.
pub const CONDITION_SCHEDULED: &str = "Scheduled";
/// Condition saying whether Kueue admitted the run's Job (False while it is held suspended).
pub const CONDITION_ADMITTED: &str = "Admitted";
/// Condition of a run that ended without room in the cluster: True while its queue job is to
/// go (or went) back to the queue instead of failing; False (reason `ReleaseUnsupported`) when
/// the worker API had no release call and the job was failed instead.
pub const CONDITION_RELEASED: &str = "Released";
/// Shortest accepted `spec.timeoutSeconds`.
pub const MIN_TIMEOUT_SECONDS: i64 = 60;

/// What the agent does.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AgentJobKind {
    /// Implement the ticket and open a pull request.
    #[default]
    Ticket,
    /// Address a review comment on the ticket's pull request.
    Review,
}

impl AgentJobKind {
    /// The value of the agent's `JOB_KIND`.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentJobKind::Ticket => "ticket",
            AgentJobKind::Review => "review",
        }
    }
}

/// The review comment a review job addresses.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReviewSpec {
    /// Number of the pull request to work on (positive).
    pub pr_number: i64,
    /// The reviewer's comment to address.
    #[serde(default)]
    pub comment_body: String,
    /// GitHub id of the comment, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_comment_id: Option<i64>,
}

/// Desired state of an AgentJob.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "terarchitect.io",
    version = "v1alpha1",
    kind = "AgentJob",
    doc = "One agent run of a Terarchitect ticket or review, executed as a batch/v1 Job.",
    plural = "agentjobs",
    shortname = "aj",
    namespaced,
    status = "AgentJobStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".spec.kind"}"#,
    printcolumn = r#"{"name":"Ticket","type":"string","jsonPath":".spec.ticketId"}"#,
    printcolumn = r#"{"name":"Job","type":"string","jsonPath":".status.jobName"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.spec.kind != 'review' || (has(self.spec.review) && self.spec.review.prNumber > 0)")
        .message("a review job needs spec.review.prNumber, a positive pull request number")
)]
#[serde(rename_all = "camelCase")]
pub struct AgentJobSpec {
    /// Id (UUID) of the project the ticket belongs to.
    #[x_kube(validation = Rule::new("self.matches('^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$')").message("projectId must be a UUID"))]
    pub project_id: String,
    /// Id (UUID) of the ticket to work on; the agent pushes branch `ticket-<ticketId>`.
    #[x_kube(validation = Rule::new("self.matches('^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$')").message("ticketId must be a UUID"))]
    pub ticket_id: String,
    /// `ticket` (implement the ticket, open a pull request) or `review` (address a review comment).
    #[serde(default)]
    pub kind: AgentJobKind,
    /// URL of the Git repository to clone (the project's GitHub URL).
    #[x_kube(validation = Rule::new("self != ''").message("repoUrl must not be empty"))]
    pub repo_url: String,
    /// Id of the queue job this AgentJob runs. Set by the dispatcher; absent for an AgentJob
    /// applied by hand, whose outcome is then only recorded in its status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_job_id: Option<String>,
    /// Claim attempt of the queue job, sent with heartbeats and the outcome so a stale claim
    /// cannot finish a job that was claimed again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i32>,
    /// For `review` jobs: the pull request and the comment to address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<ReviewSpec>,
    /// Agent image for this run (the operator's `--agent-image` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Compute resources of the agent container (the operator's defaults when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Limit on the run's duration in seconds, the Job's `activeDeadlineSeconds` (the operator
    /// derives it from WORKER_TIMEOUT_SEC when absent). At least 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 60").message("timeoutSeconds must be at least 60"))]
    pub timeout_seconds: Option<i64>,
    /// Seconds the AgentJob is kept once its run finished (and its outcome was reported); the
    /// operator then deletes it, and with it its Job and Secret. 0 keeps it forever. When absent
    /// the operator's AGENTJOB_TTL_SECONDS applies (7 days by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0").message("ttlSecondsAfterFinished must not be negative"))]
    pub ttl_seconds_after_finished: Option<i64>,
    /// Names of Secrets in this namespace whose keys become environment variables of the agent
    /// (settings and tokens such as GITHUB_TOKEN, AGENT_API_KEY, WORKER_API_KEY).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from_secrets: Vec<String>,
    /// Pod template merged over the agent pod the operator builds (after the operator-wide
    /// default template): maps merge, lists of named items (containers, volumes, env, ...) merge
    /// by name, scalars replace. Fields the operator owns (the agent container's command, args,
    /// envFrom and the run's env variables, restartPolicy, automountServiceAccountToken, the
    /// operator's labels), host or service-account access and raised container privileges are
    /// refused with InvalidSpec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "pod_template_schema")]
    pub pod_template: Option<PodTemplateSpec>,
    /// Set to true to stop the run: the Job is deleted and the AgentJob ends `Cancelled`.
    #[serde(default)]
    pub cancel: bool,
}

/// The upstream PodTemplateSpec schema (structural, `kubectl explain`-able), except that a
/// template's pod spec need not list containers: it is merged over the operator's pod.
fn pod_template_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = <PodTemplateSpec as JsonSchema>::json_schema(generator);
    if let Some(spec) = schema
        .get_mut("properties")
        .and_then(|p| p.get_mut("spec"))
        .and_then(serde_json::Value::as_object_mut)
    {
        spec.remove("required");
    }
    schema.insert("nullable".to_owned(), true.into());
    schema
}

/// Lifecycle phase of an AgentJob.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Accepted; the Job is being created or its pod is not running yet.
    Pending,
    /// The agent pod is running.
    Running,
    /// The agent finished its work.
    Succeeded,
    /// The run failed; see `reason` and `message`.
    Failed,
    /// The run was cancelled.
    Cancelled,
}

impl Phase {
    /// Whether the run is over.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::Cancelled)
    }
}

/// Why a run did not succeed.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum FailureReason {
    /// The agent image could not be pulled.
    ImagePull,
    /// The pod could not be scheduled.
    Unschedulable,
    /// The run exceeded its time limit.
    DeadlineExceeded,
    /// The agent ran out of memory.
    #[serde(rename = "OOMKilled")]
    OomKilled,
    /// The agent exited with a failure; `message` says why.
    AgentFailed,
    /// The run was cancelled (by `spec.cancel`, the ticket's cancel request, or deletion).
    Cancelled,
    /// The spec is invalid; `message` says what to fix.
    InvalidSpec,
    /// The pod's configuration could not be applied (e.g. a referenced Secret is missing).
    ConfigError,
    /// The Job disappeared before it finished.
    JobLost,
}

impl FailureReason {
    /// The name used in status, events, metrics and the queue's failure reason.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::ImagePull => "ImagePull",
            FailureReason::Unschedulable => "Unschedulable",
            FailureReason::DeadlineExceeded => "DeadlineExceeded",
            FailureReason::OomKilled => "OOMKilled",
            FailureReason::AgentFailed => "AgentFailed",
            FailureReason::Cancelled => "Cancelled",
            FailureReason::InvalidSpec => "InvalidSpec",
            FailureReason::ConfigError => "ConfigError",
            FailureReason::JobLost => "JobLost",
        }
    }
}

/// Observed state of an AgentJob.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentJobStatus {
    /// Pending, Running, Succeeded, Failed or Cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Conditions: JobCreated, Admitted (with Kueue: False while the Job waits for admission),
    /// Scheduled (False while the pod waits for room in the cluster), Running, Finished,
    /// Released (a run that never found room gives its queue job back), Reported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Name of the batch/v1 Job running the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// When the agent pod started running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<Time>,
    /// Why the run failed or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<FailureReason>,
    /// Details of the outcome (for agent failures, the agent's own last line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Whether the outcome was reported to the worker API (always false without a queue job).
    #[serde(default)]
    pub reported: bool,
    /// The queue attempt the outcome was reported for (a job re-queued after its lease lapsed
    /// and claimed again gets the finished outcome reported for its new attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_attempt: Option<i32>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl AgentJobStatus {
    /// Whether this finished status gives its queue job back to the queue (condition
    /// `Released=True`) instead of reporting a failure.
    pub fn releases_job(&self) -> bool {
        self.conditions
            .iter()
            .any(|c| c.type_ == CONDITION_RELEASED && c.status == "True")
    }
}

impl AgentJob {
    /// The current phase (Pending before the first status).
    pub fn phase(&self) -> Phase {
        self.status
            .as_ref()
            .and_then(|s| s.phase)
            .unwrap_or(Phase::Pending)
    }

    /// Whether the run is over.
    pub fn is_finished(&self) -> bool {
        self.phase().is_terminal()
    }

    /// Whether the run still occupies an agent slot (not finished).
    pub fn is_live(&self) -> bool {
        !self.is_finished()
    }

    /// When a finished run ended: `status.finishTime`, else the `Finished` condition's
    /// transition time.
    pub fn finished_at(&self) -> Option<Time> {
        let status = self.status.as_ref()?;
        status.finish_time.clone().or_else(|| {
            status
                .conditions
                .iter()
                .find(|c| c.type_ == "Finished" && c.status == "True")
                .map(|c| c.last_transition_time.clone())
        })
    }

    /// The condition `type_` of the status, if set.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
    }

    /// Whether the run's pod waits for room in the cluster (condition `Scheduled=False`, reason
    /// `Unschedulable`): while any does, the dispatcher claims nothing new.
    pub fn waits_for_room(&self) -> bool {
        self.is_live()
            && self
                .condition(CONDITION_SCHEDULED)
                .is_some_and(|c| c.status == "False" && c.reason == "Unschedulable")
    }

    /// Whether nothing remains to be reported: the outcome went to the queue for the current
    /// attempt, or there is no queue job (a hand-made AgentJob).
    pub fn is_settled(&self) -> bool {
        if self.spec.queue_job_id.is_none() {
            return true;
        }
        self.status
            .as_ref()
            .is_some_and(|s| s.reported && s.reported_attempt == self.spec.attempt)
    }
}

/// Why a spec is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

fn valid_uuid(s: &str) -> bool {
    uuid::Uuid::try_parse(s).is_ok() && s.len() == 36
}

impl AgentJobSpec {
    /// Checks what the CRD schema's rules check (an API server enforces them; this catches
    /// objects that reached the operator anyway, e.g. through an older CRD).
    pub fn validate(&self) -> Result<(), SpecError> {
        let mut problems = Vec::new();
        if !valid_uuid(&self.project_id) {
            problems.push(format!(
                "spec.projectId must be a UUID, got {:?}",
                self.project_id
            ));
        }
        if !valid_uuid(&self.ticket_id) {
            problems.push(format!(
                "spec.ticketId must be a UUID, got {:?}",
                self.ticket_id
            ));
        }
        if self.repo_url.trim().is_empty() {
            problems.push("spec.repoUrl must not be empty".to_owned());
        }
        if self.kind == AgentJobKind::Review
            && self.review.as_ref().is_none_or(|r| r.pr_number <= 0)
        {
            problems.push(
                "a review job needs spec.review.prNumber, a positive pull request number"
                    .to_owned(),
            );
        }
        if self
            .timeout_seconds
            .is_some_and(|t| t < MIN_TIMEOUT_SECONDS)
        {
            problems.push(format!(
                "spec.timeoutSeconds must be at least {MIN_TIMEOUT_SECONDS}"
            ));
        }
        if self.ttl_seconds_after_finished.is_some_and(|t| t < 0) {
            problems.push("spec.ttlSecondsAfterFinished must not be negative".to_owned());
        }
        if let Some(id) = &self.queue_job_id
            && !valid_uuid(id)
        {
            problems.push(format!("spec.queueJobId must be a UUID, got {id:?}"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SpecError(problems.join("; ")))
        }
    }
}

/// The CRD as YAML (what `terarchitect-operator crd` prints and `crds/` holds).
pub fn crd_yaml() -> String {
    let crd = AgentJob::crd();
    let body = serde_saphyr::to_string(&crd).expect("the CRD serialises to YAML");
    format!(
        "# Generated by `terarchitect-operator crd` from operator/src/crd.rs. Do not edit.\n---\n{body}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> AgentJobSpec {
        AgentJobSpec {
            project_id: uuid::Uuid::new_v4().to_string(),
            ticket_id: uuid::Uuid::new_v4().to_string(),
            kind: AgentJobKind::Ticket,
            repo_url: "https://github.com/acme/shop".into(),
            queue_job_id: None,
            attempt: None,
            review: None,
            image: None,
            resources: None,
            timeout_seconds: None,
            ttl_seconds_after_finished: None,
            env_from_secrets: vec![],
            pod_template: None,
            cancel: false,
        }
    }

    #[test]
    fn validation_explains_every_problem() {
        assert_eq!(spec().validate(), Ok(()));
        let mut s = spec();
        s.kind = AgentJobKind::Review;
        s.ticket_id = "nope".into();
        s.timeout_seconds = Some(5);
        s.ttl_seconds_after_finished = Some(-1);
        let err = s.validate().unwrap_err().0;
        assert!(err.contains("ticketId must be a UUID"), "{err}");
        assert!(
            err.contains("review job needs spec.review.prNumber"),
            "{err}"
        );
        assert!(err.contains("at least 60"), "{err}");
        assert!(err.contains("ttlSecondsAfterFinished"), "{err}");
        s = spec();
        s.kind = AgentJobKind::Review;
        s.review = Some(ReviewSpec {
            pr_number: 3,
            comment_body: String::new(),
            github_comment_id: None,
        });
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn crd_has_schema_columns_and_rules() {
        let crd = AgentJob::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("agentjobs.terarchitect.io")
        );
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.short_names, Some(vec!["aj".to_owned()]));
        let version = &crd.spec.versions[0];
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        let columns: Vec<&str> = version
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(columns, ["Phase", "Kind", "Ticket", "Job", "Reason", "Age"]);
        let json = serde_json::to_string(&crd).unwrap();
        assert!(json.contains("a review job needs spec.review.prNumber"));
        assert!(json.contains("x-kubernetes-validations"));
        assert!(json.contains("\"OOMKilled\""));
    }

    /// Every property of the schema has a description, so `kubectl explain` is useful.
    #[test]
    fn every_field_is_described() {
        fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
            if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
                for (name, sub) in props {
                    let p = format!("{path}.{name}");
                    if sub.get("description").is_none()
                        && !matches!(name.as_str(), "apiVersion" | "kind" | "metadata")
                    {
                        missing.push(p.clone());
                    }
                    // Built-in Kubernetes types (resources, conditions) carry their own docs.
                    if !matches!(name.as_str(), "resources" | "conditions") {
                        walk(&p, sub, missing);
                    }
                }
            }
            if let Some(items) = schema.get("items") {
                walk(&format!("{path}[]"), items, missing);
            }
        }
        let crd = serde_json::to_value(AgentJob::crd()).unwrap();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut missing = Vec::new();
        walk("", schema, &mut missing);
        assert!(
            missing.is_empty(),
            "fields without a description: {missing:?}"
        );
    }
}
