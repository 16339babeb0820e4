//! Garbage collection run after every write, until nothing changes:
//! owner-reference cascades (Background / Foreground / Orphan), namespace termination and
//! custom-resource cleanup when a CRD is deleted.
//!
//! A real cluster does this asynchronously in kube-controller-manager; doing it synchronously keeps
//! tests deterministic while producing the same sequence of objects and watch events.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};

use crate::meta;
use crate::store::{ChangeKind, DeleteOptions, ObjKey, Propagation, State};

const MANAGER: &str = "generic-garbage-collector";

enum Action {
    Delete(ObjKey, Propagation),
    Replace(ObjKey, Value, &'static str),
}

/// Whether the writes after `since_rv` can give the collector work: a deletion, an object
/// being deleted, a namespace or CRD change, or an owner reference to an owner that does not
/// exist (any more). Checking only the changed objects keeps writes O(changes) instead of
/// O(store); when this says no, a full pass would have found nothing to do either.
pub(crate) fn needed(state: &State, since_rv: u64) -> bool {
    let Some(changes) = state.changes_since(since_rv) else {
        return true;
    };
    changes.iter().any(|change| {
        if matches!(change.kind, ChangeKind::Deleted)
            || meta::is_deleting(&change.object)
            || matches!(
                change.key.plural.as_str(),
                "namespaces" | "customresourcedefinitions"
            )
        {
            return true;
        }
        meta::owner_references(&change.object).iter().any(|owner| {
            let group = owner
                .get("apiVersion")
                .and_then(Value::as_str)
                .and_then(|v| v.rsplit_once('/').map(|(g, _)| g))
                .unwrap_or("");
            let kind = owner.get("kind").and_then(Value::as_str).unwrap_or("");
            let name = owner.get("name").and_then(Value::as_str).unwrap_or("");
            let uid = owner.get("uid").and_then(Value::as_str).unwrap_or("");
            let Some(rt) = state
                .registry
                .all()
                .find(|t| t.group == group && t.kind == kind)
            else {
                return true;
            };
            let key = ObjKey::new(rt, &change.key.namespace, name);
            state.get(&key).is_none_or(|o| meta::uid(o) != uid)
        })
    })
}

/// Apply garbage-collection rules until the store is stable.
pub(crate) fn settle(state: &mut State) {
    // Each round makes progress (deletes objects or removes references/finalizers), so this ends;
    // the bound only guards against a bug looping forever.
    for _ in 0..10_000 {
        let actions = plan(state);
        if actions.is_empty() {
            return;
        }
        for action in actions {
            run(state, action);
        }
    }
    tracing::error!("garbage collection did not settle");
}

fn run(state: &mut State, action: Action) {
    let result = match action {
        Action::Delete(key, policy) => {
            let Some(rt) = state.registry.find_resource(&key.group, &key.plural) else {
                return;
            };
            state
                .delete(
                    &rt,
                    &key.namespace,
                    &key.name,
                    &DeleteOptions::propagation(policy),
                )
                .map(drop)
        }
        Action::Replace(key, value, manager) => {
            state.replace_internal(&key, value, manager).map(drop)
        }
    };
    if let Err(err) = result {
        // Objects can disappear between planning and running (e.g. cascades); that is fine.
        if err.code != 404 {
            tracing::warn!(%err, "garbage collector action failed");
        }
    }
}

fn without_finalizer(obj: &Value, finalizer: &str) -> Value {
    let mut new = obj.clone();
    let rest: Vec<String> = meta::finalizers(obj)
        .into_iter()
        .filter(|f| f != finalizer)
        .collect();
    meta::set_finalizers(&mut new, rest);
    new
}

fn plan(state: &State) -> Vec<Action> {
    let objects: Vec<(&ObjKey, &Value)> = state.all_objects().collect();
    let by_uid: HashMap<&str, &Value> = objects.iter().map(|(_, o)| (meta::uid(o), *o)).collect();
    let mut dependents: HashMap<&str, Vec<(&ObjKey, &Value)>> = HashMap::new();
    for (key, obj) in &objects {
        for owner in meta::owner_references(obj) {
            if let Some(uid) = owner.get("uid").and_then(Value::as_str)
                && let Some((owner_uid, _)) = by_uid.get_key_value(uid)
            {
                dependents.entry(owner_uid).or_default().push((key, obj));
            }
        }
    }
    let mut actions = Vec::new();
    let mut touched: HashSet<ObjKey> = HashSet::new();
    let mut push = |actions: &mut Vec<Action>, key: &ObjKey, action: Action| {
        if touched.insert(key.clone()) {
            actions.push(action);
        }
    };

    for (key, obj) in &objects {
        if !meta::is_deleting(obj) {
            continue;
        }
        let finalizers = meta::finalizers(obj);
        let deps = dependents.get(meta::uid(obj)).cloned().unwrap_or_default();
        if finalizers.iter().any(|f| f == "orphan") {
            // Orphan: strip our owner reference from every dependent, then drop the finalizer.
            for (dep_key, dep) in &deps {
                let mut new = (*dep).clone();
                let refs: Vec<Value> = meta::owner_references(dep)
                    .into_iter()
                    .filter(|r| r.get("uid").and_then(Value::as_str) != Some(meta::uid(obj)))
                    .collect();
                set_owner_references(&mut new, refs);
                push(
                    &mut actions,
                    dep_key,
                    Action::Replace((*dep_key).clone(), new, MANAGER),
                );
            }
            if deps.is_empty() {
                push(
                    &mut actions,
                    key,
                    Action::Replace((*key).clone(), without_finalizer(obj, "orphan"), MANAGER),
                );
            }
        } else if finalizers.iter().any(|f| f == "foregroundDeletion") {
            // Foreground: delete dependents; the owner waits for those that block owner deletion.
            let mut blocking = false;
            for (dep_key, dep) in &deps {
                if !meta::is_deleting(dep) {
                    push(
                        &mut actions,
                        dep_key,
                        Action::Delete((*dep_key).clone(), Propagation::Foreground),
                    );
                }
                blocking |= meta::owner_references(dep).iter().any(|r| {
                    r.get("uid").and_then(Value::as_str) == Some(meta::uid(obj))
                        && r.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true)
                });
            }
            if !blocking {
                push(
                    &mut actions,
                    key,
                    Action::Replace(
                        (*key).clone(),
                        without_finalizer(obj, "foregroundDeletion"),
                        MANAGER,
                    ),
                );
            }
        } else if key.group.is_empty() && key.plural == "namespaces" {
            // Namespace termination: delete the content, then release the `kubernetes` finalizer.
            let content: Vec<&(&ObjKey, &Value)> = objects
                .iter()
                .filter(|(k, _)| !k.namespace.is_empty() && k.namespace == key.name)
                .collect();
            for (k, o) in &content {
                if !meta::is_deleting(o) {
                    push(
                        &mut actions,
                        k,
                        Action::Delete((*k).clone(), Propagation::Background),
                    );
                }
            }
            if content.is_empty() && !meta::string_list(obj.pointer("/spec/finalizers")).is_empty()
            {
                let mut new = (*obj).clone();
                new["spec"]["finalizers"] = json!([]);
                push(
                    &mut actions,
                    key,
                    Action::Replace((*key).clone(), new, "namespace-controller"),
                );
            }
        } else if key.group == "apiextensions.k8s.io" && key.plural == "customresourcedefinitions" {
            let cleanup = "customresourcecleanup.apiextensions.k8s.io";
            if finalizers.iter().any(|f| f == cleanup) {
                let group = obj
                    .pointer("/spec/group")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let plural = obj
                    .pointer("/spec/names/plural")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let instances: Vec<&(&ObjKey, &Value)> = objects
                    .iter()
                    .filter(|(k, _)| k.group == group && k.plural == plural)
                    .collect();
                for (k, o) in &instances {
                    if !meta::is_deleting(o) {
                        push(
                            &mut actions,
                            k,
                            Action::Delete((*k).clone(), Propagation::Background),
                        );
                    }
                }
                if instances.is_empty() {
                    push(
                        &mut actions,
                        key,
                        Action::Replace((*key).clone(), without_finalizer(obj, cleanup), MANAGER),
                    );
                }
            }
        }
    }

    // Dependents whose owners are all gone are deleted; dangling references next to live owners are dropped.
    for (key, obj) in &objects {
        let refs = meta::owner_references(obj);
        if refs.is_empty() {
            continue;
        }
        let live: Vec<Value> = refs
            .iter()
            .filter(|r| {
                r.get("uid")
                    .and_then(Value::as_str)
                    .is_some_and(|uid| by_uid.contains_key(uid))
            })
            .cloned()
            .collect();
        if live.is_empty() {
            if !meta::is_deleting(obj) {
                push(
                    &mut actions,
                    key,
                    Action::Delete((*key).clone(), Propagation::Background),
                );
            }
        } else if live.len() != refs.len() {
            let mut new = (*obj).clone();
            set_owner_references(&mut new, live);
            push(
                &mut actions,
                key,
                Action::Replace((*key).clone(), new, MANAGER),
            );
        }
    }
    actions
}

fn set_owner_references(obj: &mut Value, refs: Vec<Value>) {
    let m = meta::meta_mut(obj);
    if refs.is_empty() {
        m.remove("ownerReferences");
    } else {
        m.insert("ownerReferences".into(), Value::Array(refs));
    }
}
