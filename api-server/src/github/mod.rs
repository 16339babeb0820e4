//! A small GitHub REST client for the review loop (no `gh` CLI): JSON reads with conditional
//! requests (`ETag` / `If-None-Match`, answered from a local cache on 304), pagination through
//! `Link: rel="next"`, rate-limit tracking (`x-ratelimit-remaining`, `x-ratelimit-reset`,
//! `retry-after`) with a back-off that stops requests until the limit resets, and writes.
//!
//! The token is passed per call (it is a setting that may change) and never appears in an error.

mod cache;
mod rate_limit;

use std::time::Duration;

use reqwest::header::{ETAG, HeaderMap, IF_NONE_MATCH, LINK};
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub use cache::EtagCache;
pub use rate_limit::RateLimits;

use crate::review::metrics::ReviewMetrics;

/// Items asked for per page (GitHub's maximum).
pub const PER_PAGE: u32 = 100;
/// Most pages followed for one list (10,000 items).
pub const MAX_PAGES: usize = 100;
/// Timeout of a read.
const READ_TIMEOUT: Duration = Duration::from_secs(15);
/// Timeout of a write.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of a GitHub call. Their text is safe to show to API clients (no token, no body).
#[derive(Debug, Clone, thiserror::Error)]
pub enum GitHubError {
    /// The request could not be sent, or its answer not read.
    #[error("GitHub {method} {path}: {message}")]
    Transport {
        method: String,
        path: String,
        message: String,
    },
    /// GitHub answered with an error status.
    #[error("GitHub {method} {path} answered {status}: {message}")]
    Status {
        method: String,
        path: String,
        status: u16,
        message: String,
    },
    /// The rate limit is exhausted: no request is sent until it resets.
    #[error("GitHub rate limit exhausted; retry in {}s", retry_after.as_secs().max(1))]
    RateLimited { retry_after: Duration },
}

impl GitHubError {
    /// How long to back off, when this is a rate-limit error.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            GitHubError::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}

/// A JSON answer, and whether it came from the cache after a 304.
#[derive(Debug, Clone)]
pub struct Fetched<T> {
    pub value: T,
    /// Every page was answered 304 Not Modified.
    pub not_modified: bool,
}

/// One page of a read.
struct Page {
    value: Value,
    next: Option<String>,
    not_modified: bool,
}

/// A GitHub REST API client. Cheap to clone; clones share the cache and the rate-limit state.
#[derive(Clone, Debug)]
pub struct GitHubClient {
    http: reqwest::Client,
    api: String,
    cache: std::sync::Arc<EtagCache>,
    limits: std::sync::Arc<RateLimits>,
    metrics: ReviewMetrics,
}

impl GitHubClient {
    /// A client for the API at `api_base` (`https://api.github.com`, or a GitHub Enterprise
    /// `https://host/api/v3`).
    pub fn new(api_base: &str, metrics: ReviewMetrics) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!(
                "terarchitect-api-server/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()?;
        Ok(Self {
            http,
            api: api_base.trim().trim_end_matches('/').to_owned(),
            cache: std::sync::Arc::new(EtagCache::default()),
            limits: std::sync::Arc::new(RateLimits::default()),
            metrics,
        })
    }

    /// The API base URL.
    pub fn api_base(&self) -> &str {
        &self.api
    }

    /// The shared rate-limit state.
    pub fn limits(&self) -> &RateLimits {
        &self.limits
    }

    /// `GET path` (conditional: a 304 answers from the cache).
    pub async fn get(
        &self,
        token: Option<&str>,
        path: &str,
    ) -> Result<Fetched<Value>, GitHubError> {
        let page = self
            .get_page(token, &format!("{}{path}", self.api), path)
            .await?;
        Ok(Fetched {
            value: page.value,
            not_modified: page.not_modified,
        })
    }

    /// Every item of a list endpoint, following `Link: rel="next"` (each page conditional).
    pub async fn get_all(
        &self,
        token: Option<&str>,
        path: &str,
    ) -> Result<Fetched<Vec<Value>>, GitHubError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut url = format!("{}{path}{sep}per_page={PER_PAGE}", self.api);
        let mut items = Vec::new();
        let mut not_modified = true;
        for _ in 0..MAX_PAGES {
            let page = self.get_page(token, &url, path).await?;
            not_modified &= page.not_modified;
            match page.value {
                Value::Array(list) => items.extend(list),
                other => {
                    return Err(GitHubError::Transport {
                        method: "GET".into(),
                        path: path.to_owned(),
                        message: format!("expected a JSON list, got {}", kind_of(&other)),
                    });
                }
            }
            match page.next {
                Some(next) => url = next,
                None => break,
            }
        }
        Ok(Fetched {
            value: items,
            not_modified,
        })
    }

