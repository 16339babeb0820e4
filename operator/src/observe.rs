//! Reads what a Job and its Pods say about a run: still pending (and why), running, or finished
//! with an outcome. Pure functions over the Kubernetes objects.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use terarchitect_worker_api::AgentOutcome;

use crate::crd::FailureReason;
use crate::job_builder::AGENT_CONTAINER;

/// What the Job says about the run.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// The pod is not running yet; `problem` is a reason it may never start.
    Pending {
        /// A reason the pod is stuck, with the kubelet's message.
        problem: Option<(FailureReason, String)>,
        /// Whether the problem cannot resolve by itself (fail at once, not after a timeout).
        permanent: bool,
        /// When the pod was created.
        since: Option<Time>,
    },
    /// The agent is running.
    Running {
        /// When it started.
        started: Option<Time>,
    },
    /// The agent finished its work.
    Succeeded {
        /// When the Job completed.
        finished: Option<Time>,
    },
    /// The run failed or was cancelled by the agent.
    Failed {
        /// Why.
        reason: FailureReason,
        /// Details.
        message: String,
        /// The agent's own outcome, when it reported one.
        agent_outcome: Option<AgentOutcome>,
        /// When the Job failed.
        finished: Option<Time>,
    },
}

fn condition<'a>(
    job: &'a Job,
    type_: &str,
) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

fn agent_terminated(pod: &Pod) -> Option<&ContainerStateTerminated> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == AGENT_CONTAINER)?
        .state
        .as_ref()?
        .terminated
        .as_ref()
}

/// The outcome of a failed agent container: OOM kill, or the agent's termination-message line,
/// or its exit code.
fn failed_container(
    term: &ContainerStateTerminated,
) -> (FailureReason, String, Option<AgentOutcome>) {
    if term.reason.as_deref() == Some("OOMKilled")
        || term.exit_code == 137 && term.reason.as_deref() == Some("OOMKilled")
    {
        return (
            FailureReason::OomKilled,
            "the agent container ran out of memory".into(),
            None,
        );
    }
    let message = term.message.as_deref().unwrap_or("").trim();
    // With FallbackToLogsOnError the message is the log tail when the file is empty: the
    // agent's own line is the last one.
    let last = message
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let parsed = AgentOutcome::parse_message_line(last);
    let outcome = parsed
        .as_ref()
        .map(|(o, _)| *o)
        .or_else(|| (term.exit_code != 0).then(|| AgentOutcome::from_exit_code(term.exit_code)));
    let text = match &parsed {
        Some(_) => last.to_owned(),
        None if !last.is_empty() => format!("agent exited with code {}: {last}", term.exit_code),
        None => format!(
            "agent exited with code {} ({})",
            term.exit_code,
            outcome.map_or("AgentFailed", AgentOutcome::reason)
        ),
    };
    let reason = match outcome {
        Some(AgentOutcome::Cancelled) => FailureReason::Cancelled,
        Some(AgentOutcome::TimeLimit) => FailureReason::DeadlineExceeded,
        _ => FailureReason::AgentFailed,
    };
    (reason, text, outcome)
}

const IMAGE_PULL_REASONS: [&str; 4] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
];
const CONFIG_REASONS: [&str; 2] = ["CreateContainerConfigError", "CreateContainerError"];

/// Why a pending pod might never start.
fn pending_problem(pod: &Pod) -> Option<(FailureReason, String, bool)> {
    let status = pod.status.as_ref()?;
    for c in status.container_statuses.iter().flatten() {
        let Some(waiting) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = waiting.reason.as_deref().unwrap_or("");
        let message = format!("{reason}: {}", waiting.message.as_deref().unwrap_or(""))
            .trim_end_matches(": ")
            .to_owned();
        if IMAGE_PULL_REASONS.contains(&reason) {
            return Some((
                FailureReason::ImagePull,
                message,
                reason == "InvalidImageName",
            ));
        }
        if CONFIG_REASONS.contains(&reason) {
            return Some((FailureReason::ConfigError, message, false));
        }
    }
    let unschedulable = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    })?;
    let message = unschedulable
        .message
        .clone()
        .unwrap_or_else(|| "no node can run the agent pod".into());
    let permanent = never_fits(&message);
    Some((FailureReason::Unschedulable, message, permanent))
}

/// Reasons kube-scheduler gives for a node that no amount of waiting or preemption changes.
const UNRESOLVABLE: [&str; 3] = [
    "didn't match Pod's node affinity/selector",
    "had untolerated taint",
    "didn't match pod anti-affinity rules",
];

