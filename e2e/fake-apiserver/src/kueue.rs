//! A stand-in for Kueue's batch/v1 Job integration: Jobs labelled
//! `kueue.x-k8s.io/queue-name: <LocalQueue>` are created suspended by their owner and admitted
//! (`spec.suspend: false`) in creation order while their queue's quota has room; a Job's quota
//! is freed when it finishes or goes away. A queue without quota admits nothing, so its Jobs
//! stay suspended (the Job controller marks them `Suspended`), as under a real ClusterQueue
//! that is out of quota.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;

/// The label naming a Job's LocalQueue.
pub const QUEUE_NAME_LABEL: &str = "kueue.x-k8s.io/queue-name";

/// Handle of the running stand-in; it stops with the server or with [`stop`](Self::stop).
#[derive(Debug, Clone)]
pub struct Kueue {
    quotas: Arc<Mutex<HashMap<String, usize>>>,
    stop: CancellationToken,
}

fn finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
}

fn suspended(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.suspend) == Some(true)
}

impl Kueue {
    pub(crate) fn start(cluster: Cluster) -> Self {
        let stop = cluster.shared().shutdown.child_token();
        let kueue = Self {
            quotas: Arc::default(),
            stop: stop.clone(),
        };
        let quotas = kueue.quotas.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = stop.cancelled() => return,
                }
                let quotas = quotas.lock().unwrap_or_else(|p| p.into_inner()).clone();
                admit(&cluster, &quotas);
            }
        });
        kueue
    }

    /// Lets `jobs` Jobs of LocalQueue `queue` run at once.
    pub fn set_quota(&self, queue: &str, jobs: usize) {
        self.quotas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(queue.to_owned(), jobs);
    }

    /// Stops admitting.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// Admits waiting Jobs, oldest first, while their queue has quota.
fn admit(cluster: &Cluster, quotas: &HashMap<String, usize>) {
    let mut jobs: Vec<Job> = cluster
        .list::<Job>(None)
        .into_iter()
        .filter(|j| j.labels().contains_key(QUEUE_NAME_LABEL))
        .filter(|j| !finished(j) && j.metadata.deletion_timestamp.is_none())
        .collect();
    jobs.sort_by_key(|j| (j.metadata.creation_timestamp.clone(), j.name_any()));
    let mut admitted: HashMap<String, usize> = HashMap::new();
    for job in jobs.iter().filter(|j| !suspended(j)) {
        *admitted
            .entry(job.labels()[QUEUE_NAME_LABEL].clone())
            .or_default() += 1;
    }
    for job in jobs.iter().filter(|j| suspended(j)) {
        let queue = job.labels()[QUEUE_NAME_LABEL].clone();
        let used = admitted.entry(queue.clone()).or_default();
        if *used >= quotas.get(&queue).copied().unwrap_or(0) {
            continue;
        }
        let result = cluster.modify::<Job>(job.namespace().as_deref(), &job.name_any(), |j| {
            if let Some(spec) = j.spec.as_mut() {
                spec.suspend = Some(false);
            }
        });
        match result {
            Ok(_) => *used += 1,
            Err(err) => tracing::debug!(%err, job = %job.name_any(), "admitting failed"),
        }
    }
}
