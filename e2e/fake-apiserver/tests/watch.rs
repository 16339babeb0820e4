//! Watches: raw watch events, resuming, selectors, bookmarks, timeouts, streaming lists, 410 Gone,
//! and kube's watcher/reflector surviving dropped streams and compaction.

mod common;

use std::time::Duration;

use common::*;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use terarchitect_fake_apiserver::{FakeApiServer, RequestMatcher, Verb};
use tokio::time::timeout;

type Events = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<WatchEvent<ConfigMap>, kube::Error>> + Send>,
>;

async fn watch(api: &Api<ConfigMap>, params: &WatchParams, rv: &str) -> Events {
    api.watch(params, rv).await.expect("watch starts").boxed()
}

/// The next non-bookmark event as (type, name).
async fn next(events: &mut Events) -> (String, String) {
    loop {
        let event = timeout(TIMEOUT, events.try_next())
            .await
            .expect("event in time")
            .expect("no error")
            .expect("stream open");
        return match event {
            WatchEvent::Added(o) => ("ADDED".into(), o.name_any()),
            WatchEvent::Modified(o) => ("MODIFIED".into(), o.name_any()),
            WatchEvent::Deleted(o) => ("DELETED".into(), o.name_any()),
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(e) => ("ERROR".into(), e.code.to_string()),
        };
    }
}

fn ev(kind: &str, name: &str) -> (String, String) {
    (kind.to_string(), name.to_string())
}

async fn raw_watch_checks(server: &FakeApiServer, client: Client) -> anyhow::Result<()> {
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &config_map("before", &[]))
        .await?;
    let start_rv = server.resource_version().to_string();

    // resourceVersion "0": synthetic ADDED for what exists, then live events.
    let mut events = watch(&api, &WatchParams::default(), "0").await;
    assert_eq!(next(&mut events).await, ev("ADDED", "before"));
    api.create(&PostParams::default(), &config_map("live", &[]))
        .await?;
    api.patch(
        "live",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v"}})),
    )
    .await?;
    api.delete("live", &DeleteParams::default()).await?;
    assert_eq!(next(&mut events).await, ev("ADDED", "live"));
    assert_eq!(next(&mut events).await, ev("MODIFIED", "live"));
    assert_eq!(next(&mut events).await, ev("DELETED", "live"));

    // Resuming from a resourceVersion replays the history after it.
    let mut resumed = watch(&api, &WatchParams::default(), &start_rv).await;
    assert_eq!(next(&mut resumed).await, ev("ADDED", "live"));
    assert_eq!(next(&mut resumed).await, ev("MODIFIED", "live"));
    assert_eq!(next(&mut resumed).await, ev("DELETED", "live"));

    // Selectors: objects entering the selection are ADDED, leaving it DELETED.
    let mut selected = watch(
        &api,
        &WatchParams::default().labels("app=x"),
        &server.resource_version().to_string(),
    )
    .await;
    api.create(&PostParams::default(), &config_map("sel", &[]))
        .await?;
    let relabel = |v: &str| Patch::Merge(json!({"metadata": {"labels": {"app": v}}}));
    api.patch("sel", &PatchParams::default(), &relabel("x"))
        .await?;
    api.patch("sel", &PatchParams::default(), &relabel("x"))
        .await?;
    api.patch(
        "sel",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"a": "b"}})),
    )
    .await?;
    api.patch("sel", &PatchParams::default(), &relabel("y"))
        .await?;
    assert_eq!(next(&mut selected).await, ev("ADDED", "sel"));
    assert_eq!(next(&mut selected).await, ev("MODIFIED", "sel"));
    assert_eq!(next(&mut selected).await, ev("DELETED", "sel"));
    let by_name = WatchParams::default().fields("metadata.name=sel");
    let mut named = watch(&api, &by_name, "0").await;
    assert_eq!(next(&mut named).await, ev("ADDED", "sel"));

    // timeoutSeconds ends the stream.
    let mut short = watch(
        &api,
        &WatchParams::default().timeout(1),
        &server.resource_version().to_string(),
    )
    .await;
    let ended = timeout(TIMEOUT, async {
        while short.try_next().await?.is_some() {}
        Ok::<_, kube::Error>(())
    })
    .await;
    assert!(ended.is_ok(), "stream ended after timeoutSeconds");
    Ok(())
}

#[tokio::test]
async fn raw_watch_events_over_http() -> anyhow::Result<()> {
    let server = FakeApiServer::start().await?;
    raw_watch_checks(&server, server.client().await).await
}

#[tokio::test]
async fn raw_watch_events_in_process() -> anyhow::Result<()> {
    let server = FakeApiServer::start().await?;
    raw_watch_checks(&server, server.in_process_client()).await
}

