//! Patch formats: JSON merge patch (RFC 7386), a strategic-merge subset, and JSON patch (RFC 6902).

use serde_json::{Map, Value};

use crate::error::ApiError;

/// Apply a JSON merge patch in place: maps merge recursively, `null` deletes, anything else replaces.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target_map = target.as_object_mut().expect("object");
    for (key, value) in patch_map {
        if value.is_null() {
            target_map.remove(key);
        } else {
            merge_patch(target_map.entry(key).or_insert(Value::Null), value);
        }
    }
}

/// The merge key of well-known lists in built-in kinds (strategic merge merges these by key).
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "secrets" => "name",
        "volumeMounts" | "volumeDevices" => "mountPath",
        "ports" => "containerPort",
        "conditions" => "type",
        "ownerReferences" => "uid",
        _ => return None,
    })
}

/// Apply a strategic merge patch as the API server does for built-in kinds: like a merge patch, but
/// well-known lists (containers, env, conditions, ownerReferences, ...) merge by key, `finalizers`
/// merge as a set, and the `$patch` / `$deleteFromPrimitiveList` directives are honoured.
pub(crate) fn strategic_merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    match patch_map.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut replacement = patch_map.clone();
            replacement.remove("$patch");
            *target = Value::Object(replacement);
            return;
        }
        Some("delete") => {
            *target = Value::Null;
            return;
        }
        _ => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target_map = target.as_object_mut().expect("object");
    for (key, value) in patch_map {
        if let Some(list) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Some(remove)) =
                (target_map.get_mut(list), value.as_array())
            {
                items.retain(|item| !remove.contains(item));
            }
            continue;
        }
        if key.starts_with('$') {
            continue;
        }
        if value.is_null() {
            target_map.remove(key);
            continue;
        }
        let slot = target_map.entry(key).or_insert(Value::Null);
        match (slot, value) {
            (Value::Array(items), Value::Array(patch_items)) if key == "finalizers" => {
                for item in patch_items {
                    if !items.contains(item) {
                        items.push(item.clone());
                    }
                }
            }
            (Value::Array(items), Value::Array(patch_items)) if merge_key(key).is_some() => {
                merge_keyed_list(items, patch_items, merge_key(key).expect("checked"));
            }
            (slot @ Value::Object(_), Value::Object(_)) => {
                strategic_merge_patch(slot, value);
                if slot.is_null() {
                    target_map.remove(key);
                }
            }
            (slot, _) => *slot = strip_directives(value),
        }
    }
}

fn merge_keyed_list(items: &mut Vec<Value>, patch_items: &[Value], key: &str) {
    for patch_item in patch_items {
        let id = patch_item.get(key).cloned();
        let position = id
            .as_ref()
            .and_then(|id| items.iter().position(|item| item.get(key) == Some(id)));
        let delete = patch_item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (position, delete) {
            (Some(i), true) => {
                items.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge_patch(&mut items[i], patch_item),
            (None, false) => items.push(strip_directives(patch_item)),
        }
    }
}

fn strip_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// Decode a JSON pointer (`/a/b~1c`) into its reference tokens.
fn pointer_tokens(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer
        .strip_prefix('/')
        .ok_or_else(|| format!("invalid JSON pointer {pointer:?}"))?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn child_mut<'a>(value: &'a mut Value, token: &str) -> Option<&'a mut Value> {
    match value {
        Value::Object(map) => map.get_mut(token),
        Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
        _ => None,
    }
}

fn resolve_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> Option<&'a mut Value> {
    tokens
        .iter()
        .try_fold(doc, |value, token| child_mut(value, token))
}

fn resolve<'a>(doc: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    tokens.iter().try_fold(doc, |value, token| match value {
        Value::Object(map) => map.get(token),
        Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

