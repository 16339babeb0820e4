//! A stand-in for the Kubernetes (1.28+) Job controller and kubelet: for each batch/v1 Job it
//! creates a Pod, drives Pod and Job status to the outcome a [`JobPolicy`] chooses, and can run a
//! user-supplied async command with the pod's resolved environment.

mod env;
mod pod_status;
mod scheduler;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::meta;
use crate::registry::ResourceType;
use crate::store::{DeleteOptions, ObjKey, Propagation, WriteKind, WriteOptions};

use pod_status::job_condition;
pub use scheduler::Node;

const MANAGER: &str = "job-controller";

/// What the command callback of [`JobOutcome::Command`] receives: the pod's first container with
/// everything resolved from the store.
#[derive(Debug, Clone)]
pub struct ContainerRun {
    /// Namespace of the Job and Pod.
    pub namespace: String,
    /// Name of the Job.
    pub job_name: String,
    /// Name of the Pod.
    pub pod_name: String,
    /// Name of the container (the pod's first container).
    pub container_name: String,
    /// The container image.
    pub image: String,
    /// `command`, with `$(VAR)` references expanded.
    pub command: Vec<String>,
    /// `args`, with `$(VAR)` references expanded.
    pub args: Vec<String>,
    /// The resolved environment (`envFrom`, then `env`, with values from Secrets/ConfigMaps/fieldRefs).
    pub env: BTreeMap<String, String>,
    /// `workingDir`, if set.
    pub working_dir: Option<String>,
    /// The whole Pod as stored when the container started.
    pub pod: Pod,
    /// A file standing in for the container's termination-message path: what the command
    /// writes there becomes `state.terminated.message` (at most 4096 bytes, as the kubelet).
    pub termination_message_path: std::path::PathBuf,
    /// Cancelled when the Job or Pod is deleted or the Job's deadline passes; the future is dropped
    /// a grace period ([`JobControllerConfig::kill_grace`]) later.
    pub cancel: CancellationToken,
}

type CommandCallback = dyn Fn(ContainerRun) -> BoxFuture<'static, i32> + Send + Sync;

/// An async command standing in for a container: receives the resolved container, returns its
/// exit code.
#[derive(Clone)]
pub struct CommandFn(Arc<CommandCallback>);

impl fmt::Debug for CommandFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CommandFn(..)")
    }
}

/// What happens to a Job's pod.
#[derive(Debug, Clone)]
pub enum JobOutcome {
    /// Run, then exit 0 after `after`.
    Succeed {
        /// How long the container runs.
        after: Duration,
    },
    /// Run, then exit with `exit_code` (reason `Error`) after `after`.
    Fail {
        /// Exit code of the container.
        exit_code: i32,
        /// How long the container runs.
        after: Duration,
        /// What the container wrote to its termination-message file (shown in
        /// `state.terminated.message`, as the kubelet does).
        message: Option<String>,
    },
    /// Run, then get killed for exceeding memory (exit code 137, reason `OOMKilled`) after `after`.
    OomKilled {
        /// How long the container runs.
        after: Duration,
    },
    /// Stay Pending: the container waits with reason `ErrImagePull`.
    ErrImagePull,
    /// Stay Pending: the container waits with reason `ImagePullBackOff`.
    ImagePullBackOff,
    /// Stay Pending: the container waits with any reason and message.
    Waiting {
        /// Waiting reason, e.g. `ContainerCreating`.
        reason: String,
        /// Waiting message.
        message: String,
    },
    /// Stay Pending with condition `PodScheduled=False`, reason `Unschedulable`.
    Unschedulable,
    /// Run forever (until deleted or past the Job's deadline).
    RunForever,
    /// Run a command; its result is the exit code.
    Command(CommandFn),
}

impl JobOutcome {
    /// Succeed immediately.
    pub fn succeed() -> Self {
        Self::Succeed {
            after: Duration::ZERO,
        }
    }

    /// Succeed after `after`.
    pub fn succeed_after(after: Duration) -> Self {
        Self::Succeed { after }
    }

    /// Fail immediately with `exit_code`.
    pub fn fail(exit_code: i32) -> Self {
        Self::Fail {
            exit_code,
            after: Duration::ZERO,
            message: None,
        }
    }

