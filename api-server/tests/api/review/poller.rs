//! The PR poller against the fake GitHub: merged or approved pull requests finish their ticket,
//! a new human comment enqueues exactly one review job, bot replies are ignored, every page is
//! read, 304 Not Modified is honoured, the rate limit stops it, and one replica polls at a time.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use terarchitect_api_server::review::store::{release_lease, try_lease};
use terarchitect_api_server::review::{BOT_SIGNATURE, CycleReport};
use terarchitect_test_fakes::Limited;

use super::{ReviewWorld, metrics_text};
use crate::common::*;

async fn poll(w: &ReviewWorld) -> CycleReport {
    w.srv
        .server
        .state
        .review
        .poll_once()
        .await
        .expect("a poll cycle")
}

async fn merged_pull_request_finishes_the_ticket(backend: Backend) {
    let w = ReviewWorld::start(backend).await;
    let report = poll(&w).await;
    assert_eq!((report.prs, report.done), (1, 0));
    assert_eq!(w.column(w.tid).await, "in_review");
    w.gh.merge_pull(100);
    let report = poll(&w).await;
    assert_eq!((report.prs, report.done), (1, 1), "{report:?}");
    let (_, t) = w.api.get(&w.path(w.tid, "")).await;
    assert_eq!(
        (&t["column_id"], &t["status"]),
        (&json!("done"), &json!("completed"))
    );
    // Done tickets are no longer polled.
    assert_eq!(poll(&w).await.prs, 0);
}

async fn approved_pull_request_finishes_the_ticket(backend: Backend) {
    let w = ReviewWorld::start(backend).await;
    w.gh.add_review(100, "alice", "APPROVED", "");
    w.gh.add_review(100, "bob", "CHANGES_REQUESTED", "Not yet");
    poll(&w).await;
    assert_eq!(
        w.column(w.tid).await,
        "in_review",
        "bob still wants changes"
    );
    // Bob approves; a later comment-only review does not hide the approvals (the original
    // looked at the last review only).
    w.gh.add_review(100, "bob", "APPROVED", "");
    w.gh.add_review(100, "carol", "COMMENTED", "Nice");
    let report = poll(&w).await;
    assert_eq!(report.done, 1, "{report:?}");
    assert_eq!(w.column(w.tid).await, "done");
}

async fn a_human_comment_enqueues_exactly_one_review_job(backend: Backend) {
    let w = ReviewWorld::start(backend).await;
    let c =
        w.gh.add_issue_comment(100, "alice", "Please rename greet to welcome.");
    let cid = c["id"].as_i64().unwrap();
    let report = poll(&w).await;
    assert_eq!(report.enqueued, 1, "{report:?}");
    poll(&w).await;
    let jobs = w.review_jobs(w.tid).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(
        (
            &jobs[0]["status"],
            &jobs[0]["pr_number"],
            &jobs[0]["comment_body"],
            &jobs[0]["github_comment_id"]
        ),
        (
            &json!("pending"),
            &json!(100),
            &json!("Please rename greet to welcome."),
            &json!(cid)
        )
    );
    assert_eq!(w.addressed(100, cid).await, Some(false));

    // The agent runs it and replies with the signature: the comment is addressed, the reply
    // is recorded as addressed and never enqueued.
    w.run_next_job(true).await;
    assert_eq!(w.addressed(100, cid).await, Some(true));
    let reply = w.gh.add_issue_comment(
        100,
        "terarchitect-bot",
        &format!("Renamed.\n\n{BOT_SIGNATURE}"),
    );
    let report = poll(&w).await;
    assert_eq!(report.enqueued, 0, "{report:?}");
    assert_eq!(
        w.addressed(100, reply["id"].as_i64().unwrap()).await,
        Some(true)
    );
    assert_eq!(w.review_jobs(w.tid).await.len(), 1);

    // Two new comments (a line comment and a review body): the newest first, one at a time.
    let line = w.gh.add_line_comment(100, "alice", "Typo here.");
    let review =
        w.gh.add_review(100, "bob", "COMMENTED", "Add a test for empty names.");
    assert_eq!(poll(&w).await.enqueued, 1);
    let jobs = w.review_jobs(w.tid).await;
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0]["github_comment_id"], review["id"]);
    w.run_next_job(true).await;
    assert_eq!(poll(&w).await.enqueued, 1);
    let jobs = w.review_jobs(w.tid).await;
    assert_eq!(jobs[0]["github_comment_id"], line["id"]);
    w.run_next_job(true).await;
    assert_eq!(poll(&w).await.enqueued, 0);
    assert_eq!(w.review_jobs(w.tid).await.len(), 3);
}

