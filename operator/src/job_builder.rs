//! Builds the `batch/v1` Job that runs an AgentJob (a pure function of the AgentJob and the
//! operator's defaults).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvFromSource, EnvVar, LocalObjectReference,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, SecretEnvSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::config::{DockerMode, RunConfig};
use crate::crd::{AgentJob, AgentJobKind};
use crate::pod_template::{self, Origin, TemplateError};

/// Label naming the AgentJob a Job, Pod or Secret belongs to.
pub const LABEL_AGENTJOB: &str = "terarchitect.io/agentjob";
/// Label with the project id.
pub const LABEL_PROJECT: &str = "terarchitect.io/project-id";
/// Label with the ticket id.
pub const LABEL_TICKET: &str = "terarchitect.io/ticket-id";
/// Label with the queue job id.
pub const LABEL_QUEUE_JOB: &str = "terarchitect.io/queue-job-id";
/// Label with the job kind.
pub const LABEL_KIND: &str = "terarchitect.io/kind";
/// Label naming the Kueue LocalQueue of a Job.
pub const LABEL_KUEUE_QUEUE: &str = "kueue.x-k8s.io/queue-name";
/// Annotation on an env Secret: the queue job attempt whose claim it holds (a re-claim of a
/// released job rewrites the Secret for the next attempt; the finished run's clean-up must
/// not delete that one).
pub const ANNOTATION_SECRET_ATTEMPT: &str = "terarchitect.io/attempt";
/// Standard managed-by label.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of the managed-by label.
pub const MANAGER: &str = "terarchitect-operator";
/// Name of the agent container.
pub const AGENT_CONTAINER: &str = "agent";
/// Where agent pods clone the repository.
pub const WORKSPACE_DIR: &str = "/workspace";
/// The agent container's command: the agent binary's container start-up.
pub const AGENT_COMMAND: [&str; 2] = ["terarchitect-agent", "entrypoint"];
/// User and group agent pods run as (the agent image's non-root user) unless DinD needs root.
pub const AGENT_UID: i64 = 10001;

/// What every agent Job shares, from the operator's configuration.
#[derive(Debug, Clone)]
pub struct JobDefaults {
    pub image: String,
    pub image_pull_policy: String,
    pub image_pull_secrets: Vec<String>,
    pub api_url: String,
    pub docker_mode: DockerMode,
    pub cache_pvc: Option<String>,
    pub resources: Option<ResourceRequirements>,
    pub service_account: Option<String>,
    pub ttl_seconds: i32,
    pub default_deadline_seconds: i64,
    /// The operator-wide pod template (AGENT_POD_TEMPLATE_FILE), merged over every agent pod.
    pub pod_template: Option<PodTemplateSpec>,
    /// The Kueue LocalQueue agent Jobs wait in (created suspended), if any.
    pub kueue_queue: Option<String>,
}

impl JobDefaults {
    /// Defaults from the operator's configuration.
    pub fn from_config(cfg: &RunConfig) -> Self {
        let quantities = |pairs: [(&str, &Option<String>); 2]| {
            let map: BTreeMap<String, Quantity> = pairs
                .into_iter()
                .filter_map(|(k, v)| {
                    v.as_ref()
                        .filter(|s| !s.trim().is_empty())
                        .map(|s| (k.to_owned(), Quantity(s.trim().to_owned())))
                })
                .collect();
            (!map.is_empty()).then_some(map)
        };
        let requests = quantities([
            ("cpu", &cfg.agent_cpu_request),
            ("memory", &cfg.agent_memory_request),
        ]);
        let limits = quantities([
            ("cpu", &cfg.agent_cpu_limit),
            ("memory", &cfg.agent_memory_limit),
        ]);
        let resources = (requests.is_some() || limits.is_some()).then(|| ResourceRequirements {
            requests,
            limits,
            ..Default::default()
        });
        Self {
            image: cfg.agent_image.clone(),
            image_pull_policy: cfg.agent_image_pull_policy.clone(),
            image_pull_secrets: cfg
                .agent_image_pull_secrets
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect(),
            api_url: cfg.agent_api_url(),
            docker_mode: cfg.agent_docker_mode,
            cache_pvc: cfg.agent_cache_pvc.clone().filter(|p| !p.is_empty()),
            resources,
            service_account: cfg.agent_service_account.clone().filter(|s| !s.is_empty()),
            ttl_seconds: cfg.job_ttl_sec,
            default_deadline_seconds: cfg.worker_timeout_sec + cfg.deadline_margin_sec,
            pod_template: None,
            kueue_queue: cfg
                .kueue_queue_name
                .clone()
                .map(|q| q.trim().to_owned())
                .filter(|q| !q.is_empty()),
        }
    }
}

