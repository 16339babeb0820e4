//! The GitHub REST API calls of the agent (no `gh` CLI): read a pull request, find the open
//! pull request of a branch, open one, and comment on one.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::Secret;

/// Errors of a GitHub call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GitHubError {
    /// The request could not be sent or its answer not read.
    #[error("GitHub {method} {path}: {message}")]
    Transport {
        /// HTTP method.
        method: String,
        /// API path.
        path: String,
        /// What failed.
        message: String,
    },
    /// GitHub answered with an error status.
    #[error("GitHub {method} {path} answered {status}: {message}")]
    Status {
        /// HTTP method.
        method: String,
        /// API path.
        path: String,
        /// HTTP status.
        status: u16,
        /// GitHub's `message` (and first error), or the start of the body.
        message: String,
    },
}

/// A pull request, as far as the agent needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    /// Number.
    pub number: u64,
    /// Web URL.
    pub html_url: String,
    /// Head branch name.
    pub head_ref: String,
    /// `owner/name` of the head repository, when known.
    pub head_repo: Option<String>,
    /// Base branch name.
    pub base_ref: String,
    /// `open` or `closed`.
    pub state: String,
}

#[derive(Deserialize)]
struct RawRef {
    #[serde(rename = "ref")]
    name: String,
    #[serde(default)]
    repo: Option<RawRepo>,
}

#[derive(Deserialize)]
struct RawRepo {
    full_name: String,
}

#[derive(Deserialize)]
struct RawPull {
    number: u64,
    html_url: String,
    #[serde(default)]
    state: String,
    head: RawRef,
    base: RawRef,
}

impl From<RawPull> for PullRequest {
    fn from(r: RawPull) -> Self {
        Self {
            number: r.number,
            html_url: r.html_url,
            head_ref: r.head.name,
            head_repo: r.head.repo.map(|r| r.full_name),
            base_ref: r.base.name,
            state: r.state,
        }
    }
}

/// `owner/name` of a repository URL: the last two path segments, without `.git`
/// (`https://github.com/acme/shop.git`, `git@github.com:acme/shop`, `file:///srv/acme/shop.git`).
pub fn repo_slug(repo_url: &str) -> Option<String> {
    let trimmed = repo_url.trim().trim_end_matches('/');
    let path = match url::Url::parse(trimmed) {
        Ok(u) => u.path().to_owned(),
        _ => trimmed
            .rsplit_once(':')
            .map(|(_, p)| p.to_owned())
            .unwrap_or_else(|| trimmed.to_owned()),
    };
    let mut segments = path.split('/').filter(|s| !s.is_empty()).rev();
    let name = segments.next()?;
    let owner = segments.next()?;
    let name = name.strip_suffix(".git").unwrap_or(name);
    (!name.is_empty() && !owner.is_empty()).then(|| format!("{owner}/{name}"))
}

/// A GitHub API client for one repository.
#[derive(Clone)]
pub struct GitHub {
    http: reqwest::Client,
    api: String,
    slug: String,
    token: Option<Secret>,
}

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHub")
            .field("api", &self.api)
            .field("slug", &self.slug)
            .finish_non_exhaustive()
    }
}

impl GitHub {
    /// A client for `slug` (`owner/name`) at the API base URL `api`.
    pub fn new(api: &str, slug: &str, token: Option<Secret>) -> Self {
        terarchitect_worker_api::ensure_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("terarchitect-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Self {
            http,
            api: api.trim_end_matches('/').to_owned(),
            slug: slug.to_owned(),
            token,
        }
    }

    /// The repository's `owner/name`.
    pub fn slug(&self) -> &str {
        &self.slug
    }

