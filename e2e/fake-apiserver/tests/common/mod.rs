//! Shared helpers for the fake API server's tests.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::CustomResource;
use kube::api::ObjectMeta;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use terarchitect_fake_apiserver::FakeApiServer;

/// Generous upper bound for anything asynchronous; conditions are polled, so passing tests are fast.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A small custom resource for tests.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "test.terarchitect.dev",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus",
    shortname = "wd"
)]
pub struct WidgetSpec {
    pub size: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct WidgetStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

/// A cluster-scoped custom resource without a status subresource.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(group = "test.terarchitect.dev", version = "v1", kind = "Gadget")]
pub struct GadgetSpec {
    pub level: i32,
}

/// A server with the Widget and Gadget CRDs registered.
pub async fn server_with_crds() -> FakeApiServer {
    use kube::CustomResourceExt;
    let server = FakeApiServer::start().await.expect("server starts");
    server.register_crd(&Widget::crd()).expect("widget CRD");
    server.register_crd(&Gadget::crd()).expect("gadget CRD");
    server
}

pub fn widget(name: &str, size: i32) -> Widget {
    Widget::new(name, WidgetSpec { size, color: None })
}

pub fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        ..ObjectMeta::default()
    }
}

pub fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: meta(name),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..ConfigMap::default()
    }
}

pub fn pod(name: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    }))
    .expect("valid pod")
}

/// A Job with one container; `extra_spec` is merged into `.spec`.
pub fn job(name: &str, extra_spec: serde_json::Value) -> Job {
    let mut value = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "agent", "image": "example.com/agent:1", "command": ["run"], "args": ["--ticket", "$(TICKET)"]}],
            }},
        },
    });
    if let serde_json::Value::Object(extra) = extra_spec {
        for (k, v) in extra {
            value["spec"][k] = v;
        }
    }
    serde_json::from_value(value).expect("valid job")
}

/// Poll `check` until it yields `Some`, panicking with `what` after [`TIMEOUT`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The HTTP status code of a kube API error.
pub fn api_code<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> u16 {
    match result {
        Err(kube::Error::Api(status)) => status.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The Status of a kube API error.
pub fn api_status<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> Box<kube::core::Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}
