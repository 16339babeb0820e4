//! A small model of server-side apply field ownership (`metadata.managedFields`).
//!
//! Fields are tracked as leaf paths; lists are atomic. An apply conflicts when another manager owns
//! a field the applied configuration sets to a different value. Updates (create/replace/patch) move
//! ownership of the fields they change to their manager; fields that disappear lose their owners.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::error::ApiError;

pub(crate) type FieldPath = Vec<String>;
pub(crate) type FieldSet = BTreeSet<FieldPath>;

/// Which part of an object a write may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Everything but `.status` (main resource of a kind with a status subresource).
    MainWithoutStatus,
    /// Everything (kinds without a status subresource).
    All,
    /// Only `.status` (the `/status` subresource).
    Status,
}

impl Scope {
    fn includes_top(self, key: &str) -> bool {
        match self {
            _ if matches!(key, "apiVersion" | "kind") => false,
            Scope::Status => key == "status",
            Scope::MainWithoutStatus => key != "status",
            Scope::All => true,
        }
    }

    pub fn subresource(self) -> Option<&'static str> {
        (self == Scope::Status).then_some("status")
    }
}

const TRACKED_METADATA: [&str; 4] = ["labels", "annotations", "finalizers", "ownerReferences"];

fn leaves(value: &Value, prefix: &mut FieldPath, out: &mut FieldSet) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                prefix.push(key.clone());
                leaves(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {
            out.insert(prefix.clone());
        }
    }
}

/// The owned-field paths `obj` sets within `scope`.
pub(crate) fn field_set(obj: &Value, scope: Scope) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(map) = obj.as_object() else {
        return out;
    };
    for (key, value) in map {
        if key == "metadata" {
            if scope == Scope::Status {
                continue;
            }
            for field in TRACKED_METADATA {
                if let Some(v) = value.get(field) {
                    leaves(v, &mut vec!["metadata".into(), field.into()], &mut out);
                }
            }
        } else if scope.includes_top(key) {
            leaves(value, &mut vec![key.clone()], &mut out);
        }
    }
    out
}

fn diff(a: Option<&Value>, b: Option<&Value>, prefix: &mut FieldPath, out: &mut FieldSet) {
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) if !x.is_empty() && !y.is_empty() => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for key in keys {
                prefix.push(key.clone());
                diff(x.get(key), y.get(key), prefix, out);
                prefix.pop();
            }
        }
        _ if a != b => {
            out.insert(prefix.clone());
        }
        _ => {}
    }
}

/// Paths whose values differ between `old` and `new` within `scope`.
pub(crate) fn changed_fields(old: &Value, new: &Value, scope: Scope) -> FieldSet {
    let mut out = FieldSet::new();
    let empty = Map::new();
    let (a, b) = (
        old.as_object().unwrap_or(&empty),
        new.as_object().unwrap_or(&empty),
    );
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for key in keys {
        if key == "metadata" {
            if scope == Scope::Status {
                continue;
            }
            for field in TRACKED_METADATA {
                let path = &mut vec!["metadata".to_string(), field.to_string()];
                diff(
                    a.get("metadata").and_then(|m| m.get(field)),
                    b.get("metadata").and_then(|m| m.get(field)),
                    path,
                    &mut out,
                );
            }
        } else if scope.includes_top(key) {
            diff(a.get(key), b.get(key), &mut vec![key.clone()], &mut out);
        }
    }
    out
}

pub(crate) fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(obj, |v, key| v.get(key))
}

fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = obj;
    for key in parents {
        match current.get_mut(key) {
            Some(next) => current = next,
            None => return,
        }
    }
    if let Some(map) = current.as_object_mut() {
        map.remove(last);
    }
}

/// Whether `owned` is `path` itself or lies inside it (so setting `path` touches it). Owning a map
/// does not make its new children yours, so an owned ancestor is not affected.
fn within(owned: &[String], path: &[String]) -> bool {
    owned.starts_with(path)
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub manager: String,
    pub operation: String,
    pub subresource: Option<String>,
    pub api_version: String,
    pub time: String,
    pub fields: FieldSet,
}

impl Entry {
    fn same_owner(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }
}

