//! kube-runtime and friends against the fake server: a Controller with `.owns::<Job>()`, the
//! events Recorder, and kube-lease-manager leader election.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobStatus};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use kube_lease_manager::LeaseManagerBuilder;
use serde_json::json;
use terarchitect_fake_apiserver::RequestMatcher;
use tokio::time::timeout;

struct Context {
    client: kube::Client,
    reconciles: Mutex<HashMap<String, usize>>,
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct ReconcileError(#[from] kube::Error);

async fn reconcile(widget: Arc<Widget>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    *ctx.reconciles
        .lock()
        .unwrap()
        .entry(widget.name_any())
        .or_default() += 1;
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &widget.namespace().unwrap());
    if jobs.get_opt(&widget.name_any()).await?.is_none() {
        let mut job = job(&widget.name_any(), json!({}));
        job.metadata.owner_references = Some(vec![widget.controller_owner_ref(&()).unwrap()]);
        jobs.create(&PostParams::default(), &job).await?;
    }
    Ok(Action::await_change())
}

fn error_policy(_: Arc<Widget>, _: &ReconcileError, _: Arc<Context>) -> Action {
    Action::requeue(Duration::from_millis(100))
}

#[tokio::test]
async fn controller_owning_jobs_reconciles_on_owned_changes() -> anyhow::Result<()> {
    let server = server_with_crds().await;
    let client = server.client().await;
    let ctx = Arc::new(Context {
        client: client.clone(),
        reconciles: Mutex::default(),
    });
    let widgets: Api<Widget> = Api::all(client.clone());
    let controller = Controller::new(widgets, watcher::Config::default())
        .owns(Api::<Job>::all(client.clone()), watcher::Config::default())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});
    let controller = tokio::spawn(controller);
    let count = |name: &str| {
        ctx.reconciles
            .lock()
            .unwrap()
            .get(name)
            .copied()
            .unwrap_or(0)
    };

    let api: Api<Widget> = Api::default_namespaced(client.clone());
    api.create(&PostParams::default(), &widget("alpha", 1))
        .await?;
    let job = eventually("owned job", || async {
        server.get::<Job>("default", "alpha")
    })
    .await;
    assert_eq!(job.owner_references()[0].kind, "Widget");

    // A change to the owned Job triggers a reconcile of its owner.
    let before = eventually("reconciles settle", || async {
        let n = count("alpha");
        tokio::time::sleep(Duration::from_millis(200)).await;
        (n > 0 && n == count("alpha")).then_some(n)
    })
    .await;
    server.modify::<Job>("default", "alpha", |job| {
        job.status = Some(JobStatus {
            active: Some(1),
            ..JobStatus::default()
        });
    })?;
    eventually("reconcile after job change", || async {
        (count("alpha") > before).then_some(())
    })
    .await;

    // Deleting the owner garbage-collects the Job.
    api.delete("alpha", &DeleteParams::background()).await?;
    eventually("job collected", || async {
        server
            .get::<Job>("default", "alpha")
            .is_none()
            .then_some(())
    })
    .await;
    controller.abort();
    Ok(())
}

#[tokio::test]
async fn event_recorder_creates_then_patches_a_series() -> anyhow::Result<()> {
    let server = server_with_crds().await;
    let client = server.in_process_client();
    let w = server.create(&widget("noisy", 1))?;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "test-controller".into(),
            instance: None,
        },
    );
    let event = Event {
        type_: EventType::Normal,
        reason: "Reconciled".into(),
        note: Some("all good".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    let reference = w.object_ref(&());
    recorder.publish(&event, &reference).await?;
    recorder.publish(&event, &reference).await?;

    let events: Vec<K8sEvent> = server.list::<K8sEvent>("default");
    assert_eq!(events.len(), 1);
    let stored = &events[0];
    assert_eq!(
        stored.regarding.as_ref().unwrap().name.as_deref(),
        Some("noisy")
    );
    assert_eq!(stored.series.as_ref().expect("series").count, 2);
    assert_eq!(
        stored.reporting_controller.as_deref(),
        Some("test-controller")
    );
    let methods: Vec<String> = server
        .requests_matching(
            &RequestMatcher::any()
                .resource("events")
                .group("events.k8s.io"),
        )
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r.method,
                r.content_type.clone().unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        methods,
        [
            "POST application/json",
            "PATCH application/merge-patch+json"
        ]
    );
    // Field selectors on events work too.
    let api: Api<K8sEvent> = Api::default_namespaced(client);
    let found = api
        .list(&ListParams::default().fields("regarding.name=noisy,reason=Reconciled"))
        .await?;
    assert_eq!(found.items.len(), 1);
    Ok(())
}

#[tokio::test]
async fn lease_manager_leader_election() -> anyhow::Result<()> {
    let server = server_with_crds().await;
    let build = |identity: &str, client: kube::Client| {
        LeaseManagerBuilder::new(client, "leader")
            .with_identity(identity)
            .with_duration(3)
            .with_grace(2)
            .build()
    };
    let first = build("first", server.client().await).await?;
    let second = build("second", server.in_process_client()).await?;
    assert!(
        timeout(TIMEOUT, first.changed()).await??,
        "first becomes leader"
    );
    let lease = server
        .get::<Lease>("default", "leader")
        .expect("lease exists");
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("first")
    );

    // While the first renews, the second cannot take over.
    let renewing = tokio::spawn(async move {
        // Renew periodically until released.
        loop {
            let changed = first.changed().await;
            if !matches!(changed, Ok(true)) {
                return (first, changed);
            }
        }
    });
    assert!(
        timeout(Duration::from_secs(3), second.changed())
            .await
            .is_err(),
        "second must not lead yet"
    );
    let lease = server.get::<Lease>("default", "leader").unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("first")
    );

    // Releasing lets the second acquire the lease.
    renewing.abort();
    let _ = renewing.await;
    let first = build("first", server.client().await).await?;
    first.release().await?;
    assert!(
        timeout(TIMEOUT, second.changed()).await??,
        "second becomes leader after release"
    );
    let lease = server.get::<Lease>("default", "leader").unwrap();
    assert_eq!(
        lease.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some("second")
    );
    assert!(lease.spec.unwrap().lease_transitions.unwrap_or(0) >= 2);
    Ok(())
}

#[tokio::test]
async fn lease_apply_conflicts_between_field_managers() -> anyhow::Result<()> {
    // What keeps two lease managers from both taking an orphaned lease: the second apply of
    // holderIdentity (without force) conflicts with the first manager's ownership.
    let server = server_with_crds().await;
    let leases: Api<Lease> = Api::default_namespaced(server.client().await);
    let claim = |who: &str| {
        Patch::Apply(json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "spec": {"holderIdentity": who, "leaseDurationSeconds": 3},
        }))
    };
    leases
        .patch("race", &PatchParams::apply("manager-a"), &claim("a"))
        .await?;
    let conflict = api_status(
        leases
            .patch("race", &PatchParams::apply("manager-b"), &claim("b"))
            .await,
    );
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    // After a release (strategic merge patch with nulls) nobody owns the field any more.
    let release =
        Patch::Strategic(json!({"spec": {"holderIdentity": null, "leaseDurationSeconds": null}}));
    leases
        .patch(
            "race",
            &PatchParams {
                field_manager: Some("manager-a".into()),
                ..PatchParams::default()
            },
            &release,
        )
        .await?;
    let taken = leases
        .patch("race", &PatchParams::apply("manager-b"), &claim("b"))
        .await?;
    assert_eq!(taken.spec.unwrap().holder_identity.as_deref(), Some("b"));
    Ok(())
}
