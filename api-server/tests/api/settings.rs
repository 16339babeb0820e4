//! Settings: the public view, encryption at rest, DB-over-env precedence, the check endpoint.

use reqwest::StatusCode;
use serde_json::{Value, json};
use terarchitect_api_server::settings::{SecretBox, keys};

use crate::common::*;

async fn settings_round_trip_and_encryption(backend: Backend) {
    let srv = TestServer::start(
        backend,
        TestOptions::default().env("TERARCHITECT_SECRET_KEY", TEST_SECRET_KEY),
    )
    .await;
    let api = Api::new(&srv);
    let (s, view) = api.get("/api/settings").await;
    assert_eq!(s, StatusCode::OK);
    let view = view.as_object().unwrap();
    assert_eq!(view.len(), 28);
    assert_eq!(view["github_agent_token"], false);
    assert_eq!(view["AGENT_MODEL"], Value::Null);

    let (s, view) = api
        .put("/api/settings", json!({"github_agent_token": "ghp_secret_value", "AGENT_MODEL": " gpt ", "MAX_CONCURRENT_AGENTS": 4, "MIDDLE_AGENT_DEBUG": false, "unknown_key": "ignored"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(view["github_agent_token"], true);
    assert_eq!(
        view["AGENT_MODEL"], " gpt ",
        "stored untrimmed, as the original"
    );
    assert_eq!(view["MAX_CONCURRENT_AGENTS"], "4");
    assert_eq!(view["MIDDLE_AGENT_DEBUG"], "False");
    assert!(view.get("unknown_key").is_none());

    // At rest the secret is AES-GCM ciphertext that decrypts with the key.
    let rows = srv.db().list_settings().await.unwrap();
    let stored = rows.iter().find(|r| r.key == "github_agent_token").unwrap();
    assert!(!stored.value.contains("ghp_secret_value"));
    let sealer = SecretBox::from_env_value(Some(TEST_SECRET_KEY)).unwrap();
    assert_eq!(
        sealer.decrypt(&stored.value).as_deref(),
        Some("ghp_secret_value")
    );
    assert!(rows.iter().all(|r| keys::is_allowed(&r.key)));

    // Null or blank deletes.
    let (_, view) = api
        .put(
            "/api/settings",
            json!({"github_agent_token": "  ", "AGENT_MODEL": null}),
        )
        .await;
    assert_eq!(view["github_agent_token"], false);
    assert_eq!(view["AGENT_MODEL"], Value::Null);

    // A value of the wrong type rejects the whole update (nothing is written).
    let (s, e) = api
        .put(
            "/api/settings",
            json!({"AGENT_MODEL": "m", "WORKER_MODEL": {"x": 1}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(api.get("/api/settings").await.1["AGENT_MODEL"], Value::Null);
}

async fn secrets_need_a_key(backend: Backend) {
    let srv = TestServer::start(backend, TestOptions::default()).await;
    let api = Api::new(&srv);
    let (s, e) = api
        .put(
            "/api/settings",
            json!({"AGENT_MODEL": "m", "AGENT_API_KEY": "sk"}),
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .starts_with("TERARCHITECT_SECRET_KEY must be a 64-character hex string")
    );
    // All-or-nothing: the plain key in the same request was not stored either.
    assert_eq!(api.get("/api/settings").await.1["AGENT_MODEL"], Value::Null);
    // Plain keys alone are fine.
    assert_eq!(
        api.put("/api/settings", json!({"AGENT_MODEL": "m"}))
            .await
            .0,
        StatusCode::OK
    );
}

async fn undecryptable_secret_falls_back_to_env(backend: Backend) {
    let srv = TestServer::start(
        backend,
        ready_options().env("AGENT_API_KEY", "env-agent-key"),
    )
    .await;
    let api = Api::new(&srv);
    api.put("/api/settings", json!({"AGENT_API_KEY": "db-agent-key"}))
        .await;
    let pid = ready_project(&api, "K").await;
    let tid = ticket(&api, pid, "t").await;
    let ctx = format!("/api/projects/{pid}/tickets/{tid}/worker-context");
    assert_eq!(
        api.get(&ctx).await.1["agent_settings"]["AGENT_API_KEY"],
        "db-agent-key"
    );
    // Restart with a different secret key: the stored value no longer decrypts.
    let (url, dir) = srv.stop().await;
    let other_key = "1".repeat(64);
    let srv = TestServer::start_on(
        &url,
        &ready_options()
            .env("TERARCHITECT_SECRET_KEY", &other_key)
            .env("AGENT_API_KEY", "env-agent-key"),
    )
    .await;
    let api = Api {
        base: srv.url(),
        ..api
    };
    assert_eq!(
        api.get(&ctx).await.1["agent_settings"]["AGENT_API_KEY"],
        "env-agent-key"
    );
    assert_eq!(
        api.get("/api/settings").await.1["AGENT_API_KEY"],
        true,
        "still reported as set"
    );
    srv.shutdown().await;
    drop(dir);
}

async fn settings_check(backend: Backend) {
    let srv = TestServer::start(
        backend,
        TestOptions::default()
            .env("TERARCHITECT_SECRET_KEY", TEST_SECRET_KEY)
            .env("GIT_USER_NAME", "Bot"),
    )
    .await;
    let api = Api::new(&srv);
    let (s, c) = api.get("/api/settings/check").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(c["ready"], false);
    let missing: Vec<&str> = c["missing_required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap())
        .collect();
    assert!(missing.contains(&"github_agent_token") && missing.contains(&"GIT_USER_EMAIL"));
    assert!(
        !missing.contains(&"GIT_USER_NAME"),
        "env counts for non-secret keys"
    );
    for item in c["missing_required"].as_array().unwrap() {
        assert!(item["label"].is_string() && item["reason"].is_string());
    }
    api.put(
        "/api/settings",
        json!({
            "github_agent_token": "t", "GIT_USER_EMAIL": "bot@example.com", "AGENT_MODEL": "m", "AGENT_API_KEY": "dummy",
            "WORKER_MODE": "opencode", "WORKER_LLM_URL": "http://llm", "WORKER_MODEL": "q", "WORKER_API_KEY": "dummy",
            "MEMORY_EMBEDDING_MODEL": "text-embedding-3-small", "openai_api_key": "sk"
        }),
    )
    .await;
    let (_, c) = api.get("/api/settings/check").await;
    assert_eq!(c["ready"], true, "{c}");
    assert_eq!(c["missing_required"], json!([]));
}

on_both_backends!(
    settings_round_trip_and_encryption,
    secrets_need_a_key,
    undecryptable_secret_falls_back_to_env,
    settings_check,
);