    /// Fail immediately with `exit_code`, leaving `message` as the termination message.
    pub fn fail_with_message(exit_code: i32, message: impl Into<String>) -> Self {
        Self::Fail {
            exit_code,
            after: Duration::ZERO,
            message: Some(message.into()),
        }
    }

    /// Get OOM-killed immediately.
    pub fn oom_killed() -> Self {
        Self::OomKilled {
            after: Duration::ZERO,
        }
    }

    /// Run `command` as the container (see [`ContainerRun`]).
    pub fn command<F, Fut>(command: F) -> Self
    where
        F: Fn(ContainerRun) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = i32> + Send + 'static,
    {
        Self::Command(CommandFn(Arc::new(move |run| Box::pin(command(run)))))
    }
}

/// Decides the [`JobOutcome`] of each pod the controller starts (called once per pod, so a Job
/// that is retried after a failure asks again).
#[derive(Clone)]
pub struct JobPolicy(Arc<dyn Fn(&Job) -> JobOutcome + Send + Sync>);

impl fmt::Debug for JobPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JobPolicy(..)")
    }
}

impl JobPolicy {
    /// The same outcome for every Job.
    pub fn always(outcome: JobOutcome) -> Self {
        Self(Arc::new(move |_| outcome.clone()))
    }

    /// Decide per Job.
    pub fn from_fn(decide: impl Fn(&Job) -> JobOutcome + Send + Sync + 'static) -> Self {
        Self(Arc::new(decide))
    }
}

impl From<JobOutcome> for JobPolicy {
    fn from(outcome: JobOutcome) -> Self {
        Self::always(outcome)
    }
}

/// Settings of the Job controller.
#[derive(Debug, Clone)]
pub struct JobControllerConfig {
    /// Delay before a failed pod is replaced (the real controller backs off from 10 s). Default 100 ms.
    pub retry_delay: Duration,
    /// How long a cancelled command may keep running before its future is dropped. Default 2 s.
    pub kill_grace: Duration,
    /// How often time-based transitions are checked. Default 20 ms.
    pub tick: Duration,
    /// `spec.nodeName` given to scheduled pods. Default `fake-node`.
    pub node_name: String,
}

impl Default for JobControllerConfig {
    fn default() -> Self {
        Self {
            retry_delay: Duration::from_millis(100),
            kill_grace: Duration::from_secs(2),
            tick: Duration::from_millis(20),
            node_name: "fake-node".into(),
        }
    }
}

/// Handle of a running Job controller. Dropping it does not stop the controller; it stops with the
/// server or with [`stop`](Self::stop).
///
/// When a Job is deleted or marked for deletion, or its Pod is deleted, whatever runs for it is
/// cancelled. (A Job deleted with the default, orphaning policy leaves its Pod in the store with
/// its last status; nothing drives it any more.)
#[derive(Debug, Clone)]
pub struct JobController {
    stop: CancellationToken,
    pods_started: Arc<Mutex<usize>>,
    node: Arc<Mutex<Node>>,
}

impl JobController {
    pub(crate) fn start(cluster: Cluster, policy: JobPolicy, config: JobControllerConfig) -> Self {
        let stop = cluster.shared().shutdown.child_token();
        let handle = Self {
            stop: stop.clone(),
            pods_started: Arc::default(),
            node: Arc::default(),
        };
        let mut controller = Controller {
            cluster,
            policy,
            config,
            jobs: HashMap::new(),
            wake: Arc::new(Notify::new()),
            pods_started: handle.pods_started.clone(),
            node: handle.node.clone(),
            ip_counter: 0,
            termination_dir: tempfile::tempdir().expect("creating a temporary directory"),
        };
        tokio::spawn(async move { controller.run(stop).await });
        handle
    }

    /// Stop the controller; running commands are cancelled.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Replaces the node the stand-in scheduler binds pods to (by default one node without
    /// labels or limits): pods that do not fit stay unschedulable until they do.
    pub fn set_node(&self, node: Node) {
        *self.node.lock().unwrap_or_else(|p| p.into_inner()) = node;
    }

