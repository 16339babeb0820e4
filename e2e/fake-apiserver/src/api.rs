//! The HTTP front end: one handler that records the request, applies injected faults and dispatches
//! to discovery, the store and watches.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, header};
use serde_json::{Value, json};

use crate::discovery;
use crate::error::ApiError;
use crate::faults::{RecordedRequest, Verb};
use crate::meta;
use crate::registry::ResourceType;
use crate::routing::{self, Query, ResourcePath, Route};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::server::Shared;
use crate::store::{DeleteOptions, Deleted, ObjKey, Propagation, WriteKind, WriteOptions};
use crate::watch::{self, WatchRequest, WatchStart};

const MAX_BODY: usize = 64 << 20;

pub(crate) fn json_response(code: u16, value: &Value) -> Response {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(value).unwrap_or_default()))
        .expect("valid response")
}

fn error_response(err: &ApiError) -> Response {
    json_response(err.code, &err.to_status())
}

/// An object as served at `version`, or as `PartialObjectMetadata` for metadata-only requests.
pub(crate) fn present(obj: &Value, rt: &ResourceType, version: &str, metadata_only: bool) -> Value {
    if metadata_only {
        return json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadata",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        });
    }
    let mut out = obj.clone();
    out["apiVersion"] = json!(rt.api_version(version));
    out
}

/// The single request handler behind every path.
pub(crate) async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => bytes,
        Err(err) => {
            let err = ApiError::new(
                413,
                "RequestEntityTooLarge",
                format!("unreadable request body: {err}"),
            );
            return error_response(&err);
        }
    };
    let route = Route::parse(parts.uri.path());
    let query = Query::parse(parts.uri.query());
    let mut record = RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        content_type: header_str(&parts.headers, header::CONTENT_TYPE).map(String::from),
        accept: header_str(&parts.headers, header::ACCEPT).map(String::from),
        body: String::from_utf8_lossy(&bytes).into_owned(),
        verb: None,
        group: None,
        resource: None,
        namespace: None,
        name: None,
        subresource: None,
        status: 0,
    };
    if let Route::Resource(path) = &route {
        record.verb = routing::verb(&parts.method, path, &query);
        record.group = Some(path.group.clone());
        record.resource = Some(path.plural.clone());
        record.namespace = path.namespace.clone();
        record.name = path.name.clone();
        record.subresource = path.subresource.clone();
    }
    let response = if let Some(code) = shared.faults.take(&record) {
        error_response(&ApiError::from_code(
            code,
            format!("injected fault ({code})"),
        ))
    } else {
        let latency = shared.faults.latency();
        if !latency.is_zero() && record.verb != Some(Verb::Watch) {
            tokio::time::sleep(latency).await;
        }
        let request = Incoming {
            method: parts.method,
            headers: parts.headers,
            query,
            body: bytes,
        };
        match dispatch(&shared, route, &request) {
            Ok(response) => response,
            Err(err) => error_response(&err),
        }
    };
    record.status = response.status().as_u16();
    shared.faults.record(record);
    response
}

struct Incoming {
    method: Method,
    headers: HeaderMap,
    query: Query,
    body: Bytes,
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn not_found_path() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

fn dispatch(shared: &Arc<Shared>, route: Route, req: &Incoming) -> Result<Response, ApiError> {
    if req.method != Method::GET && !matches!(route, Route::Resource(_)) {
        return Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        ));
    }
    let registry = || shared.store.read(|s| s.registry.clone());
    match route {
        Route::Version => Ok(json_response(200, &discovery::version())),
        Route::Health => Ok(Response::new(Body::from("ok"))),
        Route::CoreVersions => Ok(json_response(
            200,
            &discovery::core_versions(&shared.address),
        )),
        Route::Groups => Ok(json_response(200, &discovery::groups(&registry()))),
        Route::Group(group) => discovery::group(&registry(), &group)
            .map(|v| json_response(200, &v))
            .ok_or_else(not_found_path),
        Route::Resources { group, version } => discovery::resources(&registry(), &group, &version)
            .map(|v| json_response(200, &v))
            .ok_or_else(not_found_path),
        Route::Resource(path) => resource(shared, &path, req),
        Route::Unknown => Err(not_found_path()),
    }
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON in request body: {e}")))
}

