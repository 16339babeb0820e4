//! Worker endpoints: worker-context, logs, ticket completion, cancellation, auth and memory.

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::*;

async fn worker_context_shape(backend: Backend) {
    let srv = TestServer::start(backend, ready_options().env("AGENT_MODEL", "env-model")).await;
    let api = Api::new(&srv);
    let (_, p) = api
        .post("/api/projects", json!({"name": "Ctx", "description": "desc", "github_url": "https://github.com/acme/ctx", "is_existing_repo": true}))
        .await;
    let pid: Uuid = p["id"].as_str().unwrap().parse().unwrap();
    api.put(
        &format!("/api/projects/{pid}/graph"),
        json!({
            "nodes": [{"id": "a", "data": {"label": "API"}}, {"id": "b", "data": {"label": "DB"}}],
            "edges": [{"id": "e1", "source": "a", "target": "b"}]
        }),
    )
    .await;
    let (_, t) = api
        .post(&format!("/api/projects/{pid}/tickets"), json!({"title": "Cur", "column_id": "backlog", "associated_node_ids": ["a"], "associated_edge_ids": ["e1"]}))
        .await;
    let tid: Uuid = t["id"].as_str().unwrap().parse().unwrap();
    for i in 0..12 {
        ticket(&api, pid, &format!("backlog {i}")).await;
    }
    api.post(
        &format!("/api/projects/{pid}/notes"),
        json!({"title": "N", "content": "C", "node_ids": ["a", "b"]}),
    )
    .await;
    api.put(
        "/api/settings",
        json!({"AGENT_API_KEY": "sk-agent", "WORKER_MODE": "opencode"}),
    )
    .await;
    start_ticket(&api, pid, tid).await;

    let (s, ctx) = api
        .get(&format!("/api/projects/{pid}/tickets/{tid}/worker-context"))
        .await;
    assert_eq!(s, StatusCode::OK, "{ctx}");
    let keys: Vec<&str> = ctx
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = vec![
        "agent_settings",
        "backlog_tickets",
        "current_ticket",
        "done_tickets",
        "github_url",
        "graph",
        "graph_relevant_to_current_ticket",
        "in_progress_tickets",
        "notes",
        "project_description",
        "project_id",
        "project_name",
        "repo_url",
    ];
    expected.sort();
    let mut got = keys.clone();
    got.sort();
    assert_eq!(got, expected);
    assert!(ctx.get("project_path").is_none());
    assert_eq!(ctx["project_name"], "Ctx");
    assert_eq!(ctx["repo_url"], "https://github.com/acme/ctx");
    assert_eq!(ctx["project_id"], pid.to_string());
    let cur = &ctx["current_ticket"];
    assert_eq!(cur["_current_ticket"], true);
    assert_eq!(cur["associated_nodes_labeled"], json!(["API: a"]));
    assert_eq!(
        cur["associated_edges_labeled"],
        json!(["API \u{2192} DB: e1"])
    );
    assert!(cur.get("associated_edge_ids").is_none());
    assert_eq!(ctx["graph"]["edges"][0]["target_label"], "DB");
    // The relevant part labels endpoints from relevant nodes only (b is not one).
    assert_eq!(
        ctx["graph_relevant_to_current_ticket"]["edges"][0]["label_and_id"],
        "API \u{2192} b: e1"
    );
    assert_eq!(
        ctx["notes"],
        json!([{"title": "N", "content": "C", "node_id": "a,b"}])
    );
    assert_eq!(ctx["backlog_tickets"].as_array().unwrap().len(), 10);
    assert_eq!(ctx["in_progress_tickets"][0]["id"], tid.to_string());
    assert_eq!(ctx["in_progress_tickets"][0]["_current_ticket"], true);
    let settings = ctx["agent_settings"].as_object().unwrap();
    assert_eq!(settings.len(), 20);
    assert_eq!(
        settings["AGENT_API_KEY"], "sk-agent",
        "secrets are decrypted for the agent"
    );
    assert_eq!(
        settings["AGENT_MODEL"], "env-model",
        "env fills unset settings"
    );
    assert_eq!(
        settings["github_agent_token"], "",
        "github_agent_token is a DB setting here"
    );
    assert_eq!(settings["WORKER_LLM_URL"], "");
    // The original left WORKER_MODE out although PUT /api/settings stores it (issue 10).
    assert_eq!(
        settings["WORKER_MODE"], "opencode",
        "a saved WORKER_MODE is honoured"
    );

    // Unknown ticket, or a ticket of another project: 404.
    assert_eq!(
        api.get(&format!(
            "/api/projects/{pid}/tickets/{}/worker-context",
            Uuid::new_v4()
        ))
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.get(&format!(
            "/api/projects/{}/tickets/{tid}/worker-context",
            Uuid::new_v4()
        ))
        .await
        .0,
        StatusCode::NOT_FOUND
    );
}

