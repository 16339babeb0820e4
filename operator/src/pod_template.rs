//! Pod templates merged over the agent pod the operator builds: first the operator-wide default
//! (`AGENT_POD_TEMPLATE_FILE`), then the AgentJob's `spec.podTemplate`.
//!
//! Merge rules (a subset of Kubernetes' strategic merge, on the templates' JSON form):
//! - maps (objects) merge key by key, recursively; a field the template leaves out stays;
//! - lists of named items merge by their key: `containers`, `initContainers`,
//!   `ephemeralContainers`, `volumes`, `env`, `imagePullSecrets`, `resourceClaims` by `name`,
//!   `volumeMounts` by `mountPath`, `ports` by `containerPort`; a matching item is merged, a new
//!   one appended;
//! - every other list (tolerations, args, nodeSelectorTerms, ...) and every scalar replaces.
//!
//! Fields the operator owns cannot be set: the agent container's `command`, `args`, `envFrom`
//! and the run's environment variables, `restartPolicy`, `automountServiceAccountToken` (other
//! than false), `metadata.ownerReferences` and the operator's labels. An AgentJob's own template
//! (anyone who may create AgentJobs writes it) may in addition not reach the host or a service
//! account: `serviceAccountName`, `serviceAccount`, `hostNetwork`, `hostPID`, `hostIPC`,
//! `hostPath` volumes, projected `serviceAccountToken` volumes and containers that are
//! privileged, add capabilities or allow privilege escalation are refused; the operator-wide
//! default (written by the cluster administrator) may set those. Pod Security admission
//! (`restricted`) on the agents' namespace remains the cluster's own guard.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::{Map, Value};

use crate::job_builder::{AGENT_CONTAINER, LABEL_MANAGED_BY};

/// Environment variables that carry the run's identity and credential: a template may not set
/// them on the agent container.
pub const OWNED_ENV: [&str; 11] = [
    "TICKET_ID",
    "PROJECT_ID",
    "REPO_URL",
    "JOB_ID",
    "JOB_KIND",
    "TERARCHITECT_API_URL",
    "AGENT_DOCKER_MODE",
    "PR_NUMBER",
    "COMMENT_BODY",
    "GITHUB_COMMENT_ID",
    "TERARCHITECT_WORKER_API_KEY",
];

/// A template that tries to set a field it may not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} cannot be set in a pod template: {why}")]
pub struct TemplateError {
    /// The refused field, e.g. `spec.podTemplate.spec.restartPolicy`.
    pub field: String,
    /// Why it is refused.
    pub why: &'static str,
}

/// Who wrote a template, which decides what it may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The operator-wide default (the cluster administrator's).
    Default,
    /// An AgentJob's `spec.podTemplate`.
    AgentJob,
}

impl Origin {
    fn prefix(self) -> &'static str {
        match self {
            Origin::Default => "AGENT_POD_TEMPLATE_FILE",
            Origin::AgentJob => "spec.podTemplate",
        }
    }
}

/// The key items of a list field are merged by, if it merges by key.
fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "ports" => Some("containerPort"),
        _ => None,
    }
}

/// Merges `overlay` into `base` by the rules above.
pub fn merge_values(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => merge_objects(base, overlay),
        (_, Value::Null) => {}
        (base, overlay) => *base = overlay.clone(),
    }
}

