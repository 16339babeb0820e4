//! The parts of the OpenAPI document that follow from how the router is built rather than from
//! one handler: the credential each route group requires (and its 401/403 answers), the JSON
//! error answers the shared extractors give (400/404/413/415), the settings' shapes (from the
//! key lists), and the links that lead from a created resource to the operations on it.
//! `scripts/check-openapi.sh` tests the finished document against the running server.

use std::borrow::Cow;

use serde_json::{Map, Value, json};
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::Response;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{Content, OpenApi, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::settings::keys::{ALLOWED_KEYS, is_sensitive};

/// Security scheme of the admin API.
pub const ADMIN_SCHEME: &str = "admin_token";
/// Security scheme of the worker API.
pub const WORKER_SCHEME: &str = "worker_token";
/// Name of the JSON error body's schema.
pub const ERROR_SCHEMA: &str = "ErrorBody";

/// 401 and 403 of the admin API's guard.
pub const ADMIN_ERRORS: &[(u16, &str)] = &[
    (
        401,
        "Missing or unknown admin token (when the server has admin tokens)",
    ),
    (
        403,
        "A worker key or run token was presented: they are not admin tokens",
    ),
];

/// 401, 403 and 503 of the worker API's guard.
pub const WORKER_ERRORS: &[(u16, &str)] = &[
    (
        401,
        "Missing or wrong worker key, or a run token whose run is over",
    ),
    (
        403,
        "A run token used outside its own ticket, project or job",
    ),
    (
        503,
        "No worker key is configured and the server was told to fail closed",
    ),
];

/// Every operation of a path item, mutably.
fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// Every operation of the document, mutably.
fn all_operations(doc: &mut OpenApi) -> impl Iterator<Item = &mut Operation> {
    doc.paths.paths.values_mut().flat_map(operations)
}

/// A JSON error answer.
fn error_response(description: &str) -> Response {
    let mut response = Response::new(description);
    response.content.insert(
        "application/json".into(),
        RefOr::T(Content::new(Some(RefOr::Ref(
            utoipa::openapi::Ref::from_schema_name(ERROR_SCHEMA),
        )))),
    );
    response
}

/// Adds `status` to the operation's answers unless a handler documented it already.
fn add_error(op: &mut Operation, status: u16, description: &str) {
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| RefOr::T(error_response(description)));
}

/// Marks every operation of a route group as requiring `scheme` and documents the group
/// guard's answers. Call it on the group whose routes carry that guard.
pub fn guard(doc: &mut OpenApi, scheme: &str, errors: &[(u16, &str)]) {
    for op in all_operations(doc) {
        op.security = Some(vec![SecurityRequirement::new(scheme, Vec::<String>::new())]);
        for (status, description) in errors {
            add_error(op, *status, description);
        }
    }
}

fn default_description(status: &str) -> &'static str {
    match status {
        "200" | "201" => "Success",
        "204" => "No content",
        "400" => {
            "Invalid request: malformed JSON, a wrong field type, or a value the endpoint refuses"
        }
        "401" => "Missing or invalid credential",
        "403" => "The credential may not use this endpoint",
        "404" => "Not found (an unknown or malformed id)",
        "409" => "Conflict with the resource's current state",
        "413" => "Request body too large",
        "415" => "Content-Type must be application/json",
        "502" => "An upstream service (GitHub) failed",
        "503" => "Unavailable",
        _ => "Answer",
    }
}

/// Documents what the shared extractors and fallbacks answer, gives every error answer the
/// JSON error body and every answer a description.
fn shared_errors(op: &mut Operation) {
    let has_path_id = op.parameters.iter().flatten().any(|p| match p {
        RefOr::T(p) => p.parameter_in == utoipa::openapi::path::ParameterIn::Path,
        RefOr::Ref(_) => false,
    });
    if has_path_id {
        add_error(op, 404, default_description("404"));
    }
    if op.request_body.is_some() {
        add_error(op, 400, default_description("400"));
        add_error(op, 413, default_description("413"));
        add_error(op, 415, default_description("415"));
    }
    for (status, response) in op.responses.responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        if response.description.is_empty() {
            response.description = default_description(status).to_owned();
        }
        let is_error = status.starts_with('4') || status.starts_with('5');
        if is_error && response.content.is_empty() {
            *response = error_response(&response.description);
        }
    }
}

/// A link to `operation_id` with these parameters (and body).
fn link(operation_id: &str, parameters: &[(&str, &str)], body: Option<Value>) -> Value {
    let parameters: Map<String, Value> = parameters
        .iter()
        .map(|(name, expr)| ((*name).to_owned(), json!(expr)))
        .collect();
    let mut link = json!({"operationId": operation_id, "parameters": parameters});
    if let Some(body) = body {
        link["requestBody"] = body;
    }
    link
}

/// Operations that take a `{project_id}` and nothing else from their path.
const PROJECT_OPERATIONS: &[&str] = &[
    "get_project",
    "update_project",
    "get_graph",
    "update_graph",
    "get_kanban",
    "update_kanban",
    "list_tickets",
    "create_ticket",
    "list_notes",
    "create_note",
    "index_memory",
    "retrieve_memory",
    "delete_memory",
    "project_review",
];