async fn a_failing_comment_is_not_retried_forever(backend: Backend) {
    let w = ReviewWorld::start(backend).await;
    w.gh.add_issue_comment(100, "alice", "Impossible request.");
    for _ in 0..3 {
        assert_eq!(poll(&w).await.enqueued, 1);
        w.run_next_job(false).await;
    }
    assert_eq!(poll(&w).await.enqueued, 0, "given up after three failures");
    // A new comment is still handled.
    w.gh.add_issue_comment(100, "alice", "Then just add a README line.");
    assert_eq!(poll(&w).await.enqueued, 1);
}

async fn every_page_is_read(backend: Backend) {
    let w = ReviewWorld::start(backend).await;
    w.gh.state.lock().unwrap().page_cap = Some(2);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            w.gh.add_issue_comment(100, "alice", &format!("comment {i}"))["id"]
                .as_i64()
                .unwrap(),
        );
    }
    for i in 0..3 {
        ids.push(
            w.gh.add_line_comment(100, "bob", &format!("line {i}"))["id"]
                .as_i64()
                .unwrap(),
        );
    }
    w.gh.add_issue_comment(
        100,
        "terarchitect-bot",
        &format!("Earlier reply\n{BOT_SIGNATURE}"),
    );
    let report = poll(&w).await;
    assert_eq!((report.enqueued, report.errors), (1, 0), "{report:?}");
    for id in &ids {
        assert_eq!(
            w.addressed(100, *id).await,
            Some(false),
            "comment {id} was stored"
        );
    }
    let uris: Vec<String> = w.gh.requests().into_iter().map(|r| r.uri).collect();
    assert!(
        uris.iter()
            .any(|u| u.contains("/issues/100/comments") && u.contains("page=3")),
        "{uris:?}"
    );
    assert!(
        uris.iter()
            .any(|u| u.contains("/pulls/100/comments") && u.contains("page=2")),
        "{uris:?}"
    );
    // The newest comment (the last line comment) is the one enqueued.
    let jobs = w.review_jobs(w.tid).await;
    assert_eq!(jobs[0]["github_comment_id"], json!(ids[7]));
}

async fn not_modified_answers_are_honoured(backend: Backend) {
    let w = ReviewWorld::start(backend).await;
    w.gh.state.lock().unwrap().page_cap = Some(1);
    w.gh.add_issue_comment(100, "alice", "one");
    w.gh.add_issue_comment(100, "alice", "two");
    poll(&w).await;
    w.run_next_job(true).await;
    let before = w.gh.state.lock().unwrap().rate_remaining;
    w.gh.clear_requests();
    let report = poll(&w).await;
    assert_eq!(report.not_modified, 1, "{report:?}");
    let seen = w.gh.requests();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|r| r.conditional && r.status == 304),
        "{seen:?}"
    );
    assert_eq!(
        w.gh.state.lock().unwrap().rate_remaining,
        before,
        "304s cost no rate limit"
    );
    // Served from the cache, the older comment is still found and enqueued.
    assert_eq!(report.enqueued, 1);

    // A change is seen at once.
    w.run_next_job(true).await;
    w.gh.clear_requests();
    let c = w.gh.add_issue_comment(100, "alice", "three");
    let report = poll(&w).await;
    assert_eq!((report.not_modified, report.enqueued), (0, 1), "{report:?}");
    assert_eq!(w.review_jobs(w.tid).await[0]["github_comment_id"], c["id"]);
    assert!(
        w.gh.requests()
            .iter()
            .any(|r| r.status == 200 && r.uri.contains("/issues/100/comments"))
    );
}

/// The fake's request count once it has not changed for 300 ms.
async fn settled_request_count(w: &ReviewWorld) -> usize {
    let mut count = w.gh.requests().len();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = w.gh.requests().len();
        if now == count {
            return count;
        }
        count = now;
    }
}

