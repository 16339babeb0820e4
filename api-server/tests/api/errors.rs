//! Bad input always gets a JSON 4xx: malformed ids, wrong content types, invalid JSON, wrong
//! field types, null bodies, oversized bodies, unknown routes and methods.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::*;

async fn bad_input_gets_json_4xx(backend: Backend) {
    let srv = TestServer::start(backend, ready_options()).await;
    let api = Api::new(&srv);
    let pid = ready_project(&api, "E").await;
    let tid = ticket(&api, pid, "t").await;

    // Malformed UUIDs in paths: 404 as for an unknown route, with a JSON body.
    for path in [
        "/api/projects/not-a-uuid".to_owned(),
        format!("/api/projects/{pid}/tickets/123"),
        format!("/api/projects/xyz/tickets/{tid}/worker-context"),
        "/api/worker/jobs/zzz".to_owned(),
    ] {
        let (s, e) = api.get(&path).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
        assert!(e["error"].is_string(), "{path}: {e}");
    }

    let ticket_path = format!("/api/projects/{pid}/tickets");
    // Wrong content type: 415.
    let (s, e) = api
        .raw(
            Method::POST,
            &ticket_path,
            Some("text/plain"),
            b"{\"title\":\"x\",\"column_id\":\"b\"}".to_vec(),
        )
        .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(e["error"], "Content-Type must be application/json");
    let (s, _) = api
        .raw(Method::POST, &ticket_path, None, b"{}".to_vec())
        .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // A charset parameter is fine.
    let (s, _) = api
        .raw(
            Method::POST,
            &ticket_path,
            Some("application/json; charset=utf-8"),
            br#"{"title":"x","column_id":"backlog"}"#.to_vec(),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);

    // Invalid JSON, null and non-object bodies: 400.
    for body in [&b"{not json"[..], b"null", b"[1,2]", b"\"text\"", b""] {
        let (s, e) = api
            .raw(
                Method::POST,
                &ticket_path,
                Some("application/json"),
                body.to_vec(),
            )
            .await;
        assert_eq!(
            s,
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(body)
        );
        assert!(e["error"].is_string());
    }
    for (method, path) in [
        (Method::POST, "/api/projects".to_owned()),
        (Method::PUT, format!("/api/projects/{pid}")),
        (Method::PUT, format!("/api/projects/{pid}/graph")),
        (Method::PUT, format!("/api/projects/{pid}/kanban")),
        (Method::PATCH, format!("/api/projects/{pid}/tickets/{tid}")),
        (Method::PUT, "/api/settings".to_owned()),
    ] {
        let (s, _) = api
            .raw(
                method.clone(),
                &path,
                Some("application/json"),
                b"null".to_vec(),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "null body to {method} {path}");
    }

    // Wrong field types: 400 naming the field.
    let (s, e) = api
        .post(&ticket_path, json!({"title": 5, "column_id": "backlog"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(e["error"].as_str().unwrap().contains("title"), "{e}");
    let cases = [
        (
            Method::POST,
            "/api/projects".to_owned(),
            json!({"name": null}),
        ),
        (
            Method::POST,
            "/api/projects".to_owned(),
            json!({"name": "x".repeat(256)}),
        ),
        (
            Method::POST,
            "/api/projects".to_owned(),
            json!({"description": ["a"]}),
        ),
        (
            Method::PUT,
            format!("/api/projects/{pid}/graph"),
            json!({"nodes": "abc"}),
        ),
        (
            Method::PUT,
            format!("/api/projects/{pid}/kanban"),
            json!({"columns": 3}),
        ),
        (
            Method::PATCH,
            format!("/api/projects/{pid}/tickets/{tid}"),
            json!({"column_id": null}),
        ),
        (
            Method::PATCH,
            format!("/api/projects/{pid}/tickets/{tid}"),
            json!({"associated_node_ids": [1, 2]}),
        ),
        (
            Method::PATCH,
            format!("/api/projects/{pid}/tickets/{tid}"),
            json!({"title": ""}),
        ),
        (
            Method::POST,
            format!("/api/projects/{pid}/tickets/{tid}/logs"),
            json!({"session_id": 12}),
        ),
        (
            Method::POST,
            format!("/api/projects/{pid}/tickets/{tid}/complete"),
            json!({"pr_url": 5}),
        ),
        (
            Method::POST,
            "/api/worker/jobs/start".to_owned(),
            json!({"project_id": 5}),
        ),
        (
            Method::POST,
            "/api/worker/jobs/start".to_owned(),
            json!({"wait_seconds": -1}),
        ),
        (
            Method::POST,
            "/api/worker/jobs/start".to_owned(),
            json!({"lease_seconds": "x"}),
        ),
    ];
    for (method, path, body) in cases {
        let (s, e) = api.call(method.clone(), &path, Some(body.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{method} {path} {body}: {e}");
        assert!(e["error"].is_string());
    }

    // Oversized bodies: 413.
    let huge = format!(
        "{{\"session_id\":\"s\",\"raw_output\":\"{}\"}}",
        "x".repeat(17 * 1024 * 1024)
    );
    let (s, e) = api
        .unpooled()
        .raw(
            Method::POST,
            &format!("/api/projects/{pid}/tickets/{tid}/logs"),
            Some("application/json"),
            huge.into_bytes(),
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(e["error"].is_string());

    // Unknown routes and methods: JSON 404 and 405.
    let (s, e) = api.get("/api/nope").await;
    assert_eq!(
        (s, e),
        (StatusCode::NOT_FOUND, json!({"error": "Not found"}))
    );
    let (s, e) = api.call(Method::DELETE, "/api/settings", None).await;
    assert_eq!(
        (s, e),
        (
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"error": "Method not allowed"})
        )
    );

    // After all that, the server still serves.
    assert_eq!(api.get("/health").await.0, StatusCode::OK);
}

async fn openapi_and_metrics(backend: Backend) {
    let srv = TestServer::start(backend, ready_options()).await;
    let api = Api::new(&srv);
    let (s, doc) = api.get("/api/openapi.json").await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/projects",
        "/api/projects/{project_id}/tickets/{ticket_id}/worker-context",
        "/api/worker/jobs/start",
        "/api/worker/jobs/{job_id}/heartbeat",
        "/api/projects/{project_id}/memory/retrieve",
        "/api/settings/check",
    ] {
        assert!(paths.contains_key(p), "missing {p}");
    }
    assert!(doc["components"]["securitySchemes"]["worker_token"].is_object());

    let pid = ready_project(&api, "M").await;
    let tid = ticket(&api, pid, "t").await;
    start_ticket(&api, pid, tid).await;
    let text = reqwest::get(format!("{}/metrics", api.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("terarchitect_agent_jobs{status=\"pending\"} 1"),
        "{text}"
    );
    assert!(text.contains("terarchitect_http_requests_total{method=\"PATCH\",route=\"/api/projects/{project_id}/tickets/{ticket_id}\",status=\"200\"}"), "{text}");
    assert!(text.contains("terarchitect_http_request_duration_seconds_bucket"));
}

on_both_backends!(bad_input_gets_json_4xx, openapi_and_metrics);
