//! The stand-in Job controller: outcomes, status as Kubernetes 1.28+ writes it, and commands run
//! with the pod's resolved environment.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use terarchitect_fake_apiserver::{
    Cluster, ContainerRun, FakeApiServer, JobControllerConfig, JobOutcome, JobPolicy, Node,
    QUEUE_NAME_LABEL,
};
use tokio::sync::mpsc;

fn condition_types(job: &Job) -> Vec<String> {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| cs.iter().map(|c| c.type_.clone()).collect())
        .unwrap_or_default()
}

fn condition_reason(job: &Job, kind: &str) -> Option<String> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind && c.status == "True")?
        .reason
        .clone()
}

fn finished(cluster: &Cluster, name: &str) -> Option<Job> {
    let job = cluster.get::<Job>("default", name)?;
    let types = condition_types(&job);
    (types.contains(&"Complete".to_string()) || types.contains(&"Failed".to_string()))
        .then_some(job)
}

async fn wait_finished(server: &FakeApiServer, name: &str) -> Job {
    server
        .wait_for(TIMEOUT, |c| finished(c, name))
        .await
        .unwrap_or_else(|| panic!("job {name} finished"))
}

fn job_pods(cluster: &Cluster, job: &str) -> Vec<Pod> {
    cluster
        .list::<Pod>("default")
        .into_iter()
        .filter(|p| p.labels().get("job-name").map(String::as_str) == Some(job))
        .collect()
}

fn container_state(pod: &Pod) -> serde_json::Value {
    serde_json::to_value(
        &pod.status
            .as_ref()
            .unwrap()
            .container_statuses
            .as_ref()
            .unwrap()[0]
            .state,
    )
    .unwrap()
}

async fn create_job(server: &FakeApiServer, name: &str, extra: serde_json::Value) -> Job {
    let api: Api<Job> = Api::default_namespaced(server.in_process_client());
    api.create(&PostParams::default(), &job(name, extra))
        .await
        .expect("job created")
}

#[tokio::test]
async fn success_then_failure_with_backoff_limit() -> anyhow::Result<()> {
    let server = FakeApiServer::start().await?;
    let controller =
        server.start_job_controller(JobPolicy::from_fn(|job| match job.name_any().as_str() {
            "ok" => JobOutcome::succeed_after(Duration::from_millis(300)),
            "retried" => JobOutcome::fail(1),
            _ => JobOutcome::fail(3),
        }));
    let created = create_job(&server, "ok", json!({})).await;

    // Running: one active pod owned by the Job, labelled like Kubernetes 1.28+ does.
    let running = server
        .wait_for(TIMEOUT, |c| {
            c.get::<Job>("default", "ok")
                .filter(|j| j.status.as_ref().is_some_and(|s| s.ready == Some(1)))
        })
        .await
        .expect("job running");
    let status = running.status.unwrap();
    assert_eq!(status.active, Some(1));
    assert!(status.start_time.is_some());
    let pods = job_pods(&server, "ok");
    assert_eq!(pods.len(), 1);
    let pod = &pods[0];
    let uid = created.uid().unwrap();
    for (key, value) in [
        ("job-name", "ok"),
        ("batch.kubernetes.io/job-name", "ok"),
        ("controller-uid", uid.as_str()),
        ("batch.kubernetes.io/controller-uid", uid.as_str()),
    ] {
        assert_eq!(
            pod.labels().get(key).map(String::as_str),
            Some(value),
            "label {key}"
        );
    }
    let owner = &pod.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("Job", uid.as_str(), Some(true))
    );
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );
    assert!(container_state(pod)["running"].is_object());

    // Success.
    let done = wait_finished(&server, "ok").await;
    assert_eq!(condition_types(&done), ["SuccessCriteriaMet", "Complete"]);
    let status = done.status.unwrap();
    assert_eq!(
        (status.succeeded, status.active, status.failed),
        (Some(1), Some(0), None)
    );
    assert!(status.completion_time.is_some());
    let pod = &job_pods(&server, "ok")[0];
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Succeeded")
    );
    assert_eq!(container_state(pod)["terminated"]["reason"], "Completed");
    assert_eq!(container_state(pod)["terminated"]["exitCode"], 0);

    // Failure with backoffLimit 0.
    create_job(&server, "broken", json!({})).await;
    let failed = wait_finished(&server, "broken").await;
    assert_eq!(condition_types(&failed), ["FailureTarget", "Failed"]);
    assert_eq!(
        condition_reason(&failed, "Failed").as_deref(),
        Some("BackoffLimitExceeded")
    );
    let status = failed.status.unwrap();
    assert_eq!(
        (status.failed, status.active, status.completion_time),
        (Some(1), Some(0), None)
    );
    let pod = &job_pods(&server, "broken")[0];
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Failed")
    );
    assert_eq!(container_state(pod)["terminated"]["exitCode"], 3);
    assert_eq!(container_state(pod)["terminated"]["reason"], "Error");

    // backoffLimit 2: three pods, then Failed.
    let before = controller.pods_started();
    create_job(&server, "retried", json!({"backoffLimit": 2})).await;
    let failed = wait_finished(&server, "retried").await;
    assert_eq!(failed.status.as_ref().unwrap().failed, Some(3));
    assert_eq!(job_pods(&server, "retried").len(), 3);
    assert_eq!(controller.pods_started() - before, 3);
    Ok(())
}

