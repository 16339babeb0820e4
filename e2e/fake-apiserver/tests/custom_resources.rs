//! Custom resources: CRD registration, status subresource and generation rules, patch types and
//! server-side apply.

mod common;

use common::*;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use terarchitect_fake_apiserver::FakeApiServer;

#[tokio::test]
async fn crd_created_through_the_api_is_served() -> anyhow::Result<()> {
    let server = FakeApiServer::start().await?;
    let client = server.client().await;
    let widgets: Api<Widget> = Api::default_namespaced(client.clone());
    assert_eq!(api_code(widgets.list(&ListParams::default()).await), 404);

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds.create(&PostParams::default(), &Widget::crd()).await?;
    let conditions = crd
        .status
        .clone()
        .and_then(|s| s.conditions)
        .unwrap_or_default();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );
    widgets
        .create(&PostParams::default(), &widget("w1", 1))
        .await?;
    assert_eq!(widgets.list(&ListParams::default()).await?.items.len(), 1);
    assert_eq!(server.get::<Widget>("default", "w1").unwrap().spec.size, 1);

    // A CRD whose name does not match plural.group is invalid.
    let mut bad = Gadget::crd();
    bad.metadata.name = Some("wrong.example.com".into());
    assert_eq!(
        api_code(crds.create(&PostParams::default(), &bad).await),
        422
    );

    // Deleting the CRD removes its instances and stops serving the resource.
    crds.delete(&crd.name_any(), &Default::default()).await?;
    eventually("CRD gone", || async {
        server
            .get::<CustomResourceDefinition>(None, "widgets.test.terarchitect.dev")
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(api_code(widgets.list(&ListParams::default()).await), 404);
    Ok(())
}

#[tokio::test]
async fn status_subresource_and_generation() -> anyhow::Result<()> {
    let server = server_with_crds().await;
    for client in [server.client().await, server.in_process_client()] {
        check_status_rules(&client, &server).await?;
    }
    Ok(())
}

async fn check_status_rules(client: &Client, server: &FakeApiServer) -> anyhow::Result<()> {
    let api: Api<Widget> = Api::default_namespaced(client.clone());
    let _ = api.delete("w", &Default::default()).await;
    let mut w = widget("w", 1);
    w.status = Some(WidgetStatus {
        phase: Some("Ignored".into()),
    });
    let created = api.create(&PostParams::default(), &w).await?;
    assert_eq!(created.status, None, "status is dropped on create");
    assert_eq!(created.metadata.generation, Some(1));

    // Status writes change only the status and never the generation.
    let status_patch = json!({"status": {"phase": "Ready"}, "spec": {"size": 99}, "metadata": {"labels": {"x": "y"}}});
    let after = api
        .patch_status("w", &PatchParams::default(), &Patch::Merge(&status_patch))
        .await?;
    assert_eq!(
        after.status.as_ref().unwrap().phase.as_deref(),
        Some("Ready")
    );
    assert_eq!((after.spec.size, after.metadata.generation), (1, Some(1)));
    assert!(after.labels().is_empty());
    let mut replaced = after.clone();
    replaced.status = Some(WidgetStatus {
        phase: Some("Replaced".into()),
    });
    let replaced = api
        .replace_status("w", &PostParams::default(), &replaced)
        .await?;
    assert_eq!(replaced.status.unwrap().phase.as_deref(), Some("Replaced"));
    assert_eq!(
        api.get_status("w").await?.status.unwrap().phase.as_deref(),
        Some("Replaced")
    );

    // Main-resource writes ignore status; metadata changes keep the generation; spec changes bump it.
    let main = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Nope"}, "metadata": {"labels": {"a": "b"}}})),
        )
        .await?;
    assert_eq!(
        main.status.as_ref().unwrap().phase.as_deref(),
        Some("Replaced")
    );
    assert_eq!(main.metadata.generation, Some(1));
    assert_eq!(main.labels()["a"], "b");
    let bumped = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 2}})),
        )
        .await?;
    assert_eq!(bumped.metadata.generation, Some(2));
    let mut again = bumped.clone();
    again.spec.color = Some("red".into());
    let again = api.replace("w", &PostParams::default(), &again).await?;
    assert_eq!(again.metadata.generation, Some(3));
    // A stale replace conflicts.
    assert_eq!(
        api_code(api.replace("w", &PostParams::default(), &bumped).await),
        409
    );
    assert_eq!(
        server
            .get::<Widget>("default", "w")
            .unwrap()
            .metadata
            .generation,
        Some(3)
    );

    // Gadgets have no status subresource.
    let gadgets: Api<Gadget> = Api::all(client.clone());
    let _ = gadgets.delete("g", &Default::default()).await;
    gadgets
        .create(
            &PostParams::default(),
            &Gadget::new("g", GadgetSpec { level: 1 }),
        )
        .await?;
    assert_eq!(api_code(gadgets.get_status("g").await), 404);
    Ok(())
}