fn resource(
    shared: &Arc<Shared>,
    path: &ResourcePath,
    req: &Incoming,
) -> Result<Response, ApiError> {
    let rt = shared
        .store
        .read(|s| s.registry.find(&path.group, &path.version, &path.plural))
        .ok_or_else(not_found_path)?;
    if (rt.namespaced && path.name.is_some() && path.namespace.is_none())
        || (!rt.namespaced && path.namespace.is_some())
    {
        return Err(not_found_path());
    }
    let status = match path.subresource.as_deref() {
        None => false,
        Some("status") if rt.status_subresource => true,
        Some(_) => return Err(not_found_path()),
    };
    let verb = routing::verb(&req.method, path, &req.query).ok_or_else(|| {
        ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    })?;
    if rt.namespaced && path.namespace.is_none() && verb == Verb::Create {
        return Err(not_found_path());
    }
    if status && !matches!(verb, Verb::Get | Verb::Update | Verb::Patch) {
        return Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        ));
    }
    let metadata_only = header_str(&req.headers, header::ACCEPT)
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"));
    let ns = path.namespace.as_deref();
    let name = path.name.as_deref().unwrap_or("");
    let opts = WriteOptions {
        manager: field_manager(req),
        dry_run: req.query.get("dryRun") == Some("All"),
        direct: false,
    };
    let show = |obj: &Value| present(obj, &rt, &path.version, metadata_only);
    match verb {
        Verb::Get => {
            let key = ObjKey::new(&rt, ns.unwrap_or(""), name);
            let obj = shared
                .store
                .read(|s| s.get(&key).cloned())
                .ok_or_else(|| rt.not_found(name))?;
            Ok(json_response(200, &show(&obj)))
        }
        Verb::List => list(shared, &rt, path, req, metadata_only),
        Verb::Watch => {
            let watch = watch_request(&rt, path, &req.query, metadata_only)?;
            Ok(Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(watch::stream(shared.clone(), watch))
                .expect("valid response"))
        }
        Verb::Create => {
            let body = parse_body(&req.body)?;
            let created = shared.store.write(|s| s.create(&rt, ns, body, &opts))?;
            Ok(json_response(201, &show(&created)))
        }
        Verb::Update => {
            let kind = WriteKind::Replace(parse_body(&req.body)?);
            let (obj, _) = shared
                .store
                .write(|s| s.write(&rt, ns.unwrap_or(""), name, status, kind, &opts))?;
            Ok(json_response(200, &show(&obj)))
        }
        Verb::Patch => {
            let kind = patch_kind(req)?;
            if matches!(kind, WriteKind::Apply { .. })
                && req.query.get("fieldManager").is_none_or(str::is_empty)
            {
                return Err(ApiError::bad_request(
                    "PATCH with apply requires fieldManager to be set",
                ));
            }
            let (obj, created) = shared
                .store
                .write(|s| s.write(&rt, ns.unwrap_or(""), name, status, kind, &opts))?;
            Ok(json_response(if created { 201 } else { 200 }, &show(&obj)))
        }
        Verb::Delete => {
            let options = delete_options(req)?;
            let key = ObjKey::new(&rt, ns.unwrap_or(""), name);
            let outcome = shared.store.write(|s| {
                let outcome = s.delete(&rt, ns.unwrap_or(""), name, &options)?;
                s.settle();
                Ok::<_, ApiError>(match outcome {
                    Deleted::Pending(obj) if !options.dry_run && !s.contains(&key) => {
                        Deleted::Gone(obj)
                    }
                    Deleted::Pending(_) if !options.dry_run => {
                        Deleted::Pending(s.get(&key).cloned().expect("present"))
                    }
                    other => other,
                })
            })?;
            Ok(match outcome {
                Deleted::Pending(obj) => json_response(200, &show(&obj)),
                Deleted::Gone(obj) => json_response(200, &success_status(&rt, &obj)),
            })
        }
        Verb::DeleteCollection => {
            let options = delete_options(req)?;
            let labels = LabelSelector::parse(req.query.get("labelSelector").unwrap_or(""))?;
            let fields = FieldSelector::parse(req.query.get("fieldSelector").unwrap_or(""), &rt)?;
            let (items, rv) = shared.store.write(|s| {
                let names: Vec<ObjKey> = s
                    .list(&rt, ns)
                    .filter(|(_, o)| labels.matches(o) && fields.matches(o))
                    .map(|(k, _)| k.clone())
                    .collect();
                let mut items = Vec::new();
                for key in names {
                    match s.delete(&rt, &key.namespace, &key.name, &options) {
                        Ok(Deleted::Gone(obj) | Deleted::Pending(obj)) => items.push(obj),
                        Err(err) if err.code == 404 => {}
                        Err(err) => return Err(err),
                    }
                }
                Ok((items, s.rv))
            })?;
            let items: Vec<Value> = items.iter().map(show).collect();
            Ok(json_response(
                200,
                &list_body(&rt, &path.version, metadata_only, items, rv, None, None),
            ))
        }
    }
}