async fn the_rate_limit_stops_the_poller(backend: Backend) {
    let w = ReviewWorld::start(backend).await;
    let second = ticket(&w.api, w.pid, "Second").await;
    w.in_review(second, 101).await;
    w.gh.state.lock().unwrap().limited = Some(Limited {
        status: 403,
        retry_after: None,
    });
    let report = poll(&w).await;
    let wait = report.rate_limited.expect("rate limited");
    assert!(
        wait > Duration::from_secs(3000),
        "{wait:?}: until x-ratelimit-reset"
    );
    // Two pull requests are polled at once: each sent at most its first read. The poller
    // drops the other read when the first answer says "limited", but a read already on the
    // wire may reach the fake a moment later: count once the log has settled.
    let sent = settled_request_count(&w).await;
    assert!(
        (1..=2).contains(&sent),
        "stopped at the first answers: {sent}"
    );
    // No call at all until the reset, from the poller or the UI.
    w.gh.state.lock().unwrap().limited = None;
    assert!(poll(&w).await.rate_limited.is_some());
    let (s, v) = w.api.get(&w.path(w.tid, "/review")).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    assert!(v["detail"].as_str().unwrap().contains("rate limit"), "{v}");
    assert_eq!(w.gh.requests().len(), sent);
    let metrics = metrics_text(&w.srv.url()).await;
    assert!(
        metrics.contains("terarchitect_pr_poll_cycles_total{outcome=\"rate_limited\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("terarchitect_github_requests_total{outcome=\"rate_limited\"}"),
        "{metrics}"
    );

    // A secondary limit with retry-after: back off for that long, then carry on.
    let w = ReviewWorld::start(backend).await;
    w.gh.state.lock().unwrap().limited = Some(Limited {
        status: 429,
        retry_after: Some(1),
    });
    let wait = poll(&w).await.rate_limited.expect("rate limited");
    assert!(wait <= Duration::from_secs(1), "{wait:?}");
    w.gh.state.lock().unwrap().limited = None;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    w.gh.add_issue_comment(100, "alice", "after the pause");
    let report = poll(&w).await;
    assert_eq!(
        (report.rate_limited, report.enqueued),
        (None, 1),
        "{report:?}"
    );
}

async fn one_poller_holds_the_lease(backend: Backend) {
    let w = ReviewWorld::start(backend).await;
    let db = w.srv.db();
    let ttl = Duration::from_secs(60);
    assert!(try_lease(db, "pr-poller", "a", ttl).await.unwrap());
    assert!(!try_lease(db, "pr-poller", "b", ttl).await.unwrap());
    assert!(
        try_lease(db, "pr-poller", "a", ttl).await.unwrap(),
        "renewed by its holder"
    );
    release_lease(db, "pr-poller", "a").await.unwrap();
    assert!(try_lease(db, "pr-poller", "b", ttl).await.unwrap());
    // An expired lease is taken over.
    assert!(
        try_lease(db, "other", "a", Duration::from_millis(1))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(try_lease(db, "other", "b", ttl).await.unwrap());
}

async fn the_background_poller_runs_on_its_interval(backend: Backend) {
    let w = ReviewWorld::start_with(backend, |a| a.pr_poll_sec = 1).await;
    w.gh.add_issue_comment(100, "alice", "Background please.");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while w.review_jobs(w.tid).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the poller enqueued nothing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(w.review_jobs(w.tid).await.len(), 1);
    // A second server on the same database (another replica) does not poll while the first
    // holds the lease.
    if backend == Backend::Postgres {
        let gh_before = w.gh.requests().len();
        let other = TestServer::start_on(
            &w.srv.database_url,
            &TestOptions {
                review: Some(terarchitect_api_server::review::ReviewArgs {
                    github_api_url: w.gh.url.clone(),
                    pr_poll_sec: 1,
                    ..Default::default()
                }),
                ..ready_options()
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let metrics = metrics_text(&format!("http://{}", other.addr)).await;
        assert!(
            !metrics.contains("terarchitect_pr_poll_cycles_total{"),
            "the second replica polled: {metrics}"
        );
        assert!(w.gh.requests().len() > gh_before, "the first keeps polling");
        other.shutdown().await;
    }
}

async fn a_cycle_covers_every_pull_request(backend: Backend) {
    let w = ReviewWorld::start(backend).await;
    let mut tickets = vec![(w.tid, 100)];
    for i in 1..8u64 {
        let t = ticket(&w.api, w.pid, &format!("T{i}")).await;
        w.in_review(t, 100 + i).await;
        tickets.push((t, 100 + i));
    }
    // Two merged, three with a new comment, one closed unmerged, two quiet.
    w.gh.merge_pull(101);
    w.gh.merge_pull(105);
    for n in [102, 103, 107] {
        w.gh.add_issue_comment(n, "alice", &format!("Fix #{n}"));
    }
    w.gh.update_pull(104, json!({"state": "closed"}));
    let report = poll(&w).await;
    assert_eq!(
        (report.prs, report.done, report.enqueued, report.errors),
        (8, 2, 3, 0),
        "{report:?}"
    );
    for (t, n) in tickets {
        let column = w.column(t).await;
        let jobs = w.review_jobs(t).await;
        match n {
            101 | 105 => assert_eq!(column, "done"),
            102 | 103 | 107 => {
                assert_eq!(jobs.len(), 1, "#{n}");
                assert_eq!(jobs[0]["comment_body"], format!("Fix #{n}"));
            }
            _ => assert!(column == "in_review" && jobs.is_empty(), "#{n}"),
        }
    }
}

on_both_backends!(
    a_cycle_covers_every_pull_request,
    merged_pull_request_finishes_the_ticket,
    approved_pull_request_finishes_the_ticket,
    a_human_comment_enqueues_exactly_one_review_job,
    a_failing_comment_is_not_retried_forever,
    every_page_is_read,
    not_modified_answers_are_honoured,
    the_rate_limit_stops_the_poller,
    one_poller_holds_the_lease,
    the_background_poller_runs_on_its_interval,
);