#[tokio::test]
async fn patch_types_on_custom_resources() -> anyhow::Result<()> {
    let server = server_with_crds().await;
    let api: Api<Widget> = Api::default_namespaced(server.client().await);
    api.create(&PostParams::default(), &widget("p", 1)).await?;

    let merged = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"color": "blue"}})),
        )
        .await?;
    assert_eq!(merged.spec.color.as_deref(), Some("blue"));

    let ops = json_patch(json!([
        {"op": "test", "path": "/spec/size", "value": 1},
        {"op": "replace", "path": "/spec/size", "value": 5},
        {"op": "add", "path": "/metadata/labels", "value": {"patched": "yes"}},
    ]));
    let patched = api.patch("p", &PatchParams::default(), &ops).await?;
    assert_eq!(
        (patched.spec.size, patched.labels()["patched"].as_str()),
        (5, "yes")
    );
    let failing = json_patch(json!([{"op": "test", "path": "/spec/size", "value": 1}]));
    assert_eq!(
        api_code(api.patch("p", &PatchParams::default(), &failing).await),
        422
    );

    let strategic = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"size": 6}})),
        )
        .await;
    let status = api_status(strategic);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (415, "UnsupportedMediaType")
    );

    // A merge patch carrying a stale resourceVersion is a precondition.
    let stale = json!({"metadata": {"resourceVersion": "1"}, "spec": {"size": 7}});
    assert_eq!(
        api_code(
            api.patch("p", &PatchParams::default(), &Patch::Merge(stale))
                .await
        ),
        409
    );
    Ok(())
}

#[tokio::test]
async fn server_side_apply() -> anyhow::Result<()> {
    let server = server_with_crds().await;
    let api: Api<Widget> = Api::default_namespaced(server.in_process_client());
    let config = |size: i32| json!({"apiVersion": "test.terarchitect.dev/v1", "kind": "Widget", "spec": {"size": size}});

    // Apply creates a missing object.
    let created = api
        .patch(
            "ssa",
            &PatchParams::apply("alice"),
            &Patch::Apply(config(1)),
        )
        .await?;
    assert_eq!(created.spec.size, 1);
    let entries = created.metadata.managed_fields.clone().unwrap_or_default();
    assert!(
        entries
            .iter()
            .any(|e| e.manager.as_deref() == Some("alice")
                && e.operation.as_deref() == Some("Apply"))
    );

    // Re-applying the same configuration is a no-op; another manager setting the same value shares it.
    let again = api
        .patch(
            "ssa",
            &PatchParams::apply("alice"),
            &Patch::Apply(config(1)),
        )
        .await?;
    assert_eq!(again.resource_version(), created.resource_version());
    api.patch("ssa", &PatchParams::apply("bob"), &Patch::Apply(config(1)))
        .await?;

    // A different value from another manager conflicts unless forced.
    let conflict = api_status(
        api.patch(
            "ssa",
            &PatchParams::apply("carol"),
            &Patch::Apply(config(2)),
        )
        .await,
    );
    assert_eq!(conflict.code, 409);
    assert!(
        conflict.message.contains(".spec.size"),
        "{}",
        conflict.message
    );
    let forced = api
        .patch(
            "ssa",
            &PatchParams::apply("carol").force(),
            &Patch::Apply(config(2)),
        )
        .await?;
    assert_eq!(forced.spec.size, 2);

    // A resourceVersion in the applied configuration must match.
    let mut stale = config(3);
    stale["metadata"] = json!({"resourceVersion": created.resource_version().unwrap()});
    assert_eq!(
        api_code(
            api.patch("ssa", &PatchParams::apply("carol"), &Patch::Apply(stale))
                .await
        ),
        409
    );

    // Fields a manager stops applying are removed; apply on /status only touches status.
    let with_color = json!({"apiVersion": "test.terarchitect.dev/v1", "kind": "Widget", "spec": {"size": 2, "color": "red"}});
    api.patch(
        "ssa",
        &PatchParams::apply("carol"),
        &Patch::Apply(with_color),
    )
    .await?;
    let without = api
        .patch(
            "ssa",
            &PatchParams::apply("carol"),
            &Patch::Apply(config(2)),
        )
        .await?;
    assert_eq!(without.spec.color, None);
    let status = json!({"apiVersion": "test.terarchitect.dev/v1", "kind": "Widget", "status": {"phase": "Applied"}, "spec": {"size": 50}});
    let applied = api
        .patch_status(
            "ssa",
            &PatchParams::apply("status-writer"),
            &Patch::Apply(status),
        )
        .await?;
    assert_eq!(
        (applied.spec.size, applied.status.unwrap().phase.as_deref()),
        (2, Some("Applied"))
    );

    // Server side, apply without a field manager is rejected.
    let raw = http::Request::patch("/apis/test.terarchitect.dev/v1/namespaces/default/widgets/ssa")
        .header("content-type", "application/apply-patch+yaml")
        .body(serde_json::to_vec(&config(4))?)?;
    let client = server.in_process_client();
    assert_eq!(api_code(client.request::<Widget>(raw).await), 400);
    Ok(())
}

fn json_patch(ops: serde_json::Value) -> Patch<()> {
    Patch::Json(serde_json::from_value(ops).expect("valid JSON patch"))
}
