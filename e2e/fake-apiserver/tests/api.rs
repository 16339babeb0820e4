//! Core API behaviour through a real `kube::Client`: CRUD, errors, selectors, pagination,
//! discovery, kubeconfig, fault injection and request recording.

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Client, ResourceExt};
use serde_json::json;
use terarchitect_fake_apiserver::{FakeApiServer, RequestMatcher, Verb};

/// Run `test` against a fresh server twice: over 127.0.0.1 and in-process.
async fn with_both_clients<F, Fut>(test: F)
where
    F: Fn(FakeApiServer, Client) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let server = FakeApiServer::start().await.expect("server");
    let client = server.client().await;
    test(server, client).await.expect("over HTTP");
    let server = FakeApiServer::start().await.expect("server");
    let client = server.in_process_client();
    test(server, client).await.expect("in process");
}

#[tokio::test]
async fn crud_conflicts_and_not_found() {
    with_both_clients(|server, client| async move {
        let api: Api<ConfigMap> = Api::default_namespaced(client);
        let created = api
            .create(
                &PostParams::default(),
                &config_map("settings", &[("a", "1")]),
            )
            .await?;
        let rv: u64 = created.resource_version().unwrap().parse()?;
        assert!(rv > 0);
        assert!(created.uid().is_some());
        assert!(created.metadata.creation_timestamp.is_some());
        assert_eq!(created.metadata.generation, Some(1));
        assert_eq!(created.namespace().as_deref(), Some("default"));

        let dup = api
            .create(&PostParams::default(), &config_map("settings", &[]))
            .await;
        let status = api_status(dup);
        assert_eq!(
            (status.code, status.reason.as_str()),
            (409, "AlreadyExists")
        );

        let missing = api_status(api.get("missing").await);
        assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
        assert_eq!(missing.message, "configmaps \"missing\" not found");
        assert_eq!(api.get_opt("missing").await?, None);

        // Replace with the current resourceVersion works; with the old one it conflicts.
        let mut fresh = created.clone();
        fresh.data = Some([("a".to_string(), "2".to_string())].into());
        let replaced = api
            .replace("settings", &PostParams::default(), &fresh)
            .await?;
        assert!(replaced.resource_version().unwrap().parse::<u64>()? > rv);
        let stale = api_status(
            api.replace("settings", &PostParams::default(), &fresh)
                .await,
        );
        assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));

        // A write that changes nothing keeps the resourceVersion.
        let same = api
            .patch(
                "settings",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"a": "2"}})),
            )
            .await?;
        assert_eq!(same.resource_version(), replaced.resource_version());

        // generateName.
        let mut generated = config_map("", &[]);
        generated.metadata.name = None;
        generated.metadata.generate_name = Some("gen-".into());
        let generated = api.create(&PostParams::default(), &generated).await?;
        assert!(generated.name_any().starts_with("gen-") && generated.name_any().len() == 9);

        // Dry run does not persist.
        let dry = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        api.create(&dry, &config_map("dry", &[])).await?;
        assert!(server.get::<ConfigMap>("default", "dry").is_none());

        // Delete returns a Success Status and the object is gone.
        let deleted = api.delete("settings", &DeleteParams::default()).await?;
        assert!(deleted.is_right(), "immediate delete returns a Status");
        assert_eq!(api_code(api.get("settings").await), 404);
        assert_eq!(
            api_code(api.delete("settings", &DeleteParams::default()).await),
            404
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn namespaces_and_validation() {
    with_both_clients(|server, client| async move {
        // Namespaces exist implicitly...
        let other: Api<ConfigMap> = Api::namespaced(client.clone(), "elsewhere");
        other
            .create(&PostParams::default(), &config_map("x", &[]))
            .await?;
        let all: Api<ConfigMap> = Api::all(client.clone());
        assert_eq!(all.list(&ListParams::default()).await?.items.len(), 1);
        // ... and the usual ones exist explicitly.
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let default = namespaces.get("default").await?;
        assert_eq!(default.status.unwrap().phase.as_deref(), Some("Active"));

        // Invalid names and bodies are rejected with Status objects.
        let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
        assert_eq!(
            api_code(
                api.create(&PostParams::default(), &config_map("Bad_Name", &[]))
                    .await
            ),
            422
        );
        let pods: Api<Pod> = Api::default_namespaced(client.clone());
        let mut no_containers = pod("p", json!({}));
        no_containers.spec.as_mut().unwrap().containers.clear();
        assert_eq!(
            api_code(pods.create(&PostParams::default(), &no_containers).await),
            422
        );

        // Secrets: stringData is folded into base64 data.
        let secrets: Api<Secret> = Api::default_namespaced(client);
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "s"}, "stringData": {"token": "hunter2"}
        }))?;
        let stored = secrets.create(&PostParams::default(), &secret).await?;
        assert_eq!(stored.data.unwrap()["token"].0, b"hunter2");
        assert!(
            server
                .get::<Secret>("default", "s")
                .unwrap()
                .string_data
                .is_none()
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn label_and_field_selectors() {
    with_both_clients(|server, client| async move {
        for (name, ns, labels, phase) in [
            (
                "web-a",
                "default",
                json!({"app": "web", "tier": "a"}),
                "Running",
            ),
            (
                "web-b",
                "default",
                json!({"app": "web", "tier": "b", "legacy": "yes"}),
                "Pending",
            ),
            (
                "db",
                "default",
                json!({"app": "db", "tier": "c"}),
                "Running",
            ),
            ("web-x", "other", json!({"app": "web"}), "Succeeded"),
        ] {
            let mut p = pod(name, labels);
            p.metadata.namespace = Some(ns.into());
            p.status = Some(serde_json::from_value(json!({"phase": phase}))?);
            server.create(&p)?;
        }
        let pods: Api<Pod> = Api::default_namespaced(client.clone());
        let names = |list: kube::core::ObjectList<Pod>| {
            list.items.iter().map(|p| p.name_any()).collect::<Vec<_>>()
        };
        let select = |labels: &str| ListParams::default().labels(labels);
        assert_eq!(
            names(pods.list(&select("app=web")).await?),
            ["web-a", "web-b"]
        );
        assert_eq!(names(pods.list(&select("app!=web")).await?), ["db"]);
        assert_eq!(
            names(pods.list(&select("tier in (a,c)")).await?),
            ["db", "web-a"]
        );
        assert_eq!(
            names(pods.list(&select("tier notin (a,c)")).await?),
            ["web-b"]
        );
        assert_eq!(
            names(pods.list(&select("app=web,!legacy")).await?),
            ["web-a"]
        );
        assert_eq!(names(pods.list(&select("legacy")).await?), ["web-b"]);
        let fields = |f: &str| ListParams::default().fields(f);
        assert_eq!(names(pods.list(&fields("metadata.name=db")).await?), ["db"]);
        assert_eq!(
            names(pods.list(&fields("status.phase=Running")).await?),
            ["db", "web-a"]
        );
        assert_eq!(
            names(pods.list(&fields("status.phase!=Running")).await?),
            ["web-b"]
        );
        let all: Api<Pod> = Api::all(client.clone());
        assert_eq!(
            names(all.list(&fields("metadata.namespace=other")).await?),
            ["web-x"]
        );
        assert_eq!(
            names(
                all.list(&select("app=web").fields("status.phase=Succeeded"))
                    .await?
            ),
            ["web-x"]
        );
        let unsupported = api_status(pods.list(&fields("spec.unknown=x")).await);
        assert_eq!(unsupported.code, 400);
        let malformed = api_status(pods.list(&select("tier in a")).await);
        assert_eq!(malformed.code, 400);
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn pagination_with_limit_and_continue() {
    with_both_clients(|server, client| async move {
        for i in 0..5 {
            server.create(&config_map(&format!("cm-{i}"), &[]))?;
        }
        let api: Api<ConfigMap> = Api::default_namespaced(client);
        let first = api.list(&ListParams::default().limit(2)).await?;
        assert_eq!(first.items.len(), 2);
        assert_eq!(first.metadata.remaining_item_count, Some(3));
        let token = first.metadata.continue_.clone().expect("continue token");
        let second = api
            .list(&ListParams::default().limit(2).continue_token(&token))
            .await?;
        let third = api
            .list(
                &ListParams::default()
                    .limit(2)
                    .continue_token(second.metadata.continue_.as_deref().unwrap()),
            )
            .await?;
        let names: Vec<String> = first
            .iter()
            .chain(second.iter())
            .chain(third.iter())
            .map(|c| c.name_any())
            .collect();
        assert_eq!(names, ["cm-0", "cm-1", "cm-2", "cm-3", "cm-4"]);
        assert!(third.metadata.continue_.as_deref().unwrap_or("").is_empty());
        assert_eq!(
            first.metadata.resource_version,
            third.metadata.resource_version
        );
        // A continue token from before a compaction is expired.
        server.compact();
        assert_eq!(
            api_code(
                api.list(&ListParams::default().limit(2).continue_token(&token))
                    .await
            ),
            410
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn discovery_version_and_metadata_requests() {
    with_both_clients(|server, client| async move {
        let version = client.apiserver_version().await?;
        assert_eq!(version.major, "1");
        server.register_crd(&<Widget as kube::CustomResourceExt>::crd())?;
        let discovery = kube::discovery::Discovery::new(client.clone())
            .run()
            .await?;
        let groups: Vec<String> = discovery.groups().map(|g| g.name().to_string()).collect();
        for group in [
            "",
            "batch",
            "coordination.k8s.io",
            "events.k8s.io",
            "apiextensions.k8s.io",
            "test.terarchitect.dev",
        ] {
            assert!(groups.iter().any(|g| g == group), "{group} in {groups:?}");
        }
        let (widget, caps) = discovery
            .resolve_gvk(&GroupVersionKind::gvk(
                "test.terarchitect.dev",
                "v1",
                "Widget",
            ))
            .expect("widget discovered");
        assert_eq!(widget.plural, "widgets");
        assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);

        server.create(&config_map("meta", &[]))?;
        let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
        let partial = api.get_metadata("meta").await?;
        assert_eq!(partial.metadata.name.as_deref(), Some("meta"));
        assert_eq!(
            api.list_metadata(&ListParams::default()).await?.items.len(),
            1
        );

        // Unknown resources are 404 Status errors.
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("nope.example.com", "v1", "Nothing"));
        let unknown: Api<DynamicObject> = Api::default_namespaced_with(client, &ar);
        let status = api_status(unknown.list(&ListParams::default()).await);
        assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn kubeconfig_file_drives_a_client() -> anyhow::Result<()> {
    let server = FakeApiServer::start().await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path)?;
    let kubeconfig = kube::config::Kubeconfig::read_from(&path)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    assert_eq!(config.cluster_url.to_string(), format!("{}/", server.url()));
    assert_eq!(config.default_namespace, "default");
    let api: Api<ConfigMap> = Api::default_namespaced(Client::try_from(config)?);
    api.create(&PostParams::default(), &config_map("from-file", &[]))
        .await?;
    assert!(server.get::<ConfigMap>("default", "from-file").is_some());
    Ok(())
}

#[tokio::test]
async fn fault_injection_latency_and_request_log() {
    with_both_clients(|server, client| async move {
        let api: Api<ConfigMap> = Api::default_namespaced(client);
        server.fail_next(RequestMatcher::new(Verb::Create, "configmaps"), 500, 2);
        server.fail_next(
            RequestMatcher::new(Verb::Get, "configmaps").name("special"),
            500,
            1,
        );
        for _ in 0..2 {
            let status = api_status(
                api.create(&PostParams::default(), &config_map("flaky", &[]))
                    .await,
            );
            assert_eq!(
                (status.code, status.reason.as_str()),
                (500, "InternalError")
            );
        }
        api.create(&PostParams::default(), &config_map("flaky", &[]))
            .await?;
        api.create(&PostParams::default(), &config_map("special", &[]))
            .await?;
        api.get("flaky").await?;
        assert_eq!(api_code(api.get("special").await), 500);
        api.get("special").await?;

        let creates = server.requests_matching(&RequestMatcher::new(Verb::Create, "configmaps"));
        let codes: Vec<u16> = creates.iter().map(|r| r.status).collect();
        assert_eq!(codes, [500, 500, 201, 201]);
        assert_eq!(creates[0].method, "POST");
        assert_eq!(creates[0].path, "/api/v1/namespaces/default/configmaps");
        assert_eq!(creates[0].content_type.as_deref(), Some("application/json"));
        assert!(creates[0].body.contains("\"flaky\""));

        api.patch(
            "flaky",
            &PatchParams::apply("tester"),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "v"}
            })),
        )
        .await?;
        let patch = server
            .requests()
            .into_iter()
            .find(|r| r.verb == Some(Verb::Patch))
            .expect("patch recorded");
        assert_eq!(
            patch.content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
        assert_eq!(patch.query_param("fieldManager").as_deref(), Some("tester"));

        server.clear_requests();
        server.set_latency(Duration::from_millis(150));
        let started = Instant::now();
        api.get("flaky").await?;
        assert!(started.elapsed() >= Duration::from_millis(150));
        server.set_latency(Duration::ZERO);
        assert_eq!(server.requests().len(), 1);

        // Any request can fail, with a proper Status of the chosen code. (Note that kube's
        // kubeconfig-built client retries 429/503/504 by itself.)
        server.fail_next(RequestMatcher::any(), 403, 1);
        assert_eq!(
            api_status(api.list(&ListParams::default()).await).reason,
            "Forbidden"
        );
        server.clear_faults();
        api.list(&ListParams::default()).await?;
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn direct_store_helpers() -> anyhow::Result<()> {
    let server = FakeApiServer::start().await?;
    // Typed: create (namespace defaults), modify atomically, list, delete.
    let created = server.create(&config_map("direct", &[("k", "1")]))?;
    assert_eq!(created.namespace().as_deref(), Some("default"));
    let modified = server.modify::<ConfigMap>("default", "direct", |cm| {
        cm.data
            .get_or_insert_default()
            .insert("k".into(), "2".into());
    })?;
    assert!(modified.resource_version() > created.resource_version());
    assert_eq!(server.list::<ConfigMap>(None).len(), 1);
    assert!(
        server
            .list::<Namespace>(None)
            .iter()
            .any(|ns| ns.name_any() == "kube-system")
    );

    // Dynamic.
    let ar = ApiResource::erase::<ConfigMap>(&());
    let dynamic = server
        .get_dynamic(&ar, "default", "direct")
        .expect("dynamic get");
    assert_eq!(dynamic.data["data"]["k"], "2");
    let mut obj = DynamicObject::new("dyn", &ar).within("other");
    obj.data = json!({"data": {"x": "y"}});
    server.create_dynamic(&ar, &obj)?;
    assert_eq!(server.list_dynamic(&ar, "other").len(), 1);
    assert!(matches!(
        server.create(&config_map("direct", &[])),
        Err(terarchitect_fake_apiserver::Error::Api(e)) if e.code == 409
    ));
    server.delete::<ConfigMap>("default", "direct")?;
    assert!(server.get::<ConfigMap>("default", "direct").is_none());

    // Waiting on the store without fixed sleeps.
    let cluster = server.cluster();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        cluster.create(&config_map("later", &[])).unwrap();
    });
    let found = server
        .wait_for(TIMEOUT, |c| c.get::<ConfigMap>("default", "later"))
        .await;
    assert!(found.is_some());
    writer.await?;
    Ok(())
}
