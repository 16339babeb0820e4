//! The stand-in scheduler: one node with labels, a pod capacity and allocatable CPU. A pod that
//! does not fit stays `Pending` with `PodScheduled=False`, reason `Unschedulable` and the
//! message kube-scheduler writes; it is bound as soon as it fits (a pod finishing frees room,
//! or the test changes the node, as a cluster autoscaler would).

use std::collections::BTreeMap;

use serde_json::Value;

/// The fake cluster's single node, as the scheduler sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    /// Pods the node takes at once (`status.allocatable.pods`); `None` = unlimited.
    pub max_pods: Option<usize>,
    /// The node's labels, matched against a pod's `nodeSelector`.
    pub labels: BTreeMap<String, String>,
    /// Allocatable CPU in millicores; `None` = unlimited. A pod requesting more can never fit.
    pub allocatable_cpu_millis: Option<u64>,
}

/// Parses a CPU quantity (`500m`, `2`, `1.5`) into millicores.
fn cpu_millis(quantity: &str) -> Option<u64> {
    match quantity.strip_suffix('m') {
        Some(m) => m.parse().ok(),
        None => quantity
            .parse::<f64>()
            .ok()
            .map(|cores| (cores * 1000.0).ceil() as u64),
    }
}

/// The pod's CPU request: the sum over its containers (requests, else limits).
fn requested_cpu_millis(pod: &Value) -> u64 {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| {
            c.pointer("/resources/requests/cpu")
                .or_else(|| c.pointer("/resources/limits/cpu"))
        })
        .filter_map(|q| {
            q.as_str()
                .map(str::to_owned)
                .or_else(|| Some(q.to_string()))
        })
        .filter_map(|q| cpu_millis(&q))
        .sum()
}

impl Node {
    /// Why `pod` cannot be bound now, as kube-scheduler words it (`None`: it fits).
    /// `bound` is the number of pods already on the node.
    pub(crate) fn unschedulable(&self, pod: &Value, bound: usize) -> Option<String> {
        let selector = pod.pointer("/spec/nodeSelector").and_then(Value::as_object);
        let matches = selector
            .into_iter()
            .flatten()
            .all(|(k, v)| self.labels.get(k).map(String::as_str) == v.as_str());
        if !matches {
            return Some(never("node(s) didn't match Pod's node affinity/selector"));
        }
        if let Some(cpu) = self.allocatable_cpu_millis
            && requested_cpu_millis(pod) > cpu
        {
            return Some(never("Insufficient cpu"));
        }
        if self.max_pods.is_some_and(|max| bound >= max) {
            return Some(
                "0/1 nodes are available: 1 Too many pods. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.".to_owned(),
            );
        }
        None
    }
}

/// The message for a pod no node can take, even after preemption.
fn never(reason: &str) -> String {
    format!(
        "0/1 nodes are available: 1 {reason}. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fits_by_selector_cpu_and_pod_count() {
        let node = Node {
            max_pods: Some(1),
            labels: BTreeMap::from([("pool".to_owned(), "agents".to_owned())]),
            allocatable_cpu_millis: Some(2000),
        };
        let pod = |spec: Value| json!({"spec": spec});
        let plain =
            pod(json!({"containers": [{"name": "a", "resources": {"requests": {"cpu": "500m"}}}]}));
        assert_eq!(node.unschedulable(&plain, 0), None);
        assert!(
            node.unschedulable(&plain, 1)
                .unwrap()
                .contains("1 Too many pods")
        );
        let elsewhere = pod(json!({"nodeSelector": {"pool": "gpu"}, "containers": []}));
        let msg = node.unschedulable(&elsewhere, 0).unwrap();
        assert!(
            msg.contains("didn't match Pod's node affinity/selector"),
            "{msg}"
        );
        assert!(msg.contains("Preemption is not helpful"), "{msg}");
        let huge =
            pod(json!({"containers": [{"name": "a", "resources": {"requests": {"cpu": "3"}}}]}));
        assert!(
            node.unschedulable(&huge, 0)
                .unwrap()
                .starts_with("0/1 nodes are available: 1 Insufficient cpu.")
        );
        assert_eq!(cpu_millis("1.5"), Some(1500));
    }
}
