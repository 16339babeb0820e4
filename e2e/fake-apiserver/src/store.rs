//! The object store: objects by (group, resource, namespace, name), the global resourceVersion,
//! the event history watches are served from, and the write rules of a real API server.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::error::ApiError;
use crate::managed_fields::{self, Scope};
use crate::meta::{self, meta_mut};
use crate::patch;
use crate::registry::{Registry, ResourceType};

/// Where an object lives: group, resource (plural), namespace ("" when cluster-scoped), name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ObjKey {
    pub group: String,
    pub plural: String,
    pub namespace: String,
    pub name: String,
}

impl ObjKey {
    pub fn new(rt: &ResourceType, namespace: &str, name: &str) -> Self {
        Self {
            group: rt.group.clone(),
            plural: rt.plural.clone(),
            namespace: if rt.namespaced {
                namespace.to_string()
            } else {
                String::new()
            },
            name: name.to_string(),
        }
    }
}

/// Kind of a recorded change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One entry of the event history.
#[derive(Debug)]
pub(crate) struct Change {
    pub rv: u64,
    pub key: ObjKey,
    pub kind: ChangeKind,
    /// The object after the change (for deletions: its last state, carrying the deletion's resourceVersion).
    pub object: Value,
    /// The object before the change (modifications only), so watches can tell objects leaving a selector.
    pub prev: Option<Value>,
}

/// Propagation policy of a delete (`DeleteOptions.propagationPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Delete the object now; the garbage collector deletes dependents afterwards.
    Background,
    /// Keep the object (with the `foregroundDeletion` finalizer) until blocking dependents are gone.
    Foreground,
    /// Delete the object and remove the owner reference from its dependents.
    Orphan,
}

impl Propagation {
    pub(crate) fn parse(text: &str) -> Result<Self, ApiError> {
        match text {
            "Background" => Ok(Self::Background),
            "Foreground" => Ok(Self::Foreground),
            "Orphan" => Ok(Self::Orphan),
            other => Err(ApiError::bad_request(format!(
                "DeleteOptions.propagationPolicy: Unsupported value: \"{other}\""
            ))),
        }
    }
}

/// Options of a delete, as sent in the `DeleteOptions` body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeleteOptions {
    /// `propagationPolicy`; `None` uses the resource's default (Orphan for batch/v1 Jobs, else Background).
    pub propagation: Option<Propagation>,
    /// `preconditions.uid`.
    pub precondition_uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub precondition_resource_version: Option<String>,
    /// `gracePeriodSeconds` (accepted; deletions are never delayed by it).
    pub grace_period_seconds: Option<i64>,
    /// `dryRun: ["All"]`.
    pub dry_run: bool,
}

impl DeleteOptions {
    /// Delete with the given propagation policy.
    pub fn propagation(policy: Propagation) -> Self {
        Self {
            propagation: Some(policy),
            ..Self::default()
        }
    }
}

/// How a write was expressed.
#[derive(Debug, Clone)]
pub(crate) enum WriteKind {
    Replace(Value),
    Merge(Value),
    Strategic(Value),
    Json(Value),
    Apply { config: Value, force: bool },
}

/// Who writes and how.
#[derive(Debug, Clone)]
pub(crate) struct WriteOptions {
    pub manager: String,
    pub dry_run: bool,
    /// Writes through the Rust API: `.status` is taken as given (lets tests seed any state).
    pub direct: bool,
}

impl WriteOptions {
    pub fn direct(manager: &str) -> Self {
        Self {
            manager: manager.into(),
            dry_run: false,
            direct: true,
        }
    }
}

/// Result of a delete.
#[derive(Debug, Clone)]
pub(crate) enum Deleted {
    /// The object is gone; this was its last state.
    Gone(Value),
    /// The object is marked for deletion and waits for finalizers.
    Pending(Value),
}

/// How an update is applied: which part of the object it may change, and whose fields it records.
struct How {
    scope: Scope,
    dry_run: bool,
    managed: Managed,
}

enum Managed {
    Update(String),
    Apply(Option<Value>),
}

/// Everything behind the store's lock.
pub(crate) struct State {
    pub rv: u64,
    objects: BTreeMap<ObjKey, Value>,
    history: VecDeque<Arc<Change>>,
    /// Watches from a resourceVersion older than this get 410 Gone.
    pub compacted_rv: u64,
    history_limit: usize,
    pub registry: Registry,
    /// Bumped by `drop_watches()`; open watch streams end when it changes.
    pub watch_epoch: u64,
}

