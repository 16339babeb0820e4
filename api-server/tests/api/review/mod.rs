//! The review loop against the fake GitHub REST API. Here: the review page's endpoints (a
//! ticket's pull request, a project's list, comment, approve and merge, their 404s and GitHub
//! failures as 502); the PR poller in `poller`, the webhook in `webhook`.

mod poller;
mod webhook;

use reqwest::StatusCode;
use serde_json::{Value, json};
use terarchitect_api_server::review::ReviewArgs;
use terarchitect_test_fakes::FakeGitHub;
use uuid::Uuid;

use crate::common::*;

/// The GitHub token of [`ready_options`].
pub const TOKEN: &str = "ghp_test_token";
/// The webhook secret of the review tests.
pub const SECRET: &str = "whsec-review-tests-0b5e";

/// The Prometheus text the server at `base` serves on `/metrics`.
pub async fn metrics_text(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A server talking to a fake GitHub, with a project on `acme/shop` and one ticket in review
/// on pull request #100.
pub struct ReviewWorld {
    pub srv: TestServer,
    pub api: Api,
    pub gh: FakeGitHub,
    pub pid: Uuid,
    pub tid: Uuid,
}

impl ReviewWorld {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut ReviewArgs)) -> Self {
        let gh = FakeGitHub::start().await;
        let mut args = ReviewArgs {
            github_api_url: gh.url.clone(),
            github_webhook_secret: Some(SECRET.into()),
            ..ReviewArgs::default()
        };
        tweak(&mut args);
        let srv = TestServer::start(
            backend,
            TestOptions {
                review: Some(args),
                ..ready_options()
            },
        )
        .await;
        let api = Api::new(&srv);
        let pid = ready_project(&api, "Shop").await;
        let tid = ticket(&api, pid, "Add greeting").await;
        let w = Self {
            srv,
            api,
            gh,
            pid,
            tid,
        };
        w.in_review(tid, 100).await;
        w
    }

    /// Opens pull request `number` on the fake and records it as the ticket's (in review).
    pub async fn in_review(&self, tid: Uuid, number: u64) {
        self.gh.add_pull(number, &format!("ticket-{tid}"));
        let url = format!("https://github.example/acme/shop/pull/{number}");
        let ok = self
            .srv
            .db()
            .complete_ticket(self.pid, tid, Some(&url), Some(number as i32))
            .await
            .unwrap();
        assert!(ok);
    }

    pub fn path(&self, tid: Uuid, rest: &str) -> String {
        format!("/api/projects/{}/tickets/{tid}{rest}", self.pid)
    }

    /// The ticket's jobs, newest first.
    pub async fn jobs(&self, tid: Uuid) -> Vec<Value> {
        let (s, v) = self.api.get(&self.path(tid, "/jobs")).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v.as_array().unwrap().clone()
    }

    /// The ticket's review jobs, newest first.
    pub async fn review_jobs(&self, tid: Uuid) -> Vec<Value> {
        self.jobs(tid)
            .await
            .into_iter()
            .filter(|j| j["kind"] == "review")
            .collect()
    }

    pub async fn column(&self, tid: Uuid) -> String {
        let (_, t) = self.api.get(&self.path(tid, "")).await;
        t["column_id"].as_str().unwrap().to_owned()
    }

    /// Claims the next job and reports it completed (or failed).
    pub async fn run_next_job(&self, complete: bool) -> Value {
        let (s, job) = self.api.post("/api/worker/jobs/start", json!({})).await;
        assert_eq!(s, StatusCode::OK, "{job}");
        let outcome = if complete { "complete" } else { "fail" };
        let (s, v) = self
            .api
            .post(
                &format!(
                    "/api/worker/jobs/{}/{outcome}",
                    job["job_id"].as_str().unwrap()
                ),
                json!({}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        job
    }

    /// Whether the comment is tracked and addressed.
    pub async fn addressed(&self, pr: i32, comment_id: i64) -> Option<bool> {
        self.srv
            .db()
            .review_comment_addressed(self.pid, pr, comment_id)
            .await
            .unwrap()
    }
}

async fn ticket_review_reads_the_pull_request(backend: Backend) {
    let w = ReviewWorld::start(backend).await;
    w.gh.update_pull(
        100,
        json!({"body": "Intro\n## What was accomplished\nAdded greet() with tests.\n---\nfooter"}),
    );
    w.gh.set_changes(
        100,
        vec![
            json!({"sha": "a1b2c3d4e5f6", "commit": {"message": "Add greet\n\nLonger text"}}),
            json!({"sha": "0f0f0f0f0f0f", "commit": {"message": "Fix typo"}}),
        ],
        vec![
            json!({"filename": "src/greet.js", "patch": "+export function greet() {}"}),
            json!({"filename": "src/greet.test.js", "patch": "+describe('greet', () => {\n+  it(\"says hello\", () => {});\n+});"}),
            json!({"filename": "tests/test_greet.py", "patch": "+def test_greets_by_name():\n+    pass"}),
        ],
    );
    w.gh.add_issue_comment(100, "alice", "Looks good, one nit.");

    let (s, v) = w.api.get(&w.path(w.tid, "/review")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!({
            "summary": "Added greet() with tests.",
            "commits": [{"sha": "a1b2c3d", "message": "Add greet"}, {"sha": "0f0f0f0", "message": "Fix typo"}],
            "test_files": [
                {"path": "src/greet.test.js", "test_names": ["greet", "says hello"]},
                {"path": "tests/test_greet.py", "test_names": ["test greets by name"]},
            ],
            "tests_description": "",
            "comments": [{"author": "alice", "body": "Looks good, one nit.", "created_at": v["comments"][0]["created_at"]}],
            "pr_url": "https://github.example/acme/shop/pull/100",
            "pr_number": 100,
            "pr_state": "open",
            "merged": false,
        })
    );
    assert!(v["comments"][0]["created_at"].is_string());
    // The token from the settings' environment fallback, as a Bearer token.
    let auth = w.gh.state.lock().unwrap().auth.clone();
    assert!(
        auth.iter().all(|a| a == &format!("Bearer {TOKEN}")),
        "{auth:?}"
    );

    // A body without the heading is the summary; an empty one is "No description.".
    w.gh.update_pull(100, json!({"body": "Plain description"}));
    let (_, v) = w.api.get(&w.path(w.tid, "/review")).await;
    assert_eq!(v["summary"], "Plain description");
    w.gh.update_pull(
        100,
        json!({"body": null, "state": "closed", "merged": true}),
    );
    let (_, v) = w.api.get(&w.path(w.tid, "/review")).await;
    assert_eq!(
        (&v["summary"], &v["pr_state"], &v["merged"]),
        (&json!("No description."), &json!("closed"), &json!(true))
    );
}

async fn not_found_answers(backend: Backend) {
    let w = ReviewWorld::start(backend).await;
    let unknown = Uuid::new_v4();
    for path in [
        "/review",
        "/review/comment",
        "/review/approve",
        "/review/merge",
    ] {
        let (s, v) = if path == "/review" {
            w.api.get(&w.path(unknown, path)).await
        } else {
            w.api
                .post(&w.path(unknown, path), json!({"body": "x"}))
                .await
        };
        assert_eq!(
            (s, v),
            (StatusCode::NOT_FOUND, json!({"error": "Ticket not found"})),
            "{path}"
        );
    }
    let (s, v) = w.api.get(&format!("/api/projects/{unknown}/review")).await;
    assert_eq!(
        (s, v),
        (StatusCode::NOT_FOUND, json!({"error": "Project not found"}))
    );

    // A ticket without a pull request.
    let bare = ticket(&w.api, w.pid, "No PR yet").await;
    let no_pr = json!({"error": "No PR for this ticket"});
    let (s, v) = w.api.get(&w.path(bare, "/review")).await;
    assert_eq!((s, v), (StatusCode::NOT_FOUND, no_pr.clone()));
    for path in ["/review/comment", "/review/approve", "/review/merge"] {
        let (s, v) = w.api.post(&w.path(bare, path), json!({"body": "x"})).await;
        assert_eq!((s, v), (StatusCode::NOT_FOUND, no_pr.clone()), "{path}");
    }

    // A project URL that names no repository.
    let (s, v) = w
        .api
        .put(
            &format!("/api/projects/{}", w.pid),
            json!({"github_url": "https://github.com/acme"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = w.api.get(&w.path(w.tid, "/review")).await;
    assert_eq!(
        (s, v),
        (
            StatusCode::NOT_FOUND,
            json!({"error": "Project has no valid GitHub URL"})
        )
    );
    let (s, v) = w
        .api
        .post(&w.path(w.tid, "/review/comment"), json!({"body": "x"}))
        .await;
    assert_eq!((s, v), (StatusCode::NOT_FOUND, no_pr));
    // The list shows the pull request as unknown rather than failing.
    let (s, v) = w.api.get(&format!("/api/projects/{}/review", w.pid)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v[0]["pr_state"], "unknown");
    assert!(
        w.gh.requests().is_empty(),
        "no GitHub call without a repository"
    );
}

async fn github_errors_are_502_with_detail(backend: Backend) {
    let w = ReviewWorld::start(backend).await;
    let check = |(s, v): (StatusCode, Value), error: &str, detail_has: &str| {
        assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
        assert_eq!(v["error"], error, "{v}");
        let detail = v["detail"].as_str().unwrap();
        assert!(detail.contains(detail_has), "{detail}");
        assert!(!detail.contains(TOKEN), "the token leaked: {detail}");
    };
    w.gh.state.lock().unwrap().failures.push((
        "/pulls/100/files".into(),
        500,
        "Server Error".into(),
    ));
    check(
        w.api.get(&w.path(w.tid, "/review")).await,
        "Failed to fetch PR from GitHub",
        "answered 500: Server Error",
    );
    w.gh.state.lock().unwrap().failures = vec![(
        "/issues/100/comments".into(),
        403,
        "Resource not accessible by integration".into(),
    )];
    check(
        w.api
            .post(&w.path(w.tid, "/review/comment"), json!({"body": "hi"}))
            .await,
        "Failed to post comment",
        "Resource not accessible by integration",
    );
    w.gh.state.lock().unwrap().refuse_approve = true;
    check(
        w.api
            .post(&w.path(w.tid, "/review/approve"), json!({}))
            .await,
        "Failed to approve",
        "Can not approve your own pull request",
    );
    w.gh.state.lock().unwrap().refuse_merge = true;
    check(
        w.api.post(&w.path(w.tid, "/review/merge"), json!({})).await,
        "Failed to merge",
        "not mergeable",
    );
    assert_eq!(
        w.column(w.tid).await,
        "in_review",
        "a failed merge moves nothing"
    );

    // An unreachable GitHub.
    let closed = terarchitect_test_fakes::closed_port();
    let w2 = ReviewWorld::start_with(backend, |a| {
        a.github_api_url = format!("http://127.0.0.1:{closed}");
    })
    .await;
    let (s, v) = w2.api.get(&w2.path(w2.tid, "/review")).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    assert_eq!(v["error"], "Failed to fetch PR from GitHub");
    assert!(
        v["detail"].as_str().unwrap().contains("/repos/acme/shop/"),
        "{v}"
    );
}

async fn project_review_lists_open_first(backend: Backend) {
    let w = ReviewWorld::start(backend).await;
    let merged = w.tid;
    let open = ticket(&w.api, w.pid, "Open one").await;
    let closed = ticket(&w.api, w.pid, "Closed one").await;
    let gone = ticket(&w.api, w.pid, "Unreadable").await;
    w.in_review(open, 101).await;
    w.in_review(closed, 102).await;
    w.in_review(gone, 103).await;
    w.gh.merge_pull(100);
    w.gh.update_pull(102, json!({"state": "closed"}));
    w.gh.state
        .lock()
        .unwrap()
        .failures
        .push(("/pulls/103".into(), 404, "Not Found".into()));
    let (s, v) = w.api.get(&format!("/api/projects/{}/review", w.pid)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let url = |n: u64| format!("https://github.example/acme/shop/pull/{n}");
    assert_eq!(
        v,
        json!([
            {"id": gone, "title": "Unreadable", "pr_url": url(103), "pr_number": 103, "pr_state": "unknown", "merged": false},
            {"id": open, "title": "Open one", "pr_url": url(101), "pr_number": 101, "pr_state": "open", "merged": false},
            {"id": merged, "title": "Add greeting", "pr_url": url(100), "pr_number": 100, "pr_state": "closed", "merged": true},
        ])
    );
}

async fn comment_approve_and_merge(backend: Backend) {
    let w = ReviewWorld::start(backend).await;
    for body in [json!({}), json!({"body": "   "}), json!({"body": 5})] {
        let (s, v) = w.api.post(&w.path(w.tid, "/review/comment"), body).await;
        assert_eq!(
            (s, v),
            (
                StatusCode::BAD_REQUEST,
                json!({"error": "body is required"})
            )
        );
    }
    let (s, v) = w
        .api
        .post(
            &w.path(w.tid, "/review/comment"),
            json!({"body": "  Please rename greet to welcome.  "}),
        )
        .await;
    assert_eq!(
        (s, v),
        (StatusCode::OK, json!({"message": "Comment posted"}))
    );
    assert_eq!(
        w.gh.comments(),
        [(100, "Please rename greet to welcome.".to_owned())]
    );
    // Like the original's poller, a UI comment is a reviewer's: a review job, at once.
    let jobs = w.review_jobs(w.tid).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["comment_body"], "Please rename greet to welcome.");
    assert_eq!(jobs[0]["pr_number"], 100);

    let long = "x".repeat(70_000);
    let (s, _) = w
        .api
        .post(&w.path(w.tid, "/review/comment"), json!({"body": long}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let posted = w.gh.comments().pop().unwrap().1;
    assert_eq!(posted.chars().count(), 60_000);
    assert!(posted.ends_with("x..."));

    let (s, v) = w
        .api
        .post(&w.path(w.tid, "/review/approve"), json!({"body": "LGTM"}))
        .await;
    assert_eq!((s, v), (StatusCode::OK, json!({"message": "PR approved"})));
    let reviews = w.gh.state.lock().unwrap().reviews.clone();
    assert_eq!(reviews.len(), 1);
    assert_eq!(
        (&reviews[0].1["state"], &reviews[0].1["body"]),
        (&json!("APPROVED"), &json!("LGTM"))
    );
    // No body at all is fine too.
    let (s, _) = w
        .api
        .raw(
            reqwest::Method::POST,
            &w.path(w.tid, "/review/approve"),
            None,
            vec![],
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    let (s, v) = w
        .api
        .post(
            &w.path(w.tid, "/review/merge"),
            json!({"merge_method": "squash"}),
        )
        .await;
    assert_eq!((s, v), (StatusCode::OK, json!({"message": "PR merged"})));
    let pr = w.gh.pulls()[0].clone();
    assert_eq!(
        (&pr["merged"], &pr["merge_method"]),
        (&json!(true), &json!("squash"))
    );
    assert_eq!(
        w.column(w.tid).await,
        "done",
        "a merge through the UI finishes the ticket"
    );

    // Invalid merge methods merge.
    let other = ticket(&w.api, w.pid, "Other").await;
    w.in_review(other, 101).await;
    let (s, _) = w
        .api
        .post(
            &w.path(other, "/review/merge"),
            json!({"merge_method": "octopus"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let pr = w.gh.pulls()[1].clone();
    assert_eq!(pr["merge_method"], "merge");
}

on_both_backends!(
    ticket_review_reads_the_pull_request,
    not_found_answers,
    github_errors_are_502_with_detail,
    project_review_lists_open_first,
    comment_approve_and_merge,
);
