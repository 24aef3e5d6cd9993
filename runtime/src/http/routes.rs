//! The one route table: every route, its permission, and the handler it names.
//!
//! Every route is declared once in `ROUTES` with the permission it needs; `app()` builds the router from
//! this table, the auth layer reads public routes from it, and the permission layer looks routes up in
//! it. A route with `permission: None` is public.

use axum::routing::{MethodRouter, get, post};
use http::Method;

use crate::http::handlers::{
    chat_completions, embeddings, get_model, healthz, list_models, messages, usage, usage_report,
};
use crate::state::AppState;

/// One route: method, path, the permission (token scope) it needs, and its handler.
#[derive(Debug)]
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
    /// `None` marks a public route (no token needed). Public routes must not take path parameters.
    pub permission: Option<&'static str>,
    pub handler: fn() -> MethodRouter<AppState>,
}

/// The permission scopes tokens can carry.
pub const PERMISSIONS: &[&str] = &[
    "models:read",
    "chat:write",
    "embeddings:write",
    "usage:read",
];

pub static ROUTES: &[RouteSpec] = &[
    RouteSpec {
        method: Method::GET,
        path: "/healthz",
        permission: None,
        handler: || get(healthz),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/models",
        permission: Some("models:read"),
        handler: || get(list_models),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/models/{id}",
        permission: Some("models:read"),
        handler: || get(get_model),
    },
    RouteSpec {
        method: Method::POST,
        path: "/v1/chat/completions",
        permission: Some("chat:write"),
        handler: || post(chat_completions),
    },
    RouteSpec {
        method: Method::POST,
        path: "/v1/messages",
        permission: Some("chat:write"),
        handler: || post(messages),
    },
    RouteSpec {
        method: Method::POST,
        path: "/v1/embeddings",
        permission: Some("embeddings:write"),
        handler: || post(embeddings),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/usage",
        permission: Some("usage:read"),
        handler: || get(usage),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/usage/report",
        permission: Some("usage:read"),
        handler: || get(usage_report),
    },
];

/// Whether `(method, path)` is a public route. Exact match only: public routes take no parameters.
pub fn is_public(method: &Method, path: &str) -> bool {
    ROUTES
        .iter()
        .any(|r| r.permission.is_none() && r.method == method && r.path == path)
}

/// The methods the table declares for `path` (a route's matched path).
pub fn methods_of(path: &str) -> Vec<&'static str> {
    ROUTES
        .iter()
        .filter(|r| r.path == path)
        .map(|r| r.method.as_str())
        .collect()
}

/// The table entry for a matched route.
pub fn lookup(method: &Method, matched_path: &str) -> Option<&'static RouteSpec> {
    ROUTES.iter().find(|r| {
        r.path == matched_path
            && (r.method == method || (method == Method::HEAD && r.method == Method::GET))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_a_known_permission_and_public_routes_take_no_parameters() {
        // Invariant: every route has an entry in one permission table; public routes are listed there.
        for r in ROUTES {
            match r.permission {
                Some(p) => assert!(
                    PERMISSIONS.contains(&p),
                    "{} uses unknown permission {p}",
                    r.path
                ),
                None => assert!(
                    !r.path.contains('{'),
                    "public route {} takes parameters",
                    r.path
                ),
            }
        }
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(
                seen.insert((r.method.clone(), r.path)),
                "duplicate route {}",
                r.path
            );
        }
    }
}
