//! Start-up and shutdown: open and migrate the database, build the state, serve HTTP and run
//! the background tasks (lease sweeper, PostgreSQL job listener).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::context_cache::ContextCache;
use crate::db::{Db, DbError, DbOptions};
use crate::http::admin_auth::{AdminTokens, open_admin_api_exposed};
use crate::http::{self, RouterOptions};
use crate::log_writer::LogWriter;
use crate::memory::Memory;
use crate::metrics::Metrics;
use crate::queue::{self, JobEvents};
use crate::settings::{EnvVars, Settings, key_bootstrap};
use crate::state::{AppState, Policy};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Fail-closed mode without a worker API key.
    #[error(
        "--require-worker-api-key is set but no worker API key is configured (TERARCHITECT_WORKER_API_KEY)"
    )]
    NoWorkerKey,
    /// Fail-closed mode without an admin token.
    #[error(
        "--require-admin-token is set but no admin token is configured (TERARCHITECT_ADMIN_TOKEN)"
    )]
    NoAdminToken,
    /// The HTTP client for embeddings could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// `TERARCHITECT_SECRET_KEY` is malformed, or the generated key's file is unusable.
    #[error(transparent)]
    SecretKey(#[from] key_bootstrap::KeyBootstrapError),
}

/// Opens the configured database (PostgreSQL URL, or the SQLite file) and migrates it.
pub async fn open_database(config: &Config) -> Result<Db, DbError> {
    let opts = DbOptions {
        max_connections: config.db_max_connections,
        ..DbOptions::default()
    };
    let db = match config.effective_database_url() {
        Some(url) => connect_with_retry(&url, &opts, config.db_connect_timeout_sec).await?,
        None => Db::open_sqlite_file(&config.sqlite_path, &opts).await?,
    };
    db.migrate().await?;
    Ok(db)
}

