//! Deletion: finalizers (with kube's finalizer helper), preconditions, owner-reference garbage
//! collection for each propagation policy, and namespace termination.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Resource, ResourceExt};
use serde_json::json;
use terarchitect_fake_apiserver::{DeleteOptions, FakeApiServer, Propagation};

const FINALIZER: &str = "test.terarchitect.dev/cleanup";

#[tokio::test]
async fn kube_finalizer_helper_add_delete_cleanup() -> anyhow::Result<()> {
    let server = server_with_crds().await;
    let api: Api<Widget> = Api::default_namespaced(server.client().await);
    api.create(&PostParams::default(), &widget("fin", 1))
        .await?;
    let (applied, cleaned) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let run = |obj: Widget| {
        let (api, applied, cleaned) = (api.clone(), applied.clone(), cleaned.clone());
        async move {
            finalizer(&api, FINALIZER, Arc::new(obj), |event| async move {
                match event {
                    Event::Apply(_) => applied.fetch_add(1, Ordering::SeqCst),
                    Event::Cleanup(_) => cleaned.fetch_add(1, Ordering::SeqCst),
                };
                Ok::<_, std::convert::Infallible>(Action::await_change())
            })
            .await
        }
    };

    // First pass adds the finalizer (JSON patch with a `test` against null), then Apply runs.
    run(api.get("fin").await?).await?;
    assert_eq!(api.get("fin").await?.finalizers(), [FINALIZER]);
    run(api.get("fin").await?).await?;
    assert_eq!(applied.load(Ordering::SeqCst), 1);

    // Deleting marks the object; it stays until the finalizer is removed.
    let response = api.delete("fin", &DeleteParams::default()).await?;
    let marked = response
        .left()
        .expect("object returned while finalizers are pending");
    assert!(marked.meta().deletion_timestamp.is_some());
    let deleting = api.get("fin").await?;
    assert!(deleting.meta().deletion_timestamp.is_some());
    assert_eq!(
        deleting.metadata.generation,
        Some(2),
        "marking for deletion bumps the generation"
    );

    // No new finalizers once deleting.
    let add = Patch::Merge(json!({"metadata": {"finalizers": [FINALIZER, "other/finalizer"]}}));
    assert_eq!(
        api_code(api.patch("fin", &PatchParams::default(), &add).await),
        422
    );

    // Cleanup runs, the finalizer goes, and so does the object.
    run(deleting).await?;
    assert_eq!(cleaned.load(Ordering::SeqCst), 1);
    assert_eq!(api_code(api.get("fin").await), 404);
    Ok(())
}

fn owned_by(name: &str, owner: &ConfigMap, finalizers: &[&str]) -> ConfigMap {
    let mut cm = config_map(name, &[]);
    let mut reference = owner.controller_owner_ref(&()).expect("owner ref");
    reference.block_owner_deletion = Some(true);
    cm.metadata.owner_references = Some(vec![reference]);
    if !finalizers.is_empty() {
        cm.metadata.finalizers = Some(finalizers.iter().map(|f| f.to_string()).collect());
    }
    cm
}

#[tokio::test]
async fn owner_reference_garbage_collection() -> anyhow::Result<()> {
    let server = FakeApiServer::start().await?;
    let api: Api<ConfigMap> = Api::default_namespaced(server.in_process_client());
    let pp = PostParams::default();

    // Background: the owner goes at once, dependents right after.
    let owner = api.create(&pp, &config_map("bg-owner", &[])).await?;
    api.create(&pp, &owned_by("bg-dep-1", &owner, &[])).await?;
    api.create(&pp, &owned_by("bg-dep-2", &owner, &[])).await?;
    assert!(
        api.delete("bg-owner", &DeleteParams::background())
            .await?
            .is_right()
    );
    for name in ["bg-owner", "bg-dep-1", "bg-dep-2"] {
        assert!(api.get_opt(name).await?.is_none(), "{name} deleted");
    }

    // Foreground: the owner waits (foregroundDeletion) until blocking dependents are gone.
    let owner = api.create(&pp, &config_map("fg-owner", &[])).await?;
    api.create(&pp, &owned_by("fg-dep", &owner, &["test/hold"]))
        .await?;
    api.create(&pp, &owned_by("fg-dep-free", &owner, &[]))
        .await?;
    let pending = api.delete("fg-owner", &DeleteParams::foreground()).await?;
    assert_eq!(
        pending.left().expect("owner still present").finalizers(),
        ["foregroundDeletion"]
    );
    assert!(api.get("fg-dep").await?.meta().deletion_timestamp.is_some());
    assert!(api.get_opt("fg-dep-free").await?.is_none());
    assert!(
        api.get("fg-owner")
            .await?
            .meta()
            .deletion_timestamp
            .is_some()
    );
    api.patch(
        "fg-dep",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    assert!(api.get_opt("fg-dep").await?.is_none());
    assert!(api.get_opt("fg-owner").await?.is_none());

    // Orphan: dependents stay and lose the owner reference.
    let owner = api.create(&pp, &config_map("or-owner", &[])).await?;
    api.create(&pp, &owned_by("or-dep", &owner, &[])).await?;
    api.delete("or-owner", &DeleteParams::orphan()).await?;
    assert!(api.get_opt("or-owner").await?.is_none());
    assert!(api.get("or-dep").await?.owner_references().is_empty());

    // Dependents of owners that never existed are collected too.
    let mut dangling = config_map("dangling", &[]);
    dangling.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "ghost".into(),
        uid: "00000000-0000-0000-0000-000000000000".into(),
        ..OwnerReference::default()
    }]);
    api.create(&pp, &dangling).await?;
    assert!(server.get::<ConfigMap>("default", "dangling").is_none());

    // Preconditions.
    api.create(&pp, &config_map("guarded", &[])).await?;
    let wrong_uid = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some("not-the-uid".into()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    assert_eq!(api_code(api.delete("guarded", &wrong_uid).await), 409);
    let stale_rv = DeleteParams {
        preconditions: Some(Preconditions {
            uid: None,
            resource_version: Some("1".into()),
        }),
        ..DeleteParams::default()
    };
    assert_eq!(api_code(api.delete("guarded", &stale_rv).await), 409);
    Ok(())
}