#[tokio::test]
async fn bookmarks_streaming_lists_and_gone() -> anyhow::Result<()> {
    let server = FakeApiServer::builder()
        .bookmark_interval(Duration::from_millis(50))
        .start()
        .await?;
    let api: Api<ConfigMap> = Api::default_namespaced(server.client().await);
    server.create(&config_map("a", &[]))?;
    server.create(&config_map("b", &[]))?;

    // Periodic bookmarks carry the current resourceVersion.
    let mut events = watch(
        &api,
        &WatchParams::default(),
        &server.resource_version().to_string(),
    )
    .await;
    let bookmark = timeout(TIMEOUT, async {
        loop {
            if let Some(WatchEvent::Bookmark(b)) = events.try_next().await? {
                return Ok::<_, kube::Error>(b);
            }
        }
    })
    .await??;
    assert_eq!(
        bookmark.metadata.resource_version,
        server.resource_version().to_string()
    );
    assert_eq!(bookmark.types.kind, "ConfigMap");

    // Streaming list: initial ADDED events, then the annotated bookmark.
    let mut stream = watch(&api, &WatchParams::streaming_lists(), "0").await;
    assert_eq!(next(&mut stream).await, ev("ADDED", "a"));
    assert_eq!(next(&mut stream).await, ev("ADDED", "b"));
    let end = timeout(TIMEOUT, stream.try_next())
        .await??
        .expect("bookmark");
    let WatchEvent::Bookmark(end) = end else {
        panic!("expected the initial-events-end bookmark")
    };
    assert_eq!(
        end.metadata
            .annotations
            .get("k8s.io/initial-events-end")
            .map(String::as_str),
        Some("true")
    );

    // Watching from a compacted resourceVersion yields an ERROR event with a 410 Status.
    let old = server.resource_version().to_string();
    server.create(&config_map("c", &[]))?;
    server.compact();
    let mut gone = watch(&api, &WatchParams::default(), &old).await;
    assert_eq!(next(&mut gone).await, ev("ERROR", "410"));
    Ok(())
}

#[tokio::test]
async fn kube_watcher_survives_dropped_streams_and_compaction() -> anyhow::Result<()> {
    let server = FakeApiServer::start().await?;
    let api: Api<ConfigMap> = Api::default_namespaced(server.in_process_client());
    let (reader, writer) = reflector::store();
    let config = watcher::Config::default();
    let stream = reflector(writer, watcher(api.clone(), config))
        .default_backoff()
        .applied_objects();
    let driver = tokio::spawn(stream.for_each(|_| async {}));
    let names = || {
        let mut names: Vec<String> = reader.state().iter().map(|c| c.name_any()).collect();
        names.sort();
        names
    };
    let wait_names = |expected: Vec<&'static str>| {
        let names = &names;
        async move {
            eventually(&format!("reflector holds {expected:?}"), || async {
                (names() == expected).then_some(())
            })
            .await
        }
    };

    api.create(&PostParams::default(), &config_map("one", &[]))
        .await?;
    wait_names(vec!["one"]).await;

    // An abruptly dropped watch is resumed; nothing is missed.
    server.drop_watches();
    api.create(&PostParams::default(), &config_map("two", &[]))
        .await?;
    wait_names(vec!["one", "two"]).await;

    // After a compaction the resumed watch gets 410 Gone and the watcher relists.
    let lists_before = server
        .requests_matching(&RequestMatcher::new(Verb::List, "configmaps"))
        .len();
    server.compact();
    api.delete("one", &DeleteParams::default()).await?;
    api.create(&PostParams::default(), &config_map("three", &[]))
        .await?;
    wait_names(vec!["three", "two"]).await;
    let lists_after = server
        .requests_matching(&RequestMatcher::new(Verb::List, "configmaps"))
        .len();
    assert!(lists_after > lists_before, "the watcher relisted after 410");
    driver.abort();
    Ok(())
}

#[tokio::test]
async fn kube_watcher_with_streaming_lists() -> anyhow::Result<()> {
    let server = FakeApiServer::start().await?;
    server.create(&config_map("existing", &[]))?;
    let api: Api<ConfigMap> = Api::default_namespaced(server.client().await);
    let mut events = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut seen = Vec::new();
    loop {
        match timeout(TIMEOUT, events.try_next()).await??.expect("open") {
            watcher::Event::InitApply(o) => seen.push(o.name_any()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(seen, ["existing"]);
    api.create(&PostParams::default(), &config_map("new", &[]))
        .await?;
    api.delete("new", &DeleteParams::default()).await?;
    let mut live = Vec::new();
    while live.len() < 2 {
        match timeout(TIMEOUT, events.try_next()).await??.expect("open") {
            watcher::Event::Apply(o) => live.push(format!("apply {}", o.name_any())),
            watcher::Event::Delete(o) => live.push(format!("delete {}", o.name_any())),
            _ => {}
        }
    }
    assert_eq!(live, ["apply new", "delete new"]);
    let watches = server.requests_matching(&RequestMatcher::new(Verb::Watch, "configmaps"));
    assert_eq!(
        watches[0].query_param("sendInitialEvents").as_deref(),
        Some("true")
    );
    assert!(
        server
            .requests_matching(&RequestMatcher::new(Verb::List, "configmaps"))
            .is_empty()
    );
    Ok(())
}

#[tokio::test]
async fn metadata_watcher_gets_partial_objects() -> anyhow::Result<()> {
    let server = FakeApiServer::start().await?;
    server.create(&config_map("meta", &[("big", "value")]))?;
    let api: Api<PartialObjectMeta<ConfigMap>> =
        Api::default_namespaced(server.in_process_client());
    let mut events = watcher(api, watcher::Config::default()).boxed();
    let mut names = Vec::new();
    loop {
        match timeout(TIMEOUT, events.try_next()).await??.expect("open") {
            watcher::Event::InitApply(o) => names.push(o.name_any()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(names, ["meta"]);
    let list = &server.requests_matching(&RequestMatcher::new(Verb::List, "configmaps"))[0];
    assert!(
        list.accept
            .as_deref()
            .unwrap_or("")
            .contains("as=PartialObjectMetadataList")
    );
    Ok(())
}