async fn worker_context_follows_every_change(backend: Backend) {
    // With the production settings cache: the document is cached but never stale.
    let opts = TestOptions {
        settings_cache_ms: Some(60_000),
        ..ready_options()
    };
    let srv = TestServer::start(backend, opts).await;
    let api = Api::new(&srv);
    let pid = ready_project(&api, "Cache").await;
    let tid = ticket(&api, pid, "t").await;
    let ctx = format!("/api/projects/{pid}/tickets/{tid}/worker-context");
    let first = api.get(&ctx).await.1;
    assert_eq!(api.get(&ctx).await.1, first, "served again unchanged");

    api.put(
        &format!("/api/projects/{pid}/graph"),
        json!({"nodes": [{"id": "n1", "data": {"label": "Renamed"}}]}),
    )
    .await;
    assert_eq!(
        api.get(&ctx).await.1["graph"]["nodes"][0]["data"]["label"],
        "Renamed"
    );
    api.patch(
        &format!("/api/projects/{pid}/tickets/{tid}"),
        json!({"title": "New title"}),
    )
    .await;
    assert_eq!(
        api.get(&ctx).await.1["current_ticket"]["title"],
        "New title"
    );
    api.post(&format!("/api/projects/{pid}/notes"), json!({"title": "N"}))
        .await;
    assert_eq!(api.get(&ctx).await.1["notes"].as_array().unwrap().len(), 1);
    let other = ticket(&api, pid, "other").await;
    let backlog = api.get(&ctx).await.1["backlog_tickets"].clone();
    assert!(
        backlog
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == other.to_string())
    );
    api.put(
        &format!("/api/projects/{pid}"),
        json!({"description": "now described"}),
    )
    .await;
    assert_eq!(
        api.get(&ctx).await.1["project_description"],
        "now described"
    );
    let (s, v) = api
        .put("/api/settings", json!({"AGENT_MODEL": "gpt-x"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["AGENT_MODEL"], "gpt-x");
    assert_eq!(
        api.get(&ctx).await.1["agent_settings"]["AGENT_MODEL"],
        "gpt-x"
    );
    api.delete(&format!("/api/projects/{pid}/tickets/{tid}"), json!({}))
        .await;
    assert_eq!(api.get(&ctx).await.0, StatusCode::NOT_FOUND);
}

async fn context_secrets_can_be_redacted(backend: Backend) {
    let opts = TestOptions {
        redact_context_secrets: true,
        ..ready_options()
    };
    let srv = TestServer::start(
        backend,
        opts.env("WORKER_API_KEY", "sk-w").env("WORKER_MODEL", "m"),
    )
    .await;
    let api = Api::new(&srv);
    let pid = ready_project(&api, "R").await;
    let tid = ticket(&api, pid, "t").await;
    let (_, ctx) = api
        .get(&format!("/api/projects/{pid}/tickets/{tid}/worker-context"))
        .await;
    assert_eq!(ctx["agent_settings"]["WORKER_API_KEY"], "");
    assert_eq!(ctx["agent_settings"]["WORKER_MODEL"], "m");
}

async fn logs_and_completion(backend: Backend) {
    let srv = TestServer::start(backend, ready_options()).await;
    let api = Api::new(&srv);
    let pid = ready_project(&api, "L").await;
    let tid = ticket(&api, pid, "t").await;
    let logs = format!("/api/projects/{pid}/tickets/{tid}/logs");

    let (s, e) = api
        .post(&logs, json!({"session_id": "  ", "step": "x"}))
        .await;
    assert_eq!(
        (s, e),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "session_id is required"})
        )
    );
    let long_step = "s".repeat(150);
    let raw = "r".repeat(4096);
    let (s, r) = api.post(&logs, json!({"session_id": " sess ", "step": long_step, "summary": "  hi  ", "raw_output": raw})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(r["message"], "Logged");
    let (_, r2) = api.post(&logs, json!({"session_id": "sess"})).await;
    // The final entry of a failed run says so.
    let (s, _) = api
        .post(
            &logs,
            json!({"session_id": "sess", "step": "push_failed", "success": false}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, listed) = api.get(&logs).await;
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(
        (&listed[2]["step"], &listed[2]["success"]),
        (&json!("push_failed"), &json!(false))
    );
    assert_eq!(listed[0]["id"], r["id"]);
    assert_eq!(listed[0]["step"].as_str().unwrap().len(), 100);
    assert_eq!(listed[0]["summary"], "hi");
    assert_eq!(listed[0]["raw_output"].as_str().unwrap().len(), 4096);
    assert_eq!(listed[0]["success"], true);
    assert_eq!(listed[1]["id"], r2["id"]);
    assert_eq!(listed[1]["step"], "step");
    assert_eq!(listed[1]["raw_output"], Value::Null);
    assert_eq!(listed[1]["success"], true);
    let (s, _) = api
        .post(
            &format!("/api/projects/{pid}/tickets/{}/logs", Uuid::new_v4()),
            json!({"session_id": "s"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let complete = format!("/api/projects/{pid}/tickets/{tid}/complete");
    let (s, c) = api.post(&complete, json!({"pr_url": " https://github.com/acme/shop/pull/7 ", "pr_number": "7", "summary": "Did it"})).await;
    assert_eq!(
        (s, c),
        (
            StatusCode::OK,
            json!({"message": "Complete", "ticket_id": tid.to_string()})
        )
    );
    let (_, t) = api.get(&format!("/api/projects/{pid}/tickets/{tid}")).await;
    assert_eq!(t["column_id"], "in_review");
    assert_eq!(t["status"], "completed");
    assert_eq!(t["pr_url"], "https://github.com/acme/shop/pull/7");
    assert_eq!(t["pr_number"], 7);
    // The summary is kept (the original dropped it).
    let (_, listed) = api.get(&logs).await;
    assert_eq!(
        listed.as_array().unwrap().last().unwrap()["summary"],
        "Did it"
    );
    // Completing again without a PR keeps the recorded one; a new URL replaces it.
    api.post(&complete, json!({})).await;
    let (_, t) = api.get(&format!("/api/projects/{pid}/tickets/{tid}")).await;
    assert_eq!(t["pr_number"], 7);
    api.post(
        &complete,
        json!({"pr_url": "https://github.com/acme/shop/pull/8", "pr_number": "x"}),
    )
    .await;
    let (_, t) = api.get(&format!("/api/projects/{pid}/tickets/{tid}")).await;
    assert_eq!(
        (t["pr_url"].as_str(), t["pr_number"].clone()),
        (Some("https://github.com/acme/shop/pull/8"), Value::Null)
    );
    // Original clients post with no body at all.
    let (s, _) = api
        .raw(reqwest::Method::POST, &complete, None, Vec::new())
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        api.post(
            &format!("/api/projects/{pid}/tickets/{}/complete", Uuid::new_v4()),
            json!({})
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
}

async fn cancellation_is_stored_and_cleared(backend: Backend) {
    let srv = TestServer::start(backend, ready_options()).await;
    let api = Api::new(&srv);
    let pid = ready_project(&api, "C").await;
    let tid = ticket(&api, pid, "t").await;
    let flag = format!("/api/projects/{pid}/tickets/{tid}/cancel-requested");
    assert_eq!(api.get(&flag).await.1, json!({"cancel_requested": false}));
    start_ticket(&api, pid, tid).await;
    let (s, m) = api
        .post(
            &format!("/api/projects/{pid}/tickets/{tid}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(
        (s, m),
        (StatusCode::OK, json!({"message": "Cancellation requested"}))
    );
    assert_eq!(api.get(&flag).await.1, json!({"cancel_requested": true}));
    // The pending job failed at once instead of being claimed later.
    let (_, jobs) = api
        .get(&format!("/api/projects/{pid}/tickets/{tid}/jobs"))
        .await;
    assert_eq!(jobs[0]["status"], "failed");
    assert_eq!(jobs[0]["fail_reason"], "Cancelled");
    assert_eq!(
        api.post("/api/worker/jobs/start", json!({})).await.0,
        StatusCode::NO_CONTENT
    );

    // The flag survives a restart of the server.
    let opts = ready_options();
    let (url, dir) = srv.stop().await;
    let restarted = TestServer::start_on(&url, &opts).await;
    let api = Api {
        base: restarted.url(),
        ..api
    };
    assert_eq!(api.get(&flag).await.1, json!({"cancel_requested": true}));
    // Moving the ticket back to In Progress clears it and queues a new job.
    api.patch(
        &format!("/api/projects/{pid}/tickets/{tid}"),
        json!({"column_id": "backlog"}),
    )
    .await;
    start_ticket(&api, pid, tid).await;
    assert_eq!(api.get(&flag).await.1, json!({"cancel_requested": false}));
    let (s, job) = api.post("/api/worker/jobs/start", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(job["ticket_id"], tid.to_string());
    assert_eq!(
        api.post(
            &format!("/api/projects/{pid}/tickets/{}/cancel", Uuid::new_v4()),
            json!({})
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    restarted.shutdown().await;
    drop(dir);
}

async fn worker_auth(backend: Backend) {
    let srv = TestServer::start(
        backend,
        ready_options().env("TERARCHITECT_WORKER_API_KEY", "env-key"),
    )
    .await;
    let anon = Api::new(&srv);
    let pid = ready_project(&anon, "A").await;
    let tid = ticket(&anon, pid, "t").await;
    let ctx = format!("/api/projects/{pid}/tickets/{tid}/worker-context");

    let (s, e) = anon.get(&ctx).await;
    assert_eq!(
        (s, e),
        (
            StatusCode::UNAUTHORIZED,
            json!({"error": "Missing or invalid Authorization header (expected Bearer <token>)"})
        )
    );
    let (s, e) = anon.with_token("wrong").get(&ctx).await;
    assert_eq!(
        (s, e),
        (
            StatusCode::UNAUTHORIZED,
            json!({"error": "Invalid worker API token"})
        )
    );
    // A lower-case scheme is not accepted, as in the original.
    let resp = anon
        .http
        .get(format!("{}{ctx}", anon.base))
        .header("authorization", "bearer env-key")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(anon.with_token("env-key").get(&ctx).await.0, StatusCode::OK);
    // Auth runs before lookups: an unknown job is a 401, not a 404.
    assert_eq!(
        anon.post(
            &format!("/api/worker/jobs/{}/complete", Uuid::new_v4()),
            json!({})
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    for (method, path) in [
        ("POST", format!("/api/projects/{pid}/tickets/{tid}/logs")),
        (
            "POST",
            format!("/api/projects/{pid}/tickets/{tid}/complete"),
        ),
        (
            "GET",
            format!("/api/projects/{pid}/tickets/{tid}/cancel-requested"),
        ),
        ("POST", "/api/worker/jobs/start".to_owned()),
        ("POST", format!("/api/projects/{pid}/memory/index")),
        ("POST", format!("/api/projects/{pid}/memory/retrieve")),
        ("POST", format!("/api/projects/{pid}/memory/delete")),
        (
            "POST",
            format!("/api/projects/{pid}/tickets/{tid}/review-jobs"),
        ),
    ] {
        let (s, _) = anon
            .call(method.parse().unwrap(), &path, Some(json!({})))
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    // UI endpoints stay open.
    assert_eq!(
        anon.get(&format!("/api/projects/{pid}/tickets/{tid}/logs"))
            .await
            .0,
        StatusCode::OK
    );

    // The stored setting takes precedence over the environment.
    anon.put(
        "/api/settings",
        json!({"TERARCHITECT_WORKER_API_KEY": "db-key"}),
    )
    .await;
    assert_eq!(
        anon.with_token("env-key").get(&ctx).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(anon.with_token("db-key").get(&ctx).await.0, StatusCode::OK);
    assert_eq!(
        anon.with_token("  db-key  ").get(&ctx).await.0,
        StatusCode::OK,
        "the presented token is trimmed"
    );
    anon.put(
        "/api/settings",
        json!({"TERARCHITECT_WORKER_API_KEY": null}),
    )
    .await;
    assert_eq!(anon.with_token("env-key").get(&ctx).await.0, StatusCode::OK);
}

async fn open_and_fail_closed_without_key(backend: Backend) {
    let srv = TestServer::start(backend, ready_options()).await;
    let api = Api::new(&srv);
    let pid = ready_project(&api, "O").await;
    let tid = ticket(&api, pid, "t").await;
    let ctx = format!("/api/projects/{pid}/tickets/{tid}/worker-context");
    assert_eq!(
        api.get(&ctx).await.0,
        StatusCode::OK,
        "no key: open (development mode)"
    );
    let (url, _dir) = srv.stop().await;

    // Fail closed: without any key the server refuses to start.
    let mut config = terarchitect_api_server::Config::for_tests("unused".into());
    config.require_worker_api_key = true;
    let db = terarchitect_api_server::db::Db::connect(&url, &Default::default())
        .await
        .unwrap();
    let env = std::sync::Arc::new(ready_options().env);
    let err = terarchitect_api_server::start_with_db(config, env, db)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("no worker API key"), "{err}");

    // With a stored key it starts; once the key is removed, worker calls are refused (503).
    let open = TestServer::start_on(&url, &ready_options()).await;
    let setup = Api {
        base: open.url(),
        ..api.clone()
    };
    assert_eq!(
        setup
            .put("/api/settings", json!({"TERARCHITECT_WORKER_API_KEY": "k"}))
            .await
            .0,
        StatusCode::OK
    );
    open.shutdown().await;
    let strict = TestOptions {
        require_worker_api_key: true,
        ..ready_options()
    };
    let srv = TestServer::start_on(&url, &strict).await;
    let api = Api {
        base: srv.url(),
        ..api
    };
    assert_eq!(api.with_token("k").get(&ctx).await.0, StatusCode::OK);
    assert_eq!(api.get(&ctx).await.0, StatusCode::UNAUTHORIZED);
    api.put("/api/settings", json!({"TERARCHITECT_WORKER_API_KEY": ""}))
        .await;
    let (s, e) = api.get(&ctx).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        e["error"].as_str().unwrap().contains("not configured"),
        "{e}"
    );
    srv.shutdown().await;
}

async fn memory_round_trip(backend: Backend) {
    let srv = TestServer::start(backend, ready_options()).await;
    let api = Api::new(&srv);
    let (_, p) = api
        .post(
            "/api/projects",
            json!({"name": "Mem", "description": "A bakery ordering app"}),
        )
        .await;
    let pid = p["id"].as_str().unwrap();
    let index = format!("/api/projects/{pid}/memory/index");
    let retrieve = format!("/api/projects/{pid}/memory/retrieve");

    // The project's bootstrap passage exists from creation.
    let (s, r) = api
        .post(
            &retrieve,
            json!({"queries": ["bakery orders"], "num_to_retrieve": 5}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(
        r["results"][0]["docs"],
        json!(["Project: Mem. A bakery ordering app"])
    );

    let docs = json!([
        "Ticket: Login. Added OAuth login with GitHub and session cookies.",
        "Ticket: Cart. Shopping cart stores items in Redis with a TTL.",
        "Ticket: Payments. Stripe checkout integration with webhooks for payment events.",
    ]);
    let (s, r) = api.post(&index, json!({"docs": docs})).await;
    assert_eq!(
        (s, r),
        (StatusCode::OK, json!({"message": "Indexed", "count": 3}))
    );
    // Indexing the same text again is idempotent.
    api.post(&index, json!({"docs": [docs[0].clone()]})).await;

    let (_, r) = api
        .post(&retrieve, json!({"queries": ["how are payments handled with stripe webhooks?", "redis cart"], "num_to_retrieve": 2}))
        .await;
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(
        results[0]["question"],
        "how are payments handled with stripe webhooks?"
    );
    assert_eq!(results[0]["docs"][0], docs[2]);
    assert_eq!(results[1]["docs"][0], docs[1]);
    for res in results {
        let n = res["docs"].as_array().unwrap().len();
        assert!(n <= 2);
        assert_eq!(res["doc_scores"].as_array().unwrap().len(), n);
        let scores: Vec<f64> = res["doc_scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert!(
            scores.windows(2).all(|w| w[0] >= w[1]),
            "best first: {scores:?}"
        );
    }

    // Visible right after indexing (the original's retrieval cache hid new passages).
    api.post(
        &index,
        json!({"docs": ["Ticket: Search. Elasticsearch powers product search."]}),
    )
    .await;
    let (_, r) = api
        .post(&retrieve, json!({"queries": ["elasticsearch"]}))
        .await;
    assert_eq!(
        r["results"][0]["docs"][0],
        "Ticket: Search. Elasticsearch powers product search."
    );

    let (s, r) = api
        .post(
            &format!("/api/projects/{pid}/memory/delete"),
            json!({"docs": ["Ticket: Search. Elasticsearch powers product search."]}),
        )
        .await;
    assert_eq!(
        (s, r),
        (StatusCode::OK, json!({"message": "Deleted", "count": 1}))
    );
    let (_, r) = api
        .post(&retrieve, json!({"queries": ["elasticsearch"]}))
        .await;
    assert_eq!(r["results"][0]["docs"], json!([]));

    for (path, body, msg) in [
        (
            &index,
            json!({"docs": []}),
            "docs (list of strings) is required",
        ),
        (
            &index,
            json!({"docs": "x"}),
            "docs (list of strings) is required",
        ),
        (
            &retrieve,
            json!({"queries": [1]}),
            "queries (list of strings) is required",
        ),
        (
            &retrieve,
            json!({}),
            "queries (list of strings) is required",
        ),
    ] {
        let (s, e) = api.post(path, body).await;
        assert_eq!(
            (s, e["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some(msg))
        );
    }
    let (s, _) = api
        .post(&retrieve, json!({"queries": ["x"], "num_to_retrieve": 0}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, e) = api
        .post(
            &format!("/api/projects/{}/memory/index", Uuid::new_v4()),
            json!({"docs": ["x"]}),
        )
        .await;
    assert_eq!(
        (s, e),
        (StatusCode::NOT_FOUND, json!({"error": "Project not found"}))
    );
}

async fn memory_uses_embeddings_when_configured(backend: Backend) {
    // A fake OpenAI-compatible embedding service: a bag-of-letters vector.
    let app = axum::Router::new().route(
        "/v1/embeddings",
        axum::routing::post(|axum::Json(body): axum::Json<Value>| async move {
            let inputs: Vec<String> = match &body["input"] {
                Value::String(s) => vec![s.clone()],
                v => v
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap().to_owned())
                    .collect(),
            };
            let data: Vec<Value> = inputs
                .iter()
                .enumerate()
                .map(|(i, text)| {
                    let mut v = vec![0f32; 26];
                    for c in text.to_lowercase().chars().filter(char::is_ascii_lowercase) {
                        v[(c as u8 - b'a') as usize] += 1.0;
                    }
                    json!({"object": "embedding", "embedding": v, "index": i})
                })
                .collect();
            axum::Json(json!({"object": "list", "data": data, "model": body["model"]}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let srv = TestServer::start(
        backend,
        ready_options().env("EMBEDDING_SERVICE_URL", &format!("http://{addr}/v1/")),
    )
    .await;
    let api = Api::new(&srv);
    let (_, p) = api
        .post(
            "/api/projects",
            json!({"name": "E", "is_existing_repo": true}),
        )
        .await;
    let pid = p["id"].as_str().unwrap();
    api.post(
        &format!("/api/projects/{pid}/memory/index"),
        json!({"docs": ["zzzz zzz", "aaaa bbb"]}),
    )
    .await;
    // No shared words: BM25 would find nothing; embeddings rank by similarity.
    let (_, r) = api
        .post(
            &format!("/api/projects/{pid}/memory/retrieve"),
            json!({"queries": ["zz"], "num_to_retrieve": 1}),
        )
        .await;
    assert_eq!(r["results"][0]["docs"], json!(["zzzz zzz"]));
    assert!(r["results"][0]["doc_scores"][0].as_f64().unwrap() > 0.99);
}

on_both_backends!(
    worker_context_shape,
    worker_context_follows_every_change,
    context_secrets_can_be_redacted,
    logs_and_completion,
    cancellation_is_stored_and_cleared,
    worker_auth,
    open_and_fail_closed_without_key,
    memory_round_trip,
    memory_uses_embeddings_when_configured,
);
