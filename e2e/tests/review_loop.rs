//! The review loop end to end: a ticket's pull request gets a reviewer comment on GitHub, the
//! GitHub webhook enqueues a review job, the operator runs it as an agent Job, the agent replies
//! on the pull request, the comment is addressed, the pull request is merged and the PR poller
//! moves the ticket to done.

use std::time::Instant;

use reqwest::StatusCode;
use serde_json::{Value, json};
use terarchitect_api_server::review::webhook::sign;
use terarchitect_api_server::testing::Backend;
use terarchitect_e2e::*;
use terarchitect_operator::crd::{AgentJobKind, Phase};
use terarchitect_worker_api::{JobKind, JobStatus};
use uuid::Uuid;

const BOT_SIGNATURE: &str = "<!-- terarchitect-bot -->";

/// Delivers a signed GitHub webhook to the api-server.
async fn deliver(w: &World, event: &str, delivery: &str, payload: &Value) -> (StatusCode, Value) {
    let body = serde_json::to_vec(payload).unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/api/github/webhook", w.api.base))
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header(
            "x-hub-signature-256",
            sign(WEBHOOK_SECRET.as_bytes(), &body),
        )
        .body(body)
        .send()
        .await
        .expect("delivering the webhook");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn issue_comment(pr: u64, comment: &Value) -> Value {
    json!({"action": "created", "repository": {"full_name": "acme/shop"},
        "issue": {"number": pr, "pull_request": {}}, "comment": comment})
}

async fn review_loop(backend: Backend) {
    let w = World::start(WorldOptions::new(backend)).await;
    let project = w.project;

    // Ticket → pull request (the agent opens it on the fake GitHub).
    let ticket = w.create_ticket("Add greeting").await;
    let queued = w.start_ticket(ticket).await;
    let job = w.wait_job_finished(queued.job_id).await;
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    let t = w.ticket(ticket).await;
    assert_eq!(t["column_id"], "in_review", "{t}");
    let pr = t["pr_number"].as_u64().expect("a pull request number");
    assert_eq!(w.gh.pulls_from(&branch(ticket)).len(), 1);

    // A reviewer comments; GitHub delivers the webhook; a review job is enqueued at once.
    let comment =
        w.gh.add_issue_comment(pr, "alice", "Please rename greet to welcome.");
    let comment_id = comment["id"].as_i64().unwrap();
    let sent = Instant::now();
    let (status, v) = deliver(&w, "issue_comment", "e2e-1", &issue_comment(pr, &comment)).await;
    let webhook_latency = sent.elapsed();
    assert_eq!(status, StatusCode::OK, "{v}");
    let ids = v["enqueued_job_ids"].as_array().expect("job ids").clone();
    assert_eq!(ids.len(), 1, "{v}");
    let review_id: Uuid = ids[0].as_str().unwrap().parse().unwrap();
    eprintln!("reviewer comment -> review job enqueued via webhook: {webhook_latency:?}");

    // The operator runs it as a review AgentJob; the agent replies on the pull request.
    let job = w.wait_job_finished(review_id).await;
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    assert_eq!(
        (job.kind, job.pr_number, job.github_comment_id),
        (JobKind::Review, Some(pr as i64), Some(comment_id))
    );
    let aj = w.wait_reported(review_id).await;
    assert_eq!(aj.spec.kind, AgentJobKind::Review);
    assert_eq!(
        aj.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Succeeded)
    );
    let replies: Vec<String> =
        w.gh.comments()
            .into_iter()
            .filter(|(n, _)| *n == pr)
            .map(|(_, body)| body)
            .collect();
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(replies[0].ends_with(BOT_SIGNATURE), "{replies:?}");

    // The comment is addressed; the bot's reply, delivered too, enqueues nothing.
    let db = &w.api_state().db;
    assert_eq!(
        db.review_comment_addressed(project, pr as i32, comment_id)
            .await
            .unwrap(),
        Some(true)
    );
    let reply =
        w.gh.state
            .lock()
            .unwrap()
            .issue_comments
            .last()
            .unwrap()
            .1
            .clone();
    let (status, v) = deliver(&w, "issue_comment", "e2e-2", &issue_comment(pr, &reply)).await;
    assert_eq!(
        (status, &v["enqueued_job_ids"]),
        (StatusCode::OK, &json!([]))
    );

    // The review page shows the conversation.
    let page = w
        .api
        .ok(
            reqwest::Method::GET,
            &format!("/api/projects/{project}/tickets/{ticket}/review"),
            None,
        )
        .await;
    let authors: Vec<&str> = page["comments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["author"].as_str().unwrap())
        .collect();
    assert_eq!(authors, ["alice", "terarchitect-bot"], "{page}");
    assert_eq!(page["pr_state"], "open");

    // The pull request is merged on GitHub; the poller's next cycle finishes the ticket.
    w.gh.merge_pull(pr);
    let report = w
        .api_state()
        .review
        .poll_once()
        .await
        .expect("a poll cycle");
    assert_eq!((report.done, report.enqueued), (1, 0), "{report:?}");
    let t = w.ticket(ticket).await;
    assert_eq!(
        (&t["column_id"], &t["status"]),
        (&json!("done"), &json!("completed"))
    );
    let jobs = w.api.jobs(project, ticket).await;
    assert_eq!(jobs.len(), 2, "one ticket job and one review job: {jobs:?}");
    w.assert_reports(2, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_loop_on_sqlite() {
    review_loop(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_loop_on_postgres() {
    review_loop(Backend::Postgres).await;
}