    /// Sends a write (`POST`, `PUT`, `PATCH`) with a JSON body; returns the JSON answer.
    pub async fn send(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: &Value,
    ) -> Result<Value, GitHubError> {
        self.check_blocked()?;
        let url = format!("{}{path}", self.api);
        let req = self
            .request(token, method.clone(), &url, WRITE_TIMEOUT)
            .json(body);
        let resp = req.send().await.map_err(|e| transport(&method, path, e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.map_err(|e| transport(&method, path, e))?;
        self.limits.observe(&headers);
        self.check_status(&method, path, status, &headers, &text)?;
        self.metrics.github_request("ok");
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn request(
        &self,
        token: Option<&str>,
        method: Method,
        url: &str,
        timeout: Duration,
    ) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .request(method, url)
            .timeout(timeout)
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28");
        if let Some(t) = token.filter(|t| !t.trim().is_empty()) {
            req = req.bearer_auth(t.trim());
        }
        req
    }

    fn check_blocked(&self) -> Result<(), GitHubError> {
        match self.limits.blocked_for() {
            Some(retry_after) => {
                self.metrics.github_request("rate_limited");
                Err(GitHubError::RateLimited { retry_after })
            }
            None => Ok(()),
        }
    }

    async fn get_page(
        &self,
        token: Option<&str>,
        url: &str,
        path: &str,
    ) -> Result<Page, GitHubError> {
        self.check_blocked()?;
        let cached = self.cache.get(url);
        let mut req = self.request(token, Method::GET, url, READ_TIMEOUT);
        if let Some(c) = &cached {
            req = req.header(IF_NONE_MATCH, c.etag.as_str());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| transport(&Method::GET, path, e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        self.limits.observe(&headers);
        self.metrics.set_rate_remaining(self.limits.remaining());
        if status == StatusCode::NOT_MODIFIED
            && let Some(c) = cached
        {
            self.metrics.github_request("not_modified");
            // An unchanged last page may have gained a successor: trust the answer's `Link`
            // when it has one, else probe past a full page.
            let next = next_link(&headers)
                .filter(|n| n.starts_with(&self.api))
                .or(c.next)
                .or_else(|| full_page_successor(url, &c.value));
            return Ok(Page {
                value: c.value,
                next,
                not_modified: true,
            });
        }
        let text = resp
            .text()
            .await
            .map_err(|e| transport(&Method::GET, path, e))?;
        self.check_status(&Method::GET, path, status, &headers, &text)?;
        let value: Value = serde_json::from_str(&text).map_err(|e| GitHubError::Transport {
            method: "GET".into(),
            path: path.to_owned(),
            message: format!("invalid JSON: {e}"),
        })?;
        let next = next_link(&headers).filter(|n| n.starts_with(&self.api));
        if let Some(etag) = headers.get(ETAG).and_then(|v| v.to_str().ok()) {
            self.cache.put(url, etag, &value, next.as_deref());
        }
        self.metrics.github_request("ok");
        Ok(Page {
            value,
            next,
            not_modified: false,
        })
    }

    /// Maps an error status to an error, recording rate-limit back-off.
    fn check_status(
        &self,
        method: &Method,
        path: &str,
        status: StatusCode,
        headers: &HeaderMap,
        text: &str,
    ) -> Result<(), GitHubError> {
        if status.is_success() {
            return Ok(());
        }
        let message = error_message(text);
        if let Some(wait) = rate_limit_wait(status, headers, &message) {
            self.limits.block(wait);
            self.metrics.github_request("rate_limited");
            return Err(GitHubError::RateLimited { retry_after: wait });
        }
        self.metrics.github_request("error");
        Err(GitHubError::Status {
            method: method.to_string(),
            path: path.to_owned(),
            status: status.as_u16(),
            message,
        })
    }
}

fn transport(method: &Method, path: &str, e: reqwest::Error) -> GitHubError {
    let message = if e.is_timeout() {
        "timed out".to_owned()
    } else {
        // No URL in the text (the path is given apart); reqwest never prints headers.
        let e = e.without_url();
        let mut m = e.to_string();
        if let Some(src) = std::error::Error::source(&e) {
            m = format!("{m}: {src}");
        }
        m
    };
    GitHubError::Transport {
        method: method.to_string(),
        path: path.to_owned(),
        message,
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// How long to wait when `status` is a rate-limit answer: 429, or 403 with
/// `x-ratelimit-remaining: 0`, a `retry-after` or GitHub's "rate limit" message.
pub fn rate_limit_wait(status: StatusCode, headers: &HeaderMap, message: &str) -> Option<Duration> {
    let header_u64 = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let retry_after = header_u64("retry-after");
    let exhausted = header_u64("x-ratelimit-remaining") == Some(0);
    let limited = status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::FORBIDDEN
            && (exhausted
                || retry_after.is_some()
                || message.to_ascii_lowercase().contains("rate limit")));
    if !limited {
        return None;
    }
    if let Some(s) = retry_after {
        return Some(Duration::from_secs(s.max(1)));
    }
    if let Some(reset) = header_u64("x-ratelimit-reset") {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        return Some(Duration::from_secs(reset.saturating_sub(now).max(1)));
    }
    // GitHub's advice for secondary limits without a header: wait at least a minute.
    Some(Duration::from_secs(60))
}

/// The URL of the page after `url` when `page` is a full page (a list that grew since it was
/// cached as the last page).
fn full_page_successor(url: &str, page: &Value) -> Option<String> {
    if page.as_array()?.len() < PER_PAGE as usize {
        return None;
    }
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut current = 1;
    let mut params: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| match p.strip_prefix("page=") {
            Some(n) => {
                current = n.parse().unwrap_or(1);
                false
            }
            None => true,
        })
        .map(str::to_owned)
        .collect();
    params.push(format!("page={}", current + 1));
    Some(format!("{base}?{}", params.join("&")))
}

/// The `rel="next"` URL of a `Link` header.
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = headers.get(LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"");
        let url = url.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| url.to_owned())
    })
}

