//! [`FakeApiServer`]: starting the HTTP listener, building clients and kubeconfigs.

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use kube::config::{
    AuthInfo, Context, KubeConfigOptions, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::error::Error;
use crate::faults::Faults;
use crate::store::{Store, WriteOptions};

/// Settings of a fake server.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub bookmark_interval: Duration,
    pub history_limit: usize,
    pub default_namespace: String,
}

/// State shared by the HTTP handler, watches, controllers and [`Cluster`] handles.
pub(crate) struct Shared {
    pub store: Store,
    pub faults: Faults,
    pub shutdown: CancellationToken,
    pub config: Config,
    /// `127.0.0.1:<port>` (or a placeholder before the listener is bound).
    pub address: String,
}

impl Shared {
    pub(crate) fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .fallback(crate::api::handle)
            .with_state(self.clone())
    }
}

/// Cancels background tasks when the last [`FakeApiServer`] handle is dropped.
struct ShutdownGuard(CancellationToken);

impl Drop for ShutdownGuard {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Builder for a [`FakeApiServer`] with non-default settings.
#[derive(Debug, Clone)]
pub struct FakeApiServerBuilder {
    config: Config,
}

impl Default for FakeApiServerBuilder {
    fn default() -> Self {
        Self {
            config: Config {
                bookmark_interval: Duration::from_secs(5),
                history_limit: 10_000,
                default_namespace: "default".into(),
            },
        }
    }
}

impl FakeApiServerBuilder {
    /// How often watches with `allowWatchBookmarks=true` get a BOOKMARK event (default 5 s).
    pub fn bookmark_interval(mut self, interval: Duration) -> Self {
        self.config.bookmark_interval = interval;
        self
    }

    /// How many events the watch history keeps before older resourceVersions become 410 Gone
    /// (default 10 000).
    pub fn history_limit(mut self, events: usize) -> Self {
        self.config.history_limit = events.max(1);
        self
    }

    /// The namespace of the kubeconfig context and of the clients (default `"default"`).
    pub fn default_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.config.default_namespace = namespace.into();
        self
    }

    /// Bind `127.0.0.1:<random port>` and start serving.
    pub async fn start(self) -> Result<FakeApiServer, Error> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared {
            store: Store::new(self.config.history_limit),
            faults: Faults::default(),
            shutdown: shutdown.clone(),
            address: addr.to_string(),
            config: self.config,
        });
        let namespace_type = shared
            .store
            .read(|s| s.registry.find("", "v1", "namespaces"))
            .expect("namespaces are built in");
        let mut namespaces = vec!["default", "kube-system", "kube-public", "kube-node-lease"];
        if !namespaces.contains(&shared.config.default_namespace.as_str()) {
            namespaces.push(&shared.config.default_namespace);
        }
        for name in namespaces {
            let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            shared.store.write(|s| {
                s.create(
                    &namespace_type,
                    None,
                    ns,
                    &WriteOptions::direct("fake-apiserver"),
                )
            })?;
        }
        let router = shared.router();
        let serve_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let server = axum::serve(listener, router)
                .with_graceful_shutdown(async move { serve_shutdown.cancelled().await });
            if let Err(err) = server.await {
                tracing::warn!(%err, "fake API server stopped with an error");
            }
        });
        Ok(FakeApiServer {
            cluster: Cluster::new(shared),
            addr,
            _guard: Arc::new(ShutdownGuard(shutdown)),
        })
    }
}

/// An in-process fake Kubernetes API server listening on `127.0.0.1:<random port>` (plain HTTP).
///
/// Dereferences to [`Cluster`] for direct store access, fault injection and the Job controller.
/// Dropping the last handle stops the listener, open watches and controllers.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use kube::api::{Api, PostParams};
/// use terarchitect_fake_apiserver::FakeApiServer;
///
/// let server = FakeApiServer::start().await?;
/// let api: Api<ConfigMap> = Api::default_namespaced(server.client().await);
/// let mut cm = ConfigMap::default();
/// cm.metadata.name = Some("settings".into());
/// api.create(&PostParams::default(), &cm).await?;
/// assert!(server.get::<ConfigMap>("default", "settings").is_some());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct FakeApiServer {
    cluster: Cluster,
    addr: SocketAddr,
    _guard: Arc<ShutdownGuard>,
}

impl std::fmt::Debug for FakeApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApiServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Deref for FakeApiServer {
    type Target = Cluster;

    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl FakeApiServer {
    /// Start a server with default settings.
    pub async fn start() -> Result<Self, Error> {
        FakeApiServerBuilder::default().start().await
    }

    /// A builder for non-default settings.
    pub fn builder() -> FakeApiServerBuilder {
        FakeApiServerBuilder::default()
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A handle to the cluster state that does not keep the server alive.
    pub fn cluster(&self) -> Cluster {
        self.cluster.clone()
    }

    /// A kubeconfig whose current context points at this server (namespace: the default namespace).
    pub fn kubeconfig(&self) -> Kubeconfig {
        let name = "fake-apiserver".to_string();
        Kubeconfig {
            clusters: vec![NamedCluster {
                name: name.clone(),
                cluster: Some(kube::config::Cluster {
                    server: Some(self.url()),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            auth_infos: vec![NamedAuthInfo {
                name: name.clone(),
                auth_info: Some(AuthInfo::default()),
                ..Default::default()
            }],
            contexts: vec![NamedContext {
                name: name.clone(),
                context: Some(Context {
                    cluster: name.clone(),
                    user: Some(name.clone()),
                    namespace: Some(self.cluster.default_namespace().to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            current_context: Some(name),
            api_version: Some("v1".into()),
            kind: Some("Config".into()),
            ..Default::default()
        }
    }

    /// Write [`kubeconfig`](Self::kubeconfig) as YAML to `path`, e.g. for a child process's `KUBECONFIG`.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        let yaml = serde_saphyr::to_string(&self.kubeconfig())
            .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
        std::fs::write(path, yaml)?;
        Ok(())
    }

    /// A `kube::Client` built from [`kubeconfig`](Self::kubeconfig), talking HTTP to the listener.
    ///
    /// # Panics
    /// If kube rejects the generated kubeconfig (a bug in this crate).
    pub async fn client(&self) -> kube::Client {
        let config =
            kube::Config::from_custom_kubeconfig(self.kubeconfig(), &KubeConfigOptions::default())
                .await
                .expect("kube accepts the generated kubeconfig");
        kube::Client::try_from(config).expect("kube builds a client for the fake server")
    }

    /// A `kube::Client` that calls the server's handler in-process, without a socket.
    /// Must be called within a Tokio runtime.
    pub fn in_process_client(&self) -> kube::Client {
        self.cluster.in_process_client()
    }
}
