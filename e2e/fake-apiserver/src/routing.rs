//! Request paths and query strings of the Kubernetes API.

use crate::faults::Verb;

/// A resource request path: `/api/v1/namespaces/{ns}/{plural}/{name}/{subresource}` and friends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResourcePath {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// What a request path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Version,
    Health,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/{group}`
    Group(String),
    /// `/api/v1` or `/apis/{group}/{version}`
    Resources {
        group: String,
        version: String,
    },
    Resource(ResourcePath),
    Unknown,
}

impl Route {
    pub fn parse(path: &str) -> Self {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match segments.as_slice() {
            ["version"] => Route::Version,
            ["healthz" | "readyz" | "livez"] => Route::Health,
            ["api"] => Route::CoreVersions,
            ["api", version] => Route::Resources {
                group: String::new(),
                version: version.to_string(),
            },
            ["api", version, rest @ ..] => resource("", version, rest),
            ["apis"] => Route::Groups,
            ["apis", group] => Route::Group(group.to_string()),
            ["apis", group, version] => Route::Resources {
                group: group.to_string(),
                version: version.to_string(),
            },
            ["apis", group, version, rest @ ..] => resource(group, version, rest),
            _ => Route::Unknown,
        }
    }
}

fn resource(group: &str, version: &str, rest: &[&str]) -> Route {
    let owned = |s: Option<&&str>| s.map(|s| s.to_string());
    // `/api/v1/namespaces/{ns}/status|finalize` are subresources of the namespace itself.
    let namespace_subresource =
        group.is_empty() && rest.len() == 3 && matches!(rest[2], "status" | "finalize");
    let (namespace, rest) = if rest.len() >= 3 && rest[0] == "namespaces" && !namespace_subresource
    {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    if rest.is_empty() || rest.len() > 3 {
        return Route::Unknown;
    }
    Route::Resource(ResourcePath {
        group: group.to_string(),
        version: version.to_string(),
        plural: rest[0].to_string(),
        namespace,
        name: owned(rest.get(1)),
        subresource: owned(rest.get(2)),
    })
}

/// Decoded query parameters (`?&a=b` style strings included).
#[derive(Debug, Clone, Default)]
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Self {
        Self(
            url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

/// The API verb of a request on a resource path.
pub(crate) fn verb(method: &http::Method, path: &ResourcePath, query: &Query) -> Option<Verb> {
    use http::Method;
    let item = path.name.is_some();
    Some(match *method {
        Method::GET if query.flag("watch") => Verb::Watch,
        Method::GET if item => Verb::Get,
        Method::GET => Verb::List,
        Method::POST if !item => Verb::Create,
        Method::PUT if item => Verb::Update,
        Method::PATCH if item => Verb::Patch,
        Method::DELETE if item => Verb::Delete,
        Method::DELETE => Verb::DeleteCollection,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let r = Route::parse("/apis/batch/v1/namespaces/ns/jobs/j/status");
        let Route::Resource(p) = r else {
            panic!("{r:?}")
        };
        assert_eq!(
            (
                p.group.as_str(),
                p.plural.as_str(),
                p.namespace.as_deref(),
                p.name.as_deref(),
                p.subresource.as_deref()
            ),
            ("batch", "jobs", Some("ns"), Some("j"), Some("status"))
        );
        let Route::Resource(p) = Route::parse("/api/v1/namespaces/ns") else {
            panic!()
        };
        assert_eq!(
            (p.plural.as_str(), p.name.as_deref(), p.namespace),
            ("namespaces", Some("ns"), None)
        );
        let Route::Resource(p) = Route::parse("/api/v1/namespaces/ns/status") else {
            panic!()
        };
        assert_eq!(p.subresource.as_deref(), Some("status"));
        let Route::Resource(p) = Route::parse("/api/v1/namespaces/ns/pods") else {
            panic!()
        };
        assert_eq!(
            (p.plural.as_str(), p.namespace.as_deref(), p.name),
            ("pods", Some("ns"), None)
        );
        let Route::Resource(p) = Route::parse("/api/v1/pods") else {
            panic!()
        };
        assert_eq!(p.namespace, None);
        assert_eq!(Route::parse("/apis/g"), Route::Group("g".into()));
        let q = Query::parse(Some(
            "&labelSelector=app%3Dx%2Ctier+in+%28a%2Cb%29&watch=true",
        ));
        assert_eq!(q.get("labelSelector"), Some("app=x,tier in (a,b)"));
        assert!(q.flag("watch"));
    }
}