/// The `<count> <reason>` items of one `0/N nodes are available: ...` sentence, and N.
fn node_reasons(sentence: &str) -> Option<(u32, Vec<(u32, &str)>)> {
    let rest = sentence.trim().strip_prefix("0/")?;
    let (total, rest) = rest.split_once(" nodes are available:")?;
    let total = total.trim().parse().ok()?;
    let items = rest
        .trim()
        .trim_end_matches('.')
        .split(", ")
        .filter_map(|item| {
            let (n, reason) = item.trim().split_once(' ')?;
            Some((n.parse().ok()?, reason))
        })
        .collect();
    Some((total, items))
}

/// Whether kube-scheduler's message says the pod can never fit, so waiting is pointless: every
/// node is one where "Preemption is not helpful for scheduling" (the scheduler's verdict for
/// nodes whose failure no eviction resolves: a request beyond the node's allocatable, a
/// selector or affinity it does not match, an untolerated taint), or, without a preemption
/// part, every node failed for such a reason. "Too many pods", "Insufficient cpu" with
/// preemption candidates, and zero nodes (an autoscaler may add some) are worth waiting for.
pub fn never_fits(message: &str) -> bool {
    let (filter, preemption) = match message.split_once(" preemption: ") {
        Some((f, p)) => (f, Some(p)),
        None => (message, None),
    };
    if let Some(preemption) = preemption {
        return node_reasons(preemption).is_some_and(|(total, items)| {
            total > 0
                && items
                    .iter()
                    .filter(|(_, r)| r.starts_with("Preemption is not helpful for scheduling"))
                    .map(|(n, _)| n)
                    .sum::<u32>()
                    == total
        });
    }
    node_reasons(filter).is_some_and(|(total, items)| {
        total > 0
            && !items.is_empty()
            && items
                .iter()
                .all(|(_, r)| UNRESOLVABLE.iter().any(|u| r.contains(u)))
    })
}