#[tokio::test]
async fn deadline_oom_pending_and_unschedulable() -> anyhow::Result<()> {
    let server = FakeApiServer::start().await?;
    server.start_job_controller(JobPolicy::from_fn(|job| match job.name_any().as_str() {
        "slow" => JobOutcome::RunForever,
        "oom" => JobOutcome::oom_killed(),
        "pull" => JobOutcome::ErrImagePull,
        "backoff" => JobOutcome::ImagePullBackOff,
        _ => JobOutcome::Unschedulable,
    }));
    create_job(&server, "slow", json!({"activeDeadlineSeconds": 1})).await;
    create_job(&server, "oom", json!({})).await;
    for name in ["pull", "backoff", "unschedulable"] {
        create_job(&server, name, json!({})).await;
    }

    let slow = wait_finished(&server, "slow").await;
    assert_eq!(condition_types(&slow), ["FailureTarget", "Failed"]);
    assert_eq!(
        condition_reason(&slow, "Failed").as_deref(),
        Some("DeadlineExceeded")
    );
    assert_eq!(slow.status.as_ref().unwrap().failed, Some(1));
    assert!(
        job_pods(&server, "slow").is_empty(),
        "the running pod was killed"
    );

    let oom = wait_finished(&server, "oom").await;
    assert_eq!(
        condition_reason(&oom, "Failed").as_deref(),
        Some("BackoffLimitExceeded")
    );
    let pod = &job_pods(&server, "oom")[0];
    assert_eq!(container_state(pod)["terminated"]["reason"], "OOMKilled");
    assert_eq!(container_state(pod)["terminated"]["exitCode"], 137);

    for (name, reason) in [("pull", "ErrImagePull"), ("backoff", "ImagePullBackOff")] {
        let pod = server
            .wait_for(TIMEOUT, |c| {
                job_pods(c, name)
                    .into_iter()
                    .find(|p| container_state(p)["waiting"]["reason"] == reason)
            })
            .await
            .unwrap_or_else(|| panic!("{name} pod waiting"));
        assert_eq!(
            pod.status.as_ref().unwrap().phase.as_deref(),
            Some("Pending")
        );
        assert!(
            container_state(&pod)["waiting"]["message"]
                .as_str()
                .unwrap()
                .contains("example.com/agent:1")
        );
    }
    let pod = server
        .wait_for(TIMEOUT, |c| {
            job_pods(c, "unschedulable").into_iter().find(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| {
                        cs.iter().any(|c| {
                            c.type_ == "PodScheduled"
                                && c.status == "False"
                                && c.reason.as_deref() == Some("Unschedulable")
                        })
                    })
            })
        })
        .await
        .expect("unschedulable pod");
    assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Pending"));
    for name in ["pull", "backoff", "unschedulable"] {
        let job = server.get::<Job>("default", name).unwrap();
        assert_eq!(
            job.status.as_ref().unwrap().active,
            Some(1),
            "{name} stays active"
        );
        assert!(condition_types(&job).is_empty(), "{name} has no conditions");
    }
    Ok(())
}

