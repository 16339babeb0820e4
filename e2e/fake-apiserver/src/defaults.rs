//! Kind-specific defaulting and validation the real API server applies on create and update.

use base64::Engine;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::meta::{self, meta_mut};
use crate::registry::ResourceType;

fn invalid(rt: &ResourceType, obj: &Value, why: impl AsRef<str>) -> ApiError {
    ApiError::invalid(&rt.group, &rt.kind, meta::name(obj), why)
}

/// Defaults and checks for a new object (uid, name and namespace are already set).
pub(crate) fn on_create(rt: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
    validate_owner_references(rt, obj)?;
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "namespaces") => {
            if obj.pointer("/spec/finalizers").is_none() {
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
            }
            if obj.pointer("/status/phase").is_none() {
                obj["status"] = json!({"phase": "Active"});
            }
        }
        ("", "pods") => {
            let containers = obj.pointer("/spec/containers").and_then(Value::as_array);
            if containers.is_none_or(|c| c.is_empty()) {
                return Err(invalid(rt, obj, "spec.containers: Required value"));
            }
            let spec = obj["spec"].as_object_mut().expect("spec is an object");
            spec.entry("restartPolicy")
                .or_insert_with(|| json!("Always"));
            spec.entry("terminationGracePeriodSeconds")
                .or_insert_with(|| json!(30));
            spec.entry("schedulerName")
                .or_insert_with(|| json!("default-scheduler"));
            if obj.pointer("/status/phase").is_none() {
                obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
            }
        }
        ("", "secrets") => {
            fold_string_data(obj);
            obj.as_object_mut()
                .expect("object")
                .entry("type")
                .or_insert_with(|| json!("Opaque"));
        }
        ("batch", "jobs") => default_job(rt, obj)?,
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            let crd_type = ResourceType::from_crd(obj).map_err(|why| invalid(rt, obj, why))?;
            let mut finalizers = meta::finalizers(obj);
            let cleanup = "customresourcecleanup.apiextensions.k8s.io".to_string();
            if !finalizers.contains(&cleanup) {
                finalizers.push(cleanup);
            }
            meta::set_finalizers(obj, finalizers);
            let now = meta::now_time();
            let condition = |kind: &str, reason: &str, message: &str| json!({"type": kind, "status": "True", "lastTransitionTime": now, "reason": reason, "message": message});
            obj["status"] = json!({
                "acceptedNames": obj["spec"]["names"].clone(),
                "conditions": [
                    condition("NamesAccepted", "NoConflicts", "no conflicts found"),
                    condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
                ],
                "storedVersions": [crd_type.storage_version()],
            });
        }
        _ => {}
    }
    Ok(())
}

/// Checks and defaults for an update of the main resource (`old` is the stored object).
pub(crate) fn on_update(rt: &ResourceType, old: &Value, new: &mut Value) -> Result<(), ApiError> {
    validate_owner_references(rt, new)?;
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "secrets") => fold_string_data(new),
        ("batch", "jobs") => {
            for field in ["selector", "completionMode"] {
                if old["spec"].get(field) != new["spec"].get(field) {
                    return Err(invalid(
                        rt,
                        new,
                        format!("spec.{field}: Invalid value: field is immutable"),
                    ));
                }
            }
            let suspended = new
                .pointer("/spec/suspend")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if !suspended && old["spec"].get("template") != new["spec"].get("template") {
                return Err(invalid(
                    rt,
                    new,
                    "spec.template: Invalid value: field is immutable",
                ));
            }
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            ResourceType::from_crd(new).map_err(|why| invalid(rt, new, why))?;
        }
        _ => {}
    }
    Ok(())
}

fn validate_owner_references(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    let refs = meta::owner_references(obj);
    for (i, r) in refs.iter().enumerate() {
        for field in ["apiVersion", "kind", "name", "uid"] {
            if r.get(field)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(invalid(
                    rt,
                    obj,
                    format!(
                        "metadata.ownerReferences[{i}].{field}: Invalid value: \"\": {field} must not be empty"
                    ),
                ));
            }
        }
    }
    let controllers = refs
        .iter()
        .filter(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .count();
    if controllers > 1 {
        return Err(invalid(
            rt,
            obj,
            "metadata.ownerReferences: Invalid value: Only one reference can have Controller set to true",
        ));
    }
    Ok(())
}

/// Move a Secret's `stringData` into base64 `data`, as the API server does on write.
fn fold_string_data(obj: &mut Value) {
    let Some(Value::Object(string_data)) = obj.as_object_mut().and_then(|m| m.remove("stringData"))
    else {
        return;
    };
    let map = obj.as_object_mut().expect("object");
    let data = map.entry("data").or_insert_with(|| json!({}));
    for (key, value) in string_data {
        let text = value.as_str().unwrap_or_default();
        data[key] = json!(base64::engine::general_purpose::STANDARD.encode(text));
    }
}

/// batch/v1 Job defaults and validation (Kubernetes 1.28+): selector and template labels tied to the
/// Job's uid, completions/parallelism/backoffLimit defaults.
fn default_job(rt: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
    let name = meta::name(obj).to_string();
    let uid = meta::uid(obj).to_string();
    if name.len() > 63 {
        return Err(invalid(
            rt,
            obj,
            "metadata.name: Invalid value: must be no more than 63 characters",
        ));
    }
    let template_spec = obj.pointer("/spec/template/spec");
    if template_spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .is_none_or(|c| c.is_empty())
    {
        return Err(invalid(
            rt,
            obj,
            "spec.template.spec.containers: Required value",
        ));
    }
    let restart = template_spec
        .and_then(|s| s.get("restartPolicy"))
        .and_then(Value::as_str)
        .unwrap_or("Always");
    if !matches!(restart, "Never" | "OnFailure") {
        return Err(invalid(
            rt,
            obj,
            format!(
                "spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\" (got \"{restart}\")"
            ),
        ));
    }
    let spec = obj["spec"].as_object_mut().expect("spec is an object");
    spec.entry("parallelism").or_insert_with(|| json!(1));
    spec.entry("completions").or_insert_with(|| json!(1));
    spec.entry("backoffLimit").or_insert_with(|| json!(6));
    spec.entry("completionMode")
        .or_insert_with(|| json!("NonIndexed"));
    spec.entry("suspend").or_insert_with(|| json!(false));
    spec.entry("podReplacementPolicy")
        .or_insert_with(|| json!("TerminatingOrFailed"));
    let manual = spec
        .get("manualSelector")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if !manual {
        spec.insert(
            "selector".into(),
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
        );
        let template = spec.get_mut("template").expect("template checked above");
        let labels = meta_mut(template)
            .entry("labels")
            .or_insert_with(|| json!({}));
        for (key, value) in [
            ("batch.kubernetes.io/controller-uid", &uid),
            ("batch.kubernetes.io/job-name", &name),
            ("controller-uid", &uid),
            ("job-name", &name),
        ] {
            labels[key] = json!(value);
        }
    }
    Ok(())
}
