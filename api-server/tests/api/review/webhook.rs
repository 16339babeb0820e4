//! `POST /api/github/webhook`: signature checks, the events that enqueue review jobs or finish
//! tickets, redeliveries, and deliveries about other repositories or tickets not in review.

use reqwest::StatusCode;
use serde_json::{Value, json};
use terarchitect_api_server::review::BOT_SIGNATURE;
use terarchitect_api_server::review::webhook::sign;

use super::{ReviewWorld, SECRET, metrics_text};
use crate::common::*;

/// Sends a delivery signed with `secret` (unsigned when None).
pub async fn deliver(
    base: &str,
    secret: Option<&str>,
    event: &str,
    delivery: &str,
    payload: &Value,
) -> (StatusCode, Value) {
    let body = serde_json::to_vec(payload).unwrap();
    let mut req = reqwest::Client::new()
        .post(format!("{base}/api/github/webhook"))
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery);
    if let Some(s) = secret {
        req = req.header("x-hub-signature-256", sign(s.as_bytes(), &body));
    }
    let resp = req.body(body).send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Posts `body` as an `issue_comment` delivery with the given signature header and no
/// delivery id: for bodies [`deliver`] cannot produce (tampered, not JSON).
async fn post_raw(base: &str, signature: String, body: impl Into<reqwest::Body>) -> StatusCode {
    reqwest::Client::new()
        .post(format!("{base}/api/github/webhook"))
        .header("content-type", "application/json")
        .header("x-github-event", "issue_comment")
        .header("x-hub-signature-256", signature)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
}

/// Asserts a delivery was accepted (200) and ignored.
fn assert_ignored(status: StatusCode, v: &Value) {
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(v["message"].as_str().unwrap().starts_with("Ignored"), "{v}");
}

impl ReviewWorld {
    /// Sends a delivery to this world's server, signed with [`SECRET`].
    async fn deliver(&self, event: &str, delivery: &str, payload: &Value) -> (StatusCode, Value) {
        deliver(&self.srv.url(), Some(SECRET), event, delivery, payload).await
    }
}

/// An `issue_comment` payload for a comment GitHub returned.
pub fn issue_comment(repo: &str, pr: u64, comment: &Value) -> Value {
    json!({"action": "created", "repository": {"full_name": repo},
        "issue": {"number": pr, "pull_request": {"url": "x"}}, "comment": comment})
}