    /// The node the stand-in scheduler binds pods to.
    pub fn node(&self) -> Node {
        self.node.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many pods the controller has created so far.
    pub fn pods_started(&self) -> usize {
        *self.pods_started.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A command being run; dropping it cancels the command.
struct RunningCommand {
    cancel: CancellationToken,
    result: Arc<Mutex<Option<i32>>>,
    message_path: std::path::PathBuf,
}

/// What the container left in its termination-message file (the kubelet reads at most 4096
/// bytes).
fn read_termination_message(path: &std::path::Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).into_owned();
    (!text.trim().is_empty()).then_some(text)
}

impl Drop for RunningCommand {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Created; not yet scheduled/started (or waiting for its Secrets/ConfigMaps).
    Created,
    Running,
    /// Pending for good (image pull / unschedulable / custom waiting reason).
    Stuck,
}

struct PodRun {
    name: String,
    uid: String,
    outcome: JobOutcome,
    stage: Stage,
    started: Instant,
    command: Option<RunningCommand>,
    config_error: Option<String>,
    /// Bound to the node (counts against its pod capacity).
    bound: bool,
    /// The scheduler's last message while the pod did not fit.
    unschedulable: Option<String>,
}

#[derive(Default)]
struct JobState {
    pod: Option<PodRun>,
    next_pod_at: Option<Instant>,
    started: Option<Instant>,
    finished_at: Option<Instant>,
}

struct Controller {
    cluster: Cluster,
    policy: JobPolicy,
    config: JobControllerConfig,
    jobs: HashMap<String, JobState>,
    wake: Arc<Notify>,
    pods_started: Arc<Mutex<usize>>,
    node: Arc<Mutex<Node>>,
    ip_counter: u32,
    /// Holds the containers' termination-message files.
    termination_dir: tempfile::TempDir,
}

fn conditions(job: &Value) -> Vec<Value> {
    job.pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn has_condition(job: &Value, kind: &str) -> bool {
    conditions(job)
        .iter()
        .any(|c| c["type"] == kind && c["status"] == "True")
}

fn count(job: &Value, field: &str) -> i64 {
    job.pointer(&format!("/status/{field}"))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

enum PodEvent {
    None,
    Gone,
    Finished(i32),
}

impl Controller {
    async fn run(&mut self, stop: CancellationToken) {
        let mut changes = self.cluster.shared().store.subscribe();
        loop {
            changes.borrow_and_update();
            self.sync_all();
            tokio::select! {
                _ = changes.changed() => {}
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.config.tick) => {}
                _ = stop.cancelled() => break,
            }
        }
        // Dropping the state cancels running commands.
        self.jobs.clear();
    }

    fn resource(&self, group: &str, plural: &str) -> Arc<ResourceType> {
        self.cluster
            .shared()
            .store
            .read(|s| s.registry.find_resource(group, plural))
            .expect("built-in resource")
    }

    fn get(&self, rt: &ResourceType, namespace: &str, name: &str) -> Option<Value> {
        let key = ObjKey::new(rt, namespace, name);
        self.cluster.shared().store.read(|s| s.get(&key).cloned())
    }

    /// Merge-patch an object (`status`: through the status subresource).
    fn patch(
        &self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        status: bool,
        patch: Value,
    ) -> Result<Value, ApiError> {
        let opts = WriteOptions {
            manager: MANAGER.into(),
            dry_run: false,
            direct: false,
        };
        self.cluster
            .shared()
            .store
            .write(|s| s.write(rt, namespace, name, status, WriteKind::Merge(patch), &opts))
            .map(|(v, _)| v)
    }

    fn job_status(&self, job: &Value, status: Value) {
        let jobs = self.resource("batch", "jobs");
        let result = self.patch(
            &jobs,
            meta::namespace(job),
            meta::name(job),
            true,
            json!({"status": status}),
        );
        if let Err(err) = result {
            tracing::debug!(%err, job = meta::name(job), "job status update failed");
        }
    }

    fn delete_pod(&self, namespace: &str, name: &str) {
        let pods = self.resource("", "pods");
        let options = DeleteOptions::propagation(Propagation::Background);
        let _ = self
            .cluster
            .shared()
            .store
            .write(|s| s.delete(&pods, namespace, name, &options));
    }

    fn sync_all(&mut self) {
        let jobs_rt = self.resource("batch", "jobs");
        let jobs: Vec<Value> = self
            .cluster
            .shared()
            .store
            .read(|s| s.list(&jobs_rt, None).map(|(_, o)| o.clone()).collect());
        let uids: std::collections::HashSet<String> =
            jobs.iter().map(|j| meta::uid(j).to_string()).collect();
        // Jobs that are gone: dropping their state cancels what runs for them.
        self.jobs.retain(|uid, _| uids.contains(uid));
        for job in jobs {
            self.sync_job(&job);
        }
    }

    fn sync_job(&mut self, job: &Value) {
        let managed_by = job.pointer("/spec/managedBy").and_then(Value::as_str);
        if managed_by.is_some_and(|m| m != "kubernetes.io/job-controller") {
            return;
        }
        let uid = meta::uid(job).to_string();
        let (namespace, name) = (
            meta::namespace(job).to_string(),
            meta::name(job).to_string(),
        );
        let mut state = self.jobs.remove(&uid).unwrap_or_default();
        let now = Instant::now();

        if meta::is_deleting(job) {
            state.pod = None;
        } else if has_condition(job, "Complete") || has_condition(job, "Failed") {
            state.pod = None;
            let finished = *state.finished_at.get_or_insert(now);
            if let Some(ttl) = job
                .pointer("/spec/ttlSecondsAfterFinished")
                .and_then(Value::as_u64)
                && now >= finished + Duration::from_secs(ttl)
            {
                let jobs = self.resource("batch", "jobs");
                let options = DeleteOptions::propagation(Propagation::Background);
                let _ = self
                    .cluster
                    .shared()
                    .store
                    .write(|s| s.delete(&jobs, &namespace, &name, &options));
            }
        } else if job.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true) {
            self.suspend(job, &mut state);
        } else {
            self.drive(job, &mut state, now);
        }
        self.jobs.insert(uid, state);
    }

    fn suspend(&mut self, job: &Value, state: &mut JobState) {
        if let Some(pod) = state.pod.take() {
            self.delete_pod(meta::namespace(job), &pod.name);
        }
        state.started = None;
        if !has_condition(job, "Suspended") {
            let mut conds: Vec<Value> = conditions(job)
                .into_iter()
                .filter(|c| c["type"] != "Suspended")
                .collect();
            conds.push(job_condition(
                "Suspended",
                true,
                "JobSuspended",
                "Job suspended",
            ));
            self.job_status(
                job,
                json!({"active": 0, "ready": 0, "startTime": null, "conditions": conds}),
            );
        }
    }

    fn drive(&mut self, job: &Value, state: &mut JobState, now: Instant) {
        let namespace = meta::namespace(job).to_string();
        let mut job = job.clone();
        if conditions(&job)
            .iter()
            .any(|c| c["type"] == "Suspended" && c["status"] == "True")
        {
            let conds: Vec<Value> = conditions(&job)
                .into_iter()
                .map(|c| {
                    if c["type"] == "Suspended" {
                        job_condition("Suspended", false, "JobResumed", "Job resumed")
                    } else {
                        c
                    }
                })
                .collect();
            self.job_status(&job, json!({"conditions": conds}));
            job["status"]["conditions"] = json!(conds);
        }
        if job.pointer("/status/startTime").is_none_or(Value::is_null) {
            state.started = Some(now);
            self.job_status(&job, json!({"startTime": meta::now_time(), "active": 0, "ready": 0, "terminating": 0, "uncountedTerminatedPods": {}}));
        }
        let started = *state
            .started
            .get_or_insert_with(|| started_from_status(&job, now));
        if let Some(deadline) = job
            .pointer("/spec/activeDeadlineSeconds")
            .and_then(Value::as_u64)
            && now >= started + Duration::from_secs(deadline)
        {
            let active = state
                .pod
                .take()
                .map(|pod| self.delete_pod(&namespace, &pod.name))
                .is_some();
            let failed = count(&job, "failed") + i64::from(active);
            self.fail(
                &job,
                failed,
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            );
            return;
        }
        let Some(mut pod) = state.pod.take() else {
            if state.next_pod_at.is_none_or(|at| now >= at) {
                state.next_pod_at = None;
                state.pod = self.create_pod(&job);
            }
            return;
        };
        match self.advance(&job, &mut pod) {
            PodEvent::None => state.pod = Some(pod),
            PodEvent::Finished(0) => {
                let succeeded = count(&job, "succeeded") + 1;
                let mut conds = conditions(&job);
                let message = "Reached expected number of succeeded pods";
                conds.push(job_condition(
                    "SuccessCriteriaMet",
                    true,
                    "CompletionsReached",
                    message,
                ));
                self.job_status(
                    &job,
                    json!({"active": 0, "ready": 0, "succeeded": succeeded, "conditions": conds}),
                );
                conds.push(job_condition(
                    "Complete",
                    true,
                    "CompletionsReached",
                    message,
                ));
                self.job_status(
                    &job,
                    json!({"conditions": conds, "completionTime": meta::now_time()}),
                );
                state.finished_at = Some(Instant::now());
            }
            PodEvent::Finished(_) | PodEvent::Gone => {
                let failed = count(&job, "failed") + 1;
                let limit = job
                    .pointer("/spec/backoffLimit")
                    .and_then(Value::as_i64)
                    .unwrap_or(6);
                if failed > limit {
                    self.fail(
                        &job,
                        failed,
                        "BackoffLimitExceeded",
                        "Job has reached the specified backoff limit",
                    );
                    state.finished_at = Some(Instant::now());
                } else {
                    self.job_status(&job, json!({"active": 0, "ready": 0, "failed": failed}));
                    state.next_pod_at = Some(Instant::now() + self.config.retry_delay);
                }
            }
        }
    }

    fn fail(&self, job: &Value, failed: i64, reason: &str, message: &str) {
        let mut conds = conditions(job);
        conds.push(job_condition("FailureTarget", true, reason, message));
        self.job_status(
            job,
            json!({"active": 0, "ready": 0, "failed": failed, "conditions": conds}),
        );
        conds.push(job_condition("Failed", true, reason, message));
        self.job_status(job, json!({"conditions": conds}));
    }

    fn create_pod(&mut self, job: &Value) -> Option<PodRun> {
        let typed: Job = match serde_json::from_value(job.clone()) {
            Ok(job) => job,
            Err(err) => {
                tracing::warn!(%err, "job does not deserialize; not starting it");
                return None;
            }
        };
        let outcome = (self.policy.0)(&typed);
        let job_name = meta::name(job);
        let template = job.pointer("/spec/template").cloned().unwrap_or_default();
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": format!("{job_name}-"),
                "namespace": meta::namespace(job),
                "labels": template.pointer("/metadata/labels").cloned().unwrap_or_else(|| json!({})),
                "annotations": template.pointer("/metadata/annotations").cloned().unwrap_or_else(|| json!({})),
                "ownerReferences": [{
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": job_name,
                    "uid": meta::uid(job),
                    "controller": true,
                    "blockOwnerDeletion": true,
                }],
            },
            "spec": template.get("spec").cloned().unwrap_or_default(),
        });
        let pods = self.resource("", "pods");
        let opts = WriteOptions {
            manager: MANAGER.into(),
            dry_run: false,
            direct: false,
        };
        let created = match self
            .cluster
            .shared()
            .store
            .write(|s| s.create(&pods, None, pod, &opts))
        {
            Ok(pod) => pod,
            Err(err) => {
                tracing::warn!(%err, job = job_name, "creating the job's pod failed");
                return None;
            }
        };
        *self.pods_started.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.job_status(job, json!({"active": 1, "ready": 0}));
        Some(PodRun {
            name: meta::name(&created).to_string(),
            uid: meta::uid(&created).to_string(),
            outcome,
            stage: Stage::Created,
            started: Instant::now(),
            command: None,
            config_error: None,
            bound: false,
            unschedulable: None,
        })
    }

    fn next_ip(&mut self) -> String {
        self.ip_counter += 1;
        format!(
            "10.244.{}.{}",
            (self.ip_counter / 250) % 250,
            self.ip_counter % 250 + 2
        )
    }

    fn pod_status(&self, pod: &PodRun, namespace: &str, status: Value) {
        let pods = self.resource("", "pods");
        if let Err(err) = self.patch(&pods, namespace, &pod.name, true, json!({"status": status})) {
            tracing::debug!(%err, pod = pod.name, "pod status update failed");
        }
    }

    fn schedule(&self, pod: &mut PodRun, namespace: &str) {
        pod.bound = true;
        let pods = self.resource("", "pods");
        let _ = self.patch(
            &pods,
            namespace,
            &pod.name,
            false,
            json!({"spec": {"nodeName": self.config.node_name}}),
        );
    }

    /// Move the pod along according to its outcome.
    fn advance(&mut self, job: &Value, run: &mut PodRun) -> PodEvent {
        let namespace = meta::namespace(job).to_string();
        let pods = self.resource("", "pods");
        let Some(pod) = self
            .get(&pods, &namespace, &run.name)
            .filter(|p| meta::uid(p) == run.uid)
        else {
            return PodEvent::Gone;
        };
        if meta::is_deleting(&pod) {
            return PodEvent::Gone;
        }
        if run.stage == Stage::Created
            && !matches!(run.outcome, JobOutcome::Unschedulable)
            && self.waits_for_room(run, &namespace, &pod)
        {
            return PodEvent::None;
        }
        match (run.stage, run.outcome.clone()) {
            (Stage::Created, JobOutcome::Unschedulable) => {
                self.pod_status(run, &namespace, pod_status::unschedulable());
                run.stage = Stage::Stuck;
            }
            (
                Stage::Created,
                JobOutcome::ErrImagePull
                | JobOutcome::ImagePullBackOff
                | JobOutcome::Waiting { .. },
            ) => {
                let image = pod
                    .pointer("/spec/containers/0/image")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let (reason, message) = match &run.outcome {
                    JobOutcome::ErrImagePull => (
                        "ErrImagePull".to_string(),
                        format!(
                            "rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": not found"
                        ),
                    ),
                    JobOutcome::ImagePullBackOff => (
                        "ImagePullBackOff".to_string(),
                        format!("Back-off pulling image \"{image}\""),
                    ),
                    JobOutcome::Waiting { reason, message } => (reason.clone(), message.clone()),
                    _ => unreachable!("matched above"),
                };
                self.schedule(run, &namespace);
                let ip = self.next_ip();
                self.pod_status(
                    run,
                    &namespace,
                    pod_status::waiting(&pod, &ip, &reason, &message),
                );
                run.stage = Stage::Stuck;
            }
            (Stage::Created, JobOutcome::Command(command)) => {
                let resolved = self.cluster.shared().store.read(|s| {
                    let container = pod
                        .pointer("/spec/containers/0")
                        .cloned()
                        .unwrap_or_default();
                    env::resolve_env(s, &pod, &container).map(|env| (container, env))
                });
                match resolved {
                    Err(message) => {
                        if run.config_error.as_ref() != Some(&message) {
                            if run.config_error.is_none() {
                                self.schedule(run, &namespace);
                            }
                            let ip = self.next_ip();
                            self.pod_status(
                                run,
                                &namespace,
                                pod_status::waiting(
                                    &pod,
                                    &ip,
                                    "CreateContainerConfigError",
                                    &message,
                                ),
                            );
                            run.config_error = Some(message);
                        }
                    }
                    Ok((container, env)) => {
                        self.start_running(job, run, &pod);
                        run.command = Some(self.spawn_command(job, &pod, &container, env, command));
                    }
                }
            }
            (Stage::Created, _) => self.start_running(job, run, &pod),
            (Stage::Running, outcome) => {
                let elapsed = run.started.elapsed();
                let finished = match outcome {
                    JobOutcome::Succeed { after } => (elapsed >= after).then_some((0, "Completed")),
                    JobOutcome::Fail {
                        exit_code, after, ..
                    } => (elapsed >= after).then_some((exit_code, "Error")),
                    JobOutcome::OomKilled { after } => {
                        (elapsed >= after).then_some((137, "OOMKilled"))
                    }
                    JobOutcome::Command(_) => run
                        .command
                        .as_ref()
                        .and_then(|c| *c.result.lock().unwrap_or_else(|p| p.into_inner()))
                        .map(|code| (code, if code == 0 { "Completed" } else { "Error" })),
                    _ => None,
                };
                if let Some((code, reason)) = finished {
                    let previous = pod.get("status").cloned().unwrap_or_default();
                    let message = match &run.outcome {
                        JobOutcome::Fail { message, .. } => message.clone(),
                        JobOutcome::Command(_) => run
                            .command
                            .as_ref()
                            .and_then(|c| read_termination_message(&c.message_path)),
                        _ => None,
                    };
                    self.pod_status(
                        run,
                        &namespace,
                        pod_status::terminated(&pod, &previous, code, reason, message.as_deref()),
                    );
                    run.command = None;
                    return PodEvent::Finished(code);
                }
            }
            (Stage::Stuck, _) => {}
        }
        PodEvent::None
    }

    /// Whether the stand-in scheduler cannot bind the pod yet (its status then says why, as
    /// kube-scheduler's does).
    fn waits_for_room(&self, run: &mut PodRun, namespace: &str, pod: &Value) -> bool {
        if run.bound {
            return false;
        }
        let bound = self
            .jobs
            .values()
            .filter(|s| s.pod.as_ref().is_some_and(|p| p.bound))
            .count();
        let node = self.node.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(message) = node.unschedulable(pod, bound) else {
            return false;
        };
        if run.unschedulable.as_ref() != Some(&message) {
            self.pod_status(run, namespace, pod_status::unschedulable_because(&message));
            run.unschedulable = Some(message);
        }
        true
    }

    fn start_running(&mut self, job: &Value, run: &mut PodRun, pod: &Value) {
        let namespace = meta::namespace(job);
        if run.config_error.is_none() {
            self.schedule(run, namespace);
        }
        let ip = self.next_ip();
        let stored = self
            .get(&self.resource("", "pods"), namespace, &run.name)
            .unwrap_or_else(|| pod.clone());
        self.pod_status(run, namespace, pod_status::running(&stored, &ip));
        self.job_status(job, json!({"ready": 1}));
        run.stage = Stage::Running;
        run.started = Instant::now();
    }

    fn spawn_command(
        &self,
        job: &Value,
        pod: &Value,
        container: &Value,
        env: BTreeMap<String, String>,
        command: CommandFn,
    ) -> RunningCommand {
        let strings = |field: &str| -> Vec<String> {
            meta::string_list(container.get(field))
                .iter()
                .map(|s| env::expand(s, &env))
                .collect()
        };
        let cancel = CancellationToken::new();
        let message_path = self
            .termination_dir
            .path()
            .join(format!("{}-termination-log", meta::uid(pod)));
        if let Err(err) = std::fs::write(&message_path, b"") {
            tracing::warn!(%err, "cannot create the termination-message file");
        }
        let stored_pod = self
            .get(
                &self.resource("", "pods"),
                meta::namespace(pod),
                meta::name(pod),
            )
            .unwrap_or_else(|| pod.clone());
        let run = ContainerRun {
            namespace: meta::namespace(job).to_string(),
            job_name: meta::name(job).to_string(),
            pod_name: meta::name(pod).to_string(),
            container_name: container["name"].as_str().unwrap_or_default().to_string(),
            image: container["image"].as_str().unwrap_or_default().to_string(),
            command: strings("command"),
            args: strings("args"),
            working_dir: container
                .get("workingDir")
                .and_then(Value::as_str)
                .map(String::from),
            pod: serde_json::from_value(stored_pod).unwrap_or_default(),
            cancel: cancel.clone(),
            termination_message_path: message_path.clone(),
            env,
        };
        let result = Arc::new(Mutex::new(None));
        let (slot, wake, grace, token) = (
            result.clone(),
            self.wake.clone(),
            self.config.kill_grace,
            cancel.clone(),
        );
        let future = (command.0)(run);
        tokio::spawn(async move {
            tokio::select! {
                code = future => {
                    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(code);
                    wake.notify_one();
                }
                _ = async { token.cancelled().await; tokio::time::sleep(grace).await } => {}
            }
        });
        RunningCommand {
            cancel,
            result,
            message_path,
        }
    }
}

fn started_from_status(job: &Value, now: Instant) -> Instant {
    let Some(start) = job
        .pointer("/status/startTime")
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    else {
        return now;
    };
    let age = (chrono::Utc::now() - start.with_timezone(&chrono::Utc))
        .to_std()
        .unwrap_or_default();
    now.checked_sub(age).unwrap_or(now)
}