/// Operations that take `{project_id}` and `{ticket_id}`.
const TICKET_OPERATIONS: &[&str] = &[
    "get_ticket",
    "patch_ticket",
    "delete_ticket",
    "list_ticket_logs",
    "list_ticket_jobs",
    "cancel_ticket",
    "get_worker_context",
    "post_log",
    "complete_ticket",
    "cancel_requested",
    "enqueue_review_job",
];

/// Operations on a ticket's pull request (404 until the ticket has one).
const PULL_REQUEST_OPERATIONS: &[&str] = &["ticket_review", "post_comment", "approve", "merge"];

/// Operations that take `{project_id}` and `{note_id}`.
const NOTE_OPERATIONS: &[&str] = &["get_note", "update_note", "delete_note"];

/// Operations that take a `{job_id}`.
const JOB_OPERATIONS: &[&str] = &[
    "get_job",
    "complete_job",
    "fail_job",
    "heartbeat_job",
    "release_job",
];

/// Named links of one answer.
type Links = Vec<(String, Value)>;

/// Links to each of `operations`, all with the same parameters.
fn links_to(operations: &[&str], parameters: &[(&str, &str)]) -> Links {
    operations
        .iter()
        .map(|op| (op.to_string(), link(op, parameters, None)))
        .collect()
}

/// A link to `operation_id` with a request body and no parameters.
fn link_with_body(operation_id: &str, body: Value) -> (String, Value) {
    (operation_id.to_owned(), link(operation_id, &[], Some(body)))
}

/// The links of one operation's answer.
struct LinkSource {
    operation: &'static str,
    status: &'static str,
    links: Links,
}

/// The links from answers that create or name a project, ticket, note or job to the
/// operations on it.
fn link_table() -> Vec<LinkSource> {
    let project = [("project_id", "$response.body#/id")];
    let ticket = [
        ("project_id", "$response.body#/project_id"),
        ("ticket_id", "$response.body#/id"),
    ];
    let note = [
        ("project_id", "$response.body#/project_id"),
        ("note_id", "$response.body#/id"),
    ];
    let job = [("job_id", "$response.body#/job_id")];
    let ticket_of_job = [
        ("project_id", "$response.body#/project_id"),
        ("ticket_id", "$response.body#/ticket_id"),
    ];
    let same_ticket = [
        ("project_id", "$request.path.project_id"),
        ("ticket_id", "$request.path.ticket_id"),
    ];
    let mut created_project = links_to(PROJECT_OPERATIONS, &project);
    created_project.push((
        "delete_project".into(),
        link(
            "delete_project",
            &project,
            Some(json!({"confirm_name": "$response.body#/name"})),
        ),
    ));
    created_project.push(link_with_body(
        "start_job",
        json!({"project_id": "$response.body#/id"}),
    ));
    let mut claimed = links_to(JOB_OPERATIONS, &job);
    claimed.extend(links_to(TICKET_OPERATIONS, &ticket_of_job));
    let mut enqueued = claimed.clone();
    enqueued.push(link_with_body(
        "start_job",
        json!({"project_id": "$response.body#/project_id"}),
    ));
    let source = |operation, status, links| LinkSource {
        operation,
        status,
        links,
    };
    vec![
        source("create_project", "201", created_project),
        source(
            "update_project",
            "200",
            links_to(PROJECT_OPERATIONS, &project),
        ),
        source("create_ticket", "201", links_to(TICKET_OPERATIONS, &ticket)),
        source("patch_ticket", "200", links_to(TICKET_OPERATIONS, &ticket)),
        // Completing a ticket records its pull request: the review operations then find it.
        source(
            "complete_ticket",
            "200",
            links_to(PULL_REQUEST_OPERATIONS, &same_ticket),
        ),
        source("create_note", "201", links_to(NOTE_OPERATIONS, &note)),
        source("start_job", "200", claimed),
        source("enqueue_review_job", "201", enqueued),
    ]
}

/// Adds the links of [`link_table`] to the answers they start from.
fn add_links(doc: &mut OpenApi) {
    let table = link_table();
    for op in all_operations(doc) {
        let id = op.operation_id.clone().unwrap_or_default();
        for source in table.iter().filter(|s| s.operation == id) {
            let Some(RefOr::T(response)) = op.responses.responses.get_mut(source.status) else {
                continue;
            };
            for (name, value) in &source.links {
                let parsed = serde_json::from_value(value.clone())
                    .expect("a link of the table is a valid OpenAPI link");
                response.links.insert(name.clone(), RefOr::T(parsed));
            }
        }
    }
}

/// `GET /api/settings`: every allowed key; sensitive ones as whether they are set.
pub struct SettingsView;