async fn a_reviewer_comment_enqueues_a_review_job(backend: Backend) {
    let w = ReviewWorld::start(backend).await;
    let c =
        w.gh.add_issue_comment(100, "alice", "Please rename greet to welcome.");
    let (s, v) = w
        .deliver("issue_comment", "d-1", &issue_comment("acme/shop", 100, &c))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["message"], "Processed");
    assert_eq!(v["tickets"], json!([w.tid]));
    let jobs = w.review_jobs(w.tid).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(v["enqueued_job_ids"], json!([jobs[0]["job_id"]]));
    assert_eq!(
        (
            &jobs[0]["comment_body"],
            &jobs[0]["github_comment_id"],
            &jobs[0]["pr_number"]
        ),
        (
            &json!("Please rename greet to welcome."),
            &c["id"],
            &json!(100)
        )
    );
    assert!(w.gh.requests().is_empty(), "a comment needs no GitHub call");

    // A redelivery is ignored; a new delivery of the same comment finds the job in place.
    let (s, v) = w
        .deliver("issue_comment", "d-1", &issue_comment("acme/shop", 100, &c))
        .await;
    assert_eq!(
        (s, &v["message"]),
        (StatusCode::OK, &json!("Duplicate delivery ignored"))
    );
    let (s, v) = w
        .deliver("issue_comment", "d-2", &issue_comment("acme/shop", 100, &c))
        .await;
    assert_eq!((s, &v["enqueued_job_ids"]), (StatusCode::OK, &json!([])));
    assert_eq!(w.review_jobs(w.tid).await.len(), 1);

    // The job completes: the comment is addressed; the bot's reply (line comment event) is
    // recorded as addressed and enqueues nothing.
    w.run_next_job(true).await;
    assert_eq!(
        w.addressed(100, c["id"].as_i64().unwrap()).await,
        Some(true)
    );
    let reply = w.gh.add_line_comment(
        100,
        "terarchitect-bot",
        &format!("Done.\n\n{BOT_SIGNATURE}"),
    );
    let payload = json!({"action": "created", "repository": {"full_name": "acme/shop"},
        "pull_request": {"number": 100}, "comment": reply});
    let (s, v) = w
        .deliver("pull_request_review_comment", "d-3", &payload)
        .await;
    assert_eq!((s, &v["enqueued_job_ids"]), (StatusCode::OK, &json!([])));
    assert_eq!(
        w.addressed(100, reply["id"].as_i64().unwrap()).await,
        Some(true)
    );

    // A review with a body is a comment too.
    let review =
        w.gh.add_review(100, "bob", "CHANGES_REQUESTED", "Add a test.");
    let payload = json!({"action": "submitted", "repository": {"full_name": "AcMe/Shop"},
        "pull_request": {"number": 100}, "review": review});
    let (s, v) = w.deliver("pull_request_review", "d-4", &payload).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["enqueued_job_ids"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(w.review_jobs(w.tid).await[0]["comment_body"], "Add a test.");

    let metrics = metrics_text(&w.srv.url()).await;
    assert!(
        metrics.contains("terarchitect_review_jobs_enqueued_total{source=\"webhook\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("terarchitect_github_webhook_deliveries_total{event=\"issue_comment\",outcome=\"duplicate\"} 1"), "{metrics}");
}

async fn signatures_are_checked(backend: Backend) {
    let w = ReviewWorld::start(backend).await;
    let c = w.gh.add_issue_comment(100, "alice", "Sneaky.");
    let payload = issue_comment("acme/shop", 100, &c);
    let bad = json!({"error": "Missing or invalid X-Hub-Signature-256"});
    for secret in [None, Some("wrong-secret")] {
        let (s, v) = deliver(&w.srv.url(), secret, "issue_comment", "d-x", &payload).await;
        assert_eq!((s, v), (StatusCode::UNAUTHORIZED, bad.clone()));
    }
    // A body changed after signing.
    let body = serde_json::to_vec(&payload).unwrap();
    let sig = sign(SECRET.as_bytes(), &body);
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    assert_eq!(
        post_raw(&w.srv.url(), sig, tampered).await,
        StatusCode::UNAUTHORIZED
    );
    assert!(w.review_jobs(w.tid).await.is_empty());
    // The unsigned delivery was not recorded: signed, it is processed.
    let (s, v) = w.deliver("issue_comment", "d-x", &payload).await;
    assert_eq!((s, &v["message"]), (StatusCode::OK, &json!("Processed")));

    let (s, v) = w
        .deliver("ping", "d-ping", &json!({"zen": "Design for failure."}))
        .await;
    assert_eq!((s, v), (StatusCode::OK, json!({"message": "pong"})));

    // Without a secret the endpoint is off.
    let off = ReviewWorld::start_with(backend, |a| a.github_webhook_secret = None).await;
    let (s, v) = deliver(&off.srv.url(), Some(SECRET), "ping", "d-1", &json!({})).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("GITHUB_WEBHOOK_SECRET")
    );
}

async fn merges_and_approvals_finish_tickets(backend: Backend) {
    let w = ReviewWorld::start(backend).await;
    let second = ticket(&w.api, w.pid, "Second").await;
    w.in_review(second, 101).await;
    let closed = |merged: bool, n: u64| {
        json!({"action": "closed", "repository": {"full_name": "acme/shop"},
            "pull_request": {"number": n, "merged": merged}})
    };
    let (s, v) = w.deliver("pull_request", "m-1", &closed(false, 100)).await;
    assert_ignored(s, &v);
    assert_eq!(w.column(w.tid).await, "in_review", "closed without merging");
    let (s, v) = w.deliver("pull_request", "m-2", &closed(true, 100)).await;
    assert_eq!(
        (s, &v["done_ticket_ids"]),
        (StatusCode::OK, &json!([w.tid]))
    );
    assert_eq!(w.column(w.tid).await, "done");

    // An approval is checked against all reviews on GitHub.
    w.gh.add_review(101, "bob", "CHANGES_REQUESTED", "");
    let approval = w.gh.add_review(101, "alice", "APPROVED", "");
    let payload = json!({"action": "submitted", "repository": {"full_name": "acme/shop"},
        "pull_request": {"number": 101}, "review": approval});
    w.deliver("pull_request_review", "a-1", &payload).await;
    assert_eq!(
        w.column(second).await,
        "in_review",
        "bob still requests changes"
    );
    let approval = w.gh.add_review(101, "bob", "APPROVED", "");
    let payload = json!({"action": "submitted", "repository": {"full_name": "acme/shop"},
        "pull_request": {"number": 101}, "review": approval});
    let (s, v) = w.deliver("pull_request_review", "a-2", &payload).await;
    assert_eq!(
        (s, &v["done_ticket_ids"]),
        (StatusCode::OK, &json!([second]))
    );
    assert_eq!(w.column(second).await, "done");
}

