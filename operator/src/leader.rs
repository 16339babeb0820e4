//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager): only the leader
//! dispatches and reconciles, so several replicas are safe.

use std::future::Future;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio_util::sync::CancellationToken;

/// Leader-election settings.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    pub lease_name: String,
    pub namespace: String,
    pub identity: String,
    pub lease_seconds: u64,
}

/// Runs `work` whenever this replica holds the Lease, stopping it (through its token) when the
/// Lease is lost, until `shutdown`. `work` must return promptly once its token is cancelled.
pub async fn run_as_leader<F, Fut>(
    client: Client,
    cfg: LeaderConfig,
    shutdown: CancellationToken,
    work: F,
) -> Result<(), kube_lease_manager::LeaseManagerError>
where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    let grace = (cfg.lease_seconds / 3).max(1);
    let manager = LeaseManagerBuilder::new(client, &cfg.lease_name)
        .with_namespace(&cfg.namespace)
        .with_identity(&cfg.identity)
        .with_duration(cfg.lease_seconds)
        .with_grace(grace)
        .build()
        .await?;
    let (mut leading, task) = manager.watch().await;
    loop {
        // Wait to become leader.
        while !*leading.borrow_and_update() {
            tokio::select! {
                changed = leading.changed() => if changed.is_err() { break },
                _ = shutdown.cancelled() => {
                    drop(leading);
                    let _ = task.await;
                    return Ok(());
                }
            }
        }
        tracing::info!(identity = %cfg.identity, lease = %cfg.lease_name, "became the leader");
        let term = shutdown.child_token();
        let stop = term.clone();
        let mut lost = leading.clone();
        let watch_lease = async move {
            while *lost.borrow_and_update() {
                if lost.changed().await.is_err() {
                    break;
                }
            }
            stop.cancel();
        };
        tokio::join!(work(term.clone()), async {
            tokio::select! {
                _ = watch_lease => {}
                _ = term.cancelled() => {}
            }
        });
        if shutdown.is_cancelled() {
            drop(leading);
            let _ = task.await;
            return Ok(());
        }
        tracing::warn!(identity = %cfg.identity, "lost the leadership; standing by");
    }
}
