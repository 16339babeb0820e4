//! Agent pods as cluster citizens, against the fake Kubernetes API server (which plays the
//! scheduler's part) and a real api-server: pod templates, capacity-aware dispatch, per-project
//! caps.

mod support;

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, PostParams};
use serde_json::json;
use terarchitect_operator::crd::{AgentJob, AgentJobKind, AgentJobSpec, FailureReason, Phase};
use uuid::Uuid;

use support::*;

fn hand_made(name: &str, template: Option<serde_json::Value>) -> AgentJob {
    let mut aj = AgentJob::new(
        name,
        AgentJobSpec {
            project_id: Uuid::new_v4().to_string(),
            ticket_id: Uuid::new_v4().to_string(),
            kind: AgentJobKind::Ticket,
            repo_url: "https://github.com/acme/shop".into(),
            queue_job_id: None,
            attempt: None,
            review: None,
            image: None,
            resources: None,
            timeout_seconds: None,
            ttl_seconds_after_finished: None,
            env_from_secrets: vec![],
            pod_template: template.map(|t| serde_json::from_value(t).unwrap()),
            cancel: false,
        },
    );
    aj.metadata.namespace = Some(NS.into());
    aj
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
    api.create(&pp, &hand_made("templated", Some(own)))
        .await
        .unwrap();
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
        api.create(&pp, &hand_made(name, Some(template)))
            .await
            .unwrap();
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