fn add(doc: &mut Value, tokens: &[String], value: Value) -> Result<(), String> {
    let Some((last, parent_tokens)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    let parent = resolve_mut(doc, parent_tokens).ok_or_else(|| {
        format!(
            "add operation does not apply: doc is missing path: {}",
            join(tokens)
        )
    })?;
    match parent {
        Value::Object(map) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(items) if last == "-" => {
            items.push(value);
            Ok(())
        }
        Value::Array(items) => match last.parse::<usize>() {
            Ok(i) if i <= items.len() => {
                items.insert(i, value);
                Ok(())
            }
            _ => Err(format!(
                "add operation does not apply: index out of range: {}",
                join(tokens)
            )),
        },
        _ => Err(format!(
            "add operation does not apply: parent is not a container: {}",
            join(tokens)
        )),
    }
}

fn remove(doc: &mut Value, tokens: &[String]) -> Result<Value, String> {
    let missing = || {
        format!(
            "remove operation does not apply: doc is missing path: {}",
            join(tokens)
        )
    };
    let (last, parent_tokens) = tokens.split_last().ok_or_else(missing)?;
    match resolve_mut(doc, parent_tokens).ok_or_else(missing)? {
        Value::Object(map) => map.remove(last).ok_or_else(missing),
        Value::Array(items) => match last.parse::<usize>() {
            Ok(i) if i < items.len() => Ok(items.remove(i)),
            _ => Err(missing()),
        },
        _ => Err(missing()),
    }
}

fn join(tokens: &[String]) -> String {
    tokens.iter().map(|t| format!("/{t}")).collect()
}

/// Apply a JSON patch document. A `test` of a missing path against `null` succeeds, as on a real
/// API server (kube's finalizer helper relies on it).
pub(crate) fn json_patch(doc: &Value, patch: &Value) -> Result<Value, ApiError> {
    let ops = patch
        .as_array()
        .ok_or_else(|| ApiError::bad_request("json patch must be an array of operations"))?;
    let mut doc = doc.clone();
    for op in ops {
        let field = |name: &str| -> Result<&str, ApiError> {
            op.get(name).and_then(Value::as_str).ok_or_else(|| {
                ApiError::bad_request(format!("json patch operation is missing {name:?}: {op}"))
            })
        };
        let kind = field("op")?;
        let path = pointer_tokens(field("path")?).map_err(ApiError::bad_request)?;
        let value = || {
            op.get("value").cloned().ok_or_else(|| {
                ApiError::bad_request(format!("json patch operation is missing \"value\": {op}"))
            })
        };
        let result = match kind {
            "add" => add(&mut doc, &path, value()?),
            "remove" => remove(&mut doc, &path).map(drop),
            "replace" => match resolve_mut(&mut doc, &path) {
                Some(slot) => {
                    *slot = value()?;
                    Ok(())
                }
                None => Err(format!(
                    "replace operation does not apply: doc is missing key: {}",
                    join(&path)
                )),
            },
            "move" | "copy" => {
                let from = pointer_tokens(field("from")?).map_err(ApiError::bad_request)?;
                let moved = if kind == "move" {
                    remove(&mut doc, &from)
                } else {
                    resolve(&doc, &from).cloned().ok_or_else(|| {
                        format!(
                            "copy operation does not apply: doc is missing from path: {}",
                            join(&from)
                        )
                    })
                };
                moved.and_then(|v| add(&mut doc, &path, v))
            }
            "test" => {
                let expected = value()?;
                match resolve(&doc, &path) {
                    Some(actual) if *actual == expected => Ok(()),
                    None if expected.is_null() => Ok(()),
                    _ => Err(format!("testing value {} failed: test failed", join(&path))),
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unexpected json patch operation {other:?}"
                )));
            }
        };
        result.map_err(ApiError::unprocessable)?;
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge() {
        let mut doc = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge_patch(&mut doc, &json!({"a": {"b": null, "e": 3}, "d": [2]}));
        assert_eq!(doc, json!({"a": {"c": 2, "e": 3}, "d": [2]}));
    }

    #[test]
    fn strategic() {
        let mut doc = json!({"metadata": {"finalizers": ["a"]}, "spec": {"containers": [{"name": "c", "image": "x"}]}});
        strategic_merge_patch(
            &mut doc,
            &json!({"metadata": {"finalizers": ["b"]}, "spec": {"containers": [{"name": "c", "image": "y"}, {"name": "d"}]}}),
        );
        assert_eq!(doc["metadata"]["finalizers"], json!(["a", "b"]));
        assert_eq!(
            doc["spec"]["containers"],
            json!([{"name": "c", "image": "y"}, {"name": "d"}])
        );
        strategic_merge_patch(
            &mut doc,
            &json!({"spec": {"containers": [{"name": "d", "$patch": "delete"}]}}),
        );
        assert_eq!(
            doc["spec"]["containers"],
            json!([{"name": "c", "image": "y"}])
        );
    }

    #[test]
    fn json_patch_ops() {
        let doc = json!({"metadata": {"name": "x"}});
        let out = json_patch(
            &doc,
            &json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": ["f"]},
                {"op": "add", "path": "/metadata/finalizers/-", "value": "g"},
                {"op": "copy", "from": "/metadata/name", "path": "/metadata/generateName"},
                {"op": "move", "from": "/metadata/generateName", "path": "/x"},
                {"op": "replace", "path": "/x", "value": 1}
            ]),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"name": "x", "finalizers": ["f", "g"]}, "x": 1})
        );
        let out = json_patch(
            &out,
            &json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "f"}, {"op": "remove", "path": "/metadata/finalizers/0"}]),
        )
        .unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["g"]));
        let err = json_patch(
            &out,
            &json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "f"}]),
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
        assert_eq!(json_patch(&out, &json!({})).unwrap_err().code, 400);
    }
}