fn merge_objects(base: &mut Map<String, Value>, overlay: &Map<String, Value>) {
    for (key, value) in overlay {
        match (base.get_mut(key), value, merge_key(key)) {
            (Some(Value::Array(items)), Value::Array(new), Some(by)) => merge_list(items, new, by),
            (Some(existing), value, _) => merge_values(existing, value),
            (None, Value::Null, _) => {}
            (None, value, _) => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

fn merge_list(items: &mut Vec<Value>, overlay: &[Value], by: &str) {
    for item in overlay {
        let key = item.get(by);
        match items
            .iter_mut()
            .find(|existing| key.is_some() && existing.get(by) == key)
        {
            Some(existing) => merge_values(existing, item),
            None => items.push(item.clone()),
        }
    }
}

/// `base` with `overlay` merged over it.
pub fn merge(base: &PodTemplateSpec, overlay: &PodTemplateSpec) -> PodTemplateSpec {
    let mut merged = serde_json::to_value(base).expect("a pod template serialises");
    let overlay = serde_json::to_value(overlay).expect("a pod template serialises");
    merge_values(&mut merged, &overlay);
    serde_json::from_value(merged).expect("merging two pod templates gives a pod template")
}

/// Refuses a template that sets a field the operator owns (or, for an AgentJob's template,
/// one that reaches the host or a service account).
pub fn check(template: &PodTemplateSpec, origin: Origin) -> Result<(), TemplateError> {
    let value = serde_json::to_value(template).expect("a pod template serialises");
    let refuse = |path: String, why| {
        Err(TemplateError {
            field: format!("{}.{path}", origin.prefix()),
            why,
        })
    };
    check_metadata(&value, &refuse)?;
    let spec = value.get("spec").cloned().unwrap_or(Value::Null);
    if spec.get("restartPolicy").is_some() {
        return refuse(
            "spec.restartPolicy".into(),
            "agent pods never restart (restartPolicy Never)",
        );
    }
    if spec
        .get("automountServiceAccountToken")
        .is_some_and(|v| v != &Value::Bool(false))
    {
        return refuse(
            "spec.automountServiceAccountToken".into(),
            "agent pods get no service-account token",
        );
    }
    check_agent_container(&spec, &refuse)?;
    if origin == Origin::AgentJob {
        check_isolation(&spec, &refuse)?;
    }
    Ok(())
}

type Refuse<'a> = dyn Fn(String, &'static str) -> Result<(), TemplateError> + 'a;

fn check_metadata(value: &Value, refuse: &Refuse<'_>) -> Result<(), TemplateError> {
    let Some(meta) = value.get("metadata") else {
        return Ok(());
    };
    if meta.get("ownerReferences").is_some() {
        return refuse(
            "metadata.ownerReferences".into(),
            "the operator owns its objects",
        );
    }
    for key in meta
        .get("labels")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(Map::keys)
    {
        if key.starts_with("terarchitect.io/")
            || key == LABEL_MANAGED_BY
            || key == "app.kubernetes.io/name"
        {
            return refuse(
                format!("metadata.labels[{key}]"),
                "the operator's labels identify its runs",
            );
        }
    }
    Ok(())
}

fn check_agent_container(spec: &Value, refuse: &Refuse<'_>) -> Result<(), TemplateError> {
    let containers = spec.get("containers").and_then(Value::as_array);
    let Some(agent) = containers
        .into_iter()
        .flatten()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(AGENT_CONTAINER))
    else {
        return Ok(());
    };
    let at = |field: &str| format!("spec.containers[{AGENT_CONTAINER}].{field}");
    for (field, why) in [
        ("command", "the operator starts the agent"),
        ("args", "the operator starts the agent"),
        ("envFrom", "the run's environment Secret is the operator's"),
    ] {
        if agent.get(field).is_some() {
            return refuse(at(field), why);
        }
    }
    for name in agent
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("name").and_then(Value::as_str))
    {
        if OWNED_ENV.contains(&name) {
            return refuse(
                at(&format!("env[{name}]")),
                "the run's identity and credential come from the operator",
            );
        }
    }
    Ok(())
}

fn check_isolation(spec: &Value, refuse: &Refuse<'_>) -> Result<(), TemplateError> {
    for field in [
        "serviceAccountName",
        "serviceAccount",
        "hostNetwork",
        "hostPID",
        "hostIPC",
    ] {
        if spec.get(field).is_some() {
            return refuse(
                format!("spec.{field}"),
                "an AgentJob cannot give its pod a service account or host access (the operator-wide template can)",
            );
        }
    }
    for volume in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = volume.get("name").and_then(Value::as_str).unwrap_or("");
        let token = volume
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .is_some_and(|s| s.iter().any(|s| s.get("serviceAccountToken").is_some()));
        if volume.get("hostPath").is_some() || token {
            return refuse(
                format!("spec.volumes[{name}]"),
                "an AgentJob cannot mount host paths or service-account tokens",
            );
        }
    }
    for kind in ["containers", "initContainers"] {
        for c in spec
            .get(kind)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = c.get("name").and_then(Value::as_str).unwrap_or("");
            for (field, raised) in [
                (
                    "privileged",
                    c.pointer("/securityContext/privileged") == Some(&Value::Bool(true)),
                ),
                (
                    "allowPrivilegeEscalation",
                    c.pointer("/securityContext/allowPrivilegeEscalation")
                        == Some(&Value::Bool(true)),
                ),
                (
                    "capabilities.add",
                    c.pointer("/securityContext/capabilities/add")
                        .and_then(Value::as_array)
                        .is_some_and(|a| !a.is_empty()),
                ),
            ] {
                if raised {
                    return refuse(
                        format!("spec.{kind}[{name}].securityContext.{field}"),
                        "an AgentJob cannot raise a container's privileges",
                    );
                }
            }
        }
    }
    Ok(())
}