fn scope_for(rt: &ResourceType, status: bool, direct: bool) -> Scope {
    if status {
        Scope::Status
    } else if rt.status_subresource && !direct {
        Scope::MainWithoutStatus
    } else {
        Scope::All
    }
}

/// Copy of `obj` without metadata (and without status when `rt` has a status subresource):
/// what `metadata.generation` tracks.
fn generation_content(rt: &ResourceType, obj: &Value) -> Value {
    let mut content = obj.clone();
    if let Some(map) = content.as_object_mut() {
        map.remove("metadata");
        if rt.status_subresource {
            map.remove("status");
        }
    }
    content
}

/// `obj` with managedFields timestamps removed, for no-op detection.
fn without_times(obj: &Value) -> Value {
    let mut copy = obj.clone();
    if let Some(Value::Array(items)) = copy.pointer_mut("/metadata/managedFields") {
        for item in items {
            if let Some(map) = item.as_object_mut() {
                map.remove("time");
            }
        }
    }
    copy
}

const SYSTEM_METADATA: [&str; 6] = [
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "managedFields",
];

impl State {
    pub fn new(history_limit: usize) -> Self {
        Self {
            rv: 1,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            compacted_rv: 0,
            history_limit,
            registry: Registry::builtin(),
            watch_epoch: 0,
        }
    }

    pub fn get(&self, key: &ObjKey) -> Option<&Value> {
        self.objects.get(key)
    }

    /// Objects of `rt`, in `namespace` when given, ordered by namespace then name.
    pub fn list<'a>(
        &'a self,
        rt: &ResourceType,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a ObjKey, &'a Value)> + 'a {
        let start = ObjKey {
            group: rt.group.clone(),
            plural: rt.plural.clone(),
            namespace: namespace.unwrap_or("").to_string(),
            name: String::new(),
        };
        let (group, plural) = (rt.group.clone(), rt.plural.clone());
        self.objects.range(start..).take_while(move |(k, _)| {
            k.group == group && k.plural == plural && namespace.is_none_or(|ns| k.namespace == ns)
        })
    }

    pub fn all_objects(&self) -> impl Iterator<Item = (&ObjKey, &Value)> {
        self.objects.iter()
    }

    /// History entries after `rv`, or `None` if some were compacted away.
    pub fn changes_since(&self, rv: u64) -> Option<Vec<Arc<Change>>> {
        if rv < self.compacted_rv {
            return None;
        }
        let start = self.history.partition_point(|c| c.rv <= rv);
        Some(self.history.range(start..).cloned().collect())
    }

    /// Drop all history and advance the resourceVersion, so every earlier resourceVersion is too old.
    pub fn compact(&mut self) {
        self.rv += 1;
        self.compacted_rv = self.rv;
        self.history.clear();
        self.watch_epoch += 1;
    }

