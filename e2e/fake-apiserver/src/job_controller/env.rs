//! Resolving a container's environment the way the kubelet does: `envFrom` then `env`, values from
//! Secrets and ConfigMaps in the store (honouring `optional`), field references, and `$(VAR)`
//! expansion in values, command and args.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::Value;

use crate::store::{ObjKey, State};

fn object<'a>(state: &'a State, plural: &str, namespace: &str, name: &str) -> Option<&'a Value> {
    state.get(&ObjKey {
        group: String::new(),
        plural: plural.into(),
        namespace: namespace.into(),
        name: name.into(),
    })
}

/// The string data of a Secret (decoded) or ConfigMap (`data` and `binaryData`).
fn string_data(obj: &Value, secret: bool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(Value::Object(data)) = obj.get("data") {
        for (key, value) in data {
            let text = value.as_str().unwrap_or_default();
            let text = if secret {
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                    .unwrap_or_default()
            } else {
                text.to_string()
            };
            out.insert(key.clone(), text);
        }
    }
    out
}

fn kind_name(secret: bool) -> (&'static str, &'static str) {
    if secret {
        ("secrets", "secret")
    } else {
        ("configmaps", "configmap")
    }
}

/// Expand `$(VAR)` references; `$$` escapes `$`; unknown references stay as written.
pub(crate) fn expand(text: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let (Some(inner), Some(end)) = (after.strip_prefix('('), after.find(')')) {
            let name = &inner[..end - 1];
            match env.get(name) {
                Some(value) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn field_ref(pod: &Value, path: &str) -> String {
    if let Some(key) = path
        .strip_prefix("metadata.labels['")
        .or_else(|| path.strip_prefix("metadata.annotations['"))
        .and_then(|k| k.strip_suffix("']"))
    {
        let map = if path.starts_with("metadata.labels") {
            "labels"
        } else {
            "annotations"
        };
        return pod["metadata"][map][key]
            .as_str()
            .unwrap_or_default()
            .to_string();
    }
    let pointer = format!("/{}", path.replace('.', "/"));
    match pod.pointer(&pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// The environment of `container` in `pod`, or the kubelet's error message (the pod then waits
/// with `CreateContainerConfigError`).
pub(crate) fn resolve_env(
    state: &State,
    pod: &Value,
    container: &Value,
) -> Result<BTreeMap<String, String>, String> {
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let mut env = BTreeMap::new();
    for source in container
        .get("envFrom")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let prefix = source
            .get("prefix")
            .and_then(Value::as_str)
            .unwrap_or_default();
        for (field, secret) in [("configMapRef", false), ("secretRef", true)] {
            let Some(reference) = source.get(field) else {
                continue;
            };
            let name = reference["name"].as_str().unwrap_or_default();
            let optional = reference["optional"].as_bool().unwrap_or(false);
            let (plural, kind) = kind_name(secret);
            match object(state, plural, namespace, name) {
                Some(obj) => {
                    for (key, value) in string_data(obj, secret) {
                        env.insert(format!("{prefix}{key}"), value);
                    }
                }
                None if optional => {}
                None => return Err(format!("{kind} \"{name}\" not found")),
            }
        }
    }
    for var in container
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = var["name"].as_str().unwrap_or_default().to_string();
        if let Some(value) = var.get("value").and_then(Value::as_str) {
            let expanded = expand(value, &env);
            env.insert(name, expanded);
            continue;
        }
        let Some(from) = var.get("valueFrom") else {
            env.insert(name, String::new());
            continue;
        };
        let key_ref = [("secretKeyRef", true), ("configMapKeyRef", false)]
            .into_iter()
            .find_map(|(field, secret)| from.get(field).map(|r| (r, secret)));
        if let Some((reference, secret)) = key_ref {
            let source = reference["name"].as_str().unwrap_or_default();
            let key = reference["key"].as_str().unwrap_or_default();
            let optional = reference["optional"].as_bool().unwrap_or(false);
            let (plural, kind) = kind_name(secret);
            let Some(obj) = object(state, plural, namespace, source) else {
                if optional {
                    continue;
                }
                return Err(format!("{kind} \"{source}\" not found"));
            };
            match string_data(obj, secret).remove(key) {
                Some(value) => {
                    env.insert(name, value);
                }
                None if optional => {}
                None => {
                    let kind = if secret { "Secret" } else { "ConfigMap" };
                    return Err(format!(
                        "couldn't find key {key} in {kind} {namespace}/{source}"
                    ));
                }
            }
        } else if let Some(path) = from.pointer("/fieldRef/fieldPath").and_then(Value::as_str) {
            env.insert(name, field_ref(pod, path));
        } else {
            env.insert(name, String::new());
        }
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion() {
        let env = BTreeMap::from([("A".to_string(), "1".to_string())]);
        assert_eq!(expand("x$(A)y", &env), "x1y");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("$(B)", &env), "$(B)");
        assert_eq!(expand("cost $5", &env), "cost $5");
    }
}
