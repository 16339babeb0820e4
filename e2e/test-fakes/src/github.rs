//! A fake GitHub REST API for the repository `acme/shop`: pull requests (list, create, get,
//! merge), their commits and files, reviews (list, approve), review line comments and issue
//! comments (list, post). Pull requests are numbered from 100; comment, review and line-comment
//! ids come from one counter starting at 1000.
//!
//! Like GitHub it paginates lists (`per_page`, at most 100, `page`, and a `Link` header with
//! `rel="next"` and `rel="last"`), sends an `ETag` with every read and answers a matching
//! `If-None-Match` with 304 Not Modified (not counted against the rate limit), and sends
//! `x-ratelimit-remaining` / `x-ratelimit-reset` headers. Tests can make it answer with GitHub's
//! rate-limit errors ([`GhState::limited`]), fail chosen paths ([`GhState::failures`]), cap the
//! page size ([`GhState::page_cap`]), and read every request it received ([`GhState::requests`]).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path as AxPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::serve;

/// The login of the token's user (the bot, which also posts the UI's comments).
pub const BOT_LOGIN: &str = "terarchitect-bot";

/// A rate-limit answer the fake gives to every request while set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// 403 (primary or secondary limit) or 429.
    pub status: u16,
    /// A `retry-after` header, in seconds.
    pub retry_after: Option<u64>,
}

/// A request the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Whether it carried `If-None-Match`.
    pub conditional: bool,
    /// The answer's status.
    pub status: u16,
}

/// The fake's state.
#[derive(Default)]
pub struct GhState {
    /// Base of the `html_url`s (`https://github.example`).
    pub base: String,
    /// The fake's own URL (for `Link` headers).
    pub api_url: String,
    /// Pull requests, as GitHub returns them.
    pub pulls: Vec<Value>,
    /// Issue comments posted through the API: pull request number, body.
    pub comments: Vec<(u64, String)>,
    /// Every issue comment (posted or added by the test), by pull request number.
    pub issue_comments: Vec<(u64, Value)>,
    /// Review line comments, by pull request number.
    pub line_comments: Vec<(u64, Value)>,
    /// Reviews, by pull request number, in submission order.
    pub reviews: Vec<(u64, Value)>,
    /// Commits by pull request number.
    pub commits: HashMap<u64, Vec<Value>>,
    /// Files by pull request number.
    pub files: HashMap<u64, Vec<Value>>,
    /// Authorization headers of every request.
    pub auth: Vec<String>,
    /// Pull requests created through the API.
    pub created: usize,
    /// Refuse to open pull requests.
    pub refuse_create: bool,
    /// Refuse merges (405 "Pull Request is not mergeable").
    pub refuse_merge: bool,
    /// Refuse approvals (422, as GitHub does for one's own pull request).
    pub refuse_approve: bool,
    /// Answer every request with a rate-limit error while set.
    pub limited: Option<Limited>,
    /// Answer requests whose path contains the key with (status, message).
    pub failures: Vec<(String, u16, String)>,
    /// Largest page size, below GitHub's 100 (to test pagination with few items).
    pub page_cap: Option<usize>,
    /// Remaining calls reported in `x-ratelimit-remaining` (decremented by non-304 answers).
    pub rate_remaining: u64,
    /// Every request, in order.
    pub requests: Vec<SeenRequest>,
    /// Next comment / review id.
    pub next_id: i64,
}

/// A fake GitHub API.
#[derive(Clone)]
pub struct FakeGitHub {
    /// Base URL (the agent's and api-server's `GITHUB_API_URL`).
    pub url: String,
    /// The state, for direct inspection.
    pub state: Arc<Mutex<GhState>>,
}

type St = State<Arc<Mutex<GhState>>>;

fn record_auth(st: &Mutex<GhState>, headers: &HeaderMap) {
    let a = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    st.lock().unwrap().auth.push(a);
}

/// A GitHub-style time `seq` seconds after 2025-01-01T00:00:00Z (keeps ids and times in order).
pub fn gh_time(seq: i64) -> String {
    let (day, rem) = (seq / 86_400, seq % 86_400);
    format!(
        "2025-01-{:02}T{:02}:{:02}:{:02}Z",
        1 + day.min(27),
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl GhState {
    fn take_id(&mut self) -> i64 {
        if self.next_id < 1000 {
            self.next_id = 1000;
        }
        self.next_id += 1;
        self.next_id
    }

    fn comment(&mut self, number: u64, user: &str, body: &str, anchor: &str) -> Value {
        let id = self.take_id();
        json!({
            "id": id,
            "body": body,
            "user": {"login": user},
            "created_at": gh_time(id),
            "updated_at": gh_time(id),
            "html_url": format!("{}/acme/shop/pull/{number}#{anchor}-{id}", self.base),
        })
    }
}

/// A pull request as GitHub returns it.
pub fn pull_json(base: &str, number: u64, head: &str, base_ref: &str) -> Value {
    json!({
        "number": number,
        "html_url": format!("{base}/acme/shop/pull/{number}"),
        "state": "open",
        "merged": false,
        "title": "t",
        "body": "",
        "head": {"ref": head, "repo": {"full_name": "acme/shop"}},
        "base": {"ref": base_ref, "repo": {"full_name": "acme/shop"}},
    })
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({"message": text}))).into_response()
}