/// GitHub's `message` (and first error), or the start of a non-JSON body.
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
    use reqwest::header::HeaderValue;

    #[test]
    fn next_links() {
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            HeaderValue::from_static(
                "<https://api.github.com/x?page=1>; rel=\"prev\", <https://api.github.com/x?page=3>; rel=\"next\", <https://api.github.com/x?page=9>; rel=\"last\"",
            ),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://api.github.com/x?page=3")
        );
        h.insert(
            LINK,
            HeaderValue::from_static("<https://api.github.com/x?page=1>; rel=\"first\""),
        );
        assert_eq!(next_link(&h), None);
    }

    #[test]
    fn successor_of_a_full_page() {
        let full = Value::Array(vec![Value::Null; PER_PAGE as usize]);
        assert_eq!(
            full_page_successor("http://g/x?per_page=100", &full).as_deref(),
            Some("http://g/x?per_page=100&page=2")
        );
        assert_eq!(
            full_page_successor("http://g/x?per_page=100&page=4", &full).as_deref(),
            Some("http://g/x?per_page=100&page=5")
        );
        assert_eq!(
            full_page_successor("http://g/x", &Value::Array(vec![])),
            None
        );
    }

    #[test]
    fn rate_limit_answers() {
        let mut h = HeaderMap::new();
        assert_eq!(rate_limit_wait(StatusCode::NOT_FOUND, &h, ""), None);
        assert_eq!(
            rate_limit_wait(StatusCode::FORBIDDEN, &h, "Forbidden"),
            None
        );
        assert_eq!(
            rate_limit_wait(
                StatusCode::FORBIDDEN,
                &h,
                "API rate limit exceeded for user"
            ),
            Some(Duration::from_secs(60))
        );
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(
            rate_limit_wait(StatusCode::TOO_MANY_REQUESTS, &h, ""),
            Some(Duration::from_secs(7))
        );
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        let reset = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 120;
        h.insert("x-ratelimit-reset", reset.to_string().parse().unwrap());
        let wait = rate_limit_wait(StatusCode::FORBIDDEN, &h, "").unwrap();
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120));
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            error_message(r#"{"message":"Validation Failed","errors":[{"message":"nope"}]}"#),
            "Validation Failed (nope)"
        );
        assert_eq!(error_message("oops"), "oops");
    }
}
