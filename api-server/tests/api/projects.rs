//! Projects, graph, kanban, tickets and notes.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

async fn project_lifecycle(backend: Backend) {
    let srv = TestServer::start(backend, TestOptions::default()).await;
    let api = Api::new(&srv);

    let (s, health) = api.get("/health").await;
    assert_eq!((s, health), (StatusCode::OK, json!({"status": "healthy"})));

    let (s, p) = api
        .post("/api/projects", json!({"name": "Shop", "description": "An online shop", "github_url": "https://github.com/acme/shop", "execution_mode": "LOCAL", "project_path": "/src/shop"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(p["name"], "Shop");
    assert_eq!(p["execution_mode"], "local");
    assert_eq!(p["project_path"], "/src/shop");
    for key in [
        "id",
        "description",
        "github_url",
        "created_at",
        "updated_at",
    ] {
        assert!(p.get(key).is_some(), "missing {key}");
    }
    let pid = p["id"].as_str().unwrap().to_owned();

    // Side effects: graph, four-column board, the setup ticket.
    let (_, g) = api.get(&format!("/api/projects/{pid}/graph")).await;
    assert_eq!(
        (g["nodes"].clone(), g["edges"].clone(), g["version"].clone()),
        (json!([]), json!([]), json!(1))
    );
    let (_, k) = api.get(&format!("/api/projects/{pid}/kanban")).await;
    let ids: Vec<&str> = k["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["backlog", "in_progress", "in_review", "done"]);
    let (_, tickets) = api.get(&format!("/api/projects/{pid}/tickets")).await;
    let tickets = tickets.as_array().unwrap();
    assert_eq!(tickets.len(), 1);
    assert_eq!(tickets[0]["title"], "Project setup");
    assert_eq!(tickets[0]["column_id"], "backlog");
    assert_eq!(tickets[0]["associated_node_ids"], json!(["*"]));
    assert_eq!(tickets[0]["pr_url"], Value::Null);

    // An existing repository gets no setup ticket; the default name applies.
    let (_, p2) = api
        .post("/api/projects", json!({"is_existing_repo": true}))
        .await;
    assert_eq!(p2["name"], "Untitled Project");
    assert_eq!(p2["execution_mode"], "docker");
    let (_, t2) = api
        .get(&format!(
            "/api/projects/{}/tickets",
            p2["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(t2, json!([]));

    let (_, list) = api.get("/api/projects").await;
    assert_eq!(list.as_array().unwrap().len(), 2);

    // PUT keeps absent keys, clears a null description, normalises the mode and empty path.
    let (s, up) = api
        .put(
            &format!("/api/projects/{pid}"),
            json!({"description": null, "execution_mode": "docker", "project_path": "  "}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(up["name"], "Shop");
    assert_eq!(up["description"], Value::Null);
    assert_eq!(up["execution_mode"], "docker");
    assert_eq!(up["project_path"], Value::Null);
    assert_eq!(up["github_url"], "https://github.com/acme/shop");

    // Delete requires the exact name.
    let (s, e) = api
        .delete(
            &format!("/api/projects/{pid}"),
            json!({"confirm_name": "shop"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        e["error"],
        "Name does not match. Send confirm_name equal to the project name to confirm deletion."
    );
    let (s, m) = api
        .delete(
            &format!("/api/projects/{pid}"),
            json!({"confirm_name": " Shop "}),
        )
        .await;
    assert_eq!(
        (s, m),
        (StatusCode::OK, json!({"message": "Project deleted"}))
    );
    let (s, _) = api.get(&format!("/api/projects/{pid}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

async fn graph_and_kanban(backend: Backend) {
    let srv = TestServer::start(backend, TestOptions::default()).await;
    let api = Api::new(&srv);
    let (_, p) = api.post("/api/projects", json!({"name": "G"})).await;
    let pid = p["id"].as_str().unwrap();
    let nodes = json!([{"id": "a", "type": "service", "data": {"label": "API"}, "position": {"x": 1, "y": 2}}]);
    let (s, v) = api
        .put(
            &format!("/api/projects/{pid}/graph"),
            json!({"nodes": nodes}),
        )
        .await;
    assert_eq!((s, v), (StatusCode::OK, json!({"version": 2})));
    let (_, v) = api
        .put(
            &format!("/api/projects/{pid}/graph"),
            json!({"edges": [{"id": "e", "source": "a", "target": "a"}]}),
        )
        .await;
    assert_eq!(v, json!({"version": 3}));
    let (_, g) = api.get(&format!("/api/projects/{pid}/graph")).await;
    assert_eq!(g["nodes"], nodes, "nodes kept when only edges are sent");
    assert_eq!(g["edges"][0]["id"], "e");
    let (_, v) = api
        .put(
            &format!("/api/projects/{pid}/graph"),
            json!({"edges": null}),
        )
        .await;
    assert_eq!(v, json!({"version": 4}));
    let (_, g) = api.get(&format!("/api/projects/{pid}/graph")).await;
    assert_eq!(g["edges"], json!([]));

    let cols = json!([{"id": "todo", "title": "To do", "order": 0}]);
    let (s, k) = api
        .put(
            &format!("/api/projects/{pid}/kanban"),
            json!({"columns": cols}),
        )
        .await;
    assert_eq!((s, k), (StatusCode::OK, json!({"columns": cols})));
    let (_, k) = api
        .put(
            &format!("/api/projects/{pid}/kanban"),
            json!({"columns": null}),
        )
        .await;
    assert_eq!(k, json!({"columns": []}));

    let missing = uuid::Uuid::new_v4();
    assert_eq!(
        api.get(&format!("/api/projects/{missing}/graph")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.put(
            &format!("/api/projects/{missing}/kanban"),
            json!({"columns": []})
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
}

async fn tickets_crud(backend: Backend) {
    let srv = TestServer::start(backend, TestOptions::default()).await;
    let api = Api::new(&srv);
    let (_, p) = api
        .post(
            "/api/projects",
            json!({"name": "T", "is_existing_repo": true}),
        )
        .await;
    let pid = p["id"].as_str().unwrap();

    let (s, e) = api
        .post(
            &format!("/api/projects/{pid}/tickets"),
            json!({"title": "", "column_id": "backlog"}),
        )
        .await;
    assert_eq!(
        (s, e),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "title and column_id are required"})
        )
    );

    let (s, t) = api
        .post(&format!("/api/projects/{pid}/tickets"), json!({"title": "Login", "column_id": "in_progress", "description": "d", "associated_node_ids": ["a"]}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(t["priority"], "medium");
    assert_eq!(t["status"], "todo");
    assert_eq!(t["associated_edge_ids"], json!([]));
    let tid = t["id"].as_str().unwrap();
    // Created directly in in_progress: no job.
    let (_, jobs) = api
        .get(&format!("/api/projects/{pid}/tickets/{tid}/jobs"))
        .await;
    assert_eq!(jobs, json!([]));

    let (s, t) = api
        .patch(
            &format!("/api/projects/{pid}/tickets/{tid}"),
            json!({"title": "Login page", "priority": "high", "description": null}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(t["title"], "Login page");
    assert_eq!(t["priority"], "high");
    assert_eq!(t["description"], Value::Null);
    assert_eq!(t["associated_node_ids"], json!(["a"]));

    let (_, got) = api.get(&format!("/api/projects/{pid}/tickets/{tid}")).await;
    assert_eq!(got, t);

    // A ticket of another project is not found through this one.
    let (_, other) = api
        .post(
            "/api/projects",
            json!({"name": "O", "is_existing_repo": true}),
        )
        .await;
    let opid = other["id"].as_str().unwrap();
    assert_eq!(
        api.get(&format!("/api/projects/{opid}/tickets/{tid}"))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    // Unknown project: 404 with a JSON error (the original answered 500).
    let (s, e) = api
        .post(
            &format!("/api/projects/{}/tickets", uuid::Uuid::new_v4()),
            json!({"title": "x", "column_id": "backlog"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(e["error"], "Project not found");
    assert_eq!(
        api.get(&format!("/api/projects/{}/tickets", uuid::Uuid::new_v4()))
            .await
            .1,
        json!([])
    );

    let (s, m) = api
        .delete(&format!("/api/projects/{pid}/tickets/{tid}"), json!({}))
        .await;
    assert_eq!(
        (s, m),
        (StatusCode::OK, json!({"message": "Ticket deleted"}))
    );
    assert_eq!(
        api.delete(&format!("/api/projects/{pid}/tickets/{tid}"), json!({}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

async fn move_to_in_progress_preconditions(backend: Backend) {
    let srv = TestServer::start(
        backend,
        TestOptions::default().env("TERARCHITECT_SECRET_KEY", TEST_SECRET_KEY),
    )
    .await;
    let api = Api::new(&srv);
    let (_, p) = api
        .post(
            "/api/projects",
            json!({"name": "M", "is_existing_repo": true}),
        )
        .await;
    let pid = p["id"].as_str().unwrap().parse().unwrap();
    let tid = ticket(&api, pid, "t").await;
    let path = format!("/api/projects/{pid}/tickets/{tid}");
    let move_it = json!({"column_id": "in_progress"});

    let (s, e) = api.patch(&path, move_it.clone()).await;
    assert_eq!(
        (s, e["error"].as_str().unwrap()),
        (
            StatusCode::BAD_REQUEST,
            "Project must have a GitHub URL set before moving a ticket to In Progress."
        )
    );
    api.put(
        &format!("/api/projects/{pid}"),
        json!({"execution_mode": "local"}),
    )
    .await;
    let (_, e) = api.patch(&path, move_it.clone()).await;
    assert_eq!(
        e["error"],
        "Project has execution mode Local; set Project path in project settings before moving a ticket to In Progress."
    );
    api.put(
        &format!("/api/projects/{pid}"),
        json!({"execution_mode": "docker", "github_url": "https://github.com/a/b"}),
    )
    .await;
    let (_, e) = api.patch(&path, move_it.clone()).await;
    assert_eq!(
        e["error"],
        "Add at least one node to the graph before moving a ticket to In Progress."
    );
    api.put(
        &format!("/api/projects/{pid}/graph"),
        json!({"nodes": [{"id": "n"}]}),
    )
    .await;
    // The original failed here with a 500 (missing import); the intended answer is a 400.
    let (s, e) = api.patch(&path, move_it.clone()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .starts_with("GitHub agent token is not set.")
    );
    // Nothing changed and nothing was queued by the refused moves.
    let (_, t) = api.get(&path).await;
    assert_eq!(t["column_id"], "backlog");
    assert_eq!(api.get(&format!("{path}/jobs")).await.1, json!([]));

    let (s, _) = api
        .put("/api/settings", json!({"github_agent_token": "ghp_x"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    start_ticket(&api, pid, tid).await;
    let (_, jobs) = api.get(&format!("{path}/jobs")).await;
    assert_eq!(jobs.as_array().unwrap().len(), 1);
    assert_eq!(jobs[0]["status"], "pending");
    assert_eq!(jobs[0]["kind"], "ticket");

    // Moving again (already in progress) or back and forth while a job is pending adds none.
    start_ticket(&api, pid, tid).await;
    api.patch(&path, json!({"column_id": "backlog"})).await;
    start_ticket(&api, pid, tid).await;
    assert_eq!(
        api.get(&format!("{path}/jobs"))
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

async fn notes_crud(backend: Backend) {
    let srv = TestServer::start(backend, TestOptions::default()).await;
    let api = Api::new(&srv);
    let (_, p) = api.post("/api/projects", json!({"name": "N"})).await;
    let pid = p["id"].as_str().unwrap();
    let (s, n) = api
        .post(&format!("/api/projects/{pid}/notes"), json!({"title": "Auth", "content": "Use OIDC", "node_ids": " a, b,a ", "edge_ids": ["e1", "e1"]}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(n["node_ids"], json!(["a", "b"]));
    assert_eq!(n["edge_ids"], json!(["e1"]));
    let nid = n["id"].as_str().unwrap();
    let (_, n2) = api
        .patch(
            &format!("/api/projects/{pid}/notes/{nid}"),
            json!({"node_ids": [], "content": "Use SAML"}),
        )
        .await;
    assert_eq!(n2["node_ids"], json!([]));
    assert_eq!(n2["content"], "Use SAML");
    assert_eq!(n2["title"], "Auth");
    let (_, list) = api.get(&format!("/api/projects/{pid}/notes")).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(
        api.get(&format!("/api/projects/{pid}/notes/{nid}")).await.1,
        n2
    );
    let (s, e) = api
        .post(
            &format!("/api/projects/{pid}/notes"),
            json!({"node_ids": 5}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(
        api.delete(&format!("/api/projects/{pid}/notes/{nid}"), json!({}))
            .await
            .1,
        json!({"message": "Note deleted"})
    );
    assert_eq!(
        api.get(&format!("/api/projects/{pid}/notes/{nid}")).await.0,
        StatusCode::NOT_FOUND
    );
    let (s, _) = api
        .post(
            &format!("/api/projects/{}/notes", uuid::Uuid::new_v4()),
            json!({"title": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

async fn deleting_with_jobs_works(backend: Backend) {
    let srv = TestServer::start(backend, ready_options()).await;
    let api = Api::new(&srv);
    let pid = ready_project(&api, "D").await;
    let t1 = ticket(&api, pid, "one").await;
    let t2 = ticket(&api, pid, "two").await;
    start_ticket(&api, pid, t1).await;
    start_ticket(&api, pid, t2).await;
    // Claim one so a running job exists too.
    let (s, _) = api.post("/api/worker/jobs/start", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = api
        .post(
            &format!("/api/projects/{pid}/tickets/{t1}/logs"),
            json!({"session_id": "s", "step": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, m) = api
        .delete(&format!("/api/projects/{pid}/tickets/{t1}"), json!({}))
        .await;
    assert_eq!(
        (s, m["message"].as_str()),
        (StatusCode::OK, Some("Ticket deleted"))
    );
    let (s, m) = api
        .delete(
            &format!("/api/projects/{pid}"),
            json!({"confirm_name": "D"}),
        )
        .await;
    assert_eq!(
        (s, m["message"].as_str()),
        (StatusCode::OK, Some("Project deleted"))
    );
    let (s, _) = api.post("/api/worker/jobs/start", json!({})).await;
    assert_eq!(
        s,
        StatusCode::NO_CONTENT,
        "the deleted project's jobs are gone"
    );
}

on_both_backends!(
    project_lifecycle,
    graph_and_kanban,
    tickets_crud,
    move_to_in_progress_preconditions,
    notes_crud,
    deleting_with_jobs_works,
);