/// The field manager of a write: `?fieldManager=`, else derived from the User-Agent as a real server does.
fn field_manager(req: &Incoming) -> String {
    if let Some(manager) = req.query.get("fieldManager").filter(|m| !m.is_empty()) {
        return manager.to_string();
    }
    header_str(&req.headers, header::USER_AGENT)
        .and_then(|ua| ua.split('/').next())
        .filter(|m| !m.is_empty())
        .unwrap_or("unknown")
        .to_string()
}

fn patch_kind(req: &Incoming) -> Result<WriteKind, ApiError> {
    let content_type = header_str(&req.headers, header::CONTENT_TYPE).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    Ok(match media {
        "application/merge-patch+json" => WriteKind::Merge(parse_body(&req.body)?),
        "application/json-patch+json" => WriteKind::Json(parse_body(&req.body)?),
        "application/strategic-merge-patch+json" => WriteKind::Strategic(parse_body(&req.body)?),
        "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
            let config = match serde_json::from_slice::<Value>(&req.body) {
                Ok(v) => v,
                Err(_) => {
                    let text = std::str::from_utf8(&req.body)
                        .map_err(|e| ApiError::bad_request(e.to_string()))?;
                    serde_saphyr::from_str::<Value>(text)
                        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
                }
            };
            WriteKind::Apply {
                config,
                force: req.query.flag("force"),
            }
        }
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format ({other:?}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
                ),
            ));
        }
    })
}

fn delete_options(req: &Incoming) -> Result<DeleteOptions, ApiError> {
    let body = if req.body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        parse_body(&req.body)?
    };
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(String::from);
    let mut options = DeleteOptions {
        propagation: None,
        precondition_uid: body.get("preconditions").and_then(|p| text(p, "uid")),
        precondition_resource_version: body
            .get("preconditions")
            .and_then(|p| text(p, "resourceVersion")),
        grace_period_seconds: body.get("gracePeriodSeconds").and_then(Value::as_i64),
        dry_run: body
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|x| x == "All"))
            || req.query.get("dryRun") == Some("All"),
    };
    let policy = text(&body, "propagationPolicy")
        .or_else(|| req.query.get("propagationPolicy").map(String::from));
    if let Some(policy) = policy {
        options.propagation = Some(Propagation::parse(&policy)?);
    } else if let Some(orphan) = body.get("orphanDependents").and_then(Value::as_bool) {
        options.propagation = Some(if orphan {
            Propagation::Orphan
        } else {
            Propagation::Background
        });
    }
    if options.grace_period_seconds.is_none() {
        options.grace_period_seconds = req
            .query
            .get("gracePeriodSeconds")
            .and_then(|g| g.parse().ok());
    }
    Ok(options)
}