/// Observes a Job and its Pods.
pub fn observe(job: &Job, pods: &[Pod]) -> Observed {
    let status = job.status.as_ref();
    if let Some(done) = condition(job, "Complete") {
        return Observed::Succeeded {
            finished: status
                .and_then(|s| s.completion_time.clone())
                .or_else(|| done.last_transition_time.clone()),
        };
    }
    if let Some(failed) = condition(job, "Failed") {
        let finished = failed.last_transition_time.clone();
        if failed.reason.as_deref() == Some("DeadlineExceeded") {
            let deadline = job
                .spec
                .as_ref()
                .and_then(|s| s.active_deadline_seconds)
                .unwrap_or_default();
            return Observed::Failed {
                reason: FailureReason::DeadlineExceeded,
                message: format!("the run exceeded its deadline of {deadline}s"),
                agent_outcome: None,
                finished,
            };
        }
        let (reason, message, agent_outcome) = pods
            .iter()
            .find_map(agent_terminated)
            .map(failed_container)
            .unwrap_or_else(|| {
                let why = failed
                    .message
                    .clone()
                    .or_else(|| failed.reason.clone())
                    .unwrap_or_default();
                (
                    FailureReason::AgentFailed,
                    format!("the Job failed: {why}"),
                    None,
                )
            });
        return Observed::Failed {
            reason,
            message,
            agent_outcome,
            finished,
        };
    }
    let running = pods
        .iter()
        .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"));
    if let Some(pod) = running {
        let started = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == AGENT_CONTAINER))
            .and_then(|c| c.state.as_ref()?.running.as_ref()?.started_at.clone())
            .or_else(|| pod.status.as_ref().and_then(|s| s.start_time.clone()));
        return Observed::Running { started };
    }
    if pods.iter().any(|p| {
        matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
    }) {
        // The pod finished; the Job controller has not recorded it yet.
        return Observed::Running { started: None };
    }
    let pod = pods.first();
    let problem = pod.and_then(pending_problem);
    Observed::Pending {
        permanent: problem.as_ref().is_some_and(|p| p.2),
        problem: problem.map(|(r, m, _)| (r, m)),
        since: pod.and_then(|p| p.metadata.creation_timestamp.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(status: serde_json::Value) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "aj-1"},
            "spec": {"activeDeadlineSeconds": 5400, "template": {"spec": {"containers": []}}},
            "status": status
        }))
        .unwrap()
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "aj-1-x", "creationTimestamp": "2026-01-01T00:00:00Z"}, "status": status})).unwrap()
    }

    fn failed_job() -> Job {
        job(json!({"failed": 1, "conditions": [
            {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded"},
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "lastTransitionTime": "2026-01-01T00:05:00Z"}]}))
    }

    fn terminated(exit: i32, reason: &str, message: &str) -> Pod {
        pod(
            json!({"phase": "Failed", "containerStatuses": [{"name": "agent", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": exit, "reason": reason, "message": message}}}]}),
        )
    }

    #[test]
    fn success_and_deadline() {
        let done = job(
            json!({"succeeded": 1, "completionTime": "2026-01-01T00:10:00Z", "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]}),
        );
        assert!(matches!(
            observe(&done, &[]),
            Observed::Succeeded { finished: Some(_) }
        ));
        let late = job(
            json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}),
        );
        match observe(&late, &[]) {
            Observed::Failed {
                reason, message, ..
            } => {
                assert_eq!(reason, FailureReason::DeadlineExceeded);
                assert!(message.contains("5400"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn agent_failures_carry_the_agents_reason() {
        match observe(
            &failed_job(),
            &[terminated(
                7,
                "Error",
                "cloning...\nPushFailed: remote rejected the push\n",
            )],
        ) {
            Observed::Failed {
                reason,
                message,
                agent_outcome,
                ..
            } => {
                assert_eq!(reason, FailureReason::AgentFailed);
                assert_eq!(message, "PushFailed: remote rejected the push");
                assert_eq!(agent_outcome, Some(AgentOutcome::PushFailed));
            }
            other => panic!("{other:?}"),
        }
        match observe(
            &failed_job(),
            &[terminated(
                3,
                "Error",
                "Cancelled: the ticket was cancelled",
            )],
        ) {
            Observed::Failed { reason, .. } => assert_eq!(reason, FailureReason::Cancelled),
            other => panic!("{other:?}"),
        }
        match observe(&failed_job(), &[terminated(137, "OOMKilled", "")]) {
            Observed::Failed { reason, .. } => assert_eq!(reason, FailureReason::OomKilled),
            other => panic!("{other:?}"),
        }
        match observe(&failed_job(), &[terminated(9, "Error", "")]) {
            Observed::Failed {
                reason,
                message,
                agent_outcome,
                ..
            } => {
                assert_eq!(reason, FailureReason::AgentFailed);
                assert_eq!(agent_outcome, Some(AgentOutcome::WorkerUnavailable));
                assert!(message.contains("code 9"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // The pod is gone: the Job's own reason.
        assert!(matches!(
            observe(&failed_job(), &[]),
            Observed::Failed {
                reason: FailureReason::AgentFailed,
                ..
            }
        ));
    }

    #[test]
    fn never_fits_follows_the_schedulers_verdict() {
        // Room may free up (or an autoscaler add a node): wait.
        for waits in [
            "0/1 nodes are available: 1 Too many pods. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.",
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling.",
            "0/1 nodes are available: 1 Insufficient memory.",
            "no nodes available to schedule pods",
            "0/0 nodes are available: .",
            "something else entirely",
        ] {
            assert!(!never_fits(waits), "{waits}");
        }
        // No node can ever take it.
        for never in [
            "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.",
            "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.",
            "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector.",
        ] {
            assert!(never_fits(never), "{never}");
        }
    }

    #[test]
    fn pending_reasons() {
        let active = job(json!({"active": 1}));
        let pull = pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "agent", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"x\""}}}]}),
        );
        match observe(&active, &[pull]) {
            Observed::Pending {
                problem: Some((reason, message)),
                permanent,
                since,
            } => {
                assert_eq!(reason, FailureReason::ImagePull);
                assert!(message.starts_with("ImagePullBackOff"));
                assert!(!permanent);
                assert!(since.is_some());
            }
            other => panic!("{other:?}"),
        }
        let unsched = pod(
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes are available"}]}),
        );
        assert!(matches!(
            observe(&active, &[unsched]),
            Observed::Pending {
                problem: Some((FailureReason::Unschedulable, _)),
                ..
            }
        ));
        let invalid = pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "agent", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "InvalidImageName"}}}]}),
        );
        assert!(matches!(
            observe(&active, &[invalid]),
            Observed::Pending {
                permanent: true,
                ..
            }
        ));
        assert!(matches!(
            observe(&active, &[]),
            Observed::Pending { problem: None, .. }
        ));
        let never = pod(
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."}]}),
        );
        assert!(matches!(
            observe(&active, &[never]),
            Observed::Pending {
                problem: Some((FailureReason::Unschedulable, _)),
                permanent: true,
                ..
            }
        ));
        let running = pod(json!({"phase": "Running", "startTime": "2026-01-01T00:00:01Z"}));
        assert!(matches!(
            observe(&active, &[running]),
            Observed::Running { started: Some(_) }
        ));
    }
}
