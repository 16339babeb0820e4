//! Containment: run tokens reach only their own ticket, project and job; admin tokens guard
//! every non-worker endpoint; the global worker key keeps the original's behaviour.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use terarchitect_api_server::run_token;
use uuid::Uuid;

use crate::common::*;

const WORKER_KEY: &str = "global-worker-key";
const RUN_FORBIDDEN: &str = "A run token may only reach its own ticket, project and job";
const RUN_EXPIRED: &str = "Run token is no longer valid: its run finished, its lease expired or the job was claimed again";

/// A claimed job: its id, attempt and run token.
struct Claim {
    job: String,
    token: String,
}

async fn claim(worker: &Api, body: Value) -> Claim {
    let (s, j) = worker.post("/api/worker/jobs/start", body).await;
    assert_eq!(s, StatusCode::OK, "{j}");
    Claim {
        job: j["job_id"].as_str().unwrap().to_owned(),
        token: j["run_token"].as_str().expect("a run token").to_owned(),
    }
}

/// Calls `method path` with a small valid body for POSTs.
async fn call(api: &Api, method: &str, path: &str) -> (StatusCode, Value) {
    let body = match path {
        p if p.ends_with("/logs") => Some(json!({"session_id": "s", "step": "x", "summary": "y"})),
        p if p.ends_with("/memory/index") || p.ends_with("/memory/delete") => {
            Some(json!({"docs": ["the payment service owns refunds"]}))
        }
        p if p.ends_with("/memory/retrieve") => Some(json!({"queries": ["refunds"]})),
        p if p.ends_with("/heartbeat") => Some(json!({})),
        p if p.ends_with("/review-jobs") => Some(json!({"pr_number": 3})),
        _ if method == "GET" => None,
        _ => Some(json!({})),
    };
    api.call(method.parse::<Method>().unwrap(), path, body)
        .await
}

/// The run-token routes of a ticket.
fn ticket_routes(pid: Uuid, tid: Uuid) -> Vec<(&'static str, String)> {
    let t = format!("/api/projects/{pid}/tickets/{tid}");
    vec![
        ("GET", format!("{t}/worker-context")),
        ("POST", format!("{t}/logs")),
        ("GET", format!("{t}/cancel-requested")),
        ("POST", format!("{t}/complete")),
    ]
}

/// The run-token routes of a project.
fn project_routes(pid: Uuid) -> Vec<(&'static str, String)> {
    vec![
        ("POST", format!("/api/projects/{pid}/memory/index")),
        ("POST", format!("/api/projects/{pid}/memory/retrieve")),
    ]
}

/// The run-token routes of a job.
fn job_routes(job: &str) -> Vec<(&'static str, String)> {
    vec![
        ("POST", format!("/api/worker/jobs/{job}/heartbeat")),
        ("GET", format!("/api/worker/jobs/{job}")),
    ]
}

/// Every run-token route of a run.
fn run_routes(pid: Uuid, tid: Uuid, job: &str) -> Vec<(&'static str, String)> {
    let mut routes = project_routes(pid);
    routes.extend(job_routes(job));
    routes.extend(ticket_routes(pid, tid));
    routes
}

