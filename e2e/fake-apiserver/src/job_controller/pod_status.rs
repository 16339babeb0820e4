//! Pod and Job status documents as the kubelet and the Job controller (Kubernetes 1.28+) write them.

use serde_json::{Value, json};

use crate::meta::now_time;

fn condition(kind: &str, status: bool, reason: Option<&str>, message: Option<&str>) -> Value {
    let mut c = json!({
        "type": kind,
        "status": if status { "True" } else { "False" },
        "lastProbeTime": null,
        "lastTransitionTime": now_time(),
    });
    if let Some(reason) = reason {
        c["reason"] = json!(reason);
    }
    if let Some(message) = message {
        c["message"] = json!(message);
    }
    c
}

fn container_names(pod: &Value) -> Vec<(String, String)> {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_string(),
                c["image"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn unready(pod: &Value) -> String {
    let names: Vec<String> = container_names(pod).into_iter().map(|(n, _)| n).collect();
    format!("containers with unready status: [{}]", names.join(" "))
}

fn addresses(status: &mut Value, ip: &str) {
    status["hostIP"] = json!("10.0.0.1");
    status["hostIPs"] = json!([{"ip": "10.0.0.1"}]);
    status["podIP"] = json!(ip);
    status["podIPs"] = json!([{"ip": ip}]);
    status["startTime"] = json!(now_time());
    status["qosClass"] = json!("BestEffort");
}

/// Pending and not schedulable.
pub(crate) fn unschedulable() -> Value {
    unschedulable_because(
        "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.",
    )
}

/// Pending and not schedulable, with kube-scheduler's `message`.
pub(crate) fn unschedulable_because(message: &str) -> Value {
    json!({
        "phase": "Pending",
        "qosClass": "BestEffort",
        "conditions": [condition(
            "PodScheduled",
            false,
            Some("Unschedulable"),
            Some(message),
        )],
    })
}

/// Scheduled, containers waiting with `reason` (e.g. `ErrImagePull`, `CreateContainerConfigError`).
pub(crate) fn waiting(pod: &Value, ip: &str, reason: &str, message: &str) -> Value {
    let statuses: Vec<Value> = container_names(pod)
        .into_iter()
        .map(|(name, image)| {
            json!({
                "name": name,
                "image": image,
                "imageID": "",
                "ready": false,
                "started": false,
                "restartCount": 0,
                "state": {"waiting": {"reason": reason, "message": message}},
                "lastState": {},
            })
        })
        .collect();
    let mut status = json!({
        "phase": "Pending",
        "conditions": [
            condition("PodReadyToStartContainers", true, None, None),
            condition("Initialized", true, None, None),
            condition("Ready", false, Some("ContainersNotReady"), Some(&unready(pod))),
            condition("ContainersReady", false, Some("ContainersNotReady"), Some(&unready(pod))),
            condition("PodScheduled", true, None, None),
        ],
        "containerStatuses": statuses,
    });
    addresses(&mut status, ip);
    status
}

fn container_id(pod_uid: &str, name: &str) -> String {
    let hex: String = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("{pod_uid}/{name}").as_bytes(),
    )
    .simple()
    .to_string();
    format!("containerd://{hex}{hex}")
}

fn image_id(image: &str) -> String {
    let digest = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, image.as_bytes())
        .simple()
        .to_string();
    format!("{image}@sha256:{digest}{digest}")
}

/// Running and ready.
pub(crate) fn running(pod: &Value, ip: &str) -> Value {
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    let now = now_time();
    let statuses: Vec<Value> = container_names(pod)
        .into_iter()
        .map(|(name, image)| {
            json!({
                "name": name,
                "image": image,
                "imageID": image_id(&image),
                "containerID": container_id(uid, &name),
                "ready": true,
                "started": true,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
                "lastState": {},
            })
        })
        .collect();
    let mut status = json!({
        "phase": "Running",
        "conditions": [
            condition("PodReadyToStartContainers", true, None, None),
            condition("Initialized", true, None, None),
            condition("Ready", true, None, None),
            condition("ContainersReady", true, None, None),
            condition("PodScheduled", true, None, None),
        ],
        "containerStatuses": statuses,
    });
    addresses(&mut status, ip);
    status
}

/// Terminated with `exit_code` and `reason` (`Completed`, `Error`, `OOMKilled`); keeps addresses and
/// start times from `previous`.
pub(crate) fn terminated(
    pod: &Value,
    previous: &Value,
    exit_code: i32,
    reason: &str,
    message: Option<&str>,
) -> Value {
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    let now = now_time();
    let started = previous["startTime"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| now.clone());
    let statuses: Vec<Value> = container_names(pod)
        .into_iter()
        .map(|(name, image)| {
            json!({
                "name": name,
                "image": image,
                "imageID": image_id(&image),
                "containerID": container_id(uid, &name),
                "ready": false,
                "started": false,
                "restartCount": 0,
                "state": {"terminated": {
                    "exitCode": exit_code,
                    "reason": reason,
                    "message": message,
                    "startedAt": started,
                    "finishedAt": now,
                    "containerID": container_id(uid, &name),
                }},
                "lastState": {},
            })
        })
        .collect();
    let succeeded = exit_code == 0;
    let not_ready = if succeeded {
        "PodCompleted"
    } else {
        "PodFailed"
    };
    let mut status = previous.clone();
    status["phase"] = json!(if succeeded { "Succeeded" } else { "Failed" });
    status["conditions"] = json!([
        condition("PodReadyToStartContainers", false, None, None),
        condition("Initialized", true, Some(not_ready), None),
        condition("Ready", false, Some(not_ready), None),
        condition("ContainersReady", false, Some(not_ready), None),
        condition("PodScheduled", true, None, None),
    ]);
    status["containerStatuses"] = json!(statuses);
    status
}

/// A Job condition.
pub(crate) fn job_condition(kind: &str, status: bool, reason: &str, message: &str) -> Value {
    condition(kind, status, Some(reason), Some(message))
}
