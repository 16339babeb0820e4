//! Fault injection and request recording.

use std::sync::Mutex;
use std::time::Duration;

/// Kubernetes API verbs, as used by RBAC and audit logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// `GET` of one object (including `/status`).
    Get,
    /// `GET` of a collection.
    List,
    /// `GET` of a collection with `watch=true`.
    Watch,
    /// `POST` to a collection.
    Create,
    /// `PUT` of one object.
    Update,
    /// `PATCH` of one object (any patch type, including server-side apply).
    Patch,
    /// `DELETE` of one object.
    Delete,
    /// `DELETE` of a collection.
    DeleteCollection,
}

/// Selects requests by verb, resource (plural) and optionally group, namespace, name and subresource.
/// Unset parts match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestMatcher {
    verb: Option<Verb>,
    resource: Option<String>,
    group: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

impl RequestMatcher {
    /// Requests with `verb` on `resource` (the plural, e.g. `"jobs"`).
    pub fn new(verb: Verb, resource: impl Into<String>) -> Self {
        Self {
            verb: Some(verb),
            resource: Some(resource.into()),
            ..Self::default()
        }
    }

    /// Every resource request.
    pub fn any() -> Self {
        Self::default()
    }

    /// Only requests with this verb.
    pub fn verb(mut self, verb: Verb) -> Self {
        self.verb = Some(verb);
        self
    }

    /// Only requests on this resource (plural).
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    /// Only requests in this API group (`""` for core).
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Only requests in this namespace.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Only requests for the object with this name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Only requests on this subresource (e.g. `"status"`).
    pub fn subresource(mut self, subresource: impl Into<String>) -> Self {
        self.subresource = Some(subresource.into());
        self
    }

    /// Whether `request` is selected.
    pub fn matches(&self, request: &RecordedRequest) -> bool {
        fn check(want: &Option<String>, have: &Option<String>) -> bool {
            want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
        }
        self.verb.is_none_or(|v| request.verb == Some(v))
            && check(&self.resource, &request.resource)
            && check(&self.group, &request.group)
            && check(&self.namespace, &request.namespace)
            && check(&self.name, &request.name)
            && check(&self.subresource, &request.subresource)
    }
}

/// A request the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method, e.g. `"PATCH"`.
    pub method: String,
    /// Request path without the query string.
    pub path: String,
    /// Raw query string (without `?`), possibly empty.
    pub query: String,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The `Accept` header, if any (metadata-only requests ask for `as=PartialObjectMetadata`).
    pub accept: Option<String>,
    /// The request body as text (lossy UTF-8).
    pub body: String,
    /// The API verb, for resource requests.
    pub verb: Option<Verb>,
    /// The API group, for resource requests (`""` for core).
    pub group: Option<String>,
    /// The resource (plural), for resource requests.
    pub resource: Option<String>,
    /// The namespace in the path, if any.
    pub namespace: Option<String>,
    /// The object name in the path, if any.
    pub name: Option<String>,
    /// The subresource in the path, if any.
    pub subresource: Option<String>,
    /// The HTTP status code the server answered with.
    pub status: u16,
}

impl RecordedRequest {
    /// The decoded value of a query parameter.
    pub fn query_param(&self, key: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }
}

/// The request log keeps at most this many entries (the oldest tenth is dropped when full).
const MAX_RECORDED: usize = 50_000;

struct Fault {
    matcher: RequestMatcher,
    code: u16,
    remaining: usize,
}

/// Injected faults, latency and the request log.
#[derive(Default)]
pub(crate) struct Faults {
    faults: Mutex<Vec<Fault>>,
    latency: Mutex<Duration>,
    requests: Mutex<Vec<RecordedRequest>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Faults {
    pub fn add(&self, matcher: RequestMatcher, code: u16, times: usize) {
        if times > 0 {
            lock(&self.faults).push(Fault {
                matcher,
                code,
                remaining: times,
            });
        }
    }

    pub fn clear(&self) {
        lock(&self.faults).clear();
    }

    /// The status code to fail `request` with, consuming one use of the first matching fault.
    pub fn take(&self, request: &RecordedRequest) -> Option<u16> {
        let mut faults = lock(&self.faults);
        let index = faults.iter().position(|f| f.matcher.matches(request))?;
        let code = faults[index].code;
        faults[index].remaining -= 1;
        if faults[index].remaining == 0 {
            faults.remove(index);
        }
        Some(code)
    }

    pub fn set_latency(&self, latency: Duration) {
        *lock(&self.latency) = latency;
    }

    pub fn latency(&self) -> Duration {
        *lock(&self.latency)
    }

    pub fn record(&self, request: RecordedRequest) {
        let mut requests = lock(&self.requests);
        if requests.len() >= MAX_RECORDED {
            requests.drain(..MAX_RECORDED / 10);
        }
        requests.push(request);
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.requests).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.requests).clear();
    }
}
