//! A fake GitHub REST API for the repository `acme/shop`: list, create and get pull requests,
//! and post issue comments. Pull requests are numbered from 100.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path as AxPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::serve;

/// The fake's state.
#[derive(Default)]
pub struct GhState {
    /// Base of the `html_url`s (`https://github.example`).
    pub base: String,
    /// Pull requests, as GitHub returns them.
    pub pulls: Vec<Value>,
    /// Issue comments: pull request number, body.
    pub comments: Vec<(u64, String)>,
    /// Authorization headers of every request.
    pub auth: Vec<String>,
    /// Pull requests created through the API.
    pub created: usize,
    /// Refuse to open pull requests.
    pub refuse_create: bool,
}

/// A fake GitHub API.
#[derive(Clone)]
pub struct FakeGitHub {
    /// Base URL (the agent's `GITHUB_API_URL`).
    pub url: String,
    /// The state, for direct inspection.
    pub state: Arc<Mutex<GhState>>,
}

fn record_auth(st: &Mutex<GhState>, headers: &HeaderMap) {
    let a = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    st.lock().unwrap().auth.push(a);
}

async fn gh_list(
    State(st): State<Arc<Mutex<GhState>>>,
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

/// A pull request as GitHub returns it.
pub fn pull_json(base: &str, number: u64, head: &str, base_ref: &str) -> Value {
    json!({
        "number": number,
        "html_url": format!("{base}/acme/shop/pull/{number}"),
        "state": "open",
        "title": "t",
        "body": "",
        "head": {"ref": head, "repo": {"full_name": "acme/shop"}},
        "base": {"ref": base_ref, "repo": {"full_name": "acme/shop"}},
    })
}

async fn gh_create(
    State(st): State<Arc<Mutex<GhState>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    record_auth(&st, &headers);
    let mut s = st.lock().unwrap();
    if s.refuse_create {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"message": "Resource not accessible by integration"})),
        )
            .into_response();
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
    State(st): State<Arc<Mutex<GhState>>>,
    AxPath((_o, _r, n)): AxPath<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    record_auth(&st, &headers);
    let s = st.lock().unwrap();
    match s.pulls.iter().find(|p| p["number"] == n) {
        Some(p) => Json(p.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))).into_response(),
    }
}

async fn gh_comment(
    State(st): State<Arc<Mutex<GhState>>>,
    AxPath((_o, _r, n)): AxPath<(String, String, u64)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    record_auth(&st, &headers);
    let mut s = st.lock().unwrap();
    s.comments
        .push((n, body["body"].as_str().unwrap_or_default().to_owned()));
    let url = format!("{}/acme/shop/pull/{n}#issuecomment-1", s.base);
    (StatusCode::CREATED, Json(json!({"id": 1, "html_url": url}))).into_response()
}

impl FakeGitHub {
    /// Starts the fake.
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(GhState::default()));
        let app = Router::new()
            .route("/repos/{o}/{r}/pulls", get(gh_list).post(gh_create))
            .route("/repos/{o}/{r}/pulls/{n}", get(gh_get))
            .route("/repos/{o}/{r}/issues/{n}/comments", post(gh_comment))
            .with_state(state.clone());
        let url = serve(app, 0).await;
        state.lock().unwrap().base = "https://github.example".into();
        Self { url, state }
    }

    /// Adds an open pull request from `head` into `main`.
    pub fn add_pull(&self, number: u64, head: &str) {
        let mut s = self.state.lock().unwrap();
        let pr = pull_json(&s.base.clone(), number, head, "main");
        s.pulls.push(pr);
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

    /// Every issue comment.
    pub fn comments(&self) -> Vec<(u64, String)> {
        self.state.lock().unwrap().comments.clone()
    }
}