/// The name of the Job of an AgentJob.
pub fn job_name(aj: &AgentJob) -> String {
    aj.name_any()
}

/// The name of the Secret holding a claim's agent environment.
pub fn env_secret_name(agentjob_name: &str) -> String {
    format!("{agentjob_name}-env")
}

/// Labels shared by an AgentJob's Job, Pod and Secret.
pub fn labels(aj: &AgentJob) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            "terarchitect-agent".to_owned(),
        ),
        (LABEL_MANAGED_BY.to_owned(), MANAGER.to_owned()),
        (LABEL_AGENTJOB.to_owned(), aj.name_any()),
        (LABEL_PROJECT.to_owned(), aj.spec.project_id.clone()),
        (LABEL_TICKET.to_owned(), aj.spec.ticket_id.clone()),
        (LABEL_KIND.to_owned(), aj.spec.kind.as_str().to_owned()),
    ]);
    if let Some(id) = &aj.spec.queue_job_id {
        labels.insert(LABEL_QUEUE_JOB.to_owned(), id.clone());
    }
    labels
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        ..Default::default()
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
}

/// Builds the Job running `aj`, owned by it: the operator's pod, then the operator-wide pod
/// template and the AgentJob's own `image`, `resources` and `podTemplate` merged over it (see
/// [`crate::pod_template`]). A template that sets a field the operator owns is refused.
pub fn build_job(aj: &AgentJob, d: &JobDefaults) -> Result<Job, TemplateError> {
    let mut job = base_job(aj, d);
    let Some(spec) = job.spec.as_mut() else {
        return Ok(job);
    };
    let mut template = spec.template.clone();
    if let Some(default) = &d.pod_template {
        pod_template::check(default, Origin::Default)?;
        template = pod_template::merge(&template, default);
        reapply_agentjob_fields(aj, &mut template);
    }
    if let Some(own) = &aj.spec.pod_template {
        pod_template::check(own, Origin::AgentJob)?;
        template = pod_template::merge(&template, own);
    }
    spec.template = template;
    if let Some(queue) = &d.kueue_queue {
        // Kueue admits the Job by unsuspending it.
        spec.suspend = Some(true);
        job.metadata
            .labels
            .get_or_insert_default()
            .insert(LABEL_KUEUE_QUEUE.to_owned(), queue.clone());
    }
    Ok(job)
}

/// The AgentJob's `image` and `resources` are more specific than the operator-wide template.
fn reapply_agentjob_fields(aj: &AgentJob, template: &mut PodTemplateSpec) {
    let Some(agent) = template
        .spec
        .as_mut()
        .and_then(|s| s.containers.iter_mut().find(|c| c.name == AGENT_CONTAINER))
    else {
        return;
    };
    if let Some(image) = aj.spec.image.clone().filter(|i| !i.trim().is_empty()) {
        agent.image = Some(image);
    }
    if let Some(resources) = aj.spec.resources.clone() {
        agent.resources = Some(resources);
    }
}

