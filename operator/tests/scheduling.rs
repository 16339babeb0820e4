//! Agent pods as cluster citizens, against the fake Kubernetes API server (which plays the
//! scheduler's part) and a real api-server: pod templates, capacity-aware dispatch, per-project
//! caps, Kueue.

mod support;

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::json;
use terarchitect_fake_apiserver::{JobOutcome, Node, QUEUE_NAME_LABEL};
use terarchitect_operator::crd::{
    AgentJob, AgentJobKind, AgentJobSpec, CONDITION_ADMITTED, CONDITION_RELEASED,
    CONDITION_SCHEDULED, FailureReason, Phase,
};
use terarchitect_worker_api::JobStatus;
use uuid::Uuid;

use support::*;

/// A hand-applied ticket AgentJob with its own pod template.
fn templated(name: &str, template: serde_json::Value) -> AgentJob {
    hand_made(
        name,
        AgentJobSpec {
            pod_template: Some(serde_json::from_value(template).unwrap()),
            ..hand_made_spec(AgentJobKind::Ticket)
        },
    )
}

const DEFAULT_TEMPLATE: &str = "\
metadata:
  labels:
    team: agents
spec:
  nodeSelector:
    pool: agents
  tolerations:
    - key: dedicated
      operator: Equal
      value: agents
      effect: NoSchedule
  runtimeClassName: gvisor
  containers:
    - name: agent
      env:
        - name: HTTPS_PROXY
          value: http://proxy:3128
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_templates_merge_over_the_agent_pod_and_owned_fields_are_refused() {
    let h = Harness::start().await;
    h.jobs.set_node(Node {
        labels: [("pool", "agents"), ("zone", "a")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into(),
        ..Node::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pod-template.yaml");
    std::fs::write(&file, DEFAULT_TEMPLATE).unwrap();
    let op = h
        .operator(h.config(&[("--agent-pod-template-file", file.to_str().unwrap())]))
        .await;
    let api: Api<AgentJob> = Api::namespaced(h.kube.client().await, NS);
    let pp = PostParams::default();

    let own = json!({"spec": {
        "nodeSelector": {"zone": "a"},
        "priorityClassName": "agents-low",
        "containers": [{"name": "agent", "env": [{"name": "HTTPS_PROXY", "value": "http://other:3128"}]}]
    }});
    api.create(&pp, &templated("templated", own)).await.unwrap();
    let aj = h
        .wait_agentjob("templated", "finished", AgentJob::is_finished)
        .await;
    assert_eq!(aj.status.unwrap().phase, Some(Phase::Succeeded));
    let job = h.kube.get::<Job>(NS, "templated").expect("the Job");
    let template = job.spec.unwrap().template;
    let labels = template.metadata.unwrap().labels.unwrap();
    assert_eq!(labels["team"], "agents");
    assert_eq!(labels["terarchitect.io/agentjob"], "templated");
    let pod = template.spec.unwrap();
    let selector = pod.node_selector.unwrap();
    assert_eq!(
        (selector["pool"].as_str(), selector["zone"].as_str()),
        ("agents", "a")
    );
    assert_eq!(
        pod.tolerations.unwrap()[0].key.as_deref(),
        Some("dedicated")
    );
    assert_eq!(pod.runtime_class_name.as_deref(), Some("gvisor"));
    assert_eq!(pod.priority_class_name.as_deref(), Some("agents-low"));
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    let agent = &pod.containers[0];
    assert_eq!(agent.command.as_ref().unwrap()[0], "terarchitect-agent");
    let env = agent.env.as_ref().unwrap();
    let proxy: Vec<_> = env.iter().filter(|e| e.name == "HTTPS_PROXY").collect();
    assert_eq!(proxy.len(), 1, "env merges by name");
    assert_eq!(proxy[0].value.as_deref(), Some("http://other:3128"));
    assert!(env.iter().any(|e| e.name == "TICKET_ID"));

    // Templates that try to take what the operator owns.
    for (name, template, field) in [
        (
            "takes-command",
            json!({"spec": {"containers": [{"name": "agent", "command": ["sh", "-c", "env"]}]}}),
            "spec.podTemplate.spec.containers[agent].command",
        ),
        (
            "takes-restart",
            json!({"spec": {"restartPolicy": "OnFailure"}}),
            "spec.podTemplate.spec.restartPolicy",
        ),
        (
            "takes-host",
            json!({"spec": {"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}}),
            "spec.podTemplate.spec.volumes[root]",
        ),
    ] {
        api.create(&pp, &templated(name, template)).await.unwrap();
        let aj = h
            .wait_agentjob(name, "refused", AgentJob::is_finished)
            .await;
        let status = aj.status.unwrap();
        assert_eq!(status.reason, Some(FailureReason::InvalidSpec), "{name}");
        let message = status.message.unwrap();
        assert!(message.contains(field), "{message}");
        let finished = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Finished")
            .unwrap();
        assert_eq!(finished.reason, "InvalidSpec");
        assert!(h.kube.get::<Job>(NS, name).is_none(), "no Job for {name}");
    }
    op.stop().await;

    // An operator-wide template that takes an owned field stops the operator at start.
    std::fs::write(&file, "spec:\n  restartPolicy: Always\n").unwrap();
    let cfg = h.config(&[("--agent-pod-template-file", file.to_str().unwrap())]);
    let err = terarchitect_operator::run(
        cfg,
        h.kube.client().await,
        tokio_util::sync::CancellationToken::new(),
        |_| {},
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("AGENT_POD_TEMPLATE_FILE.spec.restartPolicy"),
        "{err}"
    );
}

fn waits_for_room(aj: &AgentJob) -> bool {
    aj.waits_for_room()
}

/// Whether the queue job is still waiting to be claimed.
async fn unclaimed(h: &Harness, id: Uuid) -> bool {
    h.job(id).await.status == JobStatus::Pending
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_claims_while_an_agent_pod_waits_for_room_and_claims_resume_when_it_schedules() {
    let h = Harness::start().await;
    h.jobs.set_node(Node {
        max_pods: Some(1),
        ..Node::default()
    });
    h.agents.set_default(Behaviour::Hold);
    let op = h
        .operator(h.config(&[("--unschedulable-timeout-sec", "600")]))
        .await;
    let project = h.project().await;
    // Two jobs first (claiming is only paused once a pod is seen waiting), two more later.
    let mut tickets = vec![
        h.queued_ticket(project).await,
        h.queued_ticket(project).await,
    ];
    let mut names: Vec<String> = tickets.iter().map(|(_, j)| agentjob_name(*j)).collect();
    // The node takes one pod; a second is claimed (the slot was free) and waits for room. The
    // scheduler picks either of the two first.
    h.wait_until("one of the first two runs, the other waits for room", |k| {
        let get = |n: &String| k.get::<AgentJob>(NS, n);
        let (a, b) = (get(&names[0]), get(&names[1]));
        let running =
            |aj: &Option<AgentJob>| aj.as_ref().is_some_and(|a| a.phase() == Phase::Running);
        let waits = |aj: &Option<AgentJob>| aj.as_ref().is_some_and(waits_for_room);
        (running(&a) && waits(&b)) || (running(&b) && waits(&a))
    })
    .await;
    if h.agentjob(&names[0]).unwrap().waits_for_room() {
        names.swap(0, 1);
        tickets.swap(0, 1);
    }
    // A long poll in flight when the pause began may still bring a job: let it end (1 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..2 {
        let queued = h.queued_ticket(project).await;
        names.push(agentjob_name(queued.1));
        tickets.push(queued);
    }
    let waiting = h.agentjob(&names[1]).unwrap();
    let scheduled = waiting.condition(CONDITION_SCHEDULED).unwrap();
    assert!(
        scheduled.message.contains("1 Too many pods"),
        "{}",
        scheduled.message
    );
    assert_eq!(waiting.phase(), Phase::Pending);
    // Backpressure: nothing more is claimed although two of four slots are free.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (_, job) in &tickets[2..] {
        assert!(
            unclaimed(&h, *job).await,
            "claimed while a pod waits for room"
        );
    }
    assert!(h.agentjob(&names[2]).is_none() && h.agentjob(&names[3]).is_none());
    assert_eq!(op.metric("terarchitect_operator_claims_paused").await, 1.0);
    assert_eq!(
        op.metric("terarchitect_operator_unschedulable_agents")
            .await,
        1.0
    );
    let events: Vec<Event> = h.kube.list(NS);
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("WaitingForCapacity")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(names[1].as_str())),
        "a WaitingForCapacity Event on the waiting AgentJob"
    );

    // The first run ends: the waiting pod is scheduled and claiming resumes, until the next
    // claim waits for room again.
    h.agents.release(tickets[0].0, 0, "");
    h.wait_running(&names[1]).await;
    h.wait_agentjob(&names[1], "scheduled", |aj| {
        aj.condition(CONDITION_SCHEDULED)
            .is_some_and(|c| c.status == "True")
    })
    .await;
    // Claiming resumed: the two queued jobs are claimed and wait for room in turn; while they
    // do, a new job stays in the queue.
    for name in &names[2..] {
        h.wait_agentjob(name, "claimed and waiting", waits_for_room)
            .await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let fifth = h.queued_ticket(project).await;
    tickets.push(fifth);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        unclaimed(&h, fifth.1).await,
        "claimed while pods wait for room"
    );

    // More room (an autoscaler's node): everything runs and finishes.
    h.jobs.set_node(Node::default());
    for (ticket, _) in &tickets[1..] {
        h.agents.release(*ticket, 0, "");
    }
    for (_, job) in &tickets {
        assert_eq!(h.finished_job(*job).await.status, JobStatus::Completed);
    }
    assert_eq!(op.metric("terarchitect_operator_claims_paused").await, 0.0);
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_without_room_is_released_after_its_own_timeout_and_one_that_never_fits_fails_at_once()
 {
    let h = Harness::start().await;
    h.jobs.set_node(Node {
        max_pods: Some(1),
        labels: [("pool".to_owned(), "agents".to_owned())].into(),
        allocatable_cpu_millis: Some(2000),
    });
    h.agents.set_default(Behaviour::Hold);
    // Pending problems (image pulls) keep their short grace period; waiting for room its own.
    let op = h
        .operator(h.config(&[
            ("--pending-timeout-sec", "1"),
            ("--unschedulable-timeout-sec", "4"),
        ]))
        .await;
    let project = h.project().await;
    let queued = [
        h.queued_ticket(project).await,
        h.queued_ticket(project).await,
    ];
    let started = std::time::Instant::now();
    // The scheduler binds either pod first; the other waits for room.
    let waiting = h
        .kube
        .wait_for(WAIT, |c| {
            queued.iter().position(|(_, job)| {
                c.get::<AgentJob>(NS, &agentjob_name(*job))
                    .is_some_and(|aj| aj.waits_for_room())
            })
        })
        .await
        .expect("one pod waits for room");
    let (first, (second_ticket, second)) = (queued[1 - waiting].0, queued[waiting]);
    let name = agentjob_name(second);
    let aj = h
        .wait_agentjob(&name, "timed out", AgentJob::is_finished)
        .await;
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "waited its own timeout"
    );
    assert_eq!(aj.spec.attempt, Some(1));
    let released = aj.condition(CONDITION_RELEASED).cloned().expect("Released");
    assert_eq!(
        (released.status.as_str(), released.reason.as_str()),
        ("True", "Unschedulable")
    );
    let status = aj.status.unwrap();
    assert_eq!(status.reason, Some(FailureReason::Unschedulable));
    let message = status.message.unwrap();
    assert!(message.contains("goes back to the queue"), "{message}");
    assert!(message.contains("1 Too many pods"), "{message}");
    // Released, not failed: the queue job is pending again, and the operator claims it again
    // (attempt 2; the released claim used up no attempt) into the same AgentJob, a new run.
    let again = h
        .wait_agentjob(&name, "claimed again", |aj| {
            aj.spec.attempt == Some(2) && aj.is_live()
        })
        .await;
    assert!(again.condition(CONDITION_RELEASED).is_none(), "a new run");
    let job = h.job(second).await;
    assert_eq!((job.status, job.attempt), (JobStatus::Running, 2));
    assert_eq!(job.fail_reason, None);
    // Room again: the new run starts and its outcome is reported for attempt 2.
    h.agents.release(first, 0, "");
    h.wait_running(&name).await;
    h.agents.release(second_ticket, 0, "");
    let job = h.finished_job(second).await;
    assert_eq!((job.status, job.attempt), (JobStatus::Completed, 2));
    h.wait_agentjob(&name, "reported", |aj| {
        aj.status.as_ref().is_some_and(|s| s.reported) && aj.is_finished()
    })
    .await;

    // Pods no node can ever take fail at once, with the scheduler's message.
    let api: Api<AgentJob> = Api::namespaced(h.kube.client().await, NS);
    let pp = PostParams::default();
    let cases = [
        (
            "elsewhere",
            json!({"spec": {"nodeSelector": {"pool": "gpu"}}}),
            "didn't match Pod's node affinity/selector",
        ),
        (
            "too-big",
            json!({"spec": {"containers": [{"name": "agent", "resources": {"requests": {"cpu": "64"}}}]}}),
            "Insufficient cpu",
        ),
    ];
    for (name, template, needle) in cases {
        let started = std::time::Instant::now();
        api.create(&pp, &templated(name, template)).await.unwrap();
        let aj = h.wait_agentjob(name, "failed", AgentJob::is_finished).await;
        assert!(started.elapsed() < Duration::from_secs(3), "failed at once");
        assert!(
            aj.condition(CONDITION_RELEASED).is_none(),
            "never fits: failed"
        );
        let status = aj.status.unwrap();
        assert_eq!(status.reason, Some(FailureReason::Unschedulable));
        let message = status.message.unwrap();
        assert!(message.contains(needle), "{message}");
        assert!(message.contains("Preemption is not helpful"), "{message}");
    }

    // An image that cannot be pulled keeps the short PENDING_TIMEOUT_SEC (1 s), not 4 s.
    h.jobs.set_node(Node::default());
    let ticket = h.ticket(project).await;
    h.agents
        .set(ticket, Behaviour::Pod(JobOutcome::ImagePullBackOff));
    let job = h.start_ticket(project, ticket).await;
    let started = std::time::Instant::now();
    let aj = h
        .wait_agentjob(&agentjob_name(job), "failed", AgentJob::is_finished)
        .await;
    assert_eq!(aj.status.unwrap().reason, Some(FailureReason::ImagePull));
    assert!(
        started.elapsed() < Duration::from_millis(3500),
        "{:?}",
        started.elapsed()
    );
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_busy_project_cannot_take_every_slot() {
    let h = Harness::start().await;
    h.agents.set_default(Behaviour::Hold);
    let busy = h.project().await;
    let quiet = h.project().await;
    let projects = format!("{busy},{quiet}");
    let op = h
        .operator(h.config(&[
            ("--project-ids", projects.as_str()),
            ("--max-concurrent-agents", "3"),
            ("--max-concurrent-agents-per-project", "2"),
        ]))
        .await;
    let mut busy_jobs = Vec::new();
    for _ in 0..4 {
        busy_jobs.push(h.queued_ticket(busy).await);
    }
    // The busy project gets its two agents, no more, although a global slot is free.
    for (_, job) in &busy_jobs[..2] {
        h.wait_running(&agentjob_name(*job)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let live = |project: Uuid| {
        h.kube
            .list::<AgentJob>(NS)
            .iter()
            .filter(|aj| aj.is_live() && aj.spec.project_id == project.to_string())
            .count()
    };
    assert_eq!(live(busy), 2);
    assert!(unclaimed(&h, busy_jobs[2].1).await);
    // The quiet project still gets the free slot.
    let (quiet_ticket, quiet_job) = h.queued_ticket(quiet).await;
    h.wait_running(&agentjob_name(quiet_job)).await;
    assert_eq!(live(busy), 2);
    // A busy run ends: the next of the busy project takes its place (the global limit, 3, holds).
    h.agents.release(busy_jobs[0].0, 0, "");
    h.wait_running(&agentjob_name(busy_jobs[2].1)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(live(busy), 2);
    assert!(unclaimed(&h, busy_jobs[3].1).await);
    for (ticket, _) in busy_jobs.iter().skip(1) {
        h.agents.release(*ticket, 0, "");
    }
    h.agents.release(quiet_ticket, 0, "");
    for (_, job) in busy_jobs.iter().chain([(quiet_ticket, quiet_job)].iter()) {
        assert_eq!(h.finished_job(*job).await.status, JobStatus::Completed);
    }
    op.stop().await;
}

fn waits_for_admission(aj: &AgentJob) -> bool {
    aj.phase() == Phase::Pending
        && aj.condition(CONDITION_ADMITTED).is_some_and(|c| {
            c.status == "False"
                && c.reason == "WaitingForAdmission"
                && c.message.contains("agents-queue")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kueue_holds_agent_jobs_until_it_admits_them() {
    let h = Harness::start().await;
    let kueue = h.kube.start_kueue();
    kueue.set_quota("agents-queue", 1);
    h.agents.set_default(Behaviour::Hold);
    // A short pending timeout: it must not run while Kueue holds a Job.
    let op = h
        .operator(h.config(&[
            ("--kueue-queue-name", "agents-queue"),
            ("--pending-timeout-sec", "1"),
        ]))
        .await;
    let project = h.project().await;
    let (first, first_job) = h.queued_ticket(project).await;
    h.wait_running(&agentjob_name(first_job)).await;
    let (second, second_job) = h.queued_ticket(project).await;
    let name = agentjob_name(second_job);
    h.wait_agentjob(&name, "waiting for admission", waits_for_admission)
        .await;
    let job = h.kube.get::<Job>(NS, &name).expect("the Job exists");
    assert_eq!(job.labels()[QUEUE_NAME_LABEL], "agents-queue");
    assert_eq!(job.spec.as_ref().unwrap().suspend, Some(true));
    // Held longer than the pending timeout: still waiting, not failed.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let aj = h.agentjob(&name).unwrap();
    assert!(waits_for_admission(&aj), "{:?}", aj.status);
    assert_eq!(h.job(second_job).await.status, JobStatus::Running);

    // The first run ends: Kueue admits the second, which runs to its end.
    h.agents.release(first, 0, "");
    h.wait_running(&name).await;
    let aj = h.agentjob(&name).unwrap();
    let admitted = aj.condition(CONDITION_ADMITTED).unwrap();
    assert_eq!(
        (admitted.status.as_str(), admitted.reason.as_str()),
        ("True", "Admitted")
    );
    h.agents.release(second, 0, "");
    for job in [first_job, second_job] {
        assert_eq!(h.finished_job(job).await.status, JobStatus::Completed);
    }
    op.stop().await;
}
