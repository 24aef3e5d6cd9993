//! The one route table: every route, its permission, and the handler it names.
//!
//! Every route is declared once in `ROUTES` with the permission it needs; `app()` builds the router from
//! this table, the auth layer reads public routes from it, and the permission layer looks routes up in
//! it. A route with `permission: None` is public.

use axum::routing::{MethodRouter, get, post};
use http::Method;

use crate::http::handlers::{
    chat_completions, embeddings, get_model, healthz, list_models, me, messages, openapi,
    readiness, usage, usage_report,
};
use crate::state::AppState;

/// One route: method, path, its operation id (what the access log and the OpenAPI document call
/// it), a one-line summary, the permission (token scope) it needs, and its handler.
#[derive(Debug)]
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
    /// Unique, lowerCamelCase, stable: clients and dashboards key on it.
    pub operation_id: &'static str,
    pub summary: &'static str,
    /// `None` marks a public route (no token needed). Public routes must not take path parameters.
    pub permission: Option<&'static str>,
    pub handler: fn() -> MethodRouter<AppState>,
}

/// The permission scopes tokens can carry, each with what it allows. Every one is used by a route.
pub const PERMISSIONS: &[(&str, &str)] = &[
    ("me:read", "read who the token says you are (`GET /v1/me`)"),
    ("models:read", "list the tenant's models"),
    ("chat:write", "call the tenant's chat models"),
    ("embeddings:write", "call the tenant's embedding models"),
    ("usage:read", "read the tenant's usage, reports and budget"),
];

/// Whether `permission` is one of `PERMISSIONS`.
pub fn is_permission(permission: &str) -> bool {
    PERMISSIONS.iter().any(|(p, _)| *p == permission)
}

pub static ROUTES: &[RouteSpec] = &[
    RouteSpec {
        method: Method::GET,
        path: "/healthz",
        operation_id: "liveness",
        summary: "The process is up (no dependency is checked)",
        permission: None,
        handler: || get(healthz),
    },
    RouteSpec {
        method: Method::GET,
        path: "/readyz",
        operation_id: "readiness",
        summary: "The registry, the usage store and the secret store answer",
        permission: None,
        handler: || get(readiness),
    },
    RouteSpec {
        method: Method::GET,
        path: "/openapi.json",
        operation_id: "openapi",
        summary: "This API's OpenAPI 3.1 document",
        permission: None,
        handler: || get(openapi),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/me",
        operation_id: "getMe",
        summary: "Who the token says you are: tenant, subject, issuer, permissions",
        permission: Some("me:read"),
        handler: || get(me),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/models",
        operation_id: "listModels",
        summary: "The models the tenant's policy permits (OpenAI format)",
        permission: Some("models:read"),
        handler: || get(list_models),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/models/{id}",
        operation_id: "getModel",
        summary: "One model of the tenant's policy, by id or alias",
        permission: Some("models:read"),
        handler: || get(get_model),
    },
    RouteSpec {
        method: Method::POST,
        path: "/v1/chat/completions",
        operation_id: "createChatCompletion",
        summary: "A chat completion, plain or streamed (OpenAI-compatible), metered",
        permission: Some("chat:write"),
        handler: || post(chat_completions),
    },
    RouteSpec {
        method: Method::POST,
        path: "/v1/messages",
        operation_id: "createMessage",
        summary: "A message, plain or streamed (Anthropic-compatible), metered",
        permission: Some("chat:write"),
        handler: || post(messages),
    },
    RouteSpec {
        method: Method::POST,
        path: "/v1/embeddings",
        operation_id: "createEmbedding",
        summary: "Embeddings (OpenAI-compatible), metered",
        permission: Some("embeddings:write"),
        handler: || post(embeddings),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/usage",
        operation_id: "getUsage",
        summary: "The tenant's recent ledger rows, totals, budget and rate limits",
        permission: Some("usage:read"),
        handler: || get(usage),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/usage/report",
        operation_id: "getUsageReport",
        summary: "The tenant's usage over UTC days, by day, model or subject (JSON or CSV)",
        permission: Some("usage:read"),
        handler: || get(usage_report),
    },
];

/// The operation a request is for: the route whose path template matches `path` (a `{param}`
/// segment matches any one segment) and whose method is `method` (HEAD as GET). `None` for a path
/// or method the table does not have. Used before routing (the access log of a request refused
/// at the edge still names its operation).
pub fn operation_for(method: &Method, path: &str) -> Option<&'static RouteSpec> {
    let matches = |template: &str| {
        let mut t = template.split('/');
        let mut p = path.split('/');
        loop {
            match (t.next(), p.next()) {
                (None, None) => return true,
                (Some(ts), Some(ps)) if ts.starts_with('{') && ts.ends_with('}') => {
                    if ps.is_empty() {
                        return false;
                    }
                }
                (Some(ts), Some(ps)) if ts == ps => {}
                _ => return false,
            }
        }
    };
    ROUTES.iter().find(|r| {
        (r.method == method || (method == Method::HEAD && r.method == Method::GET))
            && matches(r.path)
    })
}

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
                Some(p) => assert!(is_permission(p), "{} uses unknown permission {p}", r.path),
                None => assert!(
                    !r.path.contains('{'),
                    "public route {} takes parameters",
                    r.path
                ),
            }
        }
        let mut seen = std::collections::HashSet::new();
        let mut ids = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(
                seen.insert((r.method.clone(), r.path)),
                "duplicate route {}",
                r.path
            );
            assert!(
                ids.insert(r.operation_id),
                "duplicate operation id {}",
                r.operation_id
            );
            assert!(
                r.operation_id
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_lowercase())
                    && r.operation_id.chars().all(|c| c.is_ascii_alphanumeric()),
                "operation id `{}` must be lowerCamelCase",
                r.operation_id
            );
        }
    }

    #[test]
    fn every_built_in_role_grants_only_known_permissions() {
        for (role, perms) in crate::auth::roles::TENANT_ROLES {
            for p in *perms {
                assert!(
                    is_permission(p),
                    "role {role} grants unknown permission {p}"
                );
            }
        }
    }

    #[test]
    fn every_permission_is_used_by_a_route() {
        // Issue 12 item 1: a permission no route uses is a permission nobody can check.
        for (p, _) in PERMISSIONS {
            assert!(
                ROUTES.iter().any(|r| r.permission == Some(p)),
                "permission {p} is used by no route"
            );
        }
    }

    #[test]
    fn operations_are_found_by_path_template_and_method() {
        let op = |m: Method, p: &str| operation_for(&m, p).map(|r| r.operation_id);
        assert_eq!(op(Method::GET, "/v1/models/gpt-4o"), Some("getModel"));
        assert_eq!(op(Method::HEAD, "/v1/models"), Some("listModels"));
        assert_eq!(
            op(Method::POST, "/v1/chat/completions"),
            Some("createChatCompletion")
        );
        assert_eq!(
            op(Method::GET, "/v1/chat/completions"),
            None,
            "wrong method"
        );
        assert_eq!(
            op(Method::GET, "/v1/models/"),
            None,
            "an empty segment is no id"
        );
        assert_eq!(op(Method::GET, "/v1/models/a/b"), None);
        assert_eq!(op(Method::GET, "/nope"), None);
    }
}
