//! Helpers shared by the API tests.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
pub use terarchitect_api_server::testing::{Backend, TEST_SECRET_KEY, TestOptions, TestServer};
use uuid::Uuid;

/// Generates a `sqlite` and a `postgres` test for each async fn taking a [`Backend`].
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(crate::common::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(crate::common::Backend::Postgres).await
                }
            }
        )*
    };
}
pub(crate) use on_both_backends;

/// A small JSON client for the API under test.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    pub token: Option<String>,
}

impl Api {
    pub fn new(server: &TestServer) -> Self {
        Self {
            base: server.url(),
            http: reqwest::Client::new(),
            token: None,
        }
    }

    pub fn with_token(&self, token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    /// The same caller on a client that never reuses a connection: for requests the server
    /// answers before reading their body (413), after which it closes the connection, which
    /// a pooled client could otherwise pick up again for the next request.
    pub fn unpooled(&self) -> Self {
        Self {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("http client"),
            ..self.clone()
        }
    }

    /// Sends a request with an optional JSON body; returns the status and the JSON body
    /// (`Value::Null` for an empty body).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        Self::read(resp).await
    }

    /// Sends raw bytes with the given content type.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        Self::read(req.send().await.expect("request")).await
    }

    async fn read(resp: reqwest::Response) -> (StatusCode, Value) {
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("non-JSON body for {status}: {text}"))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }
    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, Some(body)).await
    }
}

/// Options with a secret key (so secrets can be stored) and a GitHub token in the env.
pub fn ready_options() -> TestOptions {
    TestOptions::default()
        .env("TERARCHITECT_SECRET_KEY", TEST_SECRET_KEY)
        .env("GITHUB_TOKEN", "ghp_test_token")
}

/// Creates a project with a GitHub URL and a one-node graph; returns its id.
pub async fn ready_project(api: &Api, name: &str) -> Uuid {
    let (s, p) = api
        .post("/api/projects", json!({"name": name, "github_url": "https://github.com/acme/shop", "is_existing_repo": true}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let pid: Uuid = p["id"].as_str().unwrap().parse().unwrap();
    let (s, _) = api
        .put(
            &format!("/api/projects/{pid}/graph"),
            json!({"nodes": [{"id": "n1", "data": {"label": "API"}}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    pid
}

/// Creates a backlog ticket; returns its id.
pub async fn ticket(api: &Api, pid: Uuid, title: &str) -> Uuid {
    let (s, t) = api
        .post(
            &format!("/api/projects/{pid}/tickets"),
            json!({"title": title, "column_id": "backlog"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    t["id"].as_str().unwrap().parse().unwrap()
}

/// Moves a ticket to in_progress (enqueueing a job) and asserts success.
pub async fn start_ticket(api: &Api, pid: Uuid, tid: Uuid) {
    let (s, body) = api
        .patch(
            &format!("/api/projects/{pid}/tickets/{tid}"),
            json!({"column_id": "in_progress"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
}

/// Polls `GET /api/worker/jobs/<id>` until the job has `status` (20 s at most); returns its state.
pub async fn wait_for_status(api: &Api, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, state) = api.get(&format!("/api/worker/jobs/{id}")).await;
        if state["status"] == status {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "job never became {status}: {state}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
