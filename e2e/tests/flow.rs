//! The whole flow, ticket to pull request: the real api-server, the real operator executable
//! against the fake Kubernetes API server, and the real agent executable in the "pods", with a
//! fake Director LLM, OpenCode server and GitHub API and a local Git remote. See
//! `e2e/README.md` for the list of scenarios.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use reqwest::{Method, StatusCode};
use serde_json::json;
use terarchitect_api_server::testing::Backend;
use terarchitect_e2e::*;
use terarchitect_fake_apiserver::{Cluster, RequestMatcher, Verb};
use terarchitect_operator::crd::{AgentJob, AgentJobKind, FailureReason, Phase};
use terarchitect_test_fakes::answers;
use terarchitect_worker_api::{AgentOutcome, JobKind, JobStatus};
use uuid::Uuid;

fn phase_reason(aj: &AgentJob) -> (Option<Phase>, Option<FailureReason>) {
    let s = aj.status.clone().unwrap_or_default();
    (s.phase, s.reason)
}

fn message(aj: &AgentJob) -> String {
    aj.status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default()
}

fn job_condition(w: &World, id: Uuid, type_: &str) -> Option<String> {
    w.job(id)?
        .status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| c.reason.unwrap_or_default())
}

/// Scenario 1: a ticket moved to In Progress ends In Review with its pull request, the queue job
/// completed once, and the worker's commits on `ticket-<id>`.
async fn ticket_to_pull_request(backend: Backend) {
    let w = World::start(WorldOptions::new(backend)).await;
    let ticket = w.create_ticket("Add greeting").await;
    let queued = w.start_ticket(ticket).await;
    assert_eq!(queued.kind, JobKind::Ticket);

    let job = w.wait_job_finished(queued.job_id).await;
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    assert_eq!(job.attempt, 1);
    assert_eq!(job.fail_reason, None);

    // The ticket is in review with the pull request the agent opened on the fake GitHub.
    let t = w.ticket(ticket).await;
    assert_eq!(t["column_id"], "in_review", "{t}");
    assert_eq!(t["status"], "completed", "{t}");
    let pulls = w.gh.pulls_from(&branch(ticket));
    assert_eq!(pulls.len(), 1, "{pulls:?}");
    assert_eq!(t["pr_number"], pulls[0]["number"], "{t}");
    assert_eq!(t["pr_url"], pulls[0]["html_url"], "{t}");
    assert_eq!(pulls[0]["base"]["ref"], "main");
    assert_eq!(pulls[0]["title"], "Add greeting");
    let body = pulls[0]["body"].as_str().unwrap_or_default();
    assert!(body.contains("## What was accomplished"), "{body}");

    // The branch carries the worker's commit on top of main, without plan or scratch files.
    let files = w.git.files(&branch(ticket));
    assert!(
        files.contains(&"src/greeting_1.txt".to_owned()),
        "{files:?}"
    );
    assert!(
        files
            .iter()
            .all(|f| !f.starts_with("plan/") && !f.starts_with(".terarchitect/")),
        "{files:?}"
    );
    let log = w.git.log(&branch(ticket));
    assert_eq!(
        log.first().map(String::as_str),
        Some("Add greeting feature"),
        "{log:?}"
    );
    assert_eq!(
        log.last().map(String::as_str),
        Some("Initial commit"),
        "{log:?}"
    );

    // The agent's steps reached the api-server.
    let steps = w.steps(ticket).await;
    for step in [
        "session_started",
        "plan_approved",
        "worker_turn_1",
        "task_complete",
        "branch_pushed",
        "pr_opened",
    ] {
        assert!(steps.iter().any(|s| s == step), "{step} in {steps:?}");
    }

    // Kubernetes: one AgentJob, Succeeded and reported once; one Job, complete; one pod run.
    let aj = w.wait_reported(queued.job_id).await;
    assert_eq!(phase_reason(&aj), (Some(Phase::Succeeded), None));
    assert_eq!(aj.spec.kind, AgentJobKind::Ticket);
    assert_eq!(aj.spec.ticket_id, ticket.to_string());
    assert_eq!(aj.spec.repo_url, w.git.url());
    assert_eq!(aj.spec.attempt, Some(1));
    w.assert_reported_once(queued.job_id).await;
    assert_eq!(
        job_condition(&w, queued.job_id, "Complete").as_deref(),
        Some("CompletionsReached")
    );
    assert_eq!(w.job_creations(queued.job_id), 1);
    let exits = w.runner.stats.exits_of(&ticket.to_string());
    assert_eq!(exits.len(), 1, "{exits:?}");
    assert_eq!((exits[0].code, exits[0].cancelled), (0, false));

    // Secrets reached the agent through the claim's Secret, never in the Job spec.
    let env = &w.runner.stats.envs_of(&ticket.to_string())[0];
    assert_eq!(env["GITHUB_TOKEN"], GH_TOKEN);
    // The agent held its run's token, never the operator's worker key, and its Secret is gone
    // now that the outcome is reported.
    let run_token = &env["TERARCHITECT_WORKER_API_KEY"];
    assert!(!run_token.is_empty() && run_token != WORKER_TOKEN);
    let secret = format!("{}-env", agentjob_name(queued.job_id));
    let gone = w
        .k8s
        .wait_for(TIMEOUT, |c| {
            c.get::<Secret>(NS, &secret).is_none().then_some(())
        })
        .await;
    assert!(gone.is_some(), "{secret} remains after the report");
    for log in w.operator_logs() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(!text.is_empty(), "{} is empty", log.display());
        assert!(
            !text.contains(run_token.as_str()),
            "the run token in {}",
            log.display()
        );
    }
    assert_eq!(env["AGENT_API_KEY"], AGENT_KEY);
    assert_eq!(env["JOB_ID"], queued.job_id.to_string());
    assert_eq!(env["JOB_KIND"], "ticket");
    let spec = serde_json::to_string(&w.job(queued.job_id).unwrap()).unwrap();
    for secret in [GH_TOKEN, WORKER_TOKEN, AGENT_KEY, WORKER_KEY] {
        assert!(!spec.contains(secret), "a secret in the Job spec");
    }
    w.assert_reports(1, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_ticket_to_pull_request_on_sqlite() {
    ticket_to_pull_request(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_ticket_to_pull_request_on_postgres() {
    ticket_to_pull_request(Backend::Postgres).await;
}

/// Scenario 2: a review job enqueued through the api-server's review endpoint works on the pull
/// request's branch, replies to the reviewer and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_review_job_replies_on_the_pull_request_branch() {
    let w = World::start(WorldOptions::new(Backend::Sqlite)).await;
    let ticket = w.create_ticket("Add greeting").await;
    // An earlier run's work: the ticket's branch and its open pull request #7.
    w.git.push_branch(&branch(ticket), "greet.txt");
    w.gh.add_pull(7, &branch(ticket));
    let before = w.git.rev(&branch(ticket)).expect("the branch exists");

    let (status, queued) = w
        .api
        .call(
            Method::POST,
            &format!("/api/projects/{}/tickets/{ticket}/review-jobs", w.project),
            Some(
                json!({"pr_number": 7, "comment_body": "Please rename greet to welcome.",
                "github_comment_id": 555}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{queued}");
    assert_eq!(queued["kind"], "review");
    let id: Uuid = queued["job_id"].as_str().unwrap().parse().unwrap();

    let job = w.wait_job_finished(id).await;
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    assert_eq!(
        (job.kind, job.pr_number, job.attempt),
        (JobKind::Review, Some(7), 1)
    );

    // The AgentJob and the pod carried the review.
    let aj = w.wait_reported(id).await;
    assert_eq!(phase_reason(&aj), (Some(Phase::Succeeded), None));
    assert_eq!(aj.spec.kind, AgentJobKind::Review);
    let review = aj.spec.review.clone().expect("spec.review");
    assert_eq!(
        (
            review.pr_number,
            review.comment_body.as_str(),
            review.github_comment_id
        ),
        (7, "Please rename greet to welcome.", Some(555))
    );
    let env = &w.runner.stats.envs_of(&ticket.to_string())[0];
    assert_eq!(
        (
            env["JOB_KIND"].as_str(),
            env["PR_NUMBER"].as_str(),
            env["COMMENT_BODY"].as_str()
        ),
        ("review", "7", "Please rename greet to welcome.")
    );

    // The reply, signed, on the pull request; the branch fast-forwarded; no new pull request.
    let comments = w.gh.comments();
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert_eq!(comments[0].0, 7);
    assert!(
        comments[0].1.ends_with("<!-- terarchitect-bot -->"),
        "{comments:?}"
    );
    assert_eq!(w.gh.state.lock().unwrap().created, 0);
    // One commit of the review's work (its message is the Director's summary) on the PR head.
    let log = w.git.log(&branch(ticket));
    assert_eq!(
        log,
        [
            "Added greet() with unit tests; all tests pass.",
            "Earlier work",
            "Initial commit"
        ]
    );
    let history = w.git.lines(&["rev-list", &branch(ticket)]);
    assert_ne!(history[0], before, "the branch moved");
    assert!(
        history.contains(&before),
        "a fast-forward of the earlier head"
    );
    let files = w.git.files(&branch(ticket));
    assert!(
        files.contains(&"greet.txt".to_owned()) && files.contains(&"src/greeting_1.txt".to_owned()),
        "{files:?}"
    );
    let steps = w.steps(ticket).await;
    for step in [
        "review_started",
        "branch_checked_out",
        "review_complete",
        "pr_comment_posted",
    ] {
        assert!(steps.iter().any(|s| s == step), "{step} in {steps:?}");
    }
    assert_eq!(w.ticket(ticket).await["column_id"], "in_review");
    w.assert_reported_once(id).await;
    w.assert_reports(1, 0).await;
}

/// Scenario 3: an agent failure (the Director LLM breaks its answer contract; the agent exits
/// non-zero) fails the queue job with the agent's reason, and the ticket can run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_agent_failure_fails_the_job_and_the_ticket_can_run_again() {
    let w = World::start(WorldOptions::new(Backend::Sqlite)).await;
    let ticket = w.create_ticket("Add greeting").await;
    w.llm
        .set_fallback_for(&ticket.to_string(), Some(answers::MALFORMED));
    let queued = w.start_ticket(ticket).await;

    let job = w.wait_job_finished(queued.job_id).await;
    assert_eq!(job.status, JobStatus::Failed, "{job:?}");
    assert_eq!(
        job.fail_reason.as_deref(),
        Some("DirectorFailed"),
        "{job:?}"
    );
    let fail_message = job.fail_message.clone().unwrap_or_default();
    assert!(fail_message.contains("broke the JSON contract"), "{job:?}");

    let aj = w.wait_reported(queued.job_id).await;
    assert_eq!(
        phase_reason(&aj),
        (Some(Phase::Failed), Some(FailureReason::AgentFailed))
    );
    assert!(
        message(&aj).starts_with("DirectorFailed: "),
        "{}",
        message(&aj)
    );
    w.assert_reported_once(queued.job_id).await;
    assert!(job_condition(&w, queued.job_id, "Failed").is_some());
    let exits = w.runner.stats.exits_of(&ticket.to_string());
    assert_eq!(exits.len(), 1);
    assert_eq!(exits[0].code, AgentOutcome::DirectorFailed.exit_code());
    assert_eq!(
        w.steps(ticket).await.last().map(String::as_str),
        Some("director_failed")
    );
    assert!(w.git.rev(&branch(ticket)).is_none(), "nothing was pushed");
    assert!(w.gh.pulls().is_empty());

    // Not stranded: nothing holds the ticket, and moving it again runs it again.
    let t = w.ticket(ticket).await;
    assert_eq!(t["column_id"], "in_progress", "{t}");
    let jobs = w.api.jobs(w.project, ticket).await;
    assert!(
        jobs.iter()
            .all(|j| matches!(j.status, JobStatus::Completed | JobStatus::Failed)),
        "{jobs:?}"
    );
    assert!(!jobs[0].cancel_requested);
    w.llm.set_fallback_for(&ticket.to_string(), None);
    w.move_ticket(ticket, "backlog").await;
    let retry = w.start_ticket(ticket).await;
    assert_ne!(retry.job_id, queued.job_id);
    let job = w.wait_job_finished(retry.job_id).await;
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    assert_eq!(w.ticket(ticket).await["column_id"], "in_review");
    assert_eq!(w.gh.pulls_from(&branch(ticket)).len(), 1);
    w.wait_reported(retry.job_id).await;
    w.assert_reports(1, 1).await;
}

/// Scenario 4a: the Job's deadline (WORKER_TIMEOUT_SEC + DEADLINE_MARGIN_SEC of the operator)
/// stops an agent stuck in a worker turn: the run fails with DeadlineExceeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4a_job_deadline_fails_the_run_with_deadline_exceeded() {
    let w = World::start(
        WorldOptions::new(Backend::Sqlite)
            .operator_env("WORKER_TIMEOUT_SEC", "4")
            .operator_env("DEADLINE_MARGIN_SEC", "1"),
    )
    .await;
    let ticket = w.create_ticket("Add greeting").await;
    // Its worker turns never end: only the deadline can stop the agent.
    w.oc.hold(&ticket.to_string());
    let queued = w.start_ticket(ticket).await;

    let job = w.wait_job_finished(queued.job_id).await;
    assert_eq!(job.status, JobStatus::Failed, "{job:?}");
    assert_eq!(
        job.fail_reason.as_deref(),
        Some("DeadlineExceeded"),
        "{job:?}"
    );

    let aj = w.wait_reported(queued.job_id).await;
    assert_eq!(
        phase_reason(&aj),
        (Some(Phase::Failed), Some(FailureReason::DeadlineExceeded))
    );
    assert_eq!(message(&aj), "the run exceeded its deadline of 5s");
    let k8s_job = w.job(queued.job_id).expect("the Job is kept");
    assert_eq!(k8s_job.spec.unwrap().active_deadline_seconds, Some(5));
    assert_eq!(
        job_condition(&w, queued.job_id, "Failed").as_deref(),
        Some("DeadlineExceeded")
    );
    // The agent was killed while it ran.
    let exits = eventually("the agent to be stopped", TIMEOUT, || async {
        let e = w.runner.stats.exits_of(&ticket.to_string());
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert!(exits[0].cancelled, "{exits:?}");
    assert_ne!(w.ticket(ticket).await["column_id"], "in_review");
    assert!(w.gh.pulls().is_empty());
    w.assert_reported_once(queued.job_id).await;
    w.assert_reports(0, 1).await;
}

/// Scenario 4b: the agent's own time limit (the WORKER_TIMEOUT_SEC setting) ends a stuck worker
/// turn; the agent exits TimeLimit, which the operator reports as DeadlineExceeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4b_agent_time_limit_fails_the_run_with_deadline_exceeded() {
    let w =
        World::start(WorldOptions::new(Backend::Sqlite).setting("WORKER_TIMEOUT_SEC", "1")).await;
    let ticket = w.create_ticket("Add greeting").await;
    w.oc.hold(&ticket.to_string());
    let queued = w.start_ticket(ticket).await;

    let job = w.wait_job_finished(queued.job_id).await;
    assert_eq!(job.status, JobStatus::Failed, "{job:?}");
    assert_eq!(
        job.fail_reason.as_deref(),
        Some("DeadlineExceeded"),
        "{job:?}"
    );
    let aj = w.wait_reported(queued.job_id).await;
    assert_eq!(
        phase_reason(&aj),
        (Some(Phase::Failed), Some(FailureReason::DeadlineExceeded))
    );
    assert!(message(&aj).starts_with("TimeLimit: "), "{}", message(&aj));
    assert!(
        message(&aj).contains("WORKER_TIMEOUT_SEC"),
        "{}",
        message(&aj)
    );
    let exits = w.runner.stats.exits_of(&ticket.to_string());
    assert_eq!(exits.len(), 1);
    assert_eq!(
        (exits[0].code, exits[0].cancelled),
        (AgentOutcome::TimeLimit.exit_code(), false)
    );
    assert_eq!(w.oc.held(&ticket.to_string()), 1);
    assert!(w.oc.aborted().len() == 1, "the worker session was aborted");
    assert_eq!(
        w.steps(ticket).await.last().map(String::as_str),
        Some("time_limit")
    );
    w.assert_reported_once(queued.job_id).await;
    w.assert_reports(0, 1).await;
}

/// Scenario 5: cancelling the ticket through the api-server while its agent runs deletes the Job
/// within seconds; the AgentJob ends Cancelled and the queue job failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s5_cancellation_from_the_api_deletes_the_job() {
    // The agent itself would notice the cancellation too; a long poll interval leaves it to the
    // operator (the agent's own path has its tests in agent/tests).
    let w =
        World::start(WorldOptions::new(Backend::Sqlite).agent_env("AGENT_CANCEL_POLL_SEC", "3600"))
            .await;
    let ticket = w.create_ticket("Add greeting").await;
    w.oc.hold(&ticket.to_string());
    let queued = w.start_ticket(ticket).await;
    assert!(w.oc.wait_held(&ticket.to_string(), TIMEOUT).await);
    w.wait_agentjob(queued.job_id, "Running", |aj| aj.phase() == Phase::Running)
        .await;

    let asked = Instant::now();
    w.cancel(ticket).await;
    let name = agentjob_name(queued.job_id);
    let gone = w
        .k8s
        .wait_for(TIMEOUT, |c: &Cluster| {
            c.get::<k8s_openapi::api::batch::v1::Job>(NS, &name)
                .is_none()
                .then_some(())
        })
        .await;
    let took = asked.elapsed();
    assert!(gone.is_some(), "the Job was deleted");
    assert!(
        took < Duration::from_secs(10),
        "the Job was deleted after {took:?}"
    );
    eprintln!("cancellation: Job deleted {took:?} after the cancel request");

    let aj = w.wait_reported(queued.job_id).await;
    assert_eq!(
        phase_reason(&aj),
        (Some(Phase::Cancelled), Some(FailureReason::Cancelled))
    );
    assert!(aj.spec.cancel);
    assert_eq!(message(&aj), "the ticket's cancellation was requested");
    let job = w.wait_job_finished(queued.job_id).await;
    assert_eq!(job.status, JobStatus::Failed, "{job:?}");
    assert_eq!(job.fail_reason.as_deref(), Some("Cancelled"), "{job:?}");
    assert!(job.cancel_requested);
    let deletes = w
        .k8s
        .requests_matching(&RequestMatcher::new(Verb::Delete, "jobs").name(&name));
    assert!(!deletes.is_empty(), "the operator deleted the Job");

    // The agent was stopped (SIGTERM) in the middle of its turn; nothing was finalized.
    let exits = eventually("the agent to be stopped", TIMEOUT, || async {
        let e = w.runner.stats.exits_of(&ticket.to_string());
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert!(exits[0].cancelled, "{exits:?}");
    assert!(w.gh.pulls().is_empty());
    assert!(w.git.rev(&branch(ticket)).is_none());
    assert_ne!(w.ticket(ticket).await["column_id"], "in_review");
    w.assert_reported_once(queued.job_id).await;
    w.assert_reports(0, 1).await;
}

/// Scenario 6: the operator is killed (SIGKILL) while the agent runs, and again while its Job
/// finishes: no second Job or pod, the queue job keeps its claim, the outcome is reported once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s6_operator_restarts_mid_run_report_the_outcome_once() {
    let mut w = World::start(
        WorldOptions::new(Backend::Sqlite)
            .operator_env("LEADER_ELECTION", "true")
            .operator_env("LEADER_LEASE_SEC", "3"),
    )
    .await;
    let ticket = w.create_ticket("Add greeting").await;
    w.oc.hold(&ticket.to_string());
    let queued = w.start_ticket(ticket).await;
    assert!(w.oc.wait_held(&ticket.to_string(), TIMEOUT).await);
    let running = w
        .wait_agentjob(queued.job_id, "Running", |aj| aj.phase() == Phase::Running)
        .await;
    let job_uid = w.job(queued.job_id).unwrap().metadata.uid.unwrap();

    // 1. Killed mid-run; a new replica takes over the Lease and adopts the run.
    w.kill_operator();
    w.start_operator().await;
    let op = w.operator();
    eventually("the new operator to lead", TIMEOUT, || async move {
        (op.metric("terarchitect_operator_leader").await == 1.0).then_some(())
    })
    .await;
    let before = w.api.job(queued.job_id).await.lease_expires_at;
    eventually(
        "the new operator to heartbeat the claim",
        TIMEOUT,
        || async {
            let j = w.api.job(queued.job_id).await;
            (j.lease_expires_at > before).then_some(())
        },
    )
    .await;

    // 2. Killed again once the agent has finished, before its Job does: the Job finishes with
    // no operator running.
    let mut gate = w.gate_exits();
    w.oc.release(&ticket.to_string());
    let (exit, release) = gate.next().await;
    assert_eq!(exit.code, 0, "{exit:?}");
    w.kill_operator();
    release.release();
    w.k8s
        .wait_for(TIMEOUT, |_c: &Cluster| {
            job_condition(&w, queued.job_id, "Complete").map(|_| ())
        })
        .await
        .expect("the Job completed");
    assert!(
        !w.agentjob(queued.job_id).unwrap().is_finished(),
        "no operator saw it yet"
    );

    // 3. A third replica reports the outcome.
    w.start_operator().await;
    let aj = w.wait_reported(queued.job_id).await;
    assert_eq!(phase_reason(&aj), (Some(Phase::Succeeded), None));
    assert_eq!(aj.metadata.uid, running.metadata.uid, "the same AgentJob");
    assert_eq!(
        w.job(queued.job_id).unwrap().metadata.uid.unwrap(),
        job_uid,
        "the same Job"
    );
    assert_eq!(w.job_creations(queued.job_id), 1, "no duplicate Job");
    assert_eq!(w.job_controller.pods_started(), 1, "no second pod");
    let job = w.wait_job_finished(queued.job_id).await;
    assert_eq!(
        (job.status, job.attempt),
        (JobStatus::Completed, 1),
        "{job:?}"
    );
    assert_eq!(w.ticket(ticket).await["column_id"], "in_review");
    w.assert_reported_once(queued.job_id).await;
    w.assert_reports(1, 0).await;
    assert_eq!(
        w.operator()
            .metric("terarchitect_operator_reports_total{result=\"recorded\"}")
            .await,
        1.0
    );
}

/// Scenario 7: the api-server is restarted (same database and port) while the agent runs, and is
/// down while the Job finishes: the run goes on, and its outcome is reported once the API is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s7_api_server_restart_and_outage_report_the_outcome_once() {
    let mut w = World::start(WorldOptions::new(Backend::Postgres)).await;
    let ticket = w.create_ticket("Add greeting").await;
    w.oc.hold(&ticket.to_string());
    let queued = w.start_ticket(ticket).await;
    assert!(w.oc.wait_held(&ticket.to_string(), TIMEOUT).await);
    w.wait_agentjob(queued.job_id, "Running", |aj| aj.phase() == Phase::Running)
        .await;

    // 1. Restart mid-run: the claim survives and the operator's heartbeats reach the new server.
    w.stop_api().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    w.start_api().await;
    let before = w.api.job(queued.job_id).await;
    assert_eq!((before.status, before.attempt), (JobStatus::Running, 1));
    eventually("a heartbeat to the restarted server", TIMEOUT, || async {
        let j = w.api.job(queued.job_id).await;
        (j.lease_expires_at > before.lease_expires_at).then_some(())
    })
    .await;

    // 2. The agent finishes its work (through the restarted server); the API goes down before
    // its Job finishes.
    let mut gate = w.gate_exits();
    w.oc.release(&ticket.to_string());
    let (exit, release) = gate.next().await;
    assert_eq!(exit.code, 0, "{exit:?}");
    assert_eq!(w.ticket(ticket).await["column_id"], "in_review");
    w.stop_api().await;
    release.release();
    let log = w.operator_logs().pop().unwrap();
    eventually("a failed report while the API is down", TIMEOUT, || async {
        let failed =
            terarchitect_e2e::process::log_events(&log, "cannot report the outcome yet; retrying");
        (!failed.is_empty()).then_some(())
    })
    .await;
    let aj = w.agentjob(queued.job_id).unwrap();
    assert!(
        aj.is_finished() && !aj.status.unwrap().reported,
        "finished, not reported"
    );

    // 3. The API is back: the outcome is reported, once.
    w.start_api().await;
    let aj = w.wait_reported(queued.job_id).await;
    assert_eq!(phase_reason(&aj), (Some(Phase::Succeeded), None));
    let job = w.wait_job_finished(queued.job_id).await;
    assert_eq!(
        (job.status, job.attempt),
        (JobStatus::Completed, 1),
        "{job:?}"
    );
    assert_eq!(w.job_creations(queued.job_id), 1);
    assert_eq!(w.gh.pulls_from(&branch(ticket)).len(), 1);
    w.assert_reported_once(queued.job_id).await;
    w.assert_reports(1, 0).await;
}

/// Scenario 8: 50 tickets moved at once with MAX_CONCURRENT_AGENTS=4: the fake cluster never
/// holds more than 4 unfinished Jobs (sampled on every change of its store), and all 50 runs
/// complete with their pull requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s8_fifty_tickets_never_exceed_four_agents() {
    const TICKETS: usize = 50;
    const MAX: usize = 4;
    // The operator's own fallback stays 1: reaching 4 proves the setting is read.
    let w = World::start(WorldOptions::new(Backend::Sqlite).max_concurrent(MAX as u32)).await;
    w.llm.set_record(false);
    w.oc.set_record(false);
    let mut tickets = Vec::new();
    for i in 0..TICKETS {
        tickets.push(w.create_ticket(&format!("Ticket {i}")).await);
    }

    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (cluster, done) = (w.k8s.cluster(), done.clone());
        tokio::spawn(async move {
            let (mut peak_jobs, mut peak_live, mut samples) = (0, 0, 0usize);
            cluster
                .wait_for(Duration::from_secs(600), |c: &Cluster| {
                    samples += 1;
                    peak_jobs = peak_jobs.max(World::active_jobs(c));
                    peak_live = peak_live.max(World::live_agentjobs(c));
                    done.load(Ordering::SeqCst).then_some(())
                })
                .await;
            (peak_jobs, peak_live, samples)
        })
    };

    let started = Instant::now();
    let moves = tickets.iter().map(|t| w.move_ticket(*t, "in_progress"));
    futures::future::join_all(moves).await;
    let reported = w
        .k8s
        .wait_for(Duration::from_secs(600), |c: &Cluster| {
            let all: Vec<AgentJob> = c.list(NS);
            let n = all
                .iter()
                .filter(|a| a.is_finished() && a.status.as_ref().is_some_and(|s| s.reported))
                .count();
            (n == TICKETS).then_some(())
        })
        .await;
    let took = started.elapsed();
    done.store(true, Ordering::SeqCst);
    let (peak_jobs, peak_live, samples) = sampler.await.unwrap();
    assert!(reported.is_some(), "all {TICKETS} runs reported");
    eprintln!(
        "{TICKETS} tickets in {took:?}: peak {peak_jobs} active Jobs, {peak_live} live AgentJobs, \
         {} agents at once ({samples} samples)",
        w.runner.stats.peak.load(Ordering::SeqCst)
    );

    assert!(
        peak_jobs <= MAX && peak_live <= MAX,
        "{peak_jobs} / {peak_live}"
    );
    assert_eq!(peak_jobs, MAX, "the 4 slots were used");
    let agents = w.runner.stats.peak.load(Ordering::SeqCst);
    assert!(agents <= MAX, "{agents} agents ran at once");
    assert_eq!(w.runner.stats.started.load(Ordering::SeqCst), TICKETS);
    assert_eq!(
        w.k8s
            .requests_matching(&RequestMatcher::new(Verb::Create, "jobs").namespace(NS))
            .len(),
        TICKETS,
        "one Job per ticket"
    );
    for t in &tickets {
        let jobs = w.api.jobs(w.project, *t).await;
        assert_eq!(jobs.len(), 1);
        assert_eq!(
            (jobs[0].status, jobs[0].attempt),
            (JobStatus::Completed, 1),
            "{jobs:?}"
        );
        assert_eq!(w.gh.pulls_from(&branch(*t)).len(), 1);
        assert!(w.git.rev(&branch(*t)).is_some());
    }
    let columns = futures::future::join_all(tickets.iter().map(|t| w.ticket(*t))).await;
    assert!(columns.iter().all(|t| t["column_id"] == "in_review"));
    w.assert_reports(TICKETS, 0).await;
}