    fn record(&mut self, key: ObjKey, kind: ChangeKind, object: Value, prev: Option<Value>) {
        self.history.push_back(Arc::new(Change {
            rv: self.rv,
            key,
            kind,
            object,
            prev,
        }));
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted_rv = dropped.rv;
            }
        }
    }

    /// Store `obj` under a new resourceVersion and record ADDED/MODIFIED.
    fn commit(&mut self, key: ObjKey, mut obj: Value, prev: Option<Value>) -> Value {
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        self.objects.insert(key.clone(), obj.clone());
        if key.group == "apiextensions.k8s.io"
            && key.plural == "customresourcedefinitions"
            && let Ok(rt) = ResourceType::from_crd(&obj)
        {
            self.registry.register(rt);
        }
        let kind = if prev.is_some() {
            ChangeKind::Modified
        } else {
            ChangeKind::Added
        };
        self.record(key, kind, obj.clone(), prev);
        obj
    }

    /// Remove an object (its final state given by `last`, if any) and record DELETED.
    fn remove(&mut self, key: &ObjKey, last: Option<Value>) -> Option<Value> {
        let stored = self.objects.remove(key)?;
        let mut obj = last.unwrap_or(stored);
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        self.record(key.clone(), ChangeKind::Deleted, obj.clone(), None);
        if key.group == "apiextensions.k8s.io"
            && key.plural == "customresourcedefinitions"
            && let Ok(rt) = ResourceType::from_crd(&obj)
        {
            // Whatever instances are left go with their definition.
            let instances: Vec<ObjKey> = self
                .objects
                .keys()
                .filter(|k| k.group == rt.group && k.plural == rt.plural)
                .cloned()
                .collect();
            for instance in instances {
                self.remove(&instance, None);
            }
            self.registry.unregister(&rt.group, &rt.plural);
        }
        Some(obj)
    }

    /// Check (and fill in) apiVersion and kind of a request body.
    fn check_type(rt: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
        let Some(map) = obj.as_object_mut() else {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        };
        let api_version = map.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        if !api_version.is_empty() && !rt.serves_api_version(api_version) {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({api_version}) does not match the expected API version ({})",
                rt.storage_api_version()
            )));
        }
        let kind = map.get("kind").and_then(Value::as_str).unwrap_or("");
        if !kind.is_empty() && kind != rt.kind {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({kind}) does not match the expected kind ({})",
                rt.kind
            )));
        }
        map.insert("apiVersion".into(), json!(rt.storage_api_version()));
        map.insert("kind".into(), json!(rt.kind));
        if !map.get("metadata").is_some_and(Value::is_object) {
            map.insert("metadata".into(), json!({}));
        }
        Ok(())
    }

    /// Create an object (POST). `namespace` is the one in the URL, if any.
    pub fn create(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        self.create_inner(
            rt,
            namespace,
            obj,
            opts,
            Managed::Update(opts.manager.clone()),
        )
    }

    fn create_inner(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        mut obj: Value,
        opts: &WriteOptions,
        managed: Managed,
    ) -> Result<Value, ApiError> {
        Self::check_type(rt, &mut obj)?;
        let body_ns = meta::namespace(&obj).to_string();
        let ns = if rt.namespaced {
            match namespace {
                Some(url_ns) if !body_ns.is_empty() && body_ns != url_ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                Some(url_ns) => url_ns.to_string(),
                None if !body_ns.is_empty() => body_ns,
                None => "default".to_string(),
            }
        } else {
            String::new()
        };
        let mut name = meta::name(&obj).to_string();
        let generate = meta::meta_str(&obj, "generateName").to_string();
        if name.is_empty() && !generate.is_empty() {
            loop {
                name = format!("{generate}{}", meta::random_suffix(5));
                if !self.objects.contains_key(&ObjKey::new(rt, &ns, &name)) {
                    break;
                }
            }
        }
        if name.is_empty() {
            return Err(ApiError::invalid(
                &rt.group,
                &rt.kind,
                "",
                "metadata.name: Required value: name or generateName is required",
            ));
        }
        let valid = if rt.is("", "namespaces") {
            meta::is_dns_label(&name)
        } else {
            meta::is_dns_subdomain(&name)
        };
        if !valid {
            return Err(ApiError::invalid(
                &rt.group,
                &rt.kind,
                &name,
                format!(
                    "metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 name must consist of lower case alphanumeric characters, '-' or '.'"
                ),
            ));
        }
        if !meta::resource_version(&obj).is_empty() {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let key = ObjKey::new(rt, &ns, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&rt.group, &rt.plural, &name));
        }
        if rt.namespaced {
            let ns_key = ObjKey {
                group: String::new(),
                plural: "namespaces".into(),
                namespace: String::new(),
                name: ns.clone(),
            };
            if self.objects.get(&ns_key).is_some_and(meta::is_deleting) {
                return Err(ApiError::new(
                    403,
                    "Forbidden",
                    format!(
                        "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                        crate::error::group_resource(&rt.group, &rt.plural)
                    ),
                ));
            }
        }
        {
            let m = meta_mut(&mut obj);
            m.insert("name".into(), json!(name));
            if rt.namespaced {
                m.insert("namespace".into(), json!(ns));
            } else {
                m.remove("namespace");
            }
            for field in SYSTEM_METADATA {
                m.remove(field);
            }
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(meta::now_time()));
            m.insert("generation".into(), json!(1));
        }
        if rt.status_subresource
            && !opts.direct
            && let Some(map) = obj.as_object_mut()
        {
            map.remove("status");
        }
        crate::defaults::on_create(rt, &mut obj)?;
        match managed {
            Managed::Update(manager) => managed_fields::record_update(
                None,
                &mut obj,
                &manager,
                scope_for(rt, false, opts.direct),
            ),
            Managed::Apply(fields) => {
                if let Some(fields) = fields {
                    meta_mut(&mut obj).insert("managedFields".into(), fields);
                }
                let entries = managed_fields::entries(&obj);
                managed_fields::store_entries(&mut obj, entries);
            }
        }
        if opts.dry_run {
            return Ok(obj);
        }
        Ok(self.commit(key, obj, None))
    }

    /// Update, patch or apply an object (`status` = via the `/status` subresource).
    /// Returns the object and whether it was created (apply to a missing object).
    pub fn write(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        status: bool,
        kind: WriteKind,
        opts: &WriteOptions,
    ) -> Result<(Value, bool), ApiError> {
        let key = ObjKey::new(rt, namespace, name);
        let scope = scope_for(rt, status, opts.direct);
        let describe = (rt.group.as_str(), rt.plural.as_str(), name);
        if let WriteKind::Apply { config, .. } = &kind {
            if !config.get("apiVersion").is_some_and(|v| v.is_string())
                || !config.get("kind").is_some_and(|v| v.is_string())
            {
                return Err(ApiError::bad_request(
                    "apiVersion and kind must be set in an applied configuration",
                ));
            }
            let config_name = meta::name(config);
            if !config_name.is_empty() && config_name != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({config_name}) does not match the name on the URL ({name})"
                )));
            }
        }
        let Some(current) = self.objects.get(&key).cloned() else {
            return match kind {
                WriteKind::Apply { mut config, force } if !status => {
                    Self::check_type(rt, &mut config)?;
                    if !meta::resource_version(&config).is_empty() {
                        return Err(ApiError::conflict(
                            &rt.group,
                            &rt.plural,
                            name,
                            "the object has been deleted or does not exist",
                        ));
                    }
                    let skeleton = json!({"apiVersion": config["apiVersion"], "kind": rt.kind, "metadata": {}});
                    let limited = limit_to_scope(&config, scope);
                    let mut merged = managed_fields::apply(
                        &skeleton,
                        &limited,
                        &opts.manager,
                        force,
                        scope,
                        describe,
                    )?;
                    let m = meta_mut(&mut merged);
                    m.insert("name".into(), json!(name));
                    let fields = m.remove("managedFields");
                    let created = self.create_inner(
                        rt,
                        Some(namespace),
                        merged,
                        opts,
                        Managed::Apply(fields),
                    )?;
                    Ok((created, true))
                }
                _ => Err(rt.not_found(name)),
            };
        };
        let (candidate, managed) = match kind {
            WriteKind::Replace(mut body) => {
                let body_name = meta::name(&body);
                if !body_name.is_empty() && body_name != name {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({body_name}) does not match the name on the URL ({name})"
                    )));
                }
                meta_mut(&mut body).insert("name".into(), json!(name));
                (body, Managed::Update(opts.manager.clone()))
            }
            WriteKind::Merge(p) => {
                let mut c = current.clone();
                patch::merge_patch(&mut c, &p);
                (c, Managed::Update(opts.manager.clone()))
            }
            WriteKind::Strategic(p) => {
                if rt.custom {
                    return Err(ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                    ));
                }
                let mut c = current.clone();
                patch::strategic_merge_patch(&mut c, &p);
                (c, Managed::Update(opts.manager.clone()))
            }
            WriteKind::Json(p) => (
                patch::json_patch(&current, &p)?,
                Managed::Update(opts.manager.clone()),
            ),
            WriteKind::Apply { mut config, force } => {
                Self::check_type(rt, &mut config)?;
                let rv = meta::resource_version(&config);
                if !rv.is_empty() && rv != meta::resource_version(&current) {
                    return Err(ApiError::stale(&rt.group, &rt.plural, name));
                }
                let limited = limit_to_scope(&config, scope);
                let mut merged = managed_fields::apply(
                    &current,
                    &limited,
                    &opts.manager,
                    force,
                    scope,
                    describe,
                )?;
                let fields = meta_mut(&mut merged).remove("managedFields");
                (merged, Managed::Apply(fields))
            }
        };
        let how = How {
            scope,
            dry_run: opts.dry_run,
            managed,
        };
        let updated = self.commit_update(rt, &key, current, candidate, how)?;
        Ok((updated, false))
    }

    /// The common tail of every update: apply the API server's rules to `candidate` and store it.
    fn commit_update(
        &mut self,
        rt: &ResourceType,
        key: &ObjKey,
        current: Value,
        mut candidate: Value,
        how: How,
    ) -> Result<Value, ApiError> {
        let How {
            scope,
            dry_run,
            managed,
        } = how;
        let name = key.name.as_str();
        Self::check_type(rt, &mut candidate)?;
        let cand_ns = meta::namespace(&candidate);
        if rt.namespaced && !cand_ns.is_empty() && cand_ns != key.namespace {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let cand_name = meta::name(&candidate);
        if !cand_name.is_empty() && cand_name != name {
            return Err(ApiError::invalid(
                &rt.group,
                &rt.kind,
                name,
                "metadata.name: Invalid value: field is immutable",
            ));
        }
        let rv = meta::resource_version(&candidate);
        if !rv.is_empty() && rv != meta::resource_version(&current) {
            return Err(ApiError::stale(&rt.group, &rt.plural, name));
        }
        let mut new = match scope {
            Scope::Status => {
                let mut new = current.clone();
                match candidate.get("status") {
                    Some(status) => new["status"] = status.clone(),
                    None => {
                        new.as_object_mut().expect("object").remove("status");
                    }
                }
                new
            }
            Scope::MainWithoutStatus => {
                let map = candidate.as_object_mut().expect("object");
                match current.get("status") {
                    Some(status) => map.insert("status".into(), status.clone()),
                    None => map.remove("status"),
                };
                candidate
            }
            Scope::All => candidate,
        };
        {
            let current_meta = current
                .get("metadata")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let m = meta_mut(&mut new);
            for field in SYSTEM_METADATA
                .iter()
                .chain(&["resourceVersion", "name", "namespace"])
            {
                match current_meta.get(*field) {
                    Some(v) => m.insert(field.to_string(), v.clone()),
                    None => m.remove(*field),
                };
            }
        }
        if scope != Scope::Status {
            crate::defaults::on_update(rt, &current, &mut new)?;
        }
        if meta::is_deleting(&current) {
            let old = meta::finalizers(&current);
            let added: Vec<String> = meta::finalizers(&new)
                .into_iter()
                .filter(|f| !old.contains(f))
                .collect();
            if !added.is_empty() {
                return Err(ApiError::invalid(
                    &rt.group,
                    &rt.kind,
                    name,
                    format!(
                        "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                    ),
                ));
            }
        }
        if generation_content(rt, &current) != generation_content(rt, &new) {
            meta_mut(&mut new).insert("generation".into(), json!(meta::generation(&current) + 1));
        }
        match managed {
            Managed::Update(manager) => {
                managed_fields::record_update(Some(&current), &mut new, &manager, scope)
            }
            Managed::Apply(fields) => {
                match fields {
                    Some(fields) => meta_mut(&mut new).insert("managedFields".into(), fields),
                    None => meta_mut(&mut new).remove("managedFields"),
                };
                let entries = managed_fields::entries(&new);
                managed_fields::store_entries(&mut new, entries);
            }
        }
        if without_times(&new) == without_times(&current) || dry_run {
            return Ok(if dry_run { new } else { current });
        }
        if meta::is_deleting(&new)
            && meta::finalizers(&new).is_empty()
            && !blocked_by_spec_finalizers(rt, &new)
        {
            return Ok(self.remove(key, Some(new)).expect("object exists"));
        }
        Ok(self.commit(key.clone(), new, Some(current)))
    }

    /// Replace an object without any of the request-level checks (used by controllers in the store).
    pub fn replace_internal(
        &mut self,
        key: &ObjKey,
        new: Value,
        manager: &str,
    ) -> Result<Value, ApiError> {
        let rt = self
            .registry
            .find_resource(&key.group, &key.plural)
            .ok_or_else(|| ApiError::not_found(&key.group, &key.plural, &key.name))?;
        let current = self
            .objects
            .get(key)
            .cloned()
            .ok_or_else(|| rt.not_found(&key.name))?;
        let mut new = new;
        meta_mut(&mut new).remove("resourceVersion");
        let how = How {
            scope: Scope::All,
            dry_run: false,
            managed: Managed::Update(manager.into()),
        };
        self.commit_update(&rt, key, current, new, how)
    }

    /// Delete an object (DELETE).
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Deleted, ApiError> {
        let key = ObjKey::new(rt, namespace, name);
        let current = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| rt.not_found(name))?;
        if let Some(uid) = &opts.precondition_uid
            && uid != meta::uid(&current)
        {
            return Err(ApiError::conflict(
                &rt.group,
                &rt.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta::uid(&current)
                ),
            ));
        }
        if let Some(rv) = &opts.precondition_resource_version
            && rv != meta::resource_version(&current)
        {
            return Err(ApiError::conflict(
                &rt.group,
                &rt.plural,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta::resource_version(&current)
                ),
            ));
        }
        let policy = opts.propagation.unwrap_or(if rt.is("batch", "jobs") {
            Propagation::Orphan
        } else {
            Propagation::Background
        });
        let mut new = current.clone();
        let mut finalizers = meta::finalizers(&new);
        let extra = match policy {
            Propagation::Orphan => Some("orphan"),
            Propagation::Foreground => Some("foregroundDeletion"),
            Propagation::Background => None,
        };
        if let Some(extra) = extra
            && !finalizers.iter().any(|f| f == extra)
        {
            finalizers.push(extra.to_string());
        }
        meta::set_finalizers(&mut new, finalizers.clone());
        if rt.is("", "namespaces") {
            new["status"] = json!({"phase": "Terminating"});
        }
        let needs_wait = !finalizers.is_empty() || blocked_by_spec_finalizers(rt, &new);
        if !needs_wait {
            if opts.dry_run {
                return Ok(Deleted::Gone(current));
            }
            return Ok(Deleted::Gone(
                self.remove(&key, None).expect("object exists"),
            ));
        }
        if !meta::is_deleting(&current) {
            let m = meta_mut(&mut new);
            m.insert("deletionTimestamp".into(), json!(meta::now_time()));
            m.insert(
                "deletionGracePeriodSeconds".into(),
                json!(opts.grace_period_seconds.unwrap_or(0)),
            );
            m.insert("generation".into(), json!(meta::generation(&current) + 1));
        }
        if opts.dry_run {
            return Ok(Deleted::Pending(new));
        }
        if without_times(&new) == without_times(&current) {
            return Ok(Deleted::Pending(current));
        }
        Ok(Deleted::Pending(self.commit(key, new, Some(current))))
    }

    /// Run the garbage collector until nothing changes (also done after every [`Store::write`]).
    pub fn settle(&mut self) {
        crate::gc::settle(self);
    }

    /// Whether an object with this key still exists.
    pub fn contains(&self, key: &ObjKey) -> bool {
        self.objects.contains_key(key)
    }
}

