//! Test support, public so other crates' tests can run a real api-server: a throw-away
//! PostgreSQL cluster started from the machine's PostgreSQL binaries (one per test process, a
//! fresh database per server), and [`TestServer`], an api-server on PostgreSQL or SQLite bound
//! to 127.0.0.1.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root the cluster runs as the
//! `postgres` user. The server process is killed when the test process exits (it is started
//! with a parent-death signal from a thread that lives as long as the process).

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sqlx::Connection;

use crate::config::Config;
use crate::db::{Db, DbOptions};
use crate::server::{RunningServer, start_with_db};

/// Which database a test server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A fresh database in the per-process PostgreSQL cluster.
    Postgres,
    /// A fresh SQLite file in a temporary directory.
    Sqlite,
}

/// A PostgreSQL cluster for tests.
#[derive(Debug)]
pub struct PgCluster {
    socket_dir: PathBuf,
}

static CLUSTER: OnceLock<Result<PgCluster, String>> = OnceLock::new();

/// The process's PostgreSQL cluster, started on first use. Panics with instructions when
/// PostgreSQL cannot be started.
pub fn pg_cluster() -> &'static PgCluster {
    match CLUSTER.get_or_init(start_cluster) {
        Ok(c) => c,
        Err(e) => panic!(
            "cannot start PostgreSQL for tests: {e}\n\
             Install PostgreSQL (e.g. `apt-get install postgresql`) or set TERARCHITECT_PG_BIN to its bin directory."
        ),
    }
}

impl PgCluster {
    /// A connection URL for database `db`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@localhost/{db}?host={}",
            self.socket_dir.display()
        )
    }

    /// Creates an empty database and returns its URL.
    pub async fn create_database(&self) -> String {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connecting to the test cluster");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("creating a test database");
        let _ = admin.close().await;
        self.url(&name)
    }
}

fn pg_bin_dir() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("TERARCHITECT_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let out = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .map_err(|_| "no PostgreSQL binaries found".to_owned())?;
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// uid and gid of `postgres` when running as root.
fn run_as() -> Result<Option<(u32, u32)>, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| e.to_string())?;
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"postgres") && f.len() > 3)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        })
        .flatten()
        .map(Some)
        .ok_or_else(|| {
            "running as root and there is no `postgres` user to run PostgreSQL as".into()
        })
}

