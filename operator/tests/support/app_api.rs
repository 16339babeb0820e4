//! The api-server's app API as the UI uses it (projects, tickets, settings), for the operator's
//! tests and its benchmark (`benches/dispatch.rs` includes this file).

use serde_json::{Value, json};
use uuid::Uuid;

/// A client of the app API that asserts every answer is a 2xx.
pub struct AppApi {
    pub http: reqwest::Client,
    pub base: String,
    /// The api-server's admin token, sent as a Bearer token when set.
    pub admin_token: Option<String>,
}

impl AppApi {
    /// A client for the api-server at `base` (`http://host:port`) without admin auth.
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.into(),
            admin_token: None,
        }
    }

    /// A client sending `token` as the admin Bearer token.
    pub fn with_admin_token(base: impl Into<String>, token: &str) -> Self {
        Self {
            admin_token: Some(token.to_owned()),
            ..Self::new(base)
        }
    }

    /// A request to the api-server's app API, asserting a 2xx answer.
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(token) = &self.admin_token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("api-server answers");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Creates a project (an existing repository, so no setup ticket).
    pub async fn project(&self) -> Uuid {
        let p = self
            .call(
                reqwest::Method::POST,
                "/api/projects",
                Some(json!({
                    "name": format!("p-{}", Uuid::new_v4().simple()),
                    "github_url": "https://github.com/acme/shop",
                    "is_existing_repo": true,
                })),
            )
            .await;
        let id: Uuid = p["id"].as_str().unwrap().parse().unwrap();
        self.call(
            reqwest::Method::PUT,
            &format!("/api/projects/{id}/graph"),
            Some(json!({"nodes": [{"id": "n1", "data": {"label": "API"}}]})),
        )
        .await;
        id
    }

    /// Creates a backlog ticket.
    pub async fn ticket(&self, project: Uuid) -> Uuid {
        let t = self
            .call(
                reqwest::Method::POST,
                &format!("/api/projects/{project}/tickets"),
                Some(json!({"title": "Add a health endpoint", "column_id": "backlog"})),
            )
            .await;
        t["id"].as_str().unwrap().parse().unwrap()
    }

    /// Moves a ticket to In Progress and returns the queue job it enqueued.
    pub async fn start_ticket(&self, project: Uuid, ticket: Uuid) -> Uuid {
        self.call(
            reqwest::Method::PATCH,
            &format!("/api/projects/{project}/tickets/{ticket}"),
            Some(json!({"column_id": "in_progress"})),
        )
        .await;
        let jobs = self
            .call(
                reqwest::Method::GET,
                &format!("/api/projects/{project}/tickets/{ticket}/jobs"),
                None,
            )
            .await;
        jobs[0]["job_id"].as_str().unwrap().parse().unwrap()
    }
}