fn success_status(rt: &ResourceType, obj: &Value) -> Value {
    let mut details = json!({"name": meta::name(obj), "kind": rt.plural, "uid": meta::uid(obj)});
    if !rt.group.is_empty() {
        details["group"] = json!(rt.group);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

fn list_body(
    rt: &ResourceType,
    version: &str,
    metadata_only: bool,
    items: Vec<Value>,
    rv: u64,
    continue_token: Option<String>,
    remaining: Option<usize>,
) -> Value {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
    }
    if let Some(remaining) = remaining {
        metadata["remainingItemCount"] = json!(remaining);
    }
    let (api_version, kind) = if metadata_only {
        (
            "meta.k8s.io/v1".to_string(),
            "PartialObjectMetadataList".to_string(),
        )
    } else {
        (rt.api_version(version), format!("{}List", rt.kind))
    };
    json!({"apiVersion": api_version, "kind": kind, "metadata": metadata, "items": items})
}

fn encode_continue(rv: u64, key: &ObjKey) -> String {
    let raw = format!("{rv}\n{}\n{}", key.namespace, key.name);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(token: &str) -> Option<(u64, String, String)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let mut parts = text.splitn(3, '\n');
    Some((
        parts.next()?.parse().ok()?,
        parts.next()?.to_string(),
        parts.next()?.to_string(),
    ))
}

fn list(
    shared: &Arc<Shared>,
    rt: &ResourceType,
    path: &ResourcePath,
    req: &Incoming,
    metadata_only: bool,
) -> Result<Response, ApiError> {
    let labels = LabelSelector::parse(req.query.get("labelSelector").unwrap_or(""))?;
    let fields = FieldSelector::parse(req.query.get("fieldSelector").unwrap_or(""), rt)?;
    let limit: usize = match req.query.get("limit") {
        Some(l) => l
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        None => 0,
    };
    let token = match req.query.get("continue").filter(|t| !t.is_empty()) {
        Some(t) => Some(
            decode_continue(t).ok_or_else(|| ApiError::bad_request("continue key is not valid"))?,
        ),
        None => None,
    };
    let body = shared.store.read(|s| {
        let mut list_rv = s.rv;
        let mut items: Vec<(&ObjKey, &Value)> = s
            .list(rt, path.namespace.as_deref())
            .filter(|(_, o)| labels.matches(o) && fields.matches(o))
            .collect();
        if let Some((rv, ns, name)) = &token {
            if *rv < s.compacted_rv {
                return Err(ApiError::new(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ));
            }
            list_rv = *rv;
            items.retain(|(k, _)| (k.namespace.as_str(), k.name.as_str()) > (ns.as_str(), name.as_str()));
        }
        let (mut continue_token, mut remaining) = (None, None);
        if limit > 0 && items.len() > limit {
            remaining = Some(items.len() - limit);
            items.truncate(limit);
            continue_token = items.last().map(|(k, _)| encode_continue(list_rv, k));
        }
        let items = items
            .into_iter()
            .map(|(_, o)| present(o, rt, &path.version, metadata_only))
            .collect();
        Ok(list_body(rt, &path.version, metadata_only, items, list_rv, continue_token, remaining))
    })?;
    Ok(json_response(200, &body))
}

fn watch_request(
    rt: &Arc<ResourceType>,
    path: &ResourcePath,
    query: &Query,
    metadata_only: bool,
) -> Result<WatchRequest, ApiError> {
    let send_initial = query.flag("sendInitialEvents");
    let start = match query.get("resourceVersion").unwrap_or("") {
        "" | "0" => WatchStart::Snapshot {
            initial_events_end: send_initial,
        },
        _ if send_initial => WatchStart::Snapshot {
            initial_events_end: true,
        },
        rv => WatchStart::Since(
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version {rv:?}")))?,
        ),
    };
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    // Watching a single object (`.../pods/name?watch=true`) is a watch with a name field selector.
    let mut field_text = query.get("fieldSelector").unwrap_or("").to_string();
    if let Some(name) = &path.name {
        field_text = format!("{field_text},metadata.name={name}");
    }
    Ok(WatchRequest {
        rt: rt.clone(),
        version: path.version.clone(),
        namespace: path.namespace.clone(),
        labels: LabelSelector::parse(query.get("labelSelector").unwrap_or(""))?,
        fields: FieldSelector::parse(&field_text, rt)?,
        start,
        timeout,
        bookmarks: query.flag("allowWatchBookmarks"),
        metadata_only,
    })
}