fn chown_tree(path: &Path, ids: Option<(u32, u32)>) -> Result<(), String> {
    if let Some((uid, gid)) = ids {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| format!("chown {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Removes directories left by test processes that no longer exist.
fn remove_stale_dirs(root: &Path) {
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix("terarchitect-pg-"))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn start_cluster() -> Result<PgCluster, String> {
    let bin = pg_bin_dir()?;
    let ids = run_as()?;
    let tmp = std::env::temp_dir();
    remove_stale_dirs(&tmp);
    let root = tmp.join(format!(
        "terarchitect-pg-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let data = root.join("data");
    let sockets = root.join("sock");
    for dir in [&root, &sockets] {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        chown_tree(dir, ids)?;
    }
    let with_user = |cmd: &mut Command| {
        if let Some((uid, gid)) = ids {
            cmd.uid(uid).gid(gid);
        }
    };
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "-D",
        ])
        .arg(&data)
        .current_dir(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    with_user(&mut initdb);
    let out = initdb.output().map_err(|e| format!("initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }

    let mut postgres = Command::new(bin.join("postgres"));
    postgres
        .arg("-D")
        .arg(&data)
        .arg("-k")
        .arg(&sockets)
        .args([
            "-c",
            "listen_addresses=",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
        ])
        .args([
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=400",
            "-c",
            "shared_buffers=128MB",
        ])
        .current_dir(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    with_user(&mut postgres);
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe; it runs in the child after the uid
    // change, so the setting survives into postgres.
    unsafe {
        postgres.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // The parent-death signal fires when the spawning *thread* ends, so spawn from a thread
    // that lives as long as postgres does.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("test-postgres".into())
        .spawn(move || match postgres.spawn() {
            Ok(mut child) => {
                let _ = tx.send(Ok(()));
                let _ = child.wait();
            }
            Err(e) => {
                let _ = tx.send(Err(format!("starting postgres: {e}")));
            }
        })
        .map_err(|e| e.to_string())?;
    rx.recv().map_err(|e| e.to_string())??;

    let socket = sockets.join(".s.PGSQL.5432");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        if Instant::now() > deadline {
            return Err("postgres did not open its socket within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    // The socket appears slightly before the server accepts connections.
    std::thread::sleep(Duration::from_millis(100));
    Ok(PgCluster {
        socket_dir: sockets,
    })
}

/// Options of a test server.
#[derive(Debug, Clone, Default)]
pub struct TestOptions {
    /// Environment the server consults for settings fallbacks (not the process environment).
    pub env: HashMap<String, String>,
    /// Fail closed without a worker API key.
    pub require_worker_api_key: bool,
    /// Default claim lease, in seconds (server default when None).
    pub default_lease_seconds: Option<u32>,
    /// Claims per job before lease expiry fails it.
    pub max_attempts: Option<i32>,
    /// Lease sweep interval in milliseconds (200 when None).
    pub lease_sweep_ms: Option<u64>,
    /// Blank secrets in worker-context.
    pub redact_context_secrets: bool,
    /// How long settings may be cached, in milliseconds (0, always fresh, when None).
    pub settings_cache_ms: Option<u64>,
    /// Port to listen on (any free port when None), e.g. to restart a server on the address
    /// its clients already use.
    pub port: Option<u16>,
    /// Review loop options (GitHub API URL, poll interval, webhook secret); the poller is off
    /// when None.
    pub review: Option<crate::review::ReviewArgs>,
    /// Admin tokens the non-worker endpoints require (open when empty).
    pub admin_tokens: Vec<String>,
    /// Refuse to start without an admin token.
    pub require_admin_token: bool,
}

impl TestOptions {
    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.to_owned(), value.to_owned());
        self
    }
}

/// A 64-hex-character `TERARCHITECT_SECRET_KEY` for tests.
pub const TEST_SECRET_KEY: &str =
    "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// A running api-server for tests.
pub struct TestServer {
    /// The server.
    pub server: RunningServer,
    /// The backend it runs on.
    pub backend: Backend,
    /// The database URL (reopen it to simulate a restart).
    pub database_url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Starts a server on a fresh database.
    pub async fn start(backend: Backend, opts: TestOptions) -> Self {
        let (url, dir) = match backend {
            Backend::Postgres => (pg_cluster().create_database().await, None),
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                (
                    format!("sqlite:{}", dir.path().join("test.db").display()),
                    Some(dir),
                )
            }
        };
        let server = Self::start_on(&url, &opts).await;
        Self {
            server,
            backend,
            database_url: url,
            _dir: dir,
        }
    }

    /// Starts a server on an existing database URL (e.g. to restart one).
    pub async fn start_on(url: &str, opts: &TestOptions) -> RunningServer {
        let mut config = Config::for_tests(PathBuf::from("unused.db"));
        config.require_worker_api_key = opts.require_worker_api_key;
        config.redact_context_secrets = opts.redact_context_secrets;
        if let Some(l) = opts.default_lease_seconds {
            config.default_lease_seconds = l;
        }
        if let Some(m) = opts.max_attempts {
            config.max_attempts = m;
        }
        if let Some(ms) = opts.lease_sweep_ms {
            config.lease_sweep_ms = ms;
        }
        if let Some(ms) = opts.settings_cache_ms {
            config.settings_cache_ms = ms;
        }
        if let Some(port) = opts.port {
            config.bind.set_port(port);
        }
        if let Some(review) = &opts.review {
            config.review = review.clone();
        }
        config.admin_tokens = opts.admin_tokens.clone();
        config.require_admin_token = opts.require_admin_token;
        let db = Db::connect(
            url,
            &DbOptions {
                max_connections: 10,
                ..DbOptions::default()
            },
        )
        .await
        .expect("opening the test database");
        db.migrate().await.expect("migrating the test database");
        start_with_db(config, Arc::new(opts.env.clone()), db)
            .await
            .expect("starting the test api-server")
    }

    /// The server's base URL.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The server's database.
    pub fn db(&self) -> &Db {
        &self.server.state.db
    }

    /// Stops the server, keeping its database for a restart.
    pub async fn stop(self) -> (String, Option<tempfile::TempDir>) {
        self.server.shutdown().await;
        (self.database_url, self._dir)
    }
}