impl PartialSchema for SettingsView {
    fn schema() -> RefOr<Schema> {
        let properties: Map<String, Value> = ALLOWED_KEYS
            .iter()
            .map(|k| {
                let schema = if is_sensitive(k) {
                    json!({"type": "boolean", "description": "Whether it is set (the value is never shown)"})
                } else {
                    json!({"type": ["string", "null"]})
                };
                ((*k).to_owned(), schema)
            })
            .collect();
        schema_from(json!({
            "type": "object",
            "description": "Every allowed setting: stored value or null; sensitive keys as whether they are set. Environment values are not shown.",
            "required": ALLOWED_KEYS,
            "properties": properties,
        }))
    }
}

impl ToSchema for SettingsView {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Settings")
    }
}

/// `PUT /api/settings`: values of allowed keys; other keys are ignored.
pub struct SettingsUpdate;

impl PartialSchema for SettingsUpdate {
    fn schema() -> RefOr<Schema> {
        let scalar = json!({"type": ["string", "number", "boolean", "null"]});
        let properties: Map<String, Value> = ALLOWED_KEYS
            .iter()
            .map(|k| ((*k).to_owned(), scalar.clone()))
            .collect();
        schema_from(json!({
            "type": "object",
            "description": "Settings to store: a string, number or boolean stores it (sensitive keys encrypted), null or blank deletes it. Keys that are not settings are ignored.",
            "properties": properties,
        }))
    }
}

impl ToSchema for SettingsUpdate {}

fn schema_from(v: Value) -> RefOr<Schema> {
    RefOr::T(serde_json::from_value(v).expect("a valid schema"))
}

/// Turns `allOf: [oneOf: [X, null], {object}]` (utoipa's rendering of a flattened `Option<X>`)
/// into one object where X's properties are optional: they are present or absent together.
fn inline_optional_flatten(doc: &mut OpenApi, schema: &str) {
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    let Some(RefOr::T(found)) = components.schemas.get(schema) else {
        return;
    };
    let mut v = serde_json::to_value(found).expect("schemas serialise");
    let Some(parts) = v.get("allOf").and_then(Value::as_array).cloned() else {
        return;
    };
    let mut merged = json!({"type": "object", "properties": {}, "required": []});
    for part in parts {
        let part = match part.get("oneOf").and_then(Value::as_array) {
            Some(alternatives) => {
                let name = alternatives
                    .iter()
                    .find_map(|a| a.get("$ref").and_then(Value::as_str))
                    .and_then(|r| r.rsplit('/').next())
                    .unwrap_or_default();
                let Some(RefOr::T(inner)) = components.schemas.get(name) else {
                    continue;
                };
                let mut inner = serde_json::to_value(inner).expect("schemas serialise");
                inner["required"] = json!([]);
                inner
            }
            None => part,
        };
        if let Some(props) = part.get("properties").and_then(Value::as_object) {
            for (k, p) in props {
                merged["properties"][k] = p.clone();
            }
        }
        if let Some(required) = part.get("required").and_then(Value::as_array) {
            let list = merged["required"].as_array_mut().expect("an array");
            list.extend(required.iter().cloned());
        }
    }
    if let Some(description) = v.get_mut("description").map(Value::take) {
        merged["description"] = description;
    }
    components
        .schemas
        .insert(schema.to_owned(), schema_from(merged));
}

/// Rewrites `{"type": [T, "null"], "format": F}` as `{"anyOf": [{"type": T, "format": F},
/// {"type": "null"}]}`: the same values, in the form generators honour the format in (a
/// nullable UUID otherwise comes out as any string).
fn split_nullable_format(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let nullable_format = map.contains_key("format")
                && map
                    .get("type")
                    .and_then(Value::as_array)
                    .is_some_and(|t| t.len() == 2 && t.contains(&json!("null")));
            if nullable_format {
                let types = map["type"].as_array().expect("checked").clone();
                let inner = types.into_iter().find(|t| t != "null").expect("checked");
                let mut value = map.clone();
                value.insert("type".into(), inner);
                value.remove("description");
                let description = map.remove("description");
                map.clear();
                map.insert("anyOf".into(), json!([value, {"type": "null"}]));
                if let Some(d) = description {
                    map.insert("description".into(), d);
                }
            }
            map.values_mut().for_each(split_nullable_format);
        }
        Value::Array(items) => items.iter_mut().for_each(split_nullable_format),
        _ => {}
    }
}

/// The finished document as served: [`finish`]ed, then nullable formats split.
pub fn to_json(doc: &OpenApi) -> String {
    let mut v = serde_json::to_value(doc).expect("the OpenAPI document serialises");
    if let Some(schemas) = v.pointer_mut("/components/schemas") {
        split_nullable_format(schemas);
    }
    v.to_string()
}

/// Finishes the whole document: the JSON error schema, the shared error answers, every
/// answer's description, the links, and schemas utoipa renders wrongly.
pub fn finish(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.schemas.insert(
        ERROR_SCHEMA.to_owned(),
        terarchitect_worker_api::ErrorBody::schema(),
    );
    for op in all_operations(doc) {
        shared_errors(op);
    }
    add_links(doc);
    inline_optional_flatten(doc, "ClaimedJob");
}