/// The Job the operator builds before any template is merged.
fn base_job(aj: &AgentJob, d: &JobDefaults) -> Job {
    let spec = &aj.spec;
    let labels = labels(aj);
    let dind = d.docker_mode == DockerMode::Dind;

    let mut env_vars = vec![
        env("TICKET_ID", &spec.ticket_id),
        env("PROJECT_ID", &spec.project_id),
        env("REPO_URL", &spec.repo_url),
        env(
            "JOB_ID",
            spec.queue_job_id.clone().unwrap_or_else(|| aj.name_any()),
        ),
        env("JOB_KIND", spec.kind.as_str()),
        env("TERARCHITECT_API_URL", &d.api_url),
        env("AGENT_WORKSPACE", WORKSPACE_DIR),
        env("AGENT_DOCKER_MODE", d.docker_mode.as_str()),
        env("PIP_CACHE_DIR", "/cache/pip"),
        env("NPM_CONFIG_CACHE", "/cache/npm"),
    ];
    if let (AgentJobKind::Review, Some(review)) = (spec.kind, &spec.review) {
        env_vars.push(env("PR_NUMBER", review.pr_number.to_string()));
        env_vars.push(env("COMMENT_BODY", &review.comment_body));
        if let Some(id) = review.github_comment_id {
            env_vars.push(env("GITHUB_COMMENT_ID", id.to_string()));
        }
    }
    // Secrets only by reference: the claim's agent environment and the spec's Secrets.
    let env_from: Vec<EnvFromSource> = spec
        .env_from_secrets
        .iter()
        .map(|name| EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: name.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        })
        .collect();

    let mut mounts = vec![
        mount("workspace", WORKSPACE_DIR),
        mount("cache", "/cache"),
        mount("tmp", "/tmp"),
    ];
    let mut volumes = vec![
        empty_dir("workspace"),
        empty_dir("tmp"),
        match &d.cache_pvc {
            Some(claim) => Volume {
                name: "cache".to_owned(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.clone(),
                    read_only: Some(false),
                }),
                ..Default::default()
            },
            None => empty_dir("cache"),
        },
    ];
    if dind {
        mounts.push(mount("docker", "/var/lib/docker"));
        volumes.push(empty_dir("docker"));
    }

    let container_security = if dind {
        SecurityContext {
            privileged: Some(true),
            run_as_user: Some(0),
            ..Default::default()
        }
    } else {
        SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            ..Default::default()
        }
    };
    let pod_security = PodSecurityContext {
        run_as_user: (!dind).then_some(AGENT_UID),
        run_as_group: (!dind).then_some(AGENT_UID),
        fs_group: (!dind).then_some(AGENT_UID),
        seccomp_profile: (!dind).then(|| SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..Default::default()
    };

    let container = Container {
        name: AGENT_CONTAINER.to_owned(),
        image: Some(
            spec.image
                .clone()
                .filter(|i| !i.trim().is_empty())
                .unwrap_or_else(|| d.image.clone()),
        ),
        image_pull_policy: Some(d.image_pull_policy.clone()),
        command: Some(AGENT_COMMAND.iter().map(|s| (*s).to_owned()).collect()),
        env: Some(env_vars),
        env_from: (!env_from.is_empty()).then_some(env_from),
        resources: spec.resources.clone().or_else(|| d.resources.clone()),
        volume_mounts: Some(mounts),
        working_dir: Some(WORKSPACE_DIR.to_owned()),
        termination_message_path: Some("/dev/termination-log".to_owned()),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        security_context: Some(container_security),
        ..Default::default()
    };

    let owner = aj.controller_owner_ref(&()).map(|mut o| {
        o.block_owner_deletion = Some(true);
        o
    });
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(aj)),
            namespace: aj.namespace(),
            labels: Some(labels.clone()),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(
                spec.timeout_seconds.unwrap_or(d.default_deadline_seconds),
            ),
            ttl_seconds_after_finished: Some(d.ttl_seconds),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_owned()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    service_account_name: d.service_account.clone(),
                    image_pull_secrets: (!d.image_pull_secrets.is_empty()).then(|| {
                        d.image_pull_secrets
                            .iter()
                            .map(|n| LocalObjectReference { name: n.clone() })
                            .collect()
                    }),
                    security_context: Some(pod_security),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{AgentJobSpec, ReviewSpec};

    fn agentjob(kind: AgentJobKind) -> AgentJob {
        let mut aj = AgentJob::new(
            "aj-1",
            AgentJobSpec {
                project_id: "6f1c9a9e-8d4b-4c1e-9b55-1d2f3a4b5c6d".into(),
                ticket_id: "6f1c9a9e-8d4b-4c1e-9b55-1d2f3a4b5c6e".into(),
                kind,
                repo_url: "https://github.com/acme/shop".into(),
                queue_job_id: Some("6f1c9a9e-8d4b-4c1e-9b55-1d2f3a4b5c6f".into()),
                attempt: Some(1),
                review: (kind == AgentJobKind::Review).then(|| ReviewSpec {
                    pr_number: 12,
                    comment_body: "Please add tests".into(),
                    github_comment_id: Some(99),
                }),
                image: None,
                resources: None,
                timeout_seconds: None,
                ttl_seconds_after_finished: None,
                env_from_secrets: vec!["aj-1-env".into()],
                pod_template: None,
                cancel: false,
            },
        );
        aj.metadata.namespace = Some("agents".into());
        aj.metadata.uid = Some("uid-1".into());
        aj
    }

    fn defaults() -> JobDefaults {
        let cfg = RunConfig::from_args([
            "--api-url",
            "http://api:5010",
            "--agent-image",
            "registry/agent:1",
        ])
        .unwrap();
        JobDefaults::from_config(&cfg)
    }

    fn env_map(job: &Job) -> BTreeMap<String, String> {
        let c = &job
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0];
        c.env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e.name.clone(),
                    e.value.clone().expect("only literal, non-secret values"),
                )
            })
            .collect()
    }

    #[test]
    fn ticket_job_follows_the_contract() {
        let aj = agentjob(AgentJobKind::Ticket);
        let job = build_job(&aj, &defaults()).unwrap();
        assert_eq!(job.metadata.name.as_deref(), Some("aj-1"));
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("AgentJob", "uid-1", Some(true))
        );
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.active_deadline_seconds, Some(3600 + 1800));
        assert_eq!(spec.ttl_seconds_after_finished, Some(3600));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("registry/agent:1"));
        assert_eq!(
            c.command,
            Some(vec![
                "terarchitect-agent".to_owned(),
                "entrypoint".to_owned()
            ])
        );
        let env = env_map(&job);
        assert_eq!(env["TICKET_ID"], aj.spec.ticket_id);
        assert_eq!(env["PROJECT_ID"], aj.spec.project_id);
        assert_eq!(env["REPO_URL"], "https://github.com/acme/shop");
        assert_eq!(env["JOB_ID"], "6f1c9a9e-8d4b-4c1e-9b55-1d2f3a4b5c6f");
        assert_eq!(env["JOB_KIND"], "ticket");
        assert_eq!(env["TERARCHITECT_API_URL"], "http://api:5010");
        assert!(!env.contains_key("PR_NUMBER"));
        assert!(
            !env.keys().any(|k| k.contains("TOKEN") || k.contains("KEY")),
            "no secrets as literals: {env:?}"
        );
        let from = c.env_from.as_ref().unwrap();
        assert_eq!(from[0].secret_ref.as_ref().unwrap().name, "aj-1-env");
        assert_eq!(
            c.security_context
                .as_ref()
                .unwrap()
                .allow_privilege_escalation,
            Some(false)
        );
        assert_eq!(
            pod.security_context.as_ref().unwrap().run_as_user,
            Some(AGENT_UID)
        );
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_TICKET], aj.spec.ticket_id);
        assert_eq!(
            labels[LABEL_QUEUE_JOB],
            "6f1c9a9e-8d4b-4c1e-9b55-1d2f3a4b5c6f"
        );
        assert_eq!(
            pod.volumes
                .as_ref()
                .unwrap()
                .iter()
                .filter(|v| v.name == "docker")
                .count(),
            0
        );
    }

    #[test]
    fn kueue_jobs_start_suspended_in_their_queue() {
        let aj = agentjob(AgentJobKind::Ticket);
        let job = build_job(&aj, &defaults()).unwrap();
        assert_eq!(job.spec.as_ref().unwrap().suspend, None);
        assert!(!job.labels().contains_key(LABEL_KUEUE_QUEUE));
        let cfg = RunConfig::from_args(["--api-url", "http://api", "--kueue-queue-name", "agents"])
            .unwrap();
        let job = build_job(&aj, &JobDefaults::from_config(&cfg)).unwrap();
        assert_eq!(job.spec.as_ref().unwrap().suspend, Some(true));
        assert_eq!(job.labels()[LABEL_KUEUE_QUEUE], "agents");
        assert_eq!(job.labels()[LABEL_AGENTJOB], "aj-1");
    }

    #[test]
    fn templates_merge_in_order_and_the_agentjobs_fields_win() {
        let mut aj = agentjob(AgentJobKind::Ticket);
        aj.spec.image = Some("own:3".into());
        aj.spec.pod_template = Some(
            serde_json::from_value(serde_json::json!({"spec": {"runtimeClassName": "kata"}}))
                .unwrap(),
        );
        let mut d = defaults();
        d.pod_template = Some(
            serde_json::from_value(serde_json::json!({"spec": {
                "runtimeClassName": "gvisor",
                "nodeSelector": {"pool": "agents"},
                "containers": [{"name": "agent", "image": "default:1"}]
            }}))
            .unwrap(),
        );
        let job = build_job(&aj, &d).unwrap();
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.runtime_class_name.as_deref(), Some("kata"));
        assert_eq!(pod.node_selector.unwrap()["pool"], "agents");
        assert_eq!(pod.containers[0].image.as_deref(), Some("own:3"));
        aj.spec.pod_template = Some(
            serde_json::from_value(serde_json::json!({"spec": {"restartPolicy": "Always"}}))
                .unwrap(),
        );
        let err = build_job(&aj, &d).unwrap_err();
        assert_eq!(err.field, "spec.podTemplate.spec.restartPolicy");
    }

    #[test]
    fn review_job_dind_and_overrides() {
        let mut aj = agentjob(AgentJobKind::Review);
        aj.spec.image = Some("custom:2".into());
        aj.spec.timeout_seconds = Some(600);
        let cfg = RunConfig::from_args([
            "--api-url",
            "http://api",
            "--agent-docker-mode",
            "DIND",
            "--agent-cache-pvc",
            "agent-cache",
            "--agent-memory-limit",
            "4Gi",
            "--job-ttl-sec",
            "60",
        ])
        .unwrap();
        let job = build_job(&aj, &JobDefaults::from_config(&cfg)).unwrap();
        let env = env_map(&job);
        assert_eq!(env["JOB_KIND"], "review");
        assert_eq!(env["PR_NUMBER"], "12");
        assert_eq!(env["COMMENT_BODY"], "Please add tests");
        assert_eq!(env["GITHUB_COMMENT_ID"], "99");
        assert_eq!(env["AGENT_DOCKER_MODE"], "dind");
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.active_deadline_seconds, Some(600));
        assert_eq!(spec.ttl_seconds_after_finished, Some(60));
        let pod = spec.template.spec.as_ref().unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("custom:2"));
        assert_eq!(c.security_context.as_ref().unwrap().privileged, Some(true));
        assert_eq!(
            c.resources.as_ref().unwrap().limits.as_ref().unwrap()["memory"],
            Quantity("4Gi".into())
        );
        let volumes = pod.volumes.as_ref().unwrap();
        assert!(volumes.iter().any(|v| v.name == "docker"));
        let cache = volumes.iter().find(|v| v.name == "cache").unwrap();
        assert_eq!(
            cache.persistent_volume_claim.as_ref().unwrap().claim_name,
            "agent-cache"
        );
    }
}