#[tokio::test]
async fn command_receives_the_resolved_environment() -> anyhow::Result<()> {
    let server = FakeApiServer::start().await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<ContainerRun>();
    server.start_job_controller(JobOutcome::command(move |run: ContainerRun| {
        let tx = tx.clone();
        async move {
            let code = if run.env.get("TOKEN").map(String::as_str) == Some("s3cret") {
                0
            } else {
                1
            };
            tx.send(run).unwrap();
            code
        }
    }));
    let extra = json!({"template": {"spec": {"restartPolicy": "Never", "containers": [{
        "name": "agent",
        "image": "example.com/agent:1",
        "command": ["agent"],
        "args": ["--ticket", "$(TICKET)", "--escaped", "$$(TICKET)"],
        "workingDir": "/work",
        "envFrom": [{"secretRef": {"name": "bulk"}, "prefix": "BULK_"}, {"configMapRef": {"name": "absent", "optional": true}}],
        "env": [
            {"name": "TICKET", "value": "T-1"},
            {"name": "URL", "value": "http://api/$(TICKET)"},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
            {"name": "MAYBE", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nope", "optional": true}}},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
    }]}}});
    // The secret is missing at first: the pod waits with CreateContainerConfigError.
    server.create(&config_map("settings", &[("mode", "fast")]))?;
    server.create(&serde_json::from_value::<Secret>(
        json!({"metadata": {"name": "bulk"}, "stringData": {"A": "1"}}),
    )?)?;
    create_job(&server, "agent", extra).await;
    let waiting = server
        .wait_for(TIMEOUT, |c| {
            job_pods(c, "agent")
                .into_iter()
                .find(|p| container_state(p)["waiting"]["reason"] == "CreateContainerConfigError")
        })
        .await
        .expect("pod waits for its secret");
    assert_eq!(
        container_state(&waiting)["waiting"]["message"],
        "secret \"creds\" not found"
    );
    assert!(
        rx.try_recv().is_err(),
        "command not started without its secret"
    );

    server.create(&serde_json::from_value::<Secret>(
        json!({"metadata": {"name": "creds"}, "stringData": {"token": "s3cret"}}),
    )?)?;
    let run = tokio::time::timeout(TIMEOUT, rx.recv())
        .await?
        .expect("command ran");
    assert_eq!(run.env["TOKEN"], "s3cret");
    assert_eq!(run.env["MODE"], "fast");
    assert_eq!(run.env["BULK_A"], "1");
    assert_eq!(run.env["URL"], "http://api/T-1");
    assert_eq!(run.env["POD"], run.pod_name);
    assert!(!run.env.contains_key("MAYBE"));
    assert_eq!(run.command, ["agent"]);
    assert_eq!(run.args, ["--ticket", "T-1", "--escaped", "$(TICKET)"]);
    assert_eq!(
        (
            run.image.as_str(),
            run.working_dir.as_deref(),
            run.job_name.as_str()
        ),
        ("example.com/agent:1", Some("/work"), "agent")
    );
    let done = wait_finished(&server, "agent").await;
    assert_eq!(condition_types(&done), ["SuccessCriteriaMet", "Complete"]);
    Ok(())
}

/// Sets a flag when dropped, to observe that a command's future was dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn deleting_the_job_or_pod_cancels_the_command() -> anyhow::Result<()> {
    let server = FakeApiServer::start().await?;
    let (started_tx, mut started) = mpsc::unbounded_channel::<String>();
    let cancelled = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let dropped = Arc::new(AtomicBool::new(false));
    let (cancelled_in, dropped_in) = (cancelled.clone(), dropped.clone());
    let config = JobControllerConfig {
        kill_grace: Duration::from_millis(200),
        ..JobControllerConfig::default()
    };
    server.start_job_controller_with(
        JobOutcome::command(move |run: ContainerRun| {
            let (started_tx, cancelled, flag) = (
                started_tx.clone(),
                cancelled_in.clone(),
                DropFlag(dropped_in.clone()),
            );
            async move {
                let _flag = flag;
                started_tx.send(run.job_name.clone()).unwrap();
                run.cancel.cancelled().await;
                cancelled.lock().unwrap().push(run.job_name.clone());
                // Ignore the cancellation: the future is dropped after the grace period anyway.
                std::future::pending::<i32>().await
            }
        }),
        config,
    );
    let jobs: Api<Job> = Api::default_namespaced(server.client().await);
    jobs.create(&PostParams::default(), &job("by-job", json!({})))
        .await?;
    assert_eq!(
        tokio::time::timeout(TIMEOUT, started.recv())
            .await?
            .as_deref(),
        Some("by-job")
    );
    jobs.delete("by-job", &DeleteParams::background()).await?;
    eventually("command cancelled", || async {
        cancelled
            .lock()
            .unwrap()
            .contains(&"by-job".to_string())
            .then_some(())
    })
    .await;
    eventually("command future dropped", || async {
        dropped.load(Ordering::SeqCst).then_some(())
    })
    .await;
    assert!(job_pods(&server, "by-job").is_empty());

    // Deleting the pod instead cancels too, and counts as a failure.
    jobs.create(&PostParams::default(), &job("by-pod", json!({})))
        .await?;
    assert_eq!(
        tokio::time::timeout(TIMEOUT, started.recv())
            .await?
            .as_deref(),
        Some("by-pod")
    );
    let pod = job_pods(&server, "by-pod").remove(0);
    let pods: Api<Pod> = Api::default_namespaced(server.client().await);
    pods.delete(&pod.name_any(), &DeleteParams::default())
        .await?;
    eventually("pod command cancelled", || async {
        cancelled
            .lock()
            .unwrap()
            .contains(&"by-pod".to_string())
            .then_some(())
    })
    .await;
    let failed = wait_finished(&server, "by-pod").await;
    assert_eq!(
        condition_reason(&failed, "Failed").as_deref(),
        Some("BackoffLimitExceeded")
    );
    Ok(())
}

#[tokio::test]
async fn suspend_and_ttl_after_finished() -> anyhow::Result<()> {
    let server = FakeApiServer::start().await?;
    server.start_job_controller(JobOutcome::succeed());
    let api: Api<Job> = Api::default_namespaced(server.in_process_client());
    create_job(
        &server,
        "paused",
        json!({"suspend": true, "ttlSecondsAfterFinished": 1}),
    )
    .await;
    let suspended = server
        .wait_for(TIMEOUT, |c| {
            c.get::<Job>("default", "paused")
                .filter(|j| condition_reason(j, "Suspended").is_some())
        })
        .await
        .expect("suspended condition");
    assert_eq!(
        condition_reason(&suspended, "Suspended").as_deref(),
        Some("JobSuspended")
    );
    assert!(job_pods(&server, "paused").is_empty());

    api.patch(
        "paused",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": false}})),
    )
    .await?;
    let done = wait_finished(&server, "paused").await;
    assert!(condition_types(&done).contains(&"Complete".to_string()));
    // ttlSecondsAfterFinished deletes the Job and, in the background, its pods.
    server
        .wait_for(TIMEOUT, |c| {
            (c.get::<Job>("default", "paused").is_none() && job_pods(c, "paused").is_empty())
                .then_some(())
        })
        .await
        .expect("job deleted after its TTL");
    Ok(())
}

fn terminated_message(cluster: &Cluster, job: &str) -> Option<String> {
    job_pods(cluster, job)
        .first()?
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .terminated
        .as_ref()?
        .message
        .clone()
}

#[tokio::test]
async fn termination_messages_reach_the_pod_status() -> anyhow::Result<()> {
    let server = FakeApiServer::start().await?;
    server.start_job_controller(JobPolicy::from_fn(|job| match job.name_any().as_str() {
        "fixed" => JobOutcome::fail_with_message(7, "PushFailed: rejected"),
        _ => JobOutcome::command(|run: ContainerRun| async move {
            std::fs::write(&run.termination_message_path, "Cancelled: stop requested\n").unwrap();
            3
        }),
    }));
    create_job(&server, "fixed", json!({})).await;
    create_job(&server, "written", json!({})).await;
    wait_finished(&server, "fixed").await;
    wait_finished(&server, "written").await;
    assert_eq!(
        terminated_message(&server, "fixed").as_deref(),
        Some("PushFailed: rejected")
    );
    assert_eq!(
        terminated_message(&server, "written").as_deref(),
        Some("Cancelled: stop requested\n")
    );
    Ok(())
}

fn unschedulable_message(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        })?
        .message
        .clone()
}

