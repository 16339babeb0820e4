//! The resource types the fake server serves: built-in kinds plus those registered by CRDs.

use std::sync::Arc;

use serde_json::Value;

use crate::error::ApiError;

/// One served resource type (a group + plural), e.g. `batch/jobs`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ResourceType {
    pub group: String,
    /// Served versions; the first one is the storage version.
    pub versions: Vec<String>,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub status_subresource: bool,
    /// Served from a CustomResourceDefinition (strategic merge patch is not supported for these).
    pub custom: bool,
    pub short_names: Vec<String>,
    /// Extra field-selector paths (besides `metadata.name` / `metadata.namespace`), e.g. `status.phase`.
    pub selectable_fields: Vec<String>,
}

impl ResourceType {
    fn builtin(
        group: &str,
        version: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
        status: bool,
        fields: &[&str],
    ) -> Self {
        Self {
            group: group.into(),
            versions: vec![version.into()],
            plural: plural.into(),
            singular: kind.to_lowercase(),
            kind: kind.into(),
            namespaced,
            status_subresource: status,
            custom: false,
            short_names: Vec::new(),
            selectable_fields: fields.iter().map(|f| f.to_string()).collect(),
        }
    }

    /// `apiVersion` for `version` of this type (`v1` or `batch/v1`).
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    pub fn storage_version(&self) -> &str {
        &self.versions[0]
    }

    pub fn storage_api_version(&self) -> String {
        self.api_version(self.storage_version())
    }

    /// Whether `api_version` names one of this type's served versions.
    pub fn serves_api_version(&self, api_version: &str) -> bool {
        self.versions
            .iter()
            .any(|v| self.api_version(v) == api_version)
    }

    pub fn is(&self, group: &str, plural: &str) -> bool {
        self.group == group && self.plural == plural
    }

    /// Error for a request that names this type with a missing object.
    pub fn not_found(&self, name: &str) -> ApiError {
        ApiError::not_found(&self.group, &self.plural, name)
    }