fn to_fields_v1(fields: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut node = &mut root;
        for key in path {
            node = node
                .entry(format!("f:{key}"))
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("object");
        }
    }
    Value::Object(root)
}

fn from_fields_v1(value: &Value, prefix: &mut FieldPath, out: &mut FieldSet) {
    match value.as_object() {
        Some(map) if !map.is_empty() => {
            for (key, child) in map {
                if let Some(name) = key.strip_prefix("f:") {
                    prefix.push(name.to_string());
                    from_fields_v1(child, prefix, out);
                    prefix.pop();
                }
            }
        }
        _ if !prefix.is_empty() => {
            out.insert(prefix.clone());
        }
        _ => {}
    }
}

/// The managed-field entries recorded on `obj`.
pub(crate) fn entries(obj: &Value) -> Vec<Entry> {
    let Some(items) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    items
        .iter()
        .map(|item| {
            let text = |k: &str| {
                item.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let mut fields = FieldSet::new();
            if let Some(f) = item.get("fieldsV1") {
                from_fields_v1(f, &mut Vec::new(), &mut fields);
            }
            Entry {
                manager: text("manager"),
                operation: text("operation"),
                subresource: item
                    .get("subresource")
                    .and_then(Value::as_str)
                    .map(String::from),
                api_version: text("apiVersion"),
                time: text("time"),
                fields,
            }
        })
        .collect()
}

/// Write `entries` to `obj.metadata.managedFields`, dropping empty entries and fields `obj` no
/// longer has.
pub(crate) fn store_entries(obj: &mut Value, mut entries: Vec<Entry>) {
    for entry in &mut entries {
        entry.fields.retain(|path| value_at(obj, path).is_some());
    }
    entries.retain(|e| !e.fields.is_empty());
    let items: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut item = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields),
            });
            if let Some(sub) = &e.subresource {
                item["subresource"] = json!(sub);
            }
            item
        })
        .collect();
    let meta = crate::meta::meta_mut(obj);
    if items.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(items));
    }
}

/// Record an update by `manager`: it now owns the fields that changed between `old` and `new`.
pub(crate) fn record_update(old: Option<&Value>, new: &mut Value, manager: &str, scope: Scope) {
    let mut list = old.map(entries).unwrap_or_default();
    let changed = match old {
        Some(old) => changed_fields(old, new, scope),
        None => field_set(new, scope),
    };
    if changed.is_empty() {
        store_entries(new, list);
        return;
    }
    let sub = scope.subresource();
    for entry in list
        .iter_mut()
        .filter(|e| !e.same_owner(manager, "Update", sub))
    {
        entry
            .fields
            .retain(|owned| !changed.iter().any(|c| within(owned, c)));
    }
    let api_version = new
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let position = list
        .iter()
        .position(|e| e.same_owner(manager, "Update", sub));
    let entry = match position {
        Some(i) => &mut list[i],
        None => {
            list.push(Entry {
                manager: manager.to_string(),
                operation: "Update".into(),
                subresource: sub.map(String::from),
                api_version: String::new(),
                time: String::new(),
                fields: FieldSet::new(),
            });
            list.last_mut().expect("just pushed")
        }
    };
    entry.fields.extend(changed);
    entry.api_version = api_version;
    entry.time = crate::meta::now_time();
    store_entries(new, list);
}

/// Merge an applied configuration into the object (objects merge recursively, other values replace,
/// `null` removes).
fn merge_applied(target: &mut Value, applied: &Value) {
    match (target, applied) {
        (Value::Object(t), Value::Object(a)) => {
            for (key, value) in a {
                if value.is_null() {
                    t.remove(key);
                } else if let Some(existing) = t
                    .get_mut(key)
                    .filter(|e| e.is_object() && value.is_object())
                {
                    merge_applied(existing, value);
                } else {
                    t.insert(key.clone(), value.clone());
                }
            }
        }
        (target, applied) => *target = applied.clone(),
    }
}