#[tokio::test]
async fn the_scheduler_binds_pods_only_where_they_fit() -> anyhow::Result<()> {
    let server = FakeApiServer::start().await?;
    let controller =
        server.start_job_controller(JobOutcome::succeed_after(Duration::from_millis(400)));
    controller.set_node(Node {
        max_pods: Some(1),
        labels: [("pool".to_owned(), "agents".to_owned())].into(),
        allocatable_cpu_millis: Some(2000),
    });
    create_job(&server, "first", json!({})).await;
    server
        .wait_for(TIMEOUT, |c| {
            job_pods(c, "first")
                .iter()
                .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .then_some(())
        })
        .await
        .expect("the first pod runs");
    // The node is full: the second pod waits, with the scheduler's message, then runs once the
    // first has finished.
    create_job(&server, "second", json!({})).await;
    let message = server
        .wait_for(TIMEOUT, |c| {
            job_pods(c, "second")
                .first()
                .and_then(unschedulable_message)
        })
        .await
        .expect("the second pod is unschedulable");
    assert_eq!(
        message,
        "0/1 nodes are available: 1 Too many pods. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
    );
    assert_eq!(
        condition_types(&wait_finished(&server, "second").await),
        ["SuccessCriteriaMet", "Complete"]
    );

    // Pods that can never fit: a selector no node matches, more CPU than the node has.
    let template = |spec: serde_json::Value| json!({"template": {"spec": spec}});
    create_job(
        &server,
        "elsewhere",
        template(json!({"restartPolicy": "Never", "nodeSelector": {"pool": "gpu"}, "containers": [{"name": "c", "image": "x"}]})),
    )
    .await;
    create_job(
        &server,
        "huge",
        template(json!({"restartPolicy": "Never", "containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "4"}}}]})),
    )
    .await;
    for (name, reason) in [
        (
            "elsewhere",
            "1 node(s) didn't match Pod's node affinity/selector.",
        ),
        ("huge", "1 Insufficient cpu."),
    ] {
        let message = server
            .wait_for(TIMEOUT, |c| {
                job_pods(c, name).first().and_then(unschedulable_message)
            })
            .await
            .expect("unschedulable");
        assert!(message.contains(reason), "{message}");
        assert!(
            message.ends_with("1 Preemption is not helpful for scheduling."),
            "{message}"
        );
    }
    // A node that matches (as an autoscaler would add) takes the pod.
    controller.set_node(Node {
        labels: [("pool".to_owned(), "gpu".to_owned())].into(),
        ..Node::default()
    });
    wait_finished(&server, "elsewhere").await;
    wait_finished(&server, "huge").await;
    Ok(())
}

async fn create_queued_job(server: &FakeApiServer, name: &str, queue: &str) {
    let mut job = job(name, json!({"suspend": true}));
    job.metadata.labels = Some([(QUEUE_NAME_LABEL.to_owned(), queue.to_owned())].into());
    let api: Api<Job> = Api::default_namespaced(server.in_process_client());
    api.create(&PostParams::default(), &job)
        .await
        .expect("job created");
}

fn is_suspended(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.suspend) == Some(true)
}

#[tokio::test]
async fn kueue_admits_queued_jobs_within_quota() -> anyhow::Result<()> {
    let server = FakeApiServer::start().await?;
    server.start_job_controller(JobOutcome::succeed_after(Duration::from_millis(400)));
    let kueue = server.start_kueue();
    create_queued_job(&server, "first", "agents").await;
    create_queued_job(&server, "second", "agents").await;
    create_queued_job(&server, "elsewhere", "other").await;
    // No quota yet: everything stays suspended, without pods.
    let held = server
        .wait_for(TIMEOUT, |c| {
            c.get::<Job>("default", "first")
                .filter(|j| condition_types(j).contains(&"Suspended".to_owned()))
        })
        .await
        .expect("the Job controller marks the held Job suspended");
    assert!(is_suspended(&held));
    assert!(job_pods(&server, "first").is_empty());

    // Quota for one Job at a time: the oldest runs first, the next once it finished.
    kueue.set_quota("agents", 1);
    server
        .wait_for(TIMEOUT, |c| {
            (!job_pods(c, "first").is_empty()).then_some(())
        })
        .await
        .expect("the first Job is admitted and gets a pod");
    let second = server.cluster().get::<Job>("default", "second").unwrap();
    assert!(is_suspended(&second), "no quota left for the second");
    assert!(job_pods(&server, "second").is_empty());
    wait_finished(&server, "first").await;
    wait_finished(&server, "second").await;
    let other = server.cluster().get::<Job>("default", "elsewhere").unwrap();
    assert!(is_suspended(&other), "a queue without quota admits nothing");
    assert!(job_pods(&server, "elsewhere").is_empty());
    Ok(())
}