async fn run_tokens_reach_only_their_run(backend: Backend) {
    let srv = TestServer::start(
        backend,
        ready_options().env("TERARCHITECT_WORKER_API_KEY", WORKER_KEY),
    )
    .await;
    let admin = Api::new(&srv);
    let worker = admin.with_token(WORKER_KEY);
    let p1 = ready_project(&admin, "P1").await;
    let p2 = ready_project(&admin, "P2").await;
    let (a, b) = (ticket(&admin, p1, "a").await, ticket(&admin, p1, "b").await);
    let c = ticket(&admin, p2, "c").await;
    start_ticket(&admin, p1, a).await;
    start_ticket(&admin, p2, c).await;
    let run_a = claim(&worker, json!({"project_id": p1})).await;
    let run_c = claim(&worker, json!({"project_id": p2})).await;

    // Format, and storage as a hash only.
    assert!(run_a.token.starts_with("tart_"), "{}", run_a.token);
    assert_eq!(run_a.token.len(), 5 + 64);
    assert_ne!(run_a.token, run_c.token);
    let grant = srv
        .db()
        .run_grant(&run_token::hash(&run_a.token))
        .await
        .unwrap()
        .expect("the hash is stored");
    assert_eq!(grant.job_id.to_string(), run_a.job);
    assert_eq!((grant.ticket_id, grant.project_id), (a, p1));
    assert_eq!(grant.run_token_attempt, Some(1));
    assert!(
        srv.db().run_grant(&run_a.token).await.unwrap().is_none(),
        "the token itself is not stored"
    );

    let as_a = admin.with_token(&run_a.token);
    let forbidden = (StatusCode::FORBIDDEN, json!({"error": RUN_FORBIDDEN}));
    // Another ticket of the same project, another project with its ticket and job, and
    // mismatched pairs (a project with the other project's ticket): 403.
    let mut others = ticket_routes(p1, b);
    others.extend(run_routes(p2, c, &run_c.job));
    others.extend(ticket_routes(p1, c));
    others.extend(ticket_routes(p2, a));
    for (method, path) in &others {
        assert_eq!(
            call(&as_a, method, path).await,
            forbidden,
            "{method} {path}"
        );
    }
    // Every other worker endpoint, even for its own ticket, project and job: 403.
    for (method, path) in [
        ("POST", "/api/worker/jobs/start".to_owned()),
        ("POST", format!("/api/worker/jobs/{}/complete", run_a.job)),
        ("POST", format!("/api/worker/jobs/{}/fail", run_a.job)),
        ("POST", format!("/api/worker/jobs/{}/release", run_a.job)),
        ("POST", format!("/api/projects/{p1}/memory/delete")),
        (
            "POST",
            format!("/api/projects/{p1}/tickets/{a}/review-jobs"),
        ),
    ] {
        assert_eq!(
            call(&as_a, method, &path).await,
            forbidden,
            "{method} {path}"
        );
    }
    // Its own run: 2xx everywhere it may go.
    for (method, path) in run_routes(p1, a, &run_a.job) {
        let (s, body) = call(&as_a, method, &path).await;
        assert!(s.is_success(), "{method} {path}: {s} {body}");
    }
    // The refusals changed nothing: run c's job still runs, ticket b has no log.
    let (_, job_c) = worker.get(&format!("/api/worker/jobs/{}", run_c.job)).await;
    assert_eq!(job_c["status"], "running");
    let (_, logs_b) = admin
        .get(&format!("/api/projects/{p1}/tickets/{b}/logs"))
        .await;
    assert_eq!(logs_b.as_array().map(Vec::len), Some(0), "{logs_b}");

    // A finished run's token (completed or failed): 401.
    let expired = (StatusCode::UNAUTHORIZED, json!({"error": RUN_EXPIRED}));
    let ctx_a = format!("/api/projects/{p1}/tickets/{a}/worker-context");
    assert_eq!(
        worker
            .post(
                &format!("/api/worker/jobs/{}/complete", run_a.job),
                json!({})
            )
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(as_a.get(&ctx_a).await, expired);
    let as_c = admin.with_token(&run_c.token);
    let ctx_c = format!("/api/projects/{p2}/tickets/{c}/worker-context");
    assert_eq!(as_c.get(&ctx_c).await.0, StatusCode::OK);
    worker
        .post(&format!("/api/worker/jobs/{}/fail", run_c.job), json!({}))
        .await;
    assert_eq!(as_c.get(&ctx_c).await, expired);
    // A run-shaped token no claim minted: 401.
    let unknown = format!("tart_{}", "ab".repeat(32));
    assert_eq!(
        admin.with_token(&unknown).get(&ctx_a).await,
        (
            StatusCode::UNAUTHORIZED,
            json!({"error": "Invalid run token"})
        )
    );
    // The global key still reaches everything.
    assert_eq!(worker.get(&ctx_a).await.0, StatusCode::OK);
    assert_eq!(worker.get(&ctx_c).await.0, StatusCode::OK);
}

async fn an_older_attempts_token_is_refused(backend: Backend) {
    let opts = TestOptions {
        lease_sweep_ms: Some(50),
        ..ready_options().env("TERARCHITECT_WORKER_API_KEY", WORKER_KEY)
    };
    let srv = TestServer::start(backend, opts).await;
    let admin = Api::new(&srv);
    let worker = admin.with_token(WORKER_KEY);
    let pid = ready_project(&admin, "R").await;
    let tid = ticket(&admin, pid, "t").await;
    start_ticket(&admin, pid, tid).await;
    let ctx = format!("/api/projects/{pid}/tickets/{tid}/worker-context");

    let first = claim(&worker, json!({"lease_seconds": 1})).await;
    assert_eq!(
        admin.with_token(&first.token).get(&ctx).await.0,
        StatusCode::OK
    );
    // The claimer stops heartbeating: the lease lapses and the job is pending again.
    wait_for_status(&worker, &first.job, "pending").await;
    let expired = (StatusCode::UNAUTHORIZED, json!({"error": RUN_EXPIRED}));
    assert_eq!(admin.with_token(&first.token).get(&ctx).await, expired);
    let second = claim(&worker, json!({"lease_seconds": 60})).await;
    assert_eq!(second.job, first.job, "the same job, re-claimed");
    assert_ne!(second.token, first.token);
    let old = admin.with_token(&first.token);
    for (method, path) in run_routes(pid, tid, &first.job) {
        let (s, body) = call(&old, method, &path).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
    }
    let new = admin.with_token(&second.token);
    for (method, path) in run_routes(pid, tid, &second.job) {
        let (s, body) = call(&new, method, &path).await;
        assert!(s.is_success(), "{method} {path}: {s} {body}");
    }
}

async fn a_lapsed_lease_ends_the_token_before_the_sweep(backend: Backend) {
    let opts = TestOptions {
        lease_sweep_ms: Some(3_600_000),
        ..ready_options().env("TERARCHITECT_WORKER_API_KEY", WORKER_KEY)
    };
    let srv = TestServer::start(backend, opts).await;
    let admin = Api::new(&srv);
    let worker = admin.with_token(WORKER_KEY);
    let pid = ready_project(&admin, "X").await;
    let tid = ticket(&admin, pid, "t").await;
    start_ticket(&admin, pid, tid).await;
    let run = claim(&worker, json!({"lease_seconds": 1})).await;
    let as_run = admin.with_token(&run.token);
    let hb = format!("/api/worker/jobs/{}/heartbeat", run.job);
    assert_eq!(as_run.post(&hb, json!({})).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, state) = worker.get(&format!("/api/worker/jobs/{}", run.job)).await;
    assert_eq!(state["status"], "running", "not swept yet");
    assert_eq!(
        as_run.post(&hb, json!({})).await,
        (StatusCode::UNAUTHORIZED, json!({"error": RUN_EXPIRED}))
    );
}

async fn without_a_worker_key_a_run_token_stays_scoped(backend: Backend) {
    let srv = TestServer::start(backend, ready_options()).await;
    let open = Api::new(&srv);
    let pid = ready_project(&open, "O").await;
    let (a, b) = (ticket(&open, pid, "a").await, ticket(&open, pid, "b").await);
    start_ticket(&open, pid, a).await;
    let run = claim(&open, json!({})).await;
    let as_run = open.with_token(&run.token);
    let ctx = |t: Uuid| format!("/api/projects/{pid}/tickets/{t}/worker-context");
    assert_eq!(as_run.get(&ctx(a)).await.0, StatusCode::OK);
    assert_eq!(as_run.get(&ctx(b)).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        as_run.post("/api/worker/jobs/start", json!({})).await.0,
        StatusCode::FORBIDDEN
    );
    // The open development mode itself is unchanged.
    assert_eq!(open.get(&ctx(b)).await.0, StatusCode::OK);
}

/// A run token's holder takes its secrets from its own environment: its worker-context blanks
/// them, while the worker key (the original runner) still gets them.
async fn a_run_tokens_context_has_no_secrets(backend: Backend) {
    let srv = TestServer::start(
        backend,
        ready_options().env("TERARCHITECT_WORKER_API_KEY", WORKER_KEY),
    )
    .await;
    let admin = Api::new(&srv);
    let worker = admin.with_token(WORKER_KEY);
    let (s, body) = admin
        .put(
            "/api/settings",
            json!({"AGENT_API_KEY": "sk-director-secret", "AGENT_MODEL": "m1"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let pid = ready_project(&admin, "R").await;
    let tid = ticket(&admin, pid, "a").await;
    start_ticket(&admin, pid, tid).await;
    let run = claim(&worker, json!({})).await;
    let ctx = format!("/api/projects/{pid}/tickets/{tid}/worker-context");
    // Asked in both orders, so a cached document of one caller is never served to the other.
    for _ in 0..2 {
        let (s, as_run) = admin.with_token(&run.token).get(&ctx).await;
        assert_eq!(s, StatusCode::OK, "{as_run}");
        assert_eq!(as_run["agent_settings"]["AGENT_API_KEY"], "");
        assert_eq!(as_run["agent_settings"]["AGENT_MODEL"], "m1");
        let (s, as_worker) = worker.get(&ctx).await;
        assert_eq!(s, StatusCode::OK, "{as_worker}");
        assert_eq!(
            as_worker["agent_settings"]["AGENT_API_KEY"],
            "sk-director-secret"
        );
    }
}

const ADMIN_OLD: &str = "admin-token-old";
const ADMIN_NEW: &str = "admin-token-new";

/// Every non-worker endpoint (method, path), for one project, ticket and note.
fn admin_routes(pid: Uuid, tid: Uuid, note: &str) -> Vec<(&'static str, String)> {
    let p = format!("/api/projects/{pid}");
    let t = format!("{p}/tickets/{tid}");
    vec![
        ("GET", "/api/projects".into()),
        ("POST", "/api/projects".into()),
        ("GET", p.clone()),
        ("PUT", p.clone()),
        ("DELETE", p.clone()),
        ("GET", format!("{p}/graph")),
        ("PUT", format!("{p}/graph")),
        ("GET", format!("{p}/kanban")),
        ("PUT", format!("{p}/kanban")),
        ("GET", format!("{p}/tickets")),
        ("POST", format!("{p}/tickets")),
        ("GET", t.clone()),
        ("PATCH", t.clone()),
        ("DELETE", t.clone()),
        ("GET", format!("{t}/logs")),
        ("GET", format!("{t}/jobs")),
        ("POST", format!("{t}/cancel")),
        ("GET", format!("{p}/notes")),
        ("POST", format!("{p}/notes")),
        ("GET", format!("{p}/notes/{note}")),
        ("PATCH", format!("{p}/notes/{note}")),
        ("DELETE", format!("{p}/notes/{note}")),
        ("GET", "/api/settings".into()),
        ("PUT", "/api/settings".into()),
        ("GET", "/api/settings/check".into()),
    ]
}

async fn admin_endpoints_need_an_admin_token(backend: Backend) {
    let opts = TestOptions {
        admin_tokens: vec![ADMIN_OLD.into(), ADMIN_NEW.into()],
        ..ready_options().env("TERARCHITECT_WORKER_API_KEY", WORKER_KEY)
    };
    let srv = TestServer::start(backend, opts).await;
    let anon = Api::new(&srv);
    let admin = anon.with_token(ADMIN_OLD);
    let worker = anon.with_token(WORKER_KEY);
    let pid = ready_project(&admin, "Adm").await;
    let tid = ticket(&admin, pid, "t").await;
    let (s, note) = admin
        .post(
            &format!("/api/projects/{pid}/notes"),
            json!({"title": "N", "content": "C"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{note}");
    let note = note["id"].as_str().unwrap().to_owned();
    start_ticket(&admin, pid, tid).await;
    let run = claim(&worker, json!({})).await;

    let refusals = [
        (
            None,
            StatusCode::UNAUTHORIZED,
            "Missing or invalid Authorization header (expected Bearer <admin token>)",
        ),
        (
            Some("wrong-token"),
            StatusCode::UNAUTHORIZED,
            "Invalid admin token",
        ),
        (
            Some(WORKER_KEY),
            StatusCode::FORBIDDEN,
            "This endpoint needs an admin token; worker and run tokens are not accepted",
        ),
        (
            Some(run.token.as_str()),
            StatusCode::FORBIDDEN,
            "This endpoint needs an admin token; worker and run tokens are not accepted",
        ),
    ];
    for (method, path) in admin_routes(pid, tid, &note) {
        for (token, status, error) in &refusals {
            let api = token.map_or_else(|| anon.clone(), |t| anon.with_token(t));
            let (s, body) = call(&api, method, &path).await;
            assert_eq!(
                (s, body),
                (*status, json!({"error": error})),
                "{method} {path} with {token:?}"
            );
        }
    }
    // Nothing was changed by the refused calls; both rotation tokens work.
    for token in [ADMIN_OLD, ADMIN_NEW] {
        let api = anon.with_token(token);
        for path in [
            "/api/projects".to_owned(),
            format!("/api/projects/{pid}/graph"),
            format!("/api/projects/{pid}/tickets/{tid}"),
            format!("/api/projects/{pid}/notes/{note}"),
            "/api/settings".to_owned(),
            "/api/settings/check".to_owned(),
        ] {
            let (s, body) = api.get(&path).await;
            assert_eq!(s, StatusCode::OK, "{path} with {token}: {body}");
        }
        let (s, body) = api
            .put("/api/settings", json!({"MAX_CONCURRENT_AGENTS": token}))
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        assert_eq!(body["MAX_CONCURRENT_AGENTS"], token);
        let (s, body) = api
            .post(
                &format!("/api/projects/{pid}/tickets"),
                json!({"title": token, "column_id": "backlog"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
    }
    let (_, projects) = admin.get("/api/projects").await;
    assert_eq!(projects.as_array().map(Vec::len), Some(1), "{projects}");

    // The admin token cannot be set (or replaced) through the settings API.
    let (s, body) = admin
        .put(
            "/api/settings",
            json!({"TERARCHITECT_ADMIN_TOKEN": "sneaky"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body.get("TERARCHITECT_ADMIN_TOKEN").is_none(), "{body}");
    assert_eq!(
        anon.with_token("sneaky").get("/api/settings").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(admin.get("/api/settings").await.0, StatusCode::OK);

    // The worker API is not opened by an admin token, and keeps working with its own.
    let ctx = format!("/api/projects/{pid}/tickets/{tid}/worker-context");
    assert_eq!(
        admin.get(&ctx).await,
        (
            StatusCode::UNAUTHORIZED,
            json!({"error": "Invalid worker API token"})
        )
    );
    assert_eq!(worker.get(&ctx).await.0, StatusCode::OK);
    assert_eq!(
        anon.with_token(&run.token).get(&ctx).await.0,
        StatusCode::OK
    );

    // Probes, metrics and the OpenAPI document stay open.
    for path in ["/health", "/readyz", "/api/openapi.json"] {
        assert_eq!(anon.get(path).await.0, StatusCode::OK, "{path}");
    }
    let resp = anon
        .http
        .get(format!("{}/metrics", anon.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

async fn require_admin_token_fails_closed(backend: Backend) {
    let srv = TestServer::start(backend, ready_options()).await;
    let (url, _dir) = srv.stop().await;
    let start = |tokens: Vec<String>| {
        let url = url.clone();
        async move {
            let mut config = terarchitect_api_server::Config::for_tests("unused".into());
            config.require_admin_token = true;
            config.admin_tokens = tokens;
            let db = terarchitect_api_server::db::Db::connect(&url, &Default::default())
                .await
                .unwrap();
            let env = std::sync::Arc::new(ready_options().env);
            terarchitect_api_server::start_with_db(config, env, db).await
        }
    };
    for tokens in [vec![], vec![" ".to_owned()]] {
        let err = start(tokens).await.err().expect("refused");
        assert!(err.to_string().contains("no admin token"), "{err}");
    }
    let srv = start(vec!["t".into()]).await.expect("starts with a token");
    let api = Api {
        base: srv.url(),
        http: reqwest::Client::new(),
        token: None,
    };
    assert_eq!(api.get("/api/projects").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        api.with_token("t").get("/api/projects").await.0,
        StatusCode::OK
    );
    srv.shutdown().await;
}

on_both_backends!(
    run_tokens_reach_only_their_run,
    an_older_attempts_token_is_refused,
    a_lapsed_lease_ends_the_token_before_the_sweep,
    without_a_worker_key_a_run_token_stays_scoped,
    a_run_tokens_context_has_no_secrets,
    admin_endpoints_need_an_admin_token,
    require_admin_token_fails_closed,
);
