//! The OpenAPI document describes what the server does (scripts/check-openapi.sh runs
//! schemathesis against it; these tests pin its structure), and request bodies read integers
//! the way JSON Schema does (`7.0` is the integer 7).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

/// The worker API (worker key or run token); every other non-public operation is admin API.
const WORKER_OPERATIONS: [&str; 14] = [
    "GET /api/projects/{project_id}/tickets/{ticket_id}/worker-context",
    "POST /api/projects/{project_id}/tickets/{ticket_id}/logs",
    "POST /api/projects/{project_id}/tickets/{ticket_id}/complete",
    "GET /api/projects/{project_id}/tickets/{ticket_id}/cancel-requested",
    "POST /api/projects/{project_id}/tickets/{ticket_id}/review-jobs",
    "POST /api/worker/jobs/start",
    "GET /api/worker/jobs/{job_id}",
    "POST /api/worker/jobs/{job_id}/complete",
    "POST /api/worker/jobs/{job_id}/fail",
    "POST /api/worker/jobs/{job_id}/heartbeat",
    "POST /api/worker/jobs/{job_id}/release",
    "POST /api/projects/{project_id}/memory/index",
    "POST /api/projects/{project_id}/memory/retrieve",
    "POST /api/projects/{project_id}/memory/delete",
];

/// Every `(METHOD path, operation)` of the document.
fn operations(doc: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                out.push((format!("{} {path}", method.to_uppercase()), op.clone()));
            }
        }
    }
    out
}

/// The non-null alternative of a nullable schema (`anyOf: [T, null]`), or the schema itself.
fn non_null(schema: &Value) -> &Value {
    schema["anyOf"]
        .as_array()
        .and_then(|alternatives| alternatives.iter().find(|a| a["type"] != "null"))
        .unwrap_or(schema)
}