#[tokio::test]
async fn deleting_a_job_without_policy_orphans_its_pods() -> anyhow::Result<()> {
    let server = FakeApiServer::start().await?;
    let client = server.client().await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client);
    for name in ["orphaning", "cascading"] {
        let job = jobs
            .create(&PostParams::default(), &job(name, json!({})))
            .await?;
        // Kubernetes defaults: selector and template labels tied to the Job's uid.
        let uid = job.uid().unwrap();
        let template_labels = job
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone()
            .unwrap();
        assert_eq!(template_labels["batch.kubernetes.io/controller-uid"], uid);
        assert_eq!(template_labels["job-name"], name);
        assert_eq!(job.spec.as_ref().unwrap().completions, Some(1));
        let mut p = pod(&format!("{name}-pod"), json!({"job-name": name}));
        p.metadata.owner_references = Some(vec![job.controller_owner_ref(&()).unwrap()]);
        pods.create(&PostParams::default(), &p).await?;
    }
    jobs.delete("orphaning", &DeleteParams::default()).await?;
    let orphan = pods.get("orphaning-pod").await?;
    assert!(orphan.owner_references().is_empty(), "pod orphaned");
    jobs.delete("cascading", &DeleteParams::background())
        .await?;
    assert!(pods.get_opt("cascading-pod").await?.is_none());

    // Job templates are immutable.
    let job = jobs
        .create(&PostParams::default(), &job("immutable", json!({})))
        .await?;
    let change = Patch::Merge(
        json!({"spec": {"template": {"spec": {"containers": [{"name": "x", "image": "y"}]}}}}),
    );
    assert_eq!(
        api_code(
            jobs.patch("immutable", &PatchParams::default(), &change)
                .await
        ),
        422
    );
    assert_eq!(job.metadata.generation, Some(1));
    Ok(())
}

#[tokio::test]
async fn namespace_deletion_removes_content() -> anyhow::Result<()> {
    let server = FakeApiServer::start().await?;
    let client = server.in_process_client();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "tmp"}}))?,
        )
        .await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, "tmp");
    let mut held = config_map("held", &[]);
    held.metadata.finalizers = Some(vec!["test/hold".into()]);
    cms.create(&PostParams::default(), &held).await?;
    cms.create(&PostParams::default(), &config_map("free", &[]))
        .await?;

    namespaces.delete("tmp", &DeleteParams::default()).await?;
    let terminating = namespaces.get("tmp").await?;
    assert_eq!(
        terminating.status.unwrap().phase.as_deref(),
        Some("Terminating")
    );
    assert!(cms.get_opt("free").await?.is_none());
    assert_eq!(
        api_code(
            cms.create(&PostParams::default(), &config_map("late", &[]))
                .await
        ),
        403
    );

    server.modify::<ConfigMap>("tmp", "held", |cm| cm.metadata.finalizers = None)?;
    assert!(server.get::<Namespace>(None, "tmp").is_none());
    assert!(server.list::<ConfigMap>("tmp").is_empty());
    // The direct API deletes with the same rules.
    server.create(&config_map("direct", &[]))?;
    server.delete_with::<ConfigMap>(
        "default",
        "direct",
        &DeleteOptions::propagation(Propagation::Foreground),
    )?;
    assert!(server.get::<ConfigMap>("default", "direct").is_none());
    Ok(())
}
