//! The first run on the embedded default: the `.env` file, the generated secret key beside the
//! SQLite file, and the landing document at `GET /`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use terarchitect_api_server::env_file;
use terarchitect_api_server::settings::ENCRYPTION_UNAVAILABLE;
use terarchitect_api_server::settings::key_bootstrap::{KeyBootstrapError, key_file_path};
use terarchitect_api_server::testing::pg_cluster;
use terarchitect_api_server::{Config, RunningServer, StartError, start};

use crate::common::{
    Api, Backend, TEST_SECRET_KEY, TestOptions, TestServer, on_both_backends, ready_project,
    start_ticket, ticket,
};

const BIN: &str = env!("CARGO_BIN_EXE_terarchitect-api-server");

/// A server started the way `main` starts it (`start`, which opens the database itself).
async fn start_on(config: Config, env: &[(&str, &str)]) -> Result<RunningServer, StartError> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    start(config, Arc::new(env)).await
}

fn api(server: &RunningServer) -> Api {
    Api {
        base: server.url(),
        http: reqwest::Client::new(),
        token: None,
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

// --- The .env file ------------------------------------------------------------------------

#[test]
fn env_file_values_fill_gaps_and_the_environment_wins() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".env");
    std::fs::write(
        &path,
        "# as the original's backend/.env\nTERARCHITECT_SECRET_KEY=\"abc\"\nAGENT_MODEL=from-file\nWORKER_MODEL=file-model\n",
    )
    .unwrap();
    let real: HashMap<String, String> = [("WORKER_MODEL", "env-model"), ("PATH", "/bin")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let file = env_file::read(&path, |k| real.contains_key(k))
        .unwrap()
        .expect("the file exists");
    assert_eq!(
        file.applied_names(),
        vec!["TERARCHITECT_SECRET_KEY", "AGENT_MODEL"]
    );
    assert_eq!(file.overridden, vec!["WORKER_MODEL"]);
    let merged = file.merged_into(&real);
    assert_eq!(merged["AGENT_MODEL"], "from-file");
    assert_eq!(merged["TERARCHITECT_SECRET_KEY"], "abc", "quotes removed");
    assert_eq!(merged["WORKER_MODEL"], "env-model", "the environment wins");
    assert_eq!(merged["PATH"], "/bin");
    assert_eq!(
        env_file::read(&dir.path().join("none"), |_| false).unwrap(),
        None
    );
}

/// The binary, started in its own directory with an explicit environment; killed on drop.
struct Process {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    base: String,
}

impl Process {
    /// Starts the binary in `dir` with exactly `env` and waits until it listens.
    fn start(dir: &Path, env: &[(&str, &str)]) -> Result<Self, String> {
        let mut child = Command::new(BIN)
            .current_dir(dir)
            .env_clear()
            .envs(env.iter().copied())
            .env("LOG_FORMAT", "json")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the api-server binary");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let (lines, tx) = (lines.clone(), tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Ok(v) = serde_json::from_str::<Value>(&line)
                        && v["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("listening"))
                        && let Some(addr) = v["addr"].as_str()
                    {
                        let _ = tx.send(addr.to_owned());
                    }
                    lines.lock().unwrap().push(line);
                }
            });
        }
        drop(tx);
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => Ok(Self {
                child,
                lines,
                base: format!("http://{addr}"),
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                Err(lines.lock().unwrap().join("\n"))
            }
        }
    }

    fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_binary_reads_dot_env_and_the_real_environment_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "TERARCHITECT_BIND=127.0.0.1:0\n\
         TERARCHITECT_SQLITE_PATH=data/from-dotenv.db\n\
         TERARCHITECT_WORKER_API_KEY=worker-key-from-file\n\
         GIT_USER_NAME=Name From File\n",
    )
    .unwrap();
    let proc = Process::start(
        dir.path(),
        &[("TERARCHITECT_WORKER_API_KEY", "worker-key-from-env")],
    )
    .expect("the server starts");

    // A clap fallback (the database path) and a settings fallback (GIT_USER_NAME) come from
    // the file; the worker key comes from the real environment.
    assert!(dir.path().join("data/from-dotenv.db").exists());
    let http = reqwest::Client::new();
    let claim = |token: &'static str| {
        http.post(format!("{}/api/worker/jobs/start", proc.base))
            .bearer_auth(token)
            .json(&json!({}))
            .send()
    };
    assert_eq!(
        claim("worker-key-from-env").await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        claim("worker-key-from-file").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let check: Value = http
        .get(format!("{}/api/settings/check", proc.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let missing: Vec<&str> = check["missing_required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["key"].as_str())
        .collect();
    assert!(missing.contains(&"GIT_USER_EMAIL"), "{check}");
    assert!(!missing.contains(&"GIT_USER_NAME"), "{check}");

    // The log names the keys, never their values.
    let log = proc.log();
    let loaded = log
        .lines()
        .find(|l| l.contains("loaded variables from the .env file"))
        .unwrap_or_else(|| panic!("no .env log line in:\n{log}"));
    for name in [
        "TERARCHITECT_BIND",
        "TERARCHITECT_SQLITE_PATH",
        "GIT_USER_NAME",
    ] {
        assert!(loaded.contains(name), "{loaded}");
    }
    assert!(
        loaded.contains("TERARCHITECT_WORKER_API_KEY"),
        "listed as overridden: {loaded}"
    );
    for value in [
        "worker-key-from-file",
        "worker-key-from-env",
        "Name From File",
    ] {
        assert!(!log.contains(value), "a value reached the log: {value}");
    }
}

#[test]
fn a_malformed_dot_env_stops_the_binary_without_printing_the_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "TERARCHITECT_BIND=127.0.0.1:0\nTOKEN ghp_do_not_print\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .env_clear()
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(".env: line 2: cannot parse it"), "{stderr}");
    assert!(!stderr.contains("ghp_do_not_print"), "{stderr}");
}

// --- The generated secret key --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_key_persists_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("terarchitect.db");
    let key_file = key_file_path(&db);
    assert_eq!(key_file, dir.path().join("terarchitect.db.secret-key"));

    let server = start_on(Config::for_tests(db.clone()), &[])
        .await
        .expect("starts without a key");
    let key = std::fs::read_to_string(&key_file).expect("a key file beside the database");
    let key = key.trim().to_owned();
    assert_eq!(key.len(), 64);
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(mode(&key_file), 0o600, "owner-only");

    let api = api(&server);
    let (s, body) = api
        .put(
            "/api/settings",
            json!({"github_agent_token": "ghp_first_run", "AGENT_API_KEY": "sk-first-run"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let pid = ready_project(&api, "First run").await;
    let tid = ticket(&api, pid, "Add a health page").await;
    server.shutdown().await;

    // Second start on the same file: the same key, and the secret still decrypts.
    let server = start_on(Config::for_tests(db.clone()), &[])
        .await
        .expect("restarts");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap().trim(), key);
    assert_eq!(mode(&key_file), 0o600);
    let api = Api {
        base: server.url(),
        ..api
    };
    let ctx = format!("/api/projects/{pid}/tickets/{tid}/worker-context");
    let (s, ctx) = api.get(&ctx).await;
    assert_eq!(s, StatusCode::OK, "{ctx}");
    assert_eq!(ctx["agent_settings"]["github_agent_token"], "ghp_first_run");
    assert_eq!(ctx["agent_settings"]["AGENT_API_KEY"], "sk-first-run");
    // The stored GitHub token is what lets a ticket start.
    start_ticket(&api, pid, tid).await;
    let (_, jobs) = api
        .get(&format!("/api/projects/{pid}/tickets/{tid}/jobs"))
        .await;
    assert_eq!(jobs[0]["status"], "pending", "{jobs}");
    server.shutdown().await;

    // Moving to an explicit key: the file's content as TERARCHITECT_SECRET_KEY.
    std::fs::remove_file(&key_file).unwrap();
    let server = start_on(
        Config::for_tests(db.clone()),
        &[("TERARCHITECT_SECRET_KEY", &key)],
    )
    .await
    .expect("starts with the explicit key");
    assert!(!key_file.exists(), "no key file when a key is configured");
    let api = Api {
        base: server.url(),
        ..api
    };
    let (_, ctx) = api
        .get(&format!("/api/projects/{pid}/tickets/{tid}/worker-context"))
        .await;
    assert_eq!(ctx["agent_settings"]["AGENT_API_KEY"], "sk-first-run");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_never_gets_a_generated_key() {
    let dir = tempfile::tempdir().unwrap();
    let unused = dir.path().join("unused.db");
    let mut config = Config::for_tests(unused.clone());
    config.database_url = Some(pg_cluster().create_database().await);
    let server = start_on(config, &[]).await.expect("starts without a key");
    assert!(!key_file_path(&unused).exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let (s, body) = api(&server)
        .put("/api/settings", json!({"github_agent_token": "ghp_x"}))
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], ENCRYPTION_UNAVAILABLE);
    server.shutdown().await;
}

async fn a_malformed_key_stops_the_server(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("terarchitect.db");
    let mut config = Config::for_tests(db.clone());
    if backend == Backend::Postgres {
        config.database_url = Some(pg_cluster().create_database().await);
    }
    for malformed in ["abcd", &"g".repeat(64), &format!("{TEST_SECRET_KEY}00")] {
        let err = match start_on(config.clone(), &[("TERARCHITECT_SECRET_KEY", malformed)]).await {
            Ok(_) => panic!("started with the malformed key {malformed:?}"),
            Err(e) => e,
        };
        assert!(
            matches!(err, StartError::SecretKey(KeyBootstrapError::Malformed)),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("TERARCHITECT_SECRET_KEY") && msg.contains("64-character hex"),
            "{msg}"
        );
        assert!(!msg.contains(malformed), "the key is not echoed: {msg}");
    }
    assert!(!key_file_path(&db).exists(), "no key generated");
    assert!(!db.exists(), "nothing was opened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_key_file_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("terarchitect.db");
    std::fs::write(key_file_path(&db), "not a key\n").unwrap();
    let err = match start_on(Config::for_tests(db.clone()), &[]).await {
        Ok(_) => panic!("started with a broken key file"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(msg.contains("terarchitect.db.secret-key"), "{msg}");
    assert!(msg.contains("64-character hex key"), "{msg}");
}

// --- GET / ------------------------------------------------------------------------------------

async fn root_negotiates_json_and_html(backend: Backend) {
    let srv = TestServer::start(backend, TestOptions::default()).await;
    let http = reqwest::Client::new();
    let get = |accept: Option<&'static str>| {
        let mut req = http.get(format!("{}/", srv.url()));
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        req.send()
    };

    for accept in [None, Some("*/*"), Some("application/json")] {
        let resp = get(accept).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert_eq!(resp.headers()["vary"], "accept");
        let doc: Value = resp.json().await.unwrap();
        assert_eq!(doc["service"], "terarchitect-api-server");
        assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"));
        let quick_start = doc["links"]["quick_start"].as_str().unwrap();
        assert!(
            quick_start.starts_with("https://github.com/") && quick_start.ends_with("#quick-start"),
            "{quick_start}"
        );
        // Every local link answers.
        for link in ["openapi", "health", "readiness", "metrics", "projects"] {
            let path = doc["links"][link].as_str().unwrap();
            assert!(path.starts_with('/'), "{path}");
            let s = http
                .get(format!("{}{path}", srv.url()))
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(s, StatusCode::OK, "{path}");
        }
    }

    let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let resp = get(Some(browser)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = resp.text().await.unwrap();
    for needle in [
        "<html",
        "href=\"/api/openapi.json\"",
        "href=\"/health\"",
        "href=\"/metrics\"",
        concat!(env!("CARGO_PKG_REPOSITORY"), "#quick-start\""),
        env!("CARGO_PKG_VERSION"),
    ] {
        assert!(html.contains(needle), "{needle} missing in {html}");
    }

    // The OpenAPI document describes it, with both representations.
    let (_, doc) = Api::new(&srv).get("/api/openapi.json").await;
    let content = &doc["paths"]["/"]["get"]["responses"]["200"]["content"];
    assert!(content["application/json"].is_object(), "{content}");
    assert!(content["text/html"].is_object(), "{content}");
    // Other methods and unknown paths keep their JSON errors.
    let (s, _) = Api::new(&srv).post("/", json!({})).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    let (s, body) = Api::new(&srv).get("/nope").await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("Not found"))
    );
    srv.server.shutdown().await;
}

async fn root_is_public_with_an_admin_token(backend: Backend) {
    let opts = TestOptions {
        admin_tokens: vec!["admin-token-for-root".to_owned()],
        ..TestOptions::default()
    };
    let srv = TestServer::start(backend, opts).await;
    let api = Api::new(&srv);
    let (s, _) = api.get("/api/projects").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "the admin API is guarded");
    let (s, doc) = api.get("/").await;
    assert_eq!(s, StatusCode::OK, "{doc}");
    assert_eq!(doc["service"], "terarchitect-api-server");
    let (_, openapi) = api.get("/api/openapi.json").await;
    assert!(
        openapi["paths"]["/"]["get"].get("security").is_none(),
        "documented as public: {}",
        openapi["paths"]["/"]
    );
    srv.server.shutdown().await;
}

on_both_backends!(
    a_malformed_key_stops_the_server,
    root_negotiates_json_and_html,
    root_is_public_with_an_admin_token
);