fn statuses(op: &Value) -> Vec<&str> {
    op["responses"]
        .as_object()
        .map(|r| r.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

fn security_schemes(op: &Value) -> Vec<String> {
    op["security"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .flat_map(|req| req.keys().cloned())
        .collect()
}

async fn document_describes_errors_security_and_links(backend: Backend) {
    let srv = TestServer::start(backend, ready_options()).await;
    let api = Api::new(&srv);
    let (s, doc) = api.get("/api/openapi.json").await;
    assert_eq!(s, StatusCode::OK);
    let ops = operations(&doc);
    assert!(ops.len() >= 40, "{} operations", ops.len());
    let public = [
        "GET /",
        "GET /health",
        "GET /readyz",
        "GET /metrics",
        "POST /api/github/webhook",
    ];
    for name in public.iter().chain(WORKER_OPERATIONS.iter()) {
        assert!(
            ops.iter().any(|(n, _)| n == name),
            "{name} is not documented"
        );
    }
    for (name, op) in &ops {
        let codes = statuses(op);
        for (code, response) in op["responses"].as_object().unwrap() {
            assert!(
                response["description"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty()),
                "{name} {code} has no description"
            );
            if code.starts_with('4') || code.starts_with('5') {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"]
                        .as_str()
                        .filter(|_| code != "409")
                        .unwrap_or("#/components/schemas/ErrorBody"),
                    "#/components/schemas/ErrorBody",
                    "{name} {code}"
                );
                assert!(
                    response["content"]["application/json"]["schema"].is_object(),
                    "{name} {code} has no JSON body"
                );
            }
        }
        let schemes = security_schemes(op);
        if public.contains(&name.as_str()) {
            assert!(schemes.is_empty(), "{name} is public: {schemes:?}");
        } else {
            assert_eq!(schemes.len(), 1, "{name}: {schemes:?}");
            assert!(
                codes.contains(&"401") && codes.contains(&"403"),
                "{name}: {codes:?}"
            );
            let expected = if WORKER_OPERATIONS.contains(&name.as_str()) {
                "worker_token"
            } else {
                "admin_token"
            };
            assert_eq!(schemes[0], expected, "{name}");
        }
        if name.contains('{') {
            assert!(
                codes.contains(&"404"),
                "{name} has path ids but no 404: {codes:?}"
            );
        }
        if op.get("requestBody").is_some() {
            for code in ["400", "413", "415"] {
                assert!(
                    codes.contains(&code),
                    "{name} takes a body but lacks {code}"
                );
            }
        }
    }

    // Bodies the server accepts missing are optional; bounds and required fields are stated.
    let op = |name: &str| {
        ops.iter()
            .find(|(n, _)| n == name)
            .map(|(_, o)| o.clone())
            .unwrap()
    };
    for name in [
        "POST /api/worker/jobs/start",
        "POST /api/worker/jobs/{job_id}/complete",
        "POST /api/worker/jobs/{job_id}/fail",
        "POST /api/worker/jobs/{job_id}/heartbeat",
        "POST /api/worker/jobs/{job_id}/release",
        "POST /api/projects/{project_id}/tickets/{ticket_id}/complete",
    ] {
        assert_ne!(op(name)["requestBody"]["required"], json!(true), "{name}");
    }
    assert_eq!(
        op("DELETE /api/projects/{project_id}")["requestBody"]["required"],
        json!(true)
    );
    let schemas = &doc["components"]["schemas"];
    let claim = &schemas["ClaimRequest"]["properties"];
    assert_eq!(non_null(&claim["wait_seconds"])["minimum"], 0);
    assert_eq!(non_null(&claim["wait_seconds"])["maximum"], 30);
    assert_eq!(non_null(&claim["lease_seconds"])["minimum"], 1);
    assert_eq!(non_null(&claim["project_id"])["format"], "uuid");
    let heartbeat = &schemas["HeartbeatRequest"]["properties"];
    assert_eq!(non_null(&heartbeat["lease_seconds"])["maximum"], 604800);
    assert_eq!(schemas["LogEntry"]["required"], json!(["session_id"]));
    assert_eq!(
        schemas["DeleteConfirmation"]["required"],
        json!(["confirm_name"])
    );
    assert_eq!(
        schemas["TicketCreate"]["required"],
        json!(["title", "column_id"])
    );
    assert_eq!(schemas["ErrorBody"]["required"], json!(["error"]));
    // A ticket claim has no review fields: they are optional in the claim's schema.
    assert_eq!(
        schemas["ClaimedJob"]["required"],
        json!(["job_id", "ticket_id", "project_id", "kind"])
    );
    assert!(schemas["ClaimedJob"]["properties"]["pr_number"].is_object());

    // Links lead from a created project to its tickets, from a ticket to its worker
    // endpoints, and from a claim to its job.
    let links = |name: &str, status: &str| op(name)["responses"][status]["links"].clone();
    let project_links = links("POST /api/projects", "201");
    assert_eq!(
        project_links["create_ticket"]["parameters"]["project_id"],
        "$response.body#/id"
    );
    assert_eq!(
        project_links["delete_project"]["requestBody"]["confirm_name"],
        "$response.body#/name"
    );
    let ticket_links = links("POST /api/projects/{project_id}/tickets", "201");
    for target in [
        "get_worker_context",
        "post_log",
        "complete_ticket",
        "enqueue_review_job",
    ] {
        assert_eq!(
            ticket_links[target]["parameters"]["ticket_id"], "$response.body#/id",
            "{target}"
        );
    }
    let claim_links = links("POST /api/worker/jobs/start", "200");
    for target in [
        "get_job",
        "heartbeat_job",
        "complete_job",
        "fail_job",
        "release_job",
    ] {
        assert_eq!(
            claim_links[target]["parameters"]["job_id"], "$response.body#/job_id",
            "{target}"
        );
    }
    // Every link names an existing operation.
    let ids: Vec<&str> = ops
        .iter()
        .filter_map(|(_, o)| o["operationId"].as_str())
        .collect();
    for (name, o) in &ops {
        for response in o["responses"].as_object().unwrap().values() {
            for (link, target) in response["links"].as_object().into_iter().flatten() {
                let id = target["operationId"].as_str().unwrap_or_default();
                assert!(ids.contains(&id), "{name}: link {link} to unknown {id}");
            }
        }
    }
}

async fn integral_numbers_are_integers(backend: Backend) {
    let srv = TestServer::start(backend, ready_options()).await;
    let api = Api::new(&srv);
    let pid = ready_project(&api, "I").await;
    let tid = ticket(&api, pid, "t").await;

    // A review job with pr_number 7.0, claimed with float-spelled bounds.
    let (s, job) = api
        .post(
            &format!("/api/projects/{pid}/tickets/{tid}/review-jobs"),
            json!({"pr_number": 7.0, "github_comment_id": 42.0}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{job}");
    assert_eq!(job["pr_number"], 7);
    assert_eq!(job["github_comment_id"], 42);
    let (s, claim) = api
        .post(
            "/api/worker/jobs/start",
            json!({"project_id": pid, "wait_seconds": 0.0, "lease_seconds": 60.0}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{claim}");
    let job_id = claim["job_id"].as_str().unwrap().to_owned();
    let (s, beat) = api
        .post(
            &format!("/api/worker/jobs/{job_id}/heartbeat"),
            json!({"lease_seconds": 120.0, "attempt": 1.0}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{beat}");
    let (s, found) = api
        .post(
            &format!("/api/projects/{pid}/memory/retrieve"),
            json!({"queries": ["I"], "num_to_retrieve": 3.0}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{found}");

    // Fractions and out-of-range values stay refused with a JSON 400.
    for body in [
        json!({"attempt": 1.5}),
        json!({"lease_seconds": 0.0}),
        json!({"lease_seconds": 1e300}),
    ] {
        let (s, e) = api
            .post(
                &format!("/api/worker/jobs/{job_id}/heartbeat"),
                body.clone(),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {e}");
        assert!(e["error"].is_string());
    }
    let (s, e) = api
        .post("/api/worker/jobs/start", json!({"wait_seconds": 2.5}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (s, e) = api
        .post(
            &format!("/api/projects/{pid}/tickets/{tid}/review-jobs"),
            json!({"pr_number": 1, "github_comment_id": -9223372036854775809.0}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");

    let (s, done) = api
        .post(
            &format!("/api/worker/jobs/{job_id}/complete"),
            json!({"attempt": 1.0}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{done}");
}

on_both_backends!(
    document_describes_errors_security_and_links,
    integral_numbers_are_integers
);

/// A webhook delivery whose (correctly signed) body is JSON but not an object is refused, as
/// the document says (schemathesis found `[null, null]` answered 200).
async fn webhook_refuses_non_object_payloads(backend: Backend) {
    use terarchitect_api_server::review::ReviewArgs;
    use terarchitect_api_server::review::webhook::sign;
    const SECRET: &str = "whsec-openapi-tests";
    let srv = TestServer::start(
        backend,
        TestOptions {
            review: Some(ReviewArgs {
                github_webhook_secret: Some(SECRET.into()),
                ..ReviewArgs::default()
            }),
            ..ready_options()
        },
    )
    .await;
    let deliver = |body: &'static [u8]| {
        reqwest::Client::new()
            .post(format!("{}/api/github/webhook", srv.url()))
            .header("content-type", "application/json")
            .header("x-github-event", "issue_comment")
            .header("x-hub-signature-256", sign(SECRET.as_bytes(), body))
            .body(body)
            .send()
    };
    for body in [&b"[null, null]"[..], b"\"text\"", b"42", b"null"] {
        let resp = deliver(body).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body:?}");
        let e: Value = resp.json().await.unwrap();
        assert!(
            e["error"].as_str().unwrap().contains("expected an object"),
            "{e}"
        );
    }
    let resp = deliver(b"{}").await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

on_both_backends!(webhook_refuses_non_object_payloads);

/// An optional body is absent or JSON: blanks are neither (schemathesis found `\t` accepted).
async fn an_optional_body_of_blanks_is_refused(backend: Backend) {
    let srv = TestServer::start(backend, ready_options()).await;
    let api = Api::new(&srv);
    for blanks in [&b"\t"[..], b" ", b"\r\n"] {
        let (s, e) = api
            .raw(
                reqwest::Method::POST,
                "/api/worker/jobs/start",
                Some("application/json"),
                blanks.to_vec(),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{blanks:?}: {e}");
        assert!(
            e["error"]
                .as_str()
                .unwrap()
                .starts_with("Invalid JSON body"),
            "{e}"
        );
    }
    // No body at all (the original coordinator's claim) still claims.
    let (s, _) = api
        .raw(
            reqwest::Method::POST,
            "/api/worker/jobs/start",
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
}

on_both_backends!(an_optional_body_of_blanks_is_refused);
