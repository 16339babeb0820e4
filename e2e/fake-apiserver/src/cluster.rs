//! [`Cluster`]: direct, typed access to the fake server's state and its test controls.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Resource;
use kube::core::{ApiResource, DynamicObject};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::Error;
use crate::faults::{RecordedRequest, RequestMatcher};
use crate::job_controller::{JobController, JobControllerConfig, JobPolicy};
use crate::registry::ResourceType;
use crate::server::Shared;
use crate::store::{DeleteOptions, ObjKey, State, WriteKind, WriteOptions};

/// The field manager recorded for writes made through [`Cluster`].
pub const DIRECT_MANAGER: &str = "fake-apiserver";

/// A cheap, cloneable handle to a fake server's state: direct store access (no HTTP), fault
/// injection, request log and controllers. It does not keep the server running.
///
/// Namespaces are given as `impl Into<Option<&str>>`: pass `"ns"` for namespaced kinds and `None`
/// for cluster-scoped kinds (or, for `list`, for all namespaces).
///
/// Writes through this handle follow the server's rules (resourceVersion, uid, generation, events,
/// finalizers, garbage collection) except that `.status` is stored as given, so tests can seed any
/// state.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("address", &self.shared.address)
            .finish_non_exhaustive()
    }
}

fn decode<K: DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).unwrap_or_else(|e| {
        panic!(
            "stored object does not deserialize into {}: {e}",
            std::any::type_name::<K>()
        )
    })
}

impl Cluster {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The namespace clients default to.
    pub fn default_namespace(&self) -> &str {
        &self.shared.config.default_namespace
    }

    /// A `kube::Client` that calls the server's handler in-process, without a socket.
    /// Must be called within a Tokio runtime.
    pub fn in_process_client(&self) -> kube::Client {
        kube::Client::new(self.shared.router(), self.default_namespace())
    }

    fn resource_type(
        &self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> Result<Arc<ResourceType>, Error> {
        self.shared
            .store
            .read(|s| s.registry.find(group, version, plural))
            .ok_or_else(|| Error::UnknownResource(format!("{group}/{version}/{plural}")))
    }

    fn typed<K: Resource<DynamicType = ()>>(&self) -> Result<Arc<ResourceType>, Error> {
        self.resource_type(&K::group(&()), &K::version(&()), &K::plural(&()))
    }

    fn dynamic(&self, ar: &ApiResource) -> Result<Arc<ResourceType>, Error> {
        self.resource_type(&ar.group, &ar.version, &ar.plural)
    }

    fn get_value(
        &self,
        rt: &ResourceType,
        version: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let key = ObjKey::new(rt, namespace.unwrap_or(""), name);
        self.shared.store.read(|s| {
            s.get(&key)
                .map(|o| crate::api::present(o, rt, version, false))
        })
    }

    fn list_values(&self, rt: &ResourceType, version: &str, namespace: Option<&str>) -> Vec<Value> {
        self.shared.store.read(|s| {
            s.list(rt, namespace)
                .map(|(_, o)| crate::api::present(o, rt, version, false))
                .collect()
        })
    }

    fn create_value(&self, rt: &ResourceType, version: &str, obj: Value) -> Result<Value, Error> {
        let created = self
            .shared
            .store
            .write(|s| s.create(rt, None, obj, &WriteOptions::direct(DIRECT_MANAGER)))?;
        Ok(crate::api::present(&created, rt, version, false))
    }

    /// The object of kind `K`, if it exists.
    ///
    /// # Panics
    /// If the stored object does not deserialize into `K`.
    pub fn get<'a, K>(&self, namespace: impl Into<Option<&'a str>>, name: &str) -> Option<K>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned,
    {
        let rt = self.typed::<K>().ok()?;
        self.get_value(&rt, &K::version(&()), namespace.into(), name)
            .map(decode)
    }