/// Server-side apply `applied` (already limited to `scope`) onto `live` for `manager`.
///
/// Returns the merged object with its new managed-field entries. Conflicts with other managers are
/// a 409 unless `force`, in which case ownership moves to `manager`.
pub(crate) fn apply(
    live: &Value,
    applied: &Value,
    manager: &str,
    force: bool,
    scope: Scope,
    describe: (&str, &str, &str),
) -> Result<Value, ApiError> {
    let sub = scope.subresource();
    let applied_fields = field_set(applied, scope);
    let mut list = entries(live);
    let mut conflicts = Vec::new();
    for entry in list.iter_mut().filter(|e| e.manager != manager) {
        let mut lost = FieldSet::new();
        for owned in &entry.fields {
            for path in applied_fields.iter().filter(|p| within(owned, p)) {
                if value_at(live, path) != value_at(applied, path) {
                    conflicts.push((entry.manager.clone(), path.clone()));
                    lost.insert(owned.clone());
                }
            }
        }
        if force {
            entry.fields.retain(|f| !lost.contains(f));
        }
    }
    if !conflicts.is_empty() && !force {
        let (group, plural, name) = describe;
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(m, p)| json!({"type": "FieldManagerConflict", "message": format!("conflict with \"{m}\""), "field": format!(".{}", p.join("."))}))
            .collect();
        let list_text: Vec<String> = conflicts
            .iter()
            .map(|(m, p)| format!("conflict with \"{m}\": .{}", p.join(".")))
            .collect();
        let mut err = ApiError::new(
            409,
            "Conflict",
            format!(
                "Apply failed with {} conflict{}: {}",
                conflicts.len(),
                if conflicts.len() == 1 { "" } else { "s" },
                list_text.join("\n")
            ),
        )
        .with_details(group, plural, name);
        if let Some(details) = err.details.as_mut() {
            details["causes"] = Value::Array(causes);
        }
        return Err(err);
    }
    let mut merged = live.clone();
    // Fields this manager applied before but no longer applies are removed, unless someone else owns them.
    if let Some(previous) = list.iter().find(|e| e.same_owner(manager, "Apply", sub)) {
        for path in previous.fields.difference(&applied_fields) {
            let shared = list
                .iter()
                .filter(|e| !e.same_owner(manager, "Apply", sub))
                .any(|e| e.fields.iter().any(|f| within(f, path)));
            if !shared {
                remove_at(&mut merged, path);
            }
        }
    }
    merge_applied(&mut merged, applied);
    let api_version = applied
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    list.retain(|e| !e.same_owner(manager, "Apply", sub));
    list.push(Entry {
        manager: manager.to_string(),
        operation: "Apply".into(),
        subresource: sub.map(String::from),
        api_version,
        time: crate::meta::now_time(),
        fields: applied_fields,
    });
    store_entries(&mut merged, list);
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_conflicts_and_force() {
        let live = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "a"}, "spec": {}});
        let a = json!({"apiVersion": "v1", "kind": "X", "spec": {"holder": "a", "n": 1}});
        let after_a = apply(&live, &a, "ma", false, Scope::All, ("", "xs", "a")).unwrap();
        assert_eq!(after_a["spec"]["holder"], "a");
        let b = json!({"apiVersion": "v1", "kind": "X", "spec": {"holder": "b", "n": 1}});
        let err = apply(&after_a, &b, "mb", false, Scope::All, ("", "xs", "a")).unwrap_err();
        assert_eq!(err.code, 409);
        assert!(err.message.contains(".spec.holder"), "{}", err.message);
        let forced = apply(&after_a, &b, "mb", true, Scope::All, ("", "xs", "a")).unwrap();
        assert_eq!(forced["spec"]["holder"], "b");
        // `a` applying without `n` keeps it since `mb` still owns it.
        let a2 = json!({"apiVersion": "v1", "kind": "X", "spec": {"other": true}});
        let out = apply(&forced, &a2, "ma", false, Scope::All, ("", "xs", "a")).unwrap();
        assert_eq!(out["spec"]["n"], 1);
    }

    #[test]
    fn updates_take_ownership() {
        let old = json!({"metadata": {"name": "a"}, "spec": {"x": 1}});
        let mut new = old.clone();
        record_update(None, &mut new, "creator", Scope::All);
        let mut changed = new.clone();
        changed["spec"]["x"] = json!(2);
        record_update(Some(&new), &mut changed, "editor", Scope::All);
        let list = entries(&changed);
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].manager, "editor");
    }
}
