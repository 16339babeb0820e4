//! Errors: [`ApiError`] is what the fake server answers (a `Status` on the wire), [`Error`] is what
//! the crate's Rust API returns.

use serde_json::{Value, json};

/// An error as the API server reports it; serialised on the wire as a `Status` object
/// (`kind: Status`, `status: Failure`, `code`, `reason`, `message`, `details`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code, e.g. 404.
    pub code: u16,
    /// Machine-readable reason, e.g. `NotFound`, `Conflict`, `AlreadyExists`.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// The `details` object of the Status, if any.
    pub details: Option<Value>,
}

impl ApiError {
    /// An error with the given code, reason and message.
    pub fn new(code: u16, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
            message: message.into(),
            details: None,
        }
    }

    /// An error for `code` with the reason a real API server uses for it.
    pub fn from_code(code: u16, message: impl Into<String>) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            406 => "NotAcceptable",
            409 => "Conflict",
            410 => "Expired",
            415 => "UnsupportedMediaType",
            422 => "Invalid",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "Unknown",
        };
        Self::new(code, reason, message)
    }

    pub(crate) fn with_details(mut self, group: &str, kind: &str, name: &str) -> Self {
        let mut details = json!({ "kind": kind });
        if !name.is_empty() {
            details["name"] = json!(name);
        }
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        self.details = Some(details);
        self
    }

    /// `404 NotFound` for `resource` (e.g. `jobs.batch`) named `name`.
    pub(crate) fn not_found(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", group_resource(group, plural)),
        )
        .with_details(group, plural, name)
    }

    pub(crate) fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!(
                "{} \"{name}\" already exists",
                group_resource(group, plural)
            ),
        )
        .with_details(group, plural, name)
    }

    pub(crate) fn conflict(group: &str, plural: &str, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                group_resource(group, plural)
            ),
        )
        .with_details(group, plural, name)
    }

    pub(crate) fn stale(group: &str, plural: &str, name: &str) -> Self {
        Self::conflict(
            group,
            plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub(crate) fn invalid(group: &str, kind: &str, name: &str, why: impl AsRef<str>) -> Self {
        Self::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {}", why.as_ref()),
        )
        .with_details(group, kind, name)
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub(crate) fn unprocessable(message: impl AsRef<str>) -> Self {
        Self::new(
            422,
            "Invalid",
            format!(
                "the server rejected our request due to an error in our request: {}",
                message.as_ref()
            ),
        )
    }

    /// The `Status` object for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

/// `pods` for the core group, `jobs.batch` otherwise — how a real server names a resource in messages.
pub(crate) fn group_resource(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

/// Errors from the crate's Rust API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operation was rejected as the API server would reject it.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The resource type is not served by the fake server (no such kind, or its CRD is not registered).
    #[error("resource {0} is not served by the fake API server")]
    UnknownResource(String),
    /// An object could not be converted to or from JSON.
    #[error("serialization error: {0}")]
    Serde(#[from] serde_json::Error),
    /// An I/O error, e.g. binding the listener or writing a kubeconfig.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// kube rejected the generated kubeconfig.
    #[error("kubeconfig error: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
}