    /// The repository owner.
    pub fn owner(&self) -> &str {
        self.slug.split('/').next().unwrap_or_default()
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, GitHubError> {
        let url = format!("{}{}", self.api, path);
        let mut last = None;
        // Reads are retried on transient failures; writes are not (they may have happened).
        let attempts = if method == Method::GET { 3 } else { 1 };
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(300 * attempt)).await;
            }
            let mut req = self
                .http
                .request(method.clone(), &url)
                .header("Accept", "application/vnd.github+json")
                .header("X-GitHub-Api-Version", "2022-11-28");
            if let Some(t) = &self.token {
                req = req.bearer_auth(t.expose());
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = Some(GitHubError::Transport {
                        method: method.to_string(),
                        path: path.to_owned(),
                        message: e.without_url().to_string(),
                    });
                    continue;
                }
            };
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            if status.is_success() {
                return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
            }
            let err = GitHubError::Status {
                method: method.to_string(),
                path: path.to_owned(),
                status: status.as_u16(),
                message: error_message(&text),
            };
            if !(status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS) {
                return Err(err);
            }
            last = Some(err);
        }
        Err(last.expect("at least one attempt"))
    }

    fn decode<T: for<'de> Deserialize<'de>>(path: &str, value: Value) -> Result<T, GitHubError> {
        serde_json::from_value(value).map_err(|e| GitHubError::Transport {
            method: "decode".into(),
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// `GET /repos/{slug}/pulls/{number}`.
    pub async fn pull(&self, number: u64) -> Result<PullRequest, GitHubError> {
        let path = format!("/repos/{}/pulls/{number}", self.slug);
        let v = self.call(Method::GET, &path, None).await?;
        Ok(Self::decode::<RawPull>(&path, v)?.into())
    }

    /// The open pull request whose head is `branch` of this repository, if any.
    pub async fn find_open_pull(&self, branch: &str) -> Result<Option<PullRequest>, GitHubError> {
        let mut url = url::Url::parse("http://x/").expect("static URL");
        url.query_pairs_mut()
            .append_pair("state", "open")
            .append_pair("head", &format!("{}:{branch}", self.owner()))
            .append_pair("per_page", "100");
        let path = format!(
            "/repos/{}/pulls?{}",
            self.slug,
            url.query().unwrap_or_default()
        );
        let v = self.call(Method::GET, &path, None).await?;
        let pulls: Vec<RawPull> = Self::decode(&path, v)?;
        Ok(pulls
            .into_iter()
            .map(PullRequest::from)
            .find(|p| p.head_ref == branch))
    }

    /// `POST /repos/{slug}/pulls`.
    pub async fn create_pull(
        &self,
        title: &str,
        body: &str,
        head: &str,
        base: &str,
    ) -> Result<PullRequest, GitHubError> {
        let path = format!("/repos/{}/pulls", self.slug);
        let v = self
            .call(
                Method::POST,
                &path,
                Some(&json!({"title": title, "body": body, "head": head, "base": base})),
            )
            .await?;
        Ok(Self::decode::<RawPull>(&path, v)?.into())
    }

    /// `POST /repos/{slug}/issues/{number}/comments`; returns the comment's URL when given.
    pub async fn comment(&self, number: u64, body: &str) -> Result<Option<String>, GitHubError> {
        let path = format!("/repos/{}/issues/{number}/comments", self.slug);
        let v = self
            .call(Method::POST, &path, Some(&json!({"body": body})))
            .await?;
        Ok(v.get("html_url").and_then(Value::as_str).map(str::to_owned))
    }
}

fn error_message(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(v) => {
            let mut m = v
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if let Some(first) = v.get("errors").and_then(|e| e.get(0)) {
                let detail = first
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| first.to_string());
                m = format!("{m} ({detail})");
            }
            m
        }
        Err(_) => body.chars().take(300).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        for (url, slug) in [
            ("https://github.com/acme/shop", Some("acme/shop")),
            ("https://github.com/acme/shop.git/", Some("acme/shop")),
            ("file:///tmp/x/acme/shop.git", Some("acme/shop")),
            ("git@github.com:acme/shop.git", Some("acme/shop")),
            ("https://github.com/acme", None),
        ] {
            assert_eq!(repo_slug(url).as_deref(), slug, "{url}");
        }
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            error_message(
                r#"{"message":"Validation Failed","errors":[{"message":"A pull request already exists"}]}"#
            ),
            "Validation Failed (A pull request already exists)"
        );
        assert_eq!(error_message("oops"), "oops");
    }
}
