//! `GET /`: where to go next, for a machine (JSON) or a person (HTML, when the client prefers
//! `text/html`, as browsers do). Public, like `/health`.

use axum::Json;
use axum::http::header::{ACCEPT, VARY};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;
use utoipa::OpenApi;

/// The service name.
pub const SERVICE: &str = "terarchitect-api-server";
/// The README's quick start.
pub const QUICK_START_URL: &str = concat!(env!("CARGO_PKG_REPOSITORY"), "#quick-start");

/// The landing document.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Landing {
    /// Always `terarchitect-api-server`.
    pub service: &'static str,
    /// The server's version.
    pub version: &'static str,
    /// One line about the service.
    pub description: &'static str,
    /// Where to go next.
    pub links: Links,
}

/// Links of the landing document (paths on this server, except `quick_start`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Links {
    /// The OpenAPI 3.1 document of every endpoint.
    pub openapi: &'static str,
    /// Liveness.
    pub health: &'static str,
    /// Readiness (the database answers).
    pub readiness: &'static str,
    /// Prometheus metrics.
    pub metrics: &'static str,
    /// The projects.
    pub projects: &'static str,
    /// The README's quick start: from the first start to a queued agent job.
    pub quick_start: &'static str,
}

/// The landing document of this build.
pub fn landing() -> Landing {
    Landing {
        service: SERVICE,
        version: env!("CARGO_PKG_VERSION"),
        description: "Terarchitect turns Kanban tickets into pull requests: moving a ticket to In Progress queues an agent job.",
        links: Links {
            openapi: "/api/openapi.json",
            health: "/health",
            readiness: "/readyz",
            metrics: "/metrics",
            projects: "/api/projects",
            quick_start: QUICK_START_URL,
        },
    }
}

/// The OpenAPI description of `GET /`.
#[derive(OpenApi)]
#[openapi(paths(index), components(schemas(Landing, Links)))]
pub struct RootDoc;

/// Service name, version and links: JSON, or an HTML page when the client prefers `text/html`.
#[utoipa::path(get, path = "/", tag = "service",
    responses((status = 200, description = "The landing document", content(
        (Landing = "application/json"),
        (String = "text/html"),
    ))))]
pub async fn index(headers: HeaderMap) -> Response {
    let accept = headers.get(ACCEPT).and_then(|v| v.to_str().ok());
    let doc = landing();
    let mut response = if prefers_html(accept) {
        Html(render_html(&doc)).into_response()
    } else {
        Json(doc).into_response()
    };
    response
        .headers_mut()
        .insert(VARY, HeaderValue::from_static("accept"));
    response
}

/// Whether an `Accept` header ranks `text/html` above `application/json` (JSON on a tie or
/// without the header, so `curl` gets JSON and browsers get HTML).
pub fn prefers_html(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return false };
    quality(accept, "text", "html") > quality(accept, "application", "json")
}

/// The quality an `Accept` header gives `kind/sub`: that of the most specific matching range
/// (`kind/sub` over `kind/*` over `*/*`), 0 when none matches.
fn quality(accept: &str, kind: &str, sub: &str) -> f32 {
    let mut best: Option<(u8, f32)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let Some((k, s)) = parts.next().and_then(|m| m.split_once('/')) else {
            continue;
        };
        let specificity = match (k, s) {
            _ if k.eq_ignore_ascii_case(kind) && s.eq_ignore_ascii_case(sub) => 2,
            _ if k.eq_ignore_ascii_case(kind) && s == "*" => 1,
            ("*", "*") => 0,
            _ => continue,
        };
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
            .and_then(|(_, v)| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if best.is_none_or(|(spec, _)| specificity > spec) {
            best = Some((specificity, q));
        }
    }
    best.map_or(0.0, |(_, q)| q)
}

fn render_html(doc: &Landing) -> String {
    let l = &doc.links;
    let item = |href: &str, text: &str| format!("<li><a href=\"{href}\">{text}</a></li>\n");
    let links = [
        item(
            l.quick_start,
            "Quick start: from the first start to a queued agent job",
        ),
        item(l.openapi, "OpenAPI document (every endpoint)"),
        item(l.projects, "Projects"),
        item(l.health, "Health"),
        item(l.readiness, "Readiness"),
        item(l.metrics, "Metrics (Prometheus)"),
    ]
    .concat();
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>Terarchitect API</title></head>\n\
         <body>\n<h1>Terarchitect API</h1>\n<p>{service} {version}. {description}</p>\n<ul>\n{links}</ul>\n\
         <p>Machines: request this page with <code>Accept: application/json</code>.</p>\n</body>\n</html>\n",
        service = doc.service,
        version = doc.version,
        description = doc.description,
    )
}

#[cfg(test)]
mod tests {
    use super::prefers_html;

    #[test]
    fn browsers_get_html_and_everyone_else_json() {
        let firefox = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        let chrome = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7";
        assert!(prefers_html(Some(firefox)));
        assert!(prefers_html(Some(chrome)));
        assert!(prefers_html(Some("text/*")));
        assert!(prefers_html(Some("application/json;q=0.5, text/html")));
        for json in [
            None,
            Some("*/*"),
            Some("application/json"),
            Some("text/html;q=0.5, application/json"),
            Some("text/html, application/json"),
            Some("text/html;q=0, */*"),
            Some("garbage"),
        ] {
            assert!(!prefers_html(json), "{json:?}");
        }
    }
}
