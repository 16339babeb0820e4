//! The unchanged operator against the fake Kubernetes API server and a real api-server (SQLite):
//! claim → AgentJob → Job → outcome → queue, with restarts, outages, cancellation, finalizers,
//! capacity limits, leader election and bad specs.

mod support;

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use terarchitect_fake_apiserver::{JobOutcome, RequestMatcher, Verb};
use terarchitect_operator::crd::{
    AgentJob, AgentJobKind, CONDITION_SCHEDULED, FailureReason, Phase,
};
use terarchitect_worker_api::{AgentOutcome, JobStatus};

use support::*;

fn finished_and_reported(aj: &AgentJob) -> bool {
    aj.is_finished() && aj.status.as_ref().is_some_and(|s| s.reported)
}

fn owned_by(obj: &impl ResourceExt, owner: &AgentJob) -> bool {
    obj.owner_references()
        .iter()
        .any(|o| Some(&o.uid) == owner.uid().as_ref() && o.kind == "AgentJob")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_ticket_runs_as_a_job_and_its_success_is_reported_once() {
    let h = Harness::start().await;
    let op = h.operator(h.config(&[])).await;
    let project = h.project().await;
    let (ticket, job_id) = h.queued_ticket(project).await;
    let name = agentjob_name(job_id);

    let aj = h
        .wait_agentjob(&name, "success reported", finished_and_reported)
        .await;
    let status = aj.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded));
    assert_eq!(status.reason, None);
    assert_eq!(status.job_name.as_deref(), Some(name.as_str()));
    assert!(status.start_time.is_some() && status.finish_time.is_some());
    for (type_, value) in [
        ("JobCreated", "True"),
        ("Finished", "True"),
        ("Reported", "True"),
    ] {
        assert!(
            status
                .conditions
                .iter()
                .any(|c| c.type_ == type_ && c.status == value),
            "condition {type_}={value} in {:?}",
            status.conditions
        );
    }
    assert_eq!(aj.spec.ticket_id, ticket.to_string());
    assert_eq!(aj.spec.project_id, project.to_string());
    assert_eq!(aj.spec.kind, AgentJobKind::Ticket);
    assert_eq!(
        aj.spec.queue_job_id.as_deref(),
        Some(job_id.to_string().as_str())
    );
    assert!(
        aj.finalizers()
            .contains(&"terarchitect.io/cleanup".to_owned())
    );

    let job = h.finished_job(job_id).await;
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(job.attempt, 1);

    // One Job, owned by the AgentJob, no literal secrets; the claim's env in an owned Secret.
    let k8s_job: Job = h.kube.get(NS, &name).expect("the Job exists");
    assert!(owned_by(&k8s_job, &aj));
    let job_json = serde_json::to_string(&k8s_job).unwrap();
    assert!(!job_json.contains(OPERATOR_GITHUB_TOKEN), "{job_json}");
    let pod = &k8s_job
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    // The claim's env reached the pod through its Secret, which is gone after the report.
    h.wait_until(
        "the env Secret is deleted once the outcome is reported",
        |k| k.get::<Secret>(NS, &format!("{name}-env")).is_none(),
    )
    .await;
    let env = &h.agents.envs(ticket)[0];
    assert_eq!(env["GITHUB_TOKEN"], "ghp_server_token");
    assert_eq!(env["TICKET_ID"], ticket.to_string());
    assert_eq!(env["PROJECT_ID"], project.to_string());
    assert_eq!(env["JOB_ID"], job_id.to_string());
    assert_eq!(env["JOB_KIND"], "ticket");
    assert_eq!(env["TERARCHITECT_API_URL"], h.proxy.url());
    assert_eq!(h.jobs.pods_started(), 1);

    // Exactly one report, recorded; Events tell the story.
    assert_eq!(
        op.metric("terarchitect_operator_reports_total{result=\"recorded\"}")
            .await,
        1.0
    );
    assert_eq!(
        op.metric("terarchitect_operator_reports_total{result=\"already_finished\"}")
            .await,
        0.0
    );
    assert!(
        op.metric("terarchitect_operator_dispatch_latency_seconds_count")
            .await
            >= 1.0
    );
    let reasons = h.event_reasons(&name);
    for reason in ["JobCreated", "Succeeded", "Reported"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "{reason} in {reasons:?}"
        );
    }
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_failures_are_reported_with_the_agents_reason() {
    let h = Harness::start().await;
    let op = h.operator(h.config(&[])).await;
    let project = h.project().await;
    let pushed = h.ticket(project).await;
    h.agents.set(
        pushed,
        Behaviour::Exit {
            code: AgentOutcome::PushFailed.exit_code(),
            message: Some(AgentOutcome::PushFailed.message_line("remote rejected the push")),
            after: Duration::from_millis(50),
        },
    );
    let oom = h.ticket(project).await;
    h.agents.set(oom, Behaviour::Pod(JobOutcome::oom_killed()));
    let push_job = h.start_ticket(project, pushed).await;
    let oom_job = h.start_ticket(project, oom).await;

    let aj = h
        .wait_agentjob(
            &agentjob_name(push_job),
            "failure reported",
            finished_and_reported,
        )
        .await;
    let status = aj.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Failed));
    assert_eq!(status.reason, Some(FailureReason::AgentFailed));
    assert!(
        status
            .message
            .as_deref()
            .unwrap()
            .contains("remote rejected"),
        "{status:?}"
    );
    let job = h.finished_job(push_job).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.fail_reason.as_deref(), Some("PushFailed"));

    let aj = h
        .wait_agentjob(
            &agentjob_name(oom_job),
            "OOM reported",
            finished_and_reported,
        )
        .await;
    assert_eq!(aj.status.unwrap().reason, Some(FailureReason::OomKilled));
    let job = h.finished_job(oom_job).await;
    assert_eq!(job.fail_reason.as_deref(), Some("OOMKilled"));
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_that_cannot_start_fail_with_the_reason_or_go_back_to_the_queue() {
    let h = Harness::start().await;
    let op = h.operator(h.config(&[])).await;
    let project = h.project().await;
    let pull = h.ticket(project).await;
    h.agents
        .set(pull, Behaviour::Pod(JobOutcome::ImagePullBackOff));
    let unschedulable = h.ticket(project).await;
    h.agents
        .set(unschedulable, Behaviour::Pod(JobOutcome::Unschedulable));
    let pull_job = h.start_ticket(project, pull).await;
    let sched_job = h.start_ticket(project, unschedulable).await;

    let name = agentjob_name(pull_job);
    let aj = h
        .wait_agentjob(&name, "pending failure reported", finished_and_reported)
        .await;
    let status = aj.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Failed));
    assert_eq!(status.reason, Some(FailureReason::ImagePull));
    let job = h.finished_job(pull_job).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.fail_reason.as_deref(), Some("ImagePull"));
    h.wait_until("the stuck Job is deleted", |k| {
        k.get::<Job>(NS, &name).is_none()
    })
    .await;

    // A pod that waited too long for room: its job is released back to the queue, not failed,
    // and claimed again; once the pod can start, the run succeeds. The next pod may start as
    // soon as its first one is seen waiting for room (the release and re-claim can follow
    // within milliseconds, before this test would get to change the behaviour).
    let name = agentjob_name(sched_job);
    h.wait_agentjob(&name, "waiting for room", |aj| {
        aj.condition(CONDITION_SCHEDULED)
            .is_some_and(|c| c.status == "False")
    })
    .await;
    h.agents
        .set(unschedulable, Behaviour::succeed_after(Duration::ZERO));
    let job = h.finished_job(sched_job).await;
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    assert!(job.attempt >= 2, "claimed again: attempt {}", job.attempt);
    // The released run is gone from the AgentJob's status once the re-claim restarts it; its
    // Events stay: released (not failed), then claimed again.
    let reasons = h.event_reasons(&name);
    for reason in ["WaitingForCapacity", "Released", "Reclaimed", "Succeeded"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "{reason} in {reasons:?}"
        );
    }
    assert!(!reasons.iter().any(|r| r == "Failed"), "{reasons:?}");
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_restart_mid_run_loses_nothing_and_duplicates_nothing() {
    let h = Harness::start().await;
    h.agents.set_default(Behaviour::Hold);
    let first = h.operator(h.config(&[])).await;
    let project = h.project().await;
    let (ticket, job_id, name) = h.running_ticket(project).await;
    let job_uid = h.kube.get::<Job>(NS, &name).unwrap().uid();
    first.stop().await;

    // While no operator runs, the watch connections drop and history is compacted away: the
    // new replica must relist.
    h.kube.drop_watches();
    h.kube.compact();
    let second = h.operator(h.config(&[])).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.agents.release(ticket, 0, "");
    h.wait_agentjob(&name, "success reported", finished_and_reported)
        .await;
    assert_eq!(h.finished_job(job_id).await.status, JobStatus::Completed);

    assert_eq!(h.kube.get::<Job>(NS, &name).unwrap().uid(), job_uid);
    assert_eq!(h.kube.list::<Job>(NS).len(), 1);
    assert_eq!(h.kube.list::<AgentJob>(NS).len(), 1);
    assert_eq!(h.jobs.pods_started(), 1, "the agent ran once");
    let job_creates = h
        .kube
        .requests_matching(&RequestMatcher::new(Verb::Create, "jobs"))
        .into_iter()
        .filter(|r| r.status < 300)
        .count();
    assert_eq!(job_creates, 1);
    assert_eq!(
        second
            .metric("terarchitect_operator_reports_total{result=\"recorded\"}")
            .await,
        1.0
    );
    assert_eq!(h.job(job_id).await.attempt, 1, "never re-claimed");
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_outage_while_reporting_delays_the_report_but_never_drops_it() {
    let h = Harness::start().await;
    h.agents.set_default(Behaviour::Hold);
    let op = h.operator(h.config(&[])).await;
    let project = h.project().await;
    let (ticket, job_id, name) = h.running_ticket(project).await;

    h.proxy.set_down(true);
    h.agents.release(ticket, 0, "");
    h.wait_agentjob(&name, "succeeded", |aj| aj.phase() == Phase::Succeeded)
        .await;
    // Several report attempts fail while the api-server is away.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let aj = h.agentjob(&name).unwrap();
    assert!(
        !aj.status.unwrap().reported,
        "nothing could be reported yet"
    );
    assert_eq!(h.job(job_id).await.status, JobStatus::Running);
    assert!(
        op.metric("terarchitect_operator_reports_total{result=\"error\"}")
            .await
            >= 1.0
    );

    h.proxy.set_down(false);
    h.wait_agentjob(&name, "reported after the outage", finished_and_reported)
        .await;
    let job = h.finished_job(job_id).await;
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(job.attempt, 1);
    assert_eq!(
        op.metric("terarchitect_operator_reports_total{result=\"recorded\"}")
            .await,
        1.0
    );
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_agentjob_cannot_be_created_yet_is_retried() {
    let h = Harness::start().await;
    h.kube
        .fail_next(RequestMatcher::new(Verb::Create, "agentjobs"), 500, 2);
    h.kube
        .fail_next(RequestMatcher::new(Verb::Create, "jobs"), 503, 1);
    let op = h.operator(h.config(&[])).await;
    let project = h.project().await;
    let (_, job_id) = h.queued_ticket(project).await;
    h.wait_agentjob(
        &agentjob_name(job_id),
        "success reported",
        finished_and_reported,
    )
    .await;
    let job = h.finished_job(job_id).await;
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(job.attempt, 1, "the claim was kept, not re-queued");
    assert_eq!(h.kube.list::<Job>(NS).len(), 1);
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_through_the_ticket_or_spec_stops_the_job_and_reports_it() {
    let h = Harness::start().await;
    h.agents.set_default(Behaviour::Hold);
    let op = h.operator(h.config(&[])).await;
    let project = h.project().await;

    // The ticket's cancel request, noticed through heartbeats.
    let (ticket, job_id, name) = h.running_ticket(project).await;
    let asked = tokio::time::Instant::now();
    h.call(
        reqwest::Method::POST,
        &format!("/api/projects/{project}/tickets/{ticket}/cancel"),
        Some(json!({})),
    )
    .await;
    let aj = h
        .wait_agentjob(&name, "cancellation reported", finished_and_reported)
        .await;
    assert!(asked.elapsed() < Duration::from_secs(10), "within seconds");
    let status = aj.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Cancelled));
    assert_eq!(status.reason, Some(FailureReason::Cancelled));
    assert!(aj.spec.cancel);
    h.wait_until("the Job is deleted", |k| k.get::<Job>(NS, &name).is_none())
        .await;
    let job = h.finished_job(job_id).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.fail_reason.as_deref(), Some("Cancelled"));

    // `spec.cancel: true` set by hand (kubectl patch).
    let (_, job_id, name) = h.running_ticket(project).await;
    let client = h.kube.client().await;
    let api: Api<AgentJob> = Api::namespaced(client, NS);
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"cancel": true}})),
    )
    .await
    .unwrap();
    let aj = h
        .wait_agentjob(&name, "cancellation reported", finished_and_reported)
        .await;
    assert_eq!(aj.status.unwrap().phase, Some(Phase::Cancelled));
    h.wait_until("the Job is deleted", |k| k.get::<Job>(NS, &name).is_none())
        .await;
    assert_eq!(h.finished_job(job_id).await.status, JobStatus::Failed);
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_unfinished_agentjob_stops_its_job_and_reports_the_failure() {
    let h = Harness::start().await;
    h.agents.set_default(Behaviour::Hold);
    let op = h.operator(h.config(&[])).await;
    let project = h.project().await;
    let (_, job_id, name) = h.running_ticket(project).await;

    let api: Api<AgentJob> = Api::namespaced(h.kube.client().await, NS);
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    h.wait_until("the AgentJob, its Job and its Secret are gone", |k| {
        k.get::<AgentJob>(NS, &name).is_none()
            && k.get::<Job>(NS, &name).is_none()
            && k.get::<Secret>(NS, &format!("{name}-env")).is_none()
    })
    .await;
    let job = h.finished_job(job_id).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.fail_reason.as_deref(), Some("Cancelled"));
    assert_eq!(h.agents.running(), 0, "the agent was stopped");
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_agents_than_the_setting_allows() {
    let h = Harness::start().await;
    h.agents
        .set_default(Behaviour::succeed_after(Duration::from_millis(300)));
    // The api-server's setting wins over the operator's own MAX_CONCURRENT_AGENTS (4).
    h.settings(json!({"MAX_CONCURRENT_AGENTS": "2"})).await;
    let op = h.operator(h.config(&[])).await;
    let project = h.project().await;
    let mut jobs = Vec::new();
    for _ in 0..6 {
        jobs.push(h.queued_ticket(project).await.1);
    }
    let sampler = {
        let kube = h.kube.cluster();
        tokio::spawn(async move {
            let mut max_live = 0;
            loop {
                let live = kube
                    .list::<AgentJob>(NS)
                    .iter()
                    .filter(|aj| aj.is_live())
                    .count();
                max_live = max_live.max(live);
                if kube.list::<AgentJob>(NS).len() == 6 && live == 0 {
                    return max_live;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    for id in &jobs {
        assert_eq!(h.finished_job(*id).await.status, JobStatus::Completed);
    }
    let max_live = tokio::time::timeout(WAIT, sampler).await.unwrap().unwrap();
    assert!(max_live <= 2, "{max_live} AgentJobs were live at once");
    assert!(
        h.agents.max_running() <= 2,
        "{} agents ran at once",
        h.agents.max_running()
    );
    assert_eq!(h.agents.max_running(), 2, "both slots were used");
    assert_eq!(h.agents.runs(), 6);
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_elect_one_leader_and_the_other_takes_over() {
    let h = Harness::start().await;
    let replica = |id: &str| {
        h.config(&[
            ("--leader-election", "true"),
            ("--identity", id),
            ("--leader-lease-sec", "3"),
        ])
    };
    let a = h.operator(replica("replica-a")).await;
    let b = h.operator(replica("replica-b")).await;
    let leaders = || a.metrics.leader.get() + b.metrics.leader.get();
    let deadline = tokio::time::Instant::now() + WAIT;
    while leaders() != 1 {
        assert!(tokio::time::Instant::now() < deadline, "no single leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(leaders(), 1, "exactly one leader");

    let project = h.project().await;
    let (_, job_id) = h.queued_ticket(project).await;
    h.wait_agentjob(
        &agentjob_name(job_id),
        "success reported",
        finished_and_reported,
    )
    .await;

    let (leader, standby) = if a.metrics.leader.get() == 1 {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(
        standby
            .metric("terarchitect_operator_claims_total{result=\"claimed\"}")
            .await,
        0.0,
        "the standby claims nothing"
    );
    leader.stop().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while standby.metrics.leader.get() != 1 {
        assert!(tokio::time::Instant::now() < deadline, "no takeover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, job_id) = h.queued_ticket(project).await;
    h.wait_agentjob(
        &agentjob_name(job_id),
        "success reported",
        finished_and_reported,
    )
    .await;
    assert_eq!(h.finished_job(job_id).await.status, JobStatus::Completed);
    standby.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_applied_agentjobs_run_and_bad_specs_are_rejected_clearly() {
    let h = Harness::start().await;
    let op = h.operator(h.config(&[])).await;
    let api: Api<AgentJob> = Api::namespaced(h.kube.client().await, NS);
    let pp = PostParams::default();

    // A valid AgentJob without a queue job: runs, records its outcome in status only.
    api.create(
        &pp,
        &hand_made("by-hand", hand_made_spec(AgentJobKind::Ticket)),
    )
    .await
    .unwrap();
    let aj = h
        .wait_agentjob("by-hand", "finished", AgentJob::is_finished)
        .await;
    let status = aj.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded));
    assert!(!status.reported, "nothing to report to");
    assert!(h.kube.get::<Job>(NS, "by-hand").is_some());

    // A review without a pull request number.
    api.create(
        &pp,
        &hand_made("no-pr", hand_made_spec(AgentJobKind::Review)),
    )
    .await
    .unwrap();
    // A ticket id that is not a UUID, and a timeout below the minimum.
    let mut bad = hand_made_spec(AgentJobKind::Ticket);
    bad.ticket_id = "TICKET-42".into();
    bad.timeout_seconds = Some(5);
    api.create(&pp, &hand_made("bad-ids", bad)).await.unwrap();

    for (name, needle) in [("no-pr", "prNumber"), ("bad-ids", "ticketId")] {
        let aj = h
            .wait_agentjob(name, "rejected", AgentJob::is_finished)
            .await;
        let status = aj.status.unwrap();
        assert_eq!(status.phase, Some(Phase::Failed));
        assert_eq!(status.reason, Some(FailureReason::InvalidSpec));
        let message = status.message.unwrap();
        assert!(message.contains(needle), "{message}");
        assert!(h.kube.get::<Job>(NS, name).is_none(), "no Job for {name}");
    }
    let message = h
        .agentjob("bad-ids")
        .unwrap()
        .status
        .unwrap()
        .message
        .unwrap();
    assert!(message.contains("timeoutSeconds"), "{message}");
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_lapsed_during_an_outage_is_reclaimed_into_the_same_run() {
    let h = Harness::start().await;
    h.agents.set_default(Behaviour::Hold);
    let op = h
        .operator(h.config(&[
            ("--job-lease-sec", "2"),
            ("--heartbeat-interval-sec", "0.3"),
        ]))
        .await;
    let project = h.project().await;
    let (ticket, job_id, name) = h.running_ticket(project).await;

    // Heartbeats cannot reach the api-server, whose sweeper re-queues the job.
    h.proxy.set_down(true);
    let deadline = tokio::time::Instant::now() + WAIT;
    while h.job(job_id).await.status != JobStatus::Pending {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lease never lapsed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.proxy.set_down(false);

    // The operator claims it again and adopts the run it already has.
    h.wait_agentjob(&name, "attempt 2 adopted", |aj| aj.spec.attempt == Some(2))
        .await;
    assert_eq!(h.job(job_id).await.status, JobStatus::Running);
    h.agents.release(ticket, 0, "");
    let aj = h
        .wait_agentjob(&name, "reported for attempt 2", |aj| {
            aj.status
                .as_ref()
                .is_some_and(|s| s.reported && s.reported_attempt == Some(2))
        })
        .await;
    assert_eq!(aj.status.unwrap().phase, Some(Phase::Succeeded));
    let job = h.finished_job(job_id).await;
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(job.attempt, 2);
    assert_eq!(h.jobs.pods_started(), 1, "the agent ran once");
    assert_eq!(h.kube.list::<Job>(NS).len(), 1);
    op.stop().await;
}