    /// Build a resource type from a CustomResourceDefinition object (JSON), or say why it is invalid.
    pub fn from_crd(crd: &Value) -> Result<Self, String> {
        let spec = crd.get("spec").ok_or("spec: Required value")?;
        let text = |path: &str| spec.pointer(path).and_then(Value::as_str).unwrap_or("");
        let group = text("/group");
        let plural = text("/names/plural");
        let kind = text("/names/kind");
        if group.is_empty() {
            return Err("spec.group: Required value".into());
        }
        if plural.is_empty() || kind.is_empty() {
            return Err("spec.names: plural and kind are required".into());
        }
        let expected = format!("{plural}.{group}");
        if crate::meta::name(crd) != expected {
            return Err(format!(
                "metadata.name: Invalid value: \"{}\": must be spec.names.plural+\".\"+spec.group",
                crate::meta::name(crd)
            ));
        }
        let namespaced = match text("/scope") {
            "Namespaced" => true,
            "Cluster" => false,
            other => return Err(format!("spec.scope: Unsupported value: \"{other}\"")),
        };
        let versions = spec
            .get("versions")
            .and_then(Value::as_array)
            .filter(|v| !v.is_empty())
            .ok_or("spec.versions: Required value")?;
        // Storage version first, then the other served versions.
        let mut served: Vec<&Value> = versions
            .iter()
            .filter(|v| v.get("served").and_then(Value::as_bool).unwrap_or(false))
            .collect();
        if served.is_empty() {
            return Err("spec.versions: at least one version must be served".into());
        }
        served.sort_by_key(|v| !v.get("storage").and_then(Value::as_bool).unwrap_or(false));
        let status_subresource = served
            .iter()
            .any(|v| v.pointer("/subresources/status").is_some());
        let mut selectable_fields: Vec<String> = served
            .iter()
            .flat_map(|v| {
                v.get("selectableFields")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|f| {
                f.get("jsonPath")
                    .and_then(Value::as_str)
                    .map(|p| p.trim_start_matches('.').to_string())
            })
            .collect();
        selectable_fields.dedup();
        Ok(Self {
            group: group.into(),
            versions: served
                .iter()
                .filter_map(|v| v.get("name").and_then(Value::as_str).map(String::from))
                .collect(),
            plural: plural.into(),
            singular: match text("/names/singular") {
                "" => kind.to_lowercase(),
                s => s.into(),
            },
            kind: kind.into(),
            namespaced,
            status_subresource,
            custom: true,
            short_names: crate::meta::string_list(spec.pointer("/names/shortNames")),
            selectable_fields,
        })
    }
}

/// The set of served resource types.
#[derive(Debug, Clone)]
pub(crate) struct Registry {
    types: Vec<Arc<ResourceType>>,
}

impl Registry {
    /// The built-in kinds the fake server knows about.
    pub fn builtin() -> Self {
        use ResourceType as R;
        let pod_fields = [
            "status.phase",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.podIP",
            "status.nominatedNodeName",
        ];
        let core_event_fields = [
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ];
        let event_fields = [
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "reason",
            "reportingController",
            "type",
        ];
        let mut types = vec![
            R::builtin(
                "",
                "v1",
                "namespaces",
                "Namespace",
                false,
                true,
                &["status.phase"],
            ),
            R::builtin("", "v1", "pods", "Pod", true, true, &pod_fields),
            R::builtin("", "v1", "secrets", "Secret", true, false, &["type"]),
            R::builtin("", "v1", "configmaps", "ConfigMap", true, false, &[]),
            R::builtin(
                "",
                "v1",
                "serviceaccounts",
                "ServiceAccount",
                true,
                false,
                &[],
            ),
            R::builtin("", "v1", "events", "Event", true, false, &core_event_fields),
            R::builtin(
                "batch",
                "v1",
                "jobs",
                "Job",
                true,
                true,
                &["status.successful"],
            ),
            R::builtin(
                "coordination.k8s.io",
                "v1",
                "leases",
                "Lease",
                true,
                false,
                &[],
            ),
            R::builtin(
                "events.k8s.io",
                "v1",
                "events",
                "Event",
                true,
                false,
                &event_fields,
            ),
            R::builtin(
                "apiextensions.k8s.io",
                "v1",
                "customresourcedefinitions",
                "CustomResourceDefinition",
                false,
                true,
                &[],
            ),
        ];
        let short = |t: &mut R, names: &[&str]| {
            t.short_names = names.iter().map(|s| s.to_string()).collect();
        };
        for t in &mut types {
            match t.plural.as_str() {
                "namespaces" => short(t, &["ns"]),
                "pods" => short(t, &["po"]),
                "configmaps" => short(t, &["cm"]),
                "serviceaccounts" => short(t, &["sa"]),
                "events" if t.group.is_empty() => short(t, &["ev"]),
                "events" => short(t, &["ev"]),
                "customresourcedefinitions" => short(t, &["crd", "crds"]),
                _ => {}
            }
        }
        Self {
            types: types.into_iter().map(Arc::new).collect(),
        }
    }

    /// The type served at `/{group}/{version}/{plural}`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types
            .iter()
            .find(|t| t.is(group, plural) && t.versions.iter().any(|v| v == version))
            .cloned()
    }

    /// The type for `group` + `plural`, regardless of version.
    pub fn find_resource(&self, group: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types.iter().find(|t| t.is(group, plural)).cloned()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceType>> {
        self.types.iter()
    }

    /// Add or replace (same group + plural) a type.
    pub fn register(&mut self, rt: ResourceType) {
        self.types.retain(|t| !t.is(&rt.group, &rt.plural));
        self.types.push(Arc::new(rt));
    }

    pub fn unregister(&mut self, group: &str, plural: &str) {
        self.types.retain(|t| !(t.custom && t.is(group, plural)));
    }

    /// Served groups with their versions, core ("") excluded, in registration order.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for t in self.types.iter().filter(|t| !t.group.is_empty()) {
            let entry = match groups.iter_mut().find(|(g, _)| *g == t.group) {
                Some(entry) => entry,
                None => {
                    groups.push((t.group.clone(), Vec::new()));
                    groups.last_mut().expect("just pushed")
                }
            };
            for v in &t.versions {
                if !entry.1.contains(v) {
                    entry.1.push(v.clone());
                }
            }
        }
        groups
    }
}