/// One page of `items` with GitHub's `Link` header.
fn paginate(st: &GhState, path: &str, q: &HashMap<String, String>, items: Vec<Value>) -> Response {
    let cap = st.page_cap.unwrap_or(100).clamp(1, 100);
    let per_page = q
        .get("per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, cap);
    let page = q
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let last = items.len().div_ceil(per_page).max(1);
    let chunk: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let mut resp = Json(Value::Array(chunk)).into_response();
    if last > 1 {
        let link = |p: usize, rel: &str| {
            format!(
                "<{}{path}?per_page={per_page}&page={p}>; rel=\"{rel}\"",
                st.api_url
            )
        };
        let mut parts = Vec::new();
        if page < last {
            parts.push(link(page + 1, "next"));
            parts.push(link(last, "last"));
        }
        if page > 1 {
            parts.push(link(1, "first"));
            parts.push(link(page - 1, "prev"));
        }
        if !parts.is_empty()
            && let Ok(v) = HeaderValue::from_str(&parts.join(", "))
        {
            resp.headers_mut().insert(header::LINK, v);
        }
    }
    resp
}

fn of_pull(list: &[(u64, Value)], n: u64) -> Vec<Value> {
    list.iter()
        .filter(|(p, _)| *p == n)
        .map(|(_, v)| v.clone())
        .collect()
}

async fn gh_list(
    State(st): St,
    AxPath((o, r)): AxPath<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Json<Value> {
    record_auth(&st, &headers);
    let s = st.lock().unwrap();
    let head = q.get("head").cloned().unwrap_or_default();
    let list: Vec<Value> = s
        .pulls
        .iter()
        .filter(|p| p["state"] == "open")
        .filter(|p| {
            head.is_empty() || format!("{o}:{}", p["head"]["ref"].as_str().unwrap()) == head
        })
        .filter(|_| r == "shop")
        .cloned()
        .collect();
    Json(json!(list))
}

async fn gh_create(State(st): St, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    record_auth(&st, &headers);
    let mut s = st.lock().unwrap();
    if s.refuse_create {
        return message(
            StatusCode::FORBIDDEN,
            "Resource not accessible by integration",
        );
    }
    let number = 100 + s.pulls.len() as u64;
    let mut pr = pull_json(
        &s.base,
        number,
        body["head"].as_str().unwrap_or_default(),
        body["base"].as_str().unwrap_or_default(),
    );
    pr["title"] = body["title"].clone();
    pr["body"] = body["body"].clone();
    s.pulls.push(pr.clone());
    s.created += 1;
    (StatusCode::CREATED, Json(pr)).into_response()
}

async fn gh_get(
    State(st): St,
    AxPath((_o, _r, n)): AxPath<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    record_auth(&st, &headers);
    let s = st.lock().unwrap();
    match s.pulls.iter().find(|p| p["number"] == n) {
        Some(p) => Json(p.clone()).into_response(),
        None => message(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn gh_issue_comments(
    State(st): St,
    AxPath((o, r, n)): AxPath<(String, String, u64)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = st.lock().unwrap();
    let items = of_pull(&s.issue_comments, n);
    paginate(
        &s,
        &format!("/repos/{o}/{r}/issues/{n}/comments"),
        &q,
        items,
    )
}

async fn gh_comment(
    State(st): St,
    AxPath((_o, _r, n)): AxPath<(String, String, u64)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    record_auth(&st, &headers);
    let mut s = st.lock().unwrap();
    let text = body["body"].as_str().unwrap_or_default().to_owned();
    s.comments.push((n, text.clone()));
    let c = s.comment(n, BOT_LOGIN, &text, "issuecomment");
    s.issue_comments.push((n, c.clone()));
    (StatusCode::CREATED, Json(c)).into_response()
}

async fn gh_line_comments(
    State(st): St,
    AxPath((o, r, n)): AxPath<(String, String, u64)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = st.lock().unwrap();
    let items = of_pull(&s.line_comments, n);
    paginate(&s, &format!("/repos/{o}/{r}/pulls/{n}/comments"), &q, items)
}

async fn gh_reviews(
    State(st): St,
    AxPath((o, r, n)): AxPath<(String, String, u64)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = st.lock().unwrap();
    let items = of_pull(&s.reviews, n);
    paginate(&s, &format!("/repos/{o}/{r}/pulls/{n}/reviews"), &q, items)
}

async fn gh_review_create(
    State(st): St,
    AxPath((_o, _r, n)): AxPath<(String, String, u64)>,
    Json(body): Json<Value>,
) -> Response {
    let mut s = st.lock().unwrap();
    if !s.pulls.iter().any(|p| p["number"] == n) {
        return message(StatusCode::NOT_FOUND, "Not Found");
    }
    if s.refuse_approve {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"message": "Unprocessable Entity",
                "errors": ["Review Can not approve your own pull request"]})),
        )
            .into_response();
    }
    let state = match body["event"].as_str() {
        Some("APPROVE") => "APPROVED",
        Some("REQUEST_CHANGES") => "CHANGES_REQUESTED",
        _ => "COMMENTED",
    };
    let review = s.review_json(BOT_LOGIN, state, body["body"].as_str().unwrap_or_default());
    s.reviews.push((n, review.clone()));
    Json(review).into_response()
}

async fn gh_commits(
    State(st): St,
    AxPath((o, r, n)): AxPath<(String, String, u64)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = st.lock().unwrap();
    let items = s.commits.get(&n).cloned().unwrap_or_default();
    paginate(&s, &format!("/repos/{o}/{r}/pulls/{n}/commits"), &q, items)
}

async fn gh_files(
    State(st): St,
    AxPath((o, r, n)): AxPath<(String, String, u64)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = st.lock().unwrap();
    let items = s.files.get(&n).cloned().unwrap_or_default();
    paginate(&s, &format!("/repos/{o}/{r}/pulls/{n}/files"), &q, items)
}

async fn gh_merge(
    State(st): St,
    AxPath((_o, _r, n)): AxPath<(String, String, u64)>,
    Json(body): Json<Value>,
) -> Response {
    let mut s = st.lock().unwrap();
    if s.refuse_merge {
        return message(
            StatusCode::METHOD_NOT_ALLOWED,
            "Pull Request is not mergeable",
        );
    }
    let Some(pr) = s.pulls.iter_mut().find(|p| p["number"] == n) else {
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    pr["merged"] = json!(true);
    pr["state"] = json!("closed");
    pr["merge_method"] = body["merge_method"].clone();
    Json(json!({"sha": "0123456789abcdef", "merged": true,
        "message": "Pull Request successfully merged"}))
    .into_response()
}

impl GhState {
    fn review_json(&mut self, user: &str, state: &str, body: &str) -> Value {
        let id = self.take_id();
        json!({"id": id, "user": {"login": user}, "state": state, "body": body,
            "submitted_at": gh_time(id)})
    }
}

fn etag_of(bytes: &[u8]) -> String {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    format!("W/\"{:016x}\"", h.finish())
}

/// Rate limits, injected failures, ETags and 304s, and the request log.
async fn github_behaviour(State(st): St, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let path = req.uri().path().to_owned();
    let if_none_match = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let injected = {
        let s = st.lock().unwrap();
        if let Some(l) = &s.limited {
            let mut resp = message(
                StatusCode::from_u16(l.status).unwrap_or(StatusCode::FORBIDDEN),
                "API rate limit exceeded for user ID 1.",
            );
            let h = resp.headers_mut();
            match l.retry_after {
                // A secondary limit: calls remain, but wait `retry-after` seconds.
                Some(r) => {
                    h.insert("retry-after", HeaderValue::from(r));
                    h.insert("x-ratelimit-remaining", HeaderValue::from(s.rate_remaining));
                }
                // The primary limit: none left until the reset.
                None => {
                    h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
                }
            }
            h.insert("x-ratelimit-reset", HeaderValue::from(epoch() + 3600));
            Some(resp)
        } else {
            s.failures
                .iter()
                .find(|(key, _, _)| path.contains(key.as_str()))
                .map(|(_, status, text)| {
                    message(
                        StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                        text,
                    )
                })
        }
    };
    let mut resp = match injected {
        Some(r) => r,
        None => next.run(req).await,
    };
    if method == "GET" && resp.status() == StatusCode::OK {
        let (mut parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        let etag = etag_of(&bytes);
        parts
            .headers
            .insert(header::ETAG, HeaderValue::from_str(&etag).expect("ASCII"));
        resp = if if_none_match.as_deref() == Some(etag.as_str()) {
            parts.status = StatusCode::NOT_MODIFIED;
            parts.headers.remove(header::CONTENT_TYPE);
            Response::from_parts(parts, Body::empty())
        } else {
            Response::from_parts(parts, Body::from(bytes))
        };
    }
    let mut s = st.lock().unwrap();
    if resp.status() != StatusCode::NOT_MODIFIED && s.limited.is_none() {
        s.rate_remaining = s.rate_remaining.saturating_sub(1);
    }
    if s.limited.is_none() {
        let h = resp.headers_mut();
        h.insert("x-ratelimit-limit", HeaderValue::from(5000u64));
        h.insert("x-ratelimit-remaining", HeaderValue::from(s.rate_remaining));
        h.insert("x-ratelimit-reset", HeaderValue::from(epoch() + 3600));
    }
    s.requests.push(SeenRequest {
        method,
        uri,
        conditional: if_none_match.is_some(),
        status: resp.status().as_u16(),
    });
    resp
}

fn epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl FakeGitHub {
    /// Starts the fake.
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(GhState {
            rate_remaining: 5000,
            next_id: 1000,
            ..GhState::default()
        }));
        let app = Router::new()
            .route("/repos/{o}/{r}/pulls", get(gh_list).post(gh_create))
            .route("/repos/{o}/{r}/pulls/{n}", get(gh_get))
            .route(
                "/repos/{o}/{r}/pulls/{n}/reviews",
                get(gh_reviews).post(gh_review_create),
            )
            .route("/repos/{o}/{r}/pulls/{n}/comments", get(gh_line_comments))
            .route("/repos/{o}/{r}/pulls/{n}/commits", get(gh_commits))
            .route("/repos/{o}/{r}/pulls/{n}/files", get(gh_files))
            .route("/repos/{o}/{r}/pulls/{n}/merge", put(gh_merge))
            .route(
                "/repos/{o}/{r}/issues/{n}/comments",
                get(gh_issue_comments).post(gh_comment),
            )
            .layer(from_fn_with_state(state.clone(), github_behaviour))
            .with_state(state.clone());
        let url = serve(app, 0).await;
        {
            let mut s = state.lock().unwrap();
            s.base = "https://github.example".into();
            s.api_url = url.clone();
        }
        Self { url, state }
    }

    /// Adds an open pull request from `head` into `main`.
    pub fn add_pull(&self, number: u64, head: &str) {
        let mut s = self.state.lock().unwrap();
        let pr = pull_json(&s.base.clone(), number, head, "main");
        s.pulls.push(pr);
    }

    /// Changes fields of pull request `number` (e.g. `{"merged": true, "state": "closed"}`).
    pub fn update_pull(&self, number: u64, fields: Value) {
        let mut s = self.state.lock().unwrap();
        let pr = s
            .pulls
            .iter_mut()
            .find(|p| p["number"] == number)
            .expect("the pull request exists");
        if let (Some(pr), Some(fields)) = (pr.as_object_mut(), fields.as_object()) {
            for (k, v) in fields {
                pr.insert(k.clone(), v.clone());
            }
        }
    }

    /// Marks pull request `number` merged (and closed), as a merge on GitHub would.
    pub fn merge_pull(&self, number: u64) {
        self.update_pull(number, json!({"merged": true, "state": "closed"}));
    }

    /// Adds an issue comment by `user` on pull request `number`; returns it.
    pub fn add_issue_comment(&self, number: u64, user: &str, body: &str) -> Value {
        let mut s = self.state.lock().unwrap();
        let c = s.comment(number, user, body, "issuecomment");
        s.issue_comments.push((number, c.clone()));
        c
    }

    /// Adds a review line comment by `user` on pull request `number`; returns it.
    pub fn add_line_comment(&self, number: u64, user: &str, body: &str) -> Value {
        let mut s = self.state.lock().unwrap();
        let mut c = s.comment(number, user, body, "discussion_r");
        c["path"] = json!("src/lib.rs");
        c["line"] = json!(1);
        s.line_comments.push((number, c.clone()));
        c
    }

    /// Adds a review (`APPROVED`, `CHANGES_REQUESTED`, `COMMENTED`) by `user`; returns it.
    pub fn add_review(&self, number: u64, user: &str, state: &str, body: &str) -> Value {
        let mut s = self.state.lock().unwrap();
        let r = s.review_json(user, state, body);
        s.reviews.push((number, r.clone()));
        r
    }

    /// Sets the commits and files of pull request `number`.
    pub fn set_changes(&self, number: u64, commits: Vec<Value>, files: Vec<Value>) {
        let mut s = self.state.lock().unwrap();
        s.commits.insert(number, commits);
        s.files.insert(number, files);
    }

    /// Every pull request.
    pub fn pulls(&self) -> Vec<Value> {
        self.state.lock().unwrap().pulls.clone()
    }

    /// Pull requests whose head branch is `head`.
    pub fn pulls_from(&self, head: &str) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .pulls
            .iter()
            .filter(|p| p["head"]["ref"] == head)
            .cloned()
            .collect()
    }

    /// Every issue comment posted through the API (pull request number, body).
    pub fn comments(&self) -> Vec<(u64, String)> {
        self.state.lock().unwrap().comments.clone()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.state.lock().unwrap().requests.clear();
    }
}
