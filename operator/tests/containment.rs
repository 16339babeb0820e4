//! Containment (issue 9): an agent run holds only its own run token, its env Secret is gone
//! once the outcome is reported, finished AgentJobs are deleted after their retention time
//! (through the finalizer, without a second report), and the operator keeps dispatching when
//! the api-server refuses it the settings.

mod support;

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, PostParams};
use reqwest::StatusCode;
use terarchitect_fake_apiserver::{RequestMatcher, Verb};
use terarchitect_operator::crd::{AgentJob, AgentJobKind, AgentJobSpec, Phase};
use terarchitect_worker_api::JobStatus;
use uuid::Uuid;

use support::*;

fn settled(aj: &AgentJob) -> bool {
    aj.is_finished() && aj.status.as_ref().is_some_and(|s| s.reported)
}

/// `GET path` on the api-server with `token` as the Bearer token.
async fn get_with(h: &Harness, token: &str, path: &str) -> StatusCode {
    reqwest::Client::new()
        .get(format!("{}{path}", h.api.url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("the api-server answers")
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_env_secret_holds_the_run_token_and_is_deleted_after_the_report() {
    let h = Harness::start().await;
    h.agents.set_default(Behaviour::Hold);
    let op = h.operator(h.config(&[])).await;
    let project = h.project().await;
    let (ticket, job_id, name) = h.running_ticket(project).await;
    let secret_name = format!("{name}-env");

    // While the run goes on, its Secret carries the claim's run token, not the operator's key.
    let secret: Secret = h.kube.get(NS, &secret_name).expect("the env Secret");
    let data = secret.data.expect("Secret data");
    let token = String::from_utf8(data["TERARCHITECT_WORKER_API_KEY"].0.clone()).unwrap();
    assert!(!token.is_empty() && token != WORKER_KEY, "a run token");
    assert!(
        !data.values().any(|v| v.0 == WORKER_KEY.as_bytes()),
        "the operator's key is nowhere in the Secret"
    );
    assert!(
        !data.values().any(|v| v.0 == ADMIN_TOKEN.as_bytes()),
        "the admin token is nowhere in the Secret"
    );
    assert_eq!(
        h.agents.envs(ticket)[0]["TERARCHITECT_WORKER_API_KEY"],
        token
    );
    // It is a real credential of this run: its own job answers, the settings do not.
    let own = get_with(&h, &token, &format!("/api/worker/jobs/{job_id}")).await;
    assert_eq!(own, StatusCode::OK);
    let settings = get_with(&h, &token, "/api/settings").await;
    assert!(
        matches!(settings, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN),
        "{settings}"
    );

    h.agents.release(ticket, 0, "");
    let aj = h.wait_agentjob(&name, "success reported", settled).await;
    assert_eq!(aj.status.as_ref().unwrap().phase, Some(Phase::Succeeded));
    h.wait_until("the env Secret is deleted after the report", |k| {
        k.get::<Secret>(NS, &secret_name).is_none()
    })
    .await;
    assert_eq!(h.finished_job(job_id).await.status, JobStatus::Completed);
    // The AgentJob stays for its retention time (7 days by default).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(h.agentjob(&name).is_some());
    // The Secret was deleted by name, with a uid precondition.
    let deletes = h
        .kube
        .requests_matching(&RequestMatcher::new(Verb::Delete, "secrets"));
    assert_eq!(deletes.iter().filter(|r| r.status < 300).count(), 1);

    // The run token appears in no other object, Event or metric.
    let aj_json = serde_json::to_string(&h.agentjob(&name).unwrap()).unwrap();
    let job_json = serde_json::to_string(&h.kube.get::<Job>(NS, &name).unwrap()).unwrap();
    let events_json = serde_json::to_string(&h.kube.list::<Event>(NS)).unwrap();
    let metrics = reqwest::get(format!("http://{}/metrics", op.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (what, text) in [
        ("AgentJob", &aj_json),
        ("Job", &job_json),
        ("Events", &events_json),
        ("metrics", &metrics),
    ] {
        assert!(!text.contains(&token), "the run token is in the {what}");
        assert!(
            !text.contains(WORKER_KEY),
            "the worker key is in the {what}"
        );
    }
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_agentjob_is_deleted_after_its_ttl_without_a_second_report() {
    let h = Harness::start().await;
    let op = h
        .operator(h.config(&[("--agentjob-ttl-seconds", "2")]))
        .await;
    let project = h.project().await;
    let (_, job_id) = h.queued_ticket(project).await;
    let name = agentjob_name(job_id);
    let aj = h.wait_agentjob(&name, "success reported", settled).await;
    let reported_at = tokio::time::Instant::now();
    let finished_at = aj.status.as_ref().unwrap().finish_time.clone().unwrap().0;

    h.wait_until("the AgentJob, its Job and its Secret are gone", |k| {
        k.get::<AgentJob>(NS, &name).is_none()
            && k.get::<Job>(NS, &name).is_none()
            && k.get::<Secret>(NS, &format!("{name}-env")).is_none()
    })
    .await;
    let kept = k8s_openapi::jiff::Timestamp::now()
        .duration_since(finished_at)
        .as_secs_f64();
    assert!(kept >= 1.9, "kept {kept:.2} s of a 2 s TTL");
    assert!(reported_at.elapsed() < Duration::from_secs(30));

    // One deletion of the AgentJob, through the finalizer: the outcome was reported once.
    let deletes = h
        .kube
        .requests_matching(&RequestMatcher::new(Verb::Delete, "agentjobs"));
    assert_eq!(deletes.iter().filter(|r| r.status < 300).count(), 1);
    assert_eq!(
        op.metric("terarchitect_operator_agentjobs_expired_total")
            .await,
        1.0
    );
    assert_eq!(
        op.metric("terarchitect_operator_reports_total{result=\"recorded\"}")
            .await,
        1.0
    );
    assert_eq!(
        op.metric("terarchitect_operator_reports_total{result=\"already_finished\"}")
            .await,
        0.0,
        "no second report"
    );
    let job = h.finished_job(job_id).await;
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(job.attempt, 1);
    op.stop().await;
}

/// A hand-applied ticket AgentJob with a retention time and env Secrets.
fn with_ttl(name: &str, ttl: Option<i64>, secrets: Vec<String>) -> AgentJob {
    hand_made(
        name,
        AgentJobSpec {
            ttl_seconds_after_finished: ttl,
            env_from_secrets: secrets,
            ..hand_made_spec(AgentJobKind::Ticket)
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_applied_agentjobs_are_kept_until_their_own_ttl() {
    let h = Harness::start().await;
    // The operator's default keeps finished AgentJobs for a day; the spec can say otherwise.
    let op = h
        .operator(h.config(&[("--agentjob-ttl-seconds", "86400")]))
        .await;
    let client = h.kube.client().await;
    // Secrets the user made, one of them named like the operator's own env Secrets.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    for name in ["my-agent-settings", "short-env"] {
        let mut user_secret = Secret::default();
        user_secret.metadata.name = Some(name.into());
        user_secret.string_data = Some([("AGENT_MODEL".to_owned(), "m".to_owned())].into());
        secrets
            .create(&PostParams::default(), &user_secret)
            .await
            .unwrap();
    }
    let api: Api<AgentJob> = Api::namespaced(client, NS);
    let pp = PostParams::default();
    let user = vec!["my-agent-settings".to_owned(), "short-env".to_owned()];
    api.create(&pp, &with_ttl("short", Some(3), user.clone()))
        .await
        .unwrap();
    api.create(&pp, &with_ttl("default-ttl", None, vec![]))
        .await
        .unwrap();
    api.create(&pp, &with_ttl("forever", Some(0), vec![]))
        .await
        .unwrap();
    // Finished, and kept for its TTL (3 s from its finish time), then deleted.
    let short = h
        .wait_agentjob("short", "finished", AgentJob::is_finished)
        .await;
    let status = short.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded));
    let finished_at = status.finish_time.unwrap().0;
    h.wait_until("the short-lived AgentJob is deleted", |k| {
        k.get::<AgentJob>(NS, "short").is_none()
    })
    .await;
    let kept = k8s_openapi::jiff::Timestamp::now()
        .duration_since(finished_at)
        .as_secs_f64();
    assert!(kept >= 2.9, "kept {kept:.2} s of a 3 s TTL");
    for name in ["default-ttl", "forever"] {
        h.wait_agentjob(name, "finished", AgentJob::is_finished)
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(h.agentjob("default-ttl").is_some(), "a day has not passed");
    assert!(h.agentjob("forever").is_some(), "0 keeps it forever");
    for name in ["my-agent-settings", "short-env"] {
        let secret = h.kube.get::<Secret>(NS, name);
        let secret = secret.unwrap_or_else(|| panic!("the user's Secret {name} was deleted"));
        assert!(secret.metadata.owner_references.is_none(), "{name} adopted");
    }
    assert_eq!(
        op.metric("terarchitect_operator_agentjobs_expired_total")
            .await,
        1.0
    );
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_settings_fall_back_to_the_configured_limit_and_dispatch_goes_on() {
    let h = Harness::start().await;
    h.agents.set_default(Behaviour::Hold);
    // The api-server says 1; an operator without the admin token cannot read that and uses its
    // own MAX_CONCURRENT_AGENTS (2).
    h.settings(serde_json::json!({"MAX_CONCURRENT_AGENTS": "1"}))
        .await;
    let op = h
        .operator(h.config(&[("--admin-token", ""), ("--max-concurrent-agents", "2")]))
        .await;
    let project = h.project().await;
    for _ in 0..3 {
        h.queued_ticket(project).await;
    }
    h.wait_until("two agents run", |_| h.agents.running() == 2)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.agents.running(), 2, "the operator's own limit holds");
    assert_eq!(h.kube.list::<AgentJob>(NS).len(), 2);
    op.stop().await;

    // With the admin token the api-server's setting (1) wins: after one run ends, the next
    // claim waits for the other to end too.
    let op = h
        .operator(h.config(&[("--max-concurrent-agents", "2")]))
        .await;
    let first = h.kube.list::<AgentJob>(NS).remove(0);
    h.agents
        .release(first.spec.ticket_id.parse().unwrap(), 0, "");
    h.wait_agentjob(&first.metadata.name.unwrap(), "reported", settled)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.kube.list::<AgentJob>(NS).len(), 2, "no third claim yet");
    op.stop().await;
}

/// A finished, reported AgentJob with its env Secret, as an operator without cleanup left them.
fn leftover(h: &Harness, finished_ago: Duration) -> String {
    let job_id = Uuid::new_v4();
    let name = agentjob_name(job_id);
    let mut aj = with_ttl(&name, None, vec![format!("{name}-env")]);
    aj.spec.queue_job_id = Some(job_id.to_string());
    aj.spec.attempt = Some(1);
    aj.metadata.finalizers = Some(vec!["terarchitect.io/cleanup".into()]);
    aj.metadata.labels = Some(
        [(
            "app.kubernetes.io/managed-by".to_owned(),
            "terarchitect-operator".to_owned(),
        )]
        .into(),
    );
    let finished = k8s_openapi::jiff::Timestamp::now() - finished_ago;
    aj.status = Some(terarchitect_operator::crd::AgentJobStatus {
        phase: Some(Phase::Succeeded),
        finish_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            finished,
        )),
        reported: true,
        reported_attempt: Some(1),
        ..Default::default()
    });
    let aj = h.kube.create(&aj).expect("seeding an AgentJob");
    let mut secret = Secret::default();
    secret.metadata.name = Some(format!("{name}-env"));
    secret.metadata.namespace = Some(NS.into());
    secret.metadata.labels = Some(
        [
            (
                "app.kubernetes.io/managed-by".to_owned(),
                "terarchitect-operator".to_owned(),
            ),
            ("terarchitect.io/agentjob".to_owned(), name.clone()),
        ]
        .into(),
    );
    secret.metadata.owner_references =
        kube::Resource::controller_owner_ref(&aj, &()).map(|o| vec![o]);
    secret.string_data =
        Some([("TERARCHITECT_WORKER_API_KEY".to_owned(), "old".to_owned())].into());
    h.kube.create(&secret).expect("seeding a Secret");
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_an_earlier_version_are_cleaned_up_without_reports() {
    let h = Harness::start().await;
    let old = leftover(&h, Duration::from_secs(8 * 24 * 3600));
    let recent = leftover(&h, Duration::from_secs(3600));
    let op = h.operator(h.config(&[])).await;

    h.wait_until(
        "the expired AgentJob and both leftover Secrets are gone",
        |k| {
            k.get::<AgentJob>(NS, &old).is_none()
                && k.get::<Secret>(NS, &format!("{old}-env")).is_none()
                && k.get::<Secret>(NS, &format!("{recent}-env")).is_none()
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(h.agentjob(&recent).is_some(), "within its 7 days");
    for result in ["recorded", "already_finished", "gone", "error"] {
        let series = format!("terarchitect_operator_reports_total{{result=\"{result}\"}}");
        assert_eq!(op.metric(&series).await, 0.0, "{series}: nothing to report");
    }
    op.stop().await;
}
