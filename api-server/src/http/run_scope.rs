//! What a run token may do: the complete list of worker routes it reaches, and which of its
//! grant's ids each route's path must name. Every other route answers 403 to a run token.

use axum::http::Method;
use uuid::Uuid;

use crate::run_token::RunGrant;

/// Which of the grant's ids a route must name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `{project_id}` and `{ticket_id}` are the run's project and ticket.
    Ticket,
    /// `{project_id}` is the run's project.
    Project,
    /// `{job_id}` is the run's job.
    Job,
}

/// Routes (method, matched path template, scope) a run token may use.
pub const RUN_TOKEN_ROUTES: [(Method, &str, Scope); 8] = [
    (
        Method::GET,
        "/api/projects/{project_id}/tickets/{ticket_id}/worker-context",
        Scope::Ticket,
    ),
    (
        Method::POST,
        "/api/projects/{project_id}/tickets/{ticket_id}/logs",
        Scope::Ticket,
    ),
    (
        Method::POST,
        "/api/projects/{project_id}/tickets/{ticket_id}/complete",
        Scope::Ticket,
    ),
    (
        Method::GET,
        "/api/projects/{project_id}/tickets/{ticket_id}/cancel-requested",
        Scope::Ticket,
    ),
    (
        Method::POST,
        "/api/projects/{project_id}/memory/retrieve",
        Scope::Project,
    ),
    (
        Method::POST,
        "/api/projects/{project_id}/memory/index",
        Scope::Project,
    ),
    (
        Method::POST,
        "/api/worker/jobs/{job_id}/heartbeat",
        Scope::Job,
    ),
    (Method::GET, "/api/worker/jobs/{job_id}", Scope::Job),
];

/// Whether a run token with `grant` may call `method route` with these path parameters.
pub fn permits(method: &Method, route: &str, params: &[(&str, &str)], grant: &RunGrant) -> bool {
    let Some(scope) = RUN_TOKEN_ROUTES
        .iter()
        .find(|(m, r, _)| m == method && *r == route)
        .map(|(_, _, s)| *s)
    else {
        return false;
    };
    let is = |name: &str, id: Uuid| {
        params
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| Uuid::parse_str(v).ok())
            == Some(id)
    };
    match scope {
        Scope::Ticket => is("project_id", grant.project_id) && is("ticket_id", grant.ticket_id),
        Scope::Project => is("project_id", grant.project_id),
        Scope::Job => is("job_id", grant.job_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> RunGrant {
        RunGrant {
            job_id: Uuid::new_v4(),
            ticket_id: Uuid::new_v4(),
            project_id: Uuid::new_v4(),
            attempt: 1,
            run_token_attempt: Some(1),
            status: "running".into(),
            lease_expires_at: None,
            run_token_hash: None,
        }
    }

    #[test]
    fn ticket_routes_need_both_ids() {
        let g = grant();
        let route = RUN_TOKEN_ROUTES[0].1;
        let (p, t) = (g.project_id.to_string(), g.ticket_id.to_string());
        let other = Uuid::new_v4().to_string();
        let ok = [("project_id", p.as_str()), ("ticket_id", t.as_str())];
        assert!(permits(&Method::GET, route, &ok, &g));
        assert!(!permits(&Method::POST, route, &ok, &g), "method matters");
        let wrong_ticket = [("project_id", p.as_str()), ("ticket_id", other.as_str())];
        assert!(!permits(&Method::GET, route, &wrong_ticket, &g));
        let wrong_project = [("project_id", other.as_str()), ("ticket_id", t.as_str())];
        assert!(!permits(&Method::GET, route, &wrong_project, &g));
        assert!(!permits(&Method::GET, route, &[], &g));
    }

    #[test]
    fn unlisted_routes_are_refused() {
        let g = grant();
        let p = g.project_id.to_string();
        let j = g.job_id.to_string();
        assert!(!permits(&Method::POST, "/api/worker/jobs/start", &[], &g));
        assert!(!permits(
            &Method::POST,
            "/api/worker/jobs/{job_id}/complete",
            &[("job_id", j.as_str())],
            &g
        ));
        assert!(!permits(
            &Method::POST,
            "/api/projects/{project_id}/memory/delete",
            &[("project_id", p.as_str())],
            &g
        ));
        assert!(permits(
            &Method::GET,
            "/api/worker/jobs/{job_id}",
            &[("job_id", j.as_str())],
            &g
        ));
    }
}

#[cfg(test)]
mod route_tests {
    use super::RUN_TOKEN_ROUTES;
    use utoipa_axum::router::OpenApiRouter;

    /// Every listed route exists with that method, so a renamed route cannot silently drop out
    /// of the list (which would only deny, but would break agents).
    #[test]
    fn every_listed_route_exists() {
        let (_, doc) = OpenApiRouter::<crate::state::AppState>::new()
            .merge(super::super::worker::router())
            .merge(super::super::queue::router())
            .merge(super::super::memory::router())
            .split_for_parts();
        for (method, route, _) in RUN_TOKEN_ROUTES {
            let item = doc
                .paths
                .paths
                .get(route)
                .unwrap_or_else(|| panic!("{route} is not a worker route"));
            let op = match method.as_str() {
                "GET" => item.get.as_ref(),
                "POST" => item.post.as_ref(),
                _ => None,
            };
            assert!(op.is_some(), "{method} {route} is not a worker route");
        }
    }
}