/// Namespaces are also held by `spec.finalizers` (the namespace controller's `kubernetes` finalizer).
fn blocked_by_spec_finalizers(rt: &ResourceType, obj: &Value) -> bool {
    rt.is("", "namespaces") && !meta::string_list(obj.pointer("/spec/finalizers")).is_empty()
}

/// The part of an applied configuration that a write in `scope` may set.
fn limit_to_scope(config: &Value, scope: Scope) -> Value {
    let mut limited = config.clone();
    if let Some(map) = limited.as_object_mut() {
        match scope {
            Scope::Status => map
                .retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status")),
            Scope::MainWithoutStatus => {
                map.remove("status");
            }
            Scope::All => {}
        }
        if let Some(Value::Object(m)) = map.get_mut("metadata") {
            m.remove("resourceVersion");
            m.remove("managedFields");
        }
    }
    limited
}

/// The shared store: [`State`] behind a lock, plus a channel that ticks on every change.
pub(crate) struct Store {
    state: Mutex<State>,
    changes: watch::Sender<u64>,
}

impl Store {
    pub fn new(history_limit: usize) -> Self {
        Self {
            state: Mutex::new(State::new(history_limit)),
            changes: watch::channel(0).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Run `f` with shared access.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.lock())
    }

    /// Run `f` with exclusive access, then let the garbage collector settle and wake watchers.
    pub fn write<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut state = self.lock();
        let before = (state.rv, state.watch_epoch);
        let result = f(&mut state);
        if state.rv != before.0 && crate::gc::needed(&state, before.0) {
            crate::gc::settle(&mut state);
        }
        let changed = (state.rv, state.watch_epoch) != before;
        drop(state);
        if changed {
            self.changes.send_modify(|n| *n += 1);
        }
        result
    }

    /// A receiver that is notified after every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}