/// Reads a pod template from YAML (or JSON) text.
pub fn parse(text: &str) -> Result<PodTemplateSpec, String> {
    if text.trim().is_empty() {
        return Ok(PodTemplateSpec::default());
    }
    serde_saphyr::from_str(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(v: Value) -> PodTemplateSpec {
        serde_json::from_value(v).unwrap()
    }

    fn base() -> Value {
        json!({
            "metadata": {"labels": {"terarchitect.io/agentjob": "aj-1"}},
            "spec": {
                "restartPolicy": "Never",
                "nodeSelector": {"pool": "default"},
                "tolerations": [{"key": "a", "operator": "Exists"}],
                "containers": [{
                    "name": "agent", "image": "agent:1", "command": ["terarchitect-agent"],
                    "env": [{"name": "JOB_ID", "value": "1"}, {"name": "PIP_CACHE_DIR", "value": "/cache/pip"}],
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    "resources": {"limits": {"cpu": "1"}}
                }],
                "volumes": [{"name": "tmp", "emptyDir": {}}]
            }
        })
    }

    #[test]
    fn maps_merge_and_scalars_replace() {
        let mut v = base();
        merge_values(
            &mut v,
            &json!({"metadata": {"labels": {"team": "a"}, "annotations": {"x": "y"}},
                    "spec": {"nodeSelector": {"gpu": "yes"}, "runtimeClassName": "gvisor", "priorityClassName": "low"}}),
        );
        assert_eq!(v["metadata"]["labels"]["terarchitect.io/agentjob"], "aj-1");
        assert_eq!(v["metadata"]["labels"]["team"], "a");
        assert_eq!(v["metadata"]["annotations"]["x"], "y");
        assert_eq!(
            v["spec"]["nodeSelector"],
            json!({"pool": "default", "gpu": "yes"})
        );
        assert_eq!(v["spec"]["runtimeClassName"], "gvisor");
        assert_eq!(v["spec"]["restartPolicy"], "Never");
        merge_values(&mut v, &json!({"spec": {"runtimeClassName": "kata"}}));
        assert_eq!(v["spec"]["runtimeClassName"], "kata");
    }

    #[test]
    fn named_lists_merge_by_name_other_lists_replace() {
        let mut v = base();
        merge_values(
            &mut v,
            &json!({"spec": {
                "tolerations": [{"key": "b", "operator": "Exists"}],
                "containers": [
                    {"name": "agent", "image": "agent:2", "resources": {"requests": {"cpu": "500m"}},
                     "env": [{"name": "PIP_CACHE_DIR", "value": "/pip"}, {"name": "HTTPS_PROXY", "value": "http://proxy"}],
                     "volumeMounts": [{"name": "ca", "mountPath": "/etc/ssl/certs"}, {"name": "tmp2", "mountPath": "/tmp"}]},
                    {"name": "sidecar", "image": "proxy:1"}
                ],
                "initContainers": [{"name": "init", "image": "busybox"}],
                "volumes": [{"name": "ca", "configMap": {"name": "ca-bundle"}}]
            }}),
        );
        let spec = &v["spec"];
        assert_eq!(
            spec["tolerations"],
            json!([{"key": "b", "operator": "Exists"}])
        );
        let containers = spec["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 2);
        let agent = &containers[0];
        assert_eq!(agent["image"], "agent:2");
        assert_eq!(agent["command"], json!(["terarchitect-agent"]));
        assert_eq!(
            agent["resources"],
            json!({"limits": {"cpu": "1"}, "requests": {"cpu": "500m"}})
        );
        assert_eq!(
            agent["env"],
            json!([{"name": "JOB_ID", "value": "1"}, {"name": "PIP_CACHE_DIR", "value": "/pip"}, {"name": "HTTPS_PROXY", "value": "http://proxy"}])
        );
        assert_eq!(
            agent["volumeMounts"],
            json!([{"name": "tmp2", "mountPath": "/tmp"}, {"name": "ca", "mountPath": "/etc/ssl/certs"}]),
            "volume mounts merge by mountPath"
        );
        assert_eq!(containers[1]["name"], "sidecar");
        assert_eq!(spec["initContainers"][0]["name"], "init");
        assert_eq!(
            spec["volumes"].as_array().unwrap().len(),
            2,
            "volumes merge by name"
        );
    }

    #[test]
    fn typed_merge_keeps_fields_the_template_leaves_out() {
        let merged = merge(
            &template(base()),
            &template(json!({"spec": {"nodeSelector": {"gpu": "yes"}}})),
        );
        let spec = merged.spec.unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.containers[0].image.as_deref(), Some("agent:1"));
        assert_eq!(spec.node_selector.unwrap().len(), 2);
    }

    fn refused(v: Value, origin: Origin) -> String {
        check(&template(v), origin).unwrap_err().field
    }

    #[test]
    fn owned_fields_are_refused_by_name() {
        let agent = |c: Value| json!({"spec": {"containers": [c]}});
        let cases = [
            (
                agent(json!({"name": "agent", "command": ["sh"]})),
                "spec.podTemplate.spec.containers[agent].command",
            ),
            (
                agent(json!({"name": "agent", "args": ["-c"]})),
                "spec.podTemplate.spec.containers[agent].args",
            ),
            (
                agent(json!({"name": "agent", "envFrom": [{"secretRef": {"name": "x"}}]})),
                "spec.podTemplate.spec.containers[agent].envFrom",
            ),
            (
                agent(json!({"name": "agent", "env": [{"name": "JOB_ID", "value": "x"}]})),
                "spec.podTemplate.spec.containers[agent].env[JOB_ID]",
            ),
            (
                agent(
                    json!({"name": "agent", "env": [{"name": "TERARCHITECT_WORKER_API_KEY", "value": "x"}]}),
                ),
                "spec.podTemplate.spec.containers[agent].env[TERARCHITECT_WORKER_API_KEY]",
            ),
            (
                json!({"spec": {"containers": [], "restartPolicy": "OnFailure"}}),
                "spec.podTemplate.spec.restartPolicy",
            ),
            (
                json!({"spec": {"containers": [], "automountServiceAccountToken": true}}),
                "spec.podTemplate.spec.automountServiceAccountToken",
            ),
            (
                json!({"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "x", "uid": "u"}]}}),
                "spec.podTemplate.metadata.ownerReferences",
            ),
            (
                json!({"metadata": {"labels": {"terarchitect.io/ticket-id": "x"}}}),
                "spec.podTemplate.metadata.labels[terarchitect.io/ticket-id]",
            ),
            (
                json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": "me"}}}),
                "spec.podTemplate.metadata.labels[app.kubernetes.io/managed-by]",
            ),
        ];
        for (v, field) in cases {
            assert_eq!(refused(v.clone(), Origin::AgentJob), field);
            let default = refused(v, Origin::Default);
            assert_eq!(
                default,
                field.replace("spec.podTemplate", "AGENT_POD_TEMPLATE_FILE")
            );
        }
    }

    #[test]
    fn agentjob_templates_cannot_reach_host_or_service_accounts() {
        let cases = [
            (
                json!({"spec": {"containers": [], "serviceAccountName": "admin"}}),
                "spec.podTemplate.spec.serviceAccountName",
            ),
            (
                json!({"spec": {"containers": [], "hostNetwork": true}}),
                "spec.podTemplate.spec.hostNetwork",
            ),
            (
                json!({"spec": {"containers": [], "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}}),
                "spec.podTemplate.spec.volumes[root]",
            ),
            (
                json!({"spec": {"containers": [], "volumes": [{"name": "tok", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}]}}),
                "spec.podTemplate.spec.volumes[tok]",
            ),
            (
                json!({"spec": {"containers": [{"name": "side", "securityContext": {"privileged": true}}]}}),
                "spec.podTemplate.spec.containers[side].securityContext.privileged",
            ),
            (
                json!({"spec": {"initContainers": [{"name": "init", "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}]}}),
                "spec.podTemplate.spec.initContainers[init].securityContext.capabilities.add",
            ),
            (
                json!({"spec": {"containers": [{"name": "agent", "securityContext": {"allowPrivilegeEscalation": true}}]}}),
                "spec.podTemplate.spec.containers[agent].securityContext.allowPrivilegeEscalation",
            ),
        ];
        for (v, field) in cases {
            assert_eq!(refused(v.clone(), Origin::AgentJob), field);
            assert_eq!(check(&template(v), Origin::Default), Ok(()));
        }
    }

    #[test]
    fn ordinary_templates_pass() {
        let ok = json!({
            "metadata": {"labels": {"team": "a"}, "annotations": {"a": "b"}},
            "spec": {
                "nodeSelector": {"pool": "agents"},
                "tolerations": [{"key": "agents", "operator": "Exists", "effect": "NoSchedule"}],
                "runtimeClassName": "gvisor",
                "automountServiceAccountToken": false,
                "containers": [{"name": "agent", "env": [{"name": "HTTPS_PROXY", "value": "http://p"}]}]
            }
        });
        assert_eq!(check(&template(ok), Origin::AgentJob), Ok(()));
        let parsed = parse("spec:\n  nodeSelector:\n    pool: agents\n").unwrap();
        assert_eq!(
            parsed.spec.unwrap().node_selector.unwrap()["pool"],
            "agents"
        );
        assert_eq!(parse("  \n").unwrap(), PodTemplateSpec::default());
        assert!(parse("spec: [").is_err());
    }
}