/// Connects to `url`, retrying connection-level failures (refused, DNS, timeouts) with a
/// growing delay for up to `timeout_sec` (0: one attempt); authentication and other database
/// errors fail at once.
async fn connect_with_retry(url: &str, opts: &DbOptions, timeout_sec: u64) -> Result<Db, DbError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout_sec);
    let mut delay = Duration::from_millis(250);
    loop {
        let attempt = Db::connect(url, opts);
        let result = if timeout_sec == 0 {
            attempt.await
        } else {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            tokio::time::timeout(left.max(Duration::from_millis(500)), attempt)
                .await
                .unwrap_or(Err(DbError::Sqlx(sqlx::Error::PoolTimedOut)))
        };
        match result {
            Ok(db) => return Ok(db),
            Err(DbError::Sqlx(e @ (sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut)))
                if tokio::time::Instant::now() + delay < deadline =>
            {
                tracing::warn!(error = %e, retry_in = ?delay, "database not reachable yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// A running server.
pub struct RunningServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// The state the handlers share (tests use its database handle).
    pub state: AppState,
    shutdown: CancellationToken,
    serve: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
    grace: Duration,
}

impl RunningServer {
    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting connections, ends long polls, waits for in-flight requests (up to the
    /// grace period) and stops the background tasks.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.wait().await;
    }

    /// Waits until the server stops (after its shutdown token is cancelled).
    pub async fn wait(self) {
        let mut serve = self.serve;
        self.shutdown.cancelled().await;
        if tokio::time::timeout(self.grace, &mut serve).await.is_err() {
            tracing::warn!("in-flight requests did not finish within the grace period");
            serve.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        self.state.db.close().await;
    }
}

/// The configured admin tokens; fails in fail-closed mode without one, warns when the admin
/// API is open on a non-loopback address.
fn admin_tokens(config: &Config) -> Result<AdminTokens, StartError> {
    let tokens = AdminTokens::new(&config.admin_tokens);
    if !tokens.is_enabled() && config.require_admin_token {
        return Err(StartError::NoAdminToken);
    }
    if open_admin_api_exposed(&tokens, &config.bind) {
        tracing::warn!(
            bind = %config.bind,
            "no admin token is configured (TERARCHITECT_ADMIN_TOKEN) and the server listens on a \
             non-loopback address: anyone who can reach it can change settings, projects and tickets"
        );
    }
    Ok(tokens)
}

/// Opens the database, checks the configuration, binds and starts serving.
///
/// A malformed `TERARCHITECT_SECRET_KEY` stops it; on an SQLite file without a key, the
/// generated key beside the database is used ([`key_bootstrap`]).
pub async fn start(config: Config, env: EnvVars) -> Result<RunningServer, StartError> {
    let (env, key_source) = key_bootstrap::prepare(&config, env)?;
    key_bootstrap::log_source(&key_source);
    let db = open_database(&config).await?;
    start_with_db(config, env, db).await
}

/// Like [`start`] with an already opened and migrated database.
pub async fn start_with_db(
    config: Config,
    env: EnvVars,
    db: Db,
) -> Result<RunningServer, StartError> {
    terarchitect_worker_api::ensure_crypto_provider();
    let admin_tokens = admin_tokens(&config)?;
    let settings = Arc::new(Settings::new(
        db.clone(),
        env,
        Duration::from_millis(config.settings_cache_ms),
    ));
    if !settings.encryption_available() {
        tracing::warn!(
            "TERARCHITECT_SECRET_KEY is missing or malformed: secrets cannot be stored through the settings API"
        );
    }
    let key_configured = settings.resolve().await?.worker_api_key().is_some();
    if !key_configured {
        if config.require_worker_api_key {
            return Err(StartError::NoWorkerKey);
        }
        tracing::warn!(
            "no worker API key is configured: the worker API accepts unauthenticated calls"
        );
    }
    let http_client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    let shutdown = CancellationToken::new();
    let events = JobEvents::new();
    let metrics = Arc::new(Metrics::new());
    let review = Arc::new(crate::review::Review::new(
        db.clone(),
        settings.clone(),
        events.clone(),
        metrics.review.clone(),
        config.review.clone(),
    )?);
    let state = AppState {
        db: db.clone(),
        settings,
        memory: Memory::new(db.clone(), http_client),
        events: events.clone(),
        metrics: metrics.clone(),
        policy: Arc::new(Policy {
            require_worker_api_key: config.require_worker_api_key,
            default_lease_seconds: config.default_lease_seconds,
            redact_context_secrets: config.redact_context_secrets,
            admin_tokens,
        }),
        context_cache: Arc::new(ContextCache::new(config.context_cache_bytes)),
        logs: LogWriter::start(db.clone()),
        shutdown: shutdown.clone(),
        review: review.clone(),
    };

    let mut tasks = vec![tokio::spawn(queue::sweep_leases(
        db.clone(),
        events.clone(),
        config.lease_sweep(),
        config.max_attempts,
        metrics,
        shutdown.clone(),
    ))];
    if let Db::Postgres(pool) = &db {
        tasks.push(tokio::spawn(queue::listen_for_jobs(
            pool.clone(),
            events,
            shutdown.clone(),
        )));
    }
    if let Some(interval) = review.poll_interval() {
        tasks.push(tokio::spawn(crate::review::poller::run(
            review,
            interval,
            shutdown.clone(),
        )));
    }

    let listener = TcpListener::bind(config.bind)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.bind,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.bind,
        source,
    })?;
    let app = http::router(
        state.clone(),
        &RouterOptions {
            max_body_bytes: config.max_body_bytes,
        },
    );
    let stop = shutdown.clone();
    let serve = tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    tracing::info!(%addr, backend = db.backend_name(), "terarchitect api-server listening");
    Ok(RunningServer {
        addr,
        state,
        shutdown,
        serve,
        tasks,
        grace: Duration::from_secs(config.shutdown_grace_seconds),
    })
}