async fn other_repositories_and_tickets_are_ignored(backend: Backend) {
    let w = ReviewWorld::start(backend).await;
    let c = w.gh.add_issue_comment(100, "alice", "Hello");
    let ignored = "Ignored: no ticket in review for this pull request";
    // Same number, another repository.
    let (s, v) = w
        .deliver(
            "issue_comment",
            "o-1",
            &issue_comment("acme/other", 100, &c),
        )
        .await;
    assert_eq!((s, &v["message"]), (StatusCode::OK, &json!(ignored)));
    // A pull request no ticket has.
    let (s, v) = w
        .deliver("issue_comment", "o-2", &issue_comment("acme/shop", 999, &c))
        .await;
    assert_eq!((s, &v["message"]), (StatusCode::OK, &json!(ignored)));
    // A ticket that left review.
    w.api
        .patch(&w.path(w.tid, ""), json!({"column_id": "backlog"}))
        .await;
    let (s, v) = w
        .deliver("issue_comment", "o-3", &issue_comment("acme/shop", 100, &c))
        .await;
    assert_eq!((s, &v["message"]), (StatusCode::OK, &json!(ignored)));
    // A comment on a plain issue, an unhandled event.
    let mut plain = issue_comment("acme/shop", 100, &c);
    plain["issue"] = json!({"number": 100});
    let (s, v) = w.deliver("issue_comment", "o-4", &plain).await;
    assert_ignored(s, &v);
    let (s, v) = w
        .deliver(
            "push",
            "o-5",
            &json!({"repository": {"full_name": "acme/shop"}}),
        )
        .await;
    assert_ignored(s, &v);
    assert!(w.jobs(w.tid).await.is_empty());
    // Not JSON (after a valid signature).
    let sig = sign(SECRET.as_bytes(), b"{nope");
    assert_eq!(
        post_raw(&w.srv.url(), sig, "{nope").await,
        StatusCode::BAD_REQUEST
    );
}

async fn the_webhook_is_exempt_from_admin_auth(backend: Backend) {
    let gh = terarchitect_test_fakes::FakeGitHub::start().await;
    let srv = TestServer::start(
        backend,
        TestOptions {
            admin_tokens: vec!["adm-review-1".into()],
            review: Some(terarchitect_api_server::review::ReviewArgs {
                github_api_url: gh.url.clone(),
                github_webhook_secret: Some(SECRET.into()),
                ..Default::default()
            }),
            ..ready_options()
        },
    )
    .await;
    let (s, v) = deliver(&srv.url(), Some(SECRET), "ping", "p-1", &json!({})).await;
    assert_eq!((s, v), (StatusCode::OK, json!({"message": "pong"})));
    // The review endpoints are admin endpoints.
    let api = Api::new(&srv);
    let path = format!("/api/projects/{}/review", uuid::Uuid::new_v4());
    let (s, _) = api.get(&path).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = api.with_token("adm-review-1").get(&path).await;
    assert_eq!(
        (s, v),
        (StatusCode::NOT_FOUND, json!({"error": "Project not found"}))
    );
}

on_both_backends!(
    the_webhook_is_exempt_from_admin_auth,
    a_reviewer_comment_enqueues_a_review_job,
    signatures_are_checked,
    merges_and_approvals_finish_tickets,
    other_repositories_and_tickets_are_ignored,
);