    /// All objects of kind `K` in `namespace` (`None`: all namespaces), ordered by namespace and name.
    ///
    /// # Panics
    /// If a stored object does not deserialize into `K`.
    pub fn list<'a, K>(&self, namespace: impl Into<Option<&'a str>>) -> Vec<K>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned,
    {
        let Ok(rt) = self.typed::<K>() else {
            return Vec::new();
        };
        self.list_values(&rt, &K::version(&()), namespace.into())
            .into_iter()
            .map(decode)
            .collect()
    }

    /// Create `obj` (namespace from its metadata, else the default namespace); returns the stored object.
    pub fn create<K>(&self, obj: &K) -> Result<K, Error>
    where
        K: Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    {
        let rt = self.typed::<K>()?;
        let value = serde_json::to_value(obj)?;
        let value = self.with_default_namespace(&rt, value);
        Ok(decode(self.create_value(&rt, &K::version(&()), value)?))
    }

    fn with_default_namespace(&self, rt: &ResourceType, mut value: Value) -> Value {
        if rt.namespaced && crate::meta::namespace(&value).is_empty() {
            crate::meta::meta_mut(&mut value)
                .insert("namespace".into(), self.default_namespace().into());
        }
        value
    }

    /// Read-modify-write the object atomically (status included); returns the stored result.
    pub fn modify<'a, K>(
        &self,
        namespace: impl Into<Option<&'a str>>,
        name: &str,
        f: impl FnOnce(&mut K),
    ) -> Result<K, Error>
    where
        K: Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    {
        let rt = self.typed::<K>()?;
        let version = K::version(&());
        let ns = namespace.into().unwrap_or("").to_string();
        let updated = self
            .shared
            .store
            .write(|s: &mut State| -> Result<Value, Error> {
                let key = ObjKey::new(&rt, &ns, name);
                let current = s.get(&key).cloned().ok_or_else(|| rt.not_found(name))?;
                let mut typed: K = decode(crate::api::present(&current, &rt, &version, false));
                f(&mut typed);
                let value = serde_json::to_value(&typed)?;
                let (obj, _) = s.write(
                    &rt,
                    &ns,
                    name,
                    false,
                    WriteKind::Replace(value),
                    &WriteOptions::direct(DIRECT_MANAGER),
                )?;
                Ok(obj)
            })?;
        Ok(decode(crate::api::present(&updated, &rt, &version, false)))
    }

    /// Delete the object with its kind's default propagation policy (finalizers are honoured).
    pub fn delete<'a, K>(
        &self,
        namespace: impl Into<Option<&'a str>>,
        name: &str,
    ) -> Result<(), Error>
    where
        K: Resource<DynamicType = ()>,
    {
        self.delete_with::<K>(namespace, name, &DeleteOptions::default())
    }

    /// Delete the object with explicit options.
    pub fn delete_with<'a, K>(
        &self,
        namespace: impl Into<Option<&'a str>>,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<(), Error>
    where
        K: Resource<DynamicType = ()>,
    {
        let rt = self.typed::<K>()?;
        let ns = namespace.into().unwrap_or("");
        self.shared
            .store
            .write(|s| s.delete(&rt, ns, name, options))?;
        Ok(())
    }

    /// The object described by `ar`, if it exists.
    pub fn get_dynamic<'a>(
        &self,
        ar: &ApiResource,
        namespace: impl Into<Option<&'a str>>,
        name: &str,
    ) -> Option<DynamicObject> {
        let rt = self.dynamic(ar).ok()?;
        self.get_value(&rt, &ar.version, namespace.into(), name)
            .map(decode)
    }

    /// All objects described by `ar` in `namespace` (`None`: all namespaces).
    pub fn list_dynamic<'a>(
        &self,
        ar: &ApiResource,
        namespace: impl Into<Option<&'a str>>,
    ) -> Vec<DynamicObject> {
        let Ok(rt) = self.dynamic(ar) else {
            return Vec::new();
        };
        self.list_values(&rt, &ar.version, namespace.into())
            .into_iter()
            .map(decode)
            .collect()
    }

    /// Create a dynamic object of the type described by `ar`.
    pub fn create_dynamic(
        &self,
        ar: &ApiResource,
        obj: &DynamicObject,
    ) -> Result<DynamicObject, Error> {
        let rt = self.dynamic(ar)?;
        let mut value = serde_json::to_value(obj)?;
        value["apiVersion"] = ar.api_version.clone().into();
        value["kind"] = ar.kind.clone().into();
        let value = self.with_default_namespace(&rt, value);
        Ok(decode(self.create_value(&rt, &ar.version, value)?))
    }

    /// Register a CustomResourceDefinition (as if created through the API); its resources are served
    /// at once. Replaces an existing CRD of the same name.
    pub fn register_crd(
        &self,
        crd: &CustomResourceDefinition,
    ) -> Result<CustomResourceDefinition, Error> {
        let rt = self.typed::<CustomResourceDefinition>()?;
        let value = serde_json::to_value(crd)?;
        let name = crd.metadata.name.clone().unwrap_or_default();
        let stored = self.shared.store.write(|s| -> Result<Value, Error> {
            let opts = WriteOptions::direct(DIRECT_MANAGER);
            match s.get(&ObjKey::new(&rt, "", &name)).cloned() {
                Some(current) => {
                    let mut value = value;
                    crate::meta::meta_mut(&mut value).remove("resourceVersion");
                    if value.get("status").is_none_or(Value::is_null) {
                        value["status"] = current["status"].clone();
                    }
                    Ok(
                        s.write(&rt, "", &name, false, WriteKind::Replace(value), &opts)?
                            .0,
                    )
                }
                None => Ok(s.create(&rt, None, value, &opts)?),
            }
        })?;
        Ok(decode(stored))
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.read(|s| s.rv)
    }

    /// Forget the whole event history (like an etcd compaction) and end all open watches: every
    /// watch resumed from an earlier resourceVersion gets `410 Gone` and has to relist.
    pub fn compact(&self) {
        self.shared.store.write(State::compact);
    }

    /// End every open watch stream abruptly (the connection errors, as when an API server restarts).
    pub fn drop_watches(&self) {
        self.shared.store.write(|s| s.watch_epoch += 1);
    }

    /// Make the next `times` requests selected by `matcher` fail with a `Status` of `code`.
    pub fn fail_next(&self, matcher: RequestMatcher, code: u16, times: usize) {
        self.shared.faults.add(matcher, code, times);
    }

    /// Remove all pending injected faults.
    pub fn clear_faults(&self) {
        self.shared.faults.clear();
    }

    /// Delay every non-watch request by `latency` (`Duration::ZERO` turns it off).
    pub fn set_latency(&self, latency: Duration) {
        self.shared.faults.set_latency(latency);
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.faults.requests()
    }

    /// The received requests selected by `matcher`.
    pub fn requests_matching(&self, matcher: &RequestMatcher) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| matcher.matches(r))
            .collect()
    }

    /// Forget the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.faults.clear_requests();
    }

    /// Wait until `check` returns `Some`, re-evaluating it after every change in the store;
    /// `None` after `timeout`. Handy to wait for controllers without fixed sleeps.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&Cluster) -> Option<T>,
    ) -> Option<T> {
        let mut changes = self.shared.store.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changes.borrow_and_update();
            if let Some(value) = check(self) {
                return Some(value);
            }
            // Re-check at least every 50 ms, so conditions on wall-clock time also resolve.
            let wake = deadline.min(tokio::time::Instant::now() + Duration::from_millis(50));
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return check(self);
            }
        }
    }

    /// Start the stand-in for Kueue's Job integration (see [`Kueue`]); no queue has quota
    /// until [`Kueue::set_quota`].
    pub fn start_kueue(&self) -> crate::kueue::Kueue {
        crate::kueue::Kueue::start(self.clone())
    }

    /// Start the stand-in Job controller with default settings (see [`JobPolicy`]).
    pub fn start_job_controller(&self, policy: impl Into<JobPolicy>) -> JobController {
        self.start_job_controller_with(policy, JobControllerConfig::default())
    }

    /// Start the stand-in Job controller with explicit settings.
    pub fn start_job_controller_with(
        &self,
        policy: impl Into<JobPolicy>,
        config: JobControllerConfig,
    ) -> JobController {
        JobController::start(self.clone(), policy.into(), config)
    }
}
