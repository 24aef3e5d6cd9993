//! `app(state) -> axum::Router` and its two entry points: a local server and AWS Lambda; and the
//! operator's metrics listener.
//!
//! The layer order is fixed here: request id, the access log, error shapes, then auth over everything
//! (before routing), then the per-route permission check. This module wires; it must not hold business logic.

pub mod anthropic;
pub mod csv;
pub mod error;
pub mod handlers;
pub mod middleware;
pub mod objects;
pub mod openai;
pub mod openapi;
pub mod platform;
pub mod routes;

use axum::Router;
use axum::middleware::{from_fn, from_fn_with_state};

use crate::state::AppState;

/// The largest request body accepted (413 above it, in the surface's error shape).
pub const MAX_BODY_BYTES: usize = 4 << 20;

/// The whole API. Routes come from `routes::ROUTES` only.
pub fn app(state: AppState) -> Router {
    let mut router: Router<AppState> = Router::new();
    for spec in routes::ROUTES {
        router = router.route(spec.path, (spec.handler)());
    }
    router
        .fallback(handlers::not_found)
        .route_layer(from_fn_with_state(
            state.clone(),
            middleware::require_permission,
        ))
        .layer(from_fn(middleware::drain_oversized))
        .layer(from_fn_with_state(state.clone(), middleware::require_auth))
        .layer(from_fn(middleware::refuse_nul))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(from_fn(middleware::shape_errors))
        .layer(from_fn(middleware::access_log))
        .layer(from_fn(middleware::assign_request_id))
        .with_state(state)
}

/// Prometheus text-format metrics: denials by reason, admitted requests, verifications, cache hits,
/// JWKS fetches per issuer, tenant-database statements. Served on a separate (operator) listener, never
/// on the tenant API.
pub fn metrics_text(state: &AppState) -> String {
    use std::fmt::Write as _;
    use std::sync::atomic::Ordering::Relaxed;
    let m = &state.auth.metrics;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP tenant_auth_denials_total Requests refused at the edge, by reason."
    );
    let _ = writeln!(out, "# TYPE tenant_auth_denials_total counter");
    let counts = state.auth.denial_counts();
    for reason in crate::auth::jwt::DenyReason::ALL {
        let n = counts.get(reason.code()).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "tenant_auth_denials_total{{reason=\"{}\"}} {n}",
            reason.code()
        );
    }
    let _ = writeln!(
        out,
        "# TYPE tenant_auth_admitted_total counter\ntenant_auth_admitted_total {}",
        m.admitted.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# TYPE tenant_auth_verifications_total counter\ntenant_auth_verifications_total {}",
        m.verifications.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# TYPE tenant_auth_cache_hits_total counter\ntenant_auth_cache_hits_total {}",
        m.cache_hits.load(Relaxed)
    );
    let _ = writeln!(out, "# TYPE tenant_jwks_fetches_total counter");
    for name in state.auth.issuer_names() {
        if let Some(keys) = state.auth.keys(name) {
            let _ = writeln!(
                out,
                "tenant_jwks_fetches_total{{issuer=\"{name}\",outcome=\"attempt\"}} {}",
                keys.stats.attempts.load(Relaxed)
            );
            let _ = writeln!(
                out,
                "tenant_jwks_fetches_total{{issuer=\"{name}\",outcome=\"failure\"}} {}",
                keys.stats.failures.load(Relaxed)
            );
        }
    }
    let _ = writeln!(
        out,
        "# TYPE tenant_db_statements_total counter\ntenant_db_statements_total {}",
        state.data.statements()
    );
    let _ = writeln!(
        out,
        "# TYPE tenant_directory_tenants gauge\ntenant_directory_tenants {}",
        state.directory.len()
    );
    let _ = writeln!(
        out,
        "# HELP tenant_ledger_commits_total Durable ledger commits (a group commit holds many rows).\n\
         # TYPE tenant_ledger_commits_total counter\ntenant_ledger_commits_total {}",
        state.ledger.commits()
    );
    let _ = writeln!(
        out,
        "# TYPE tenant_ledger_rows_total counter\ntenant_ledger_rows_total {}",
        state.ledger.rows()
    );
    let _ = writeln!(
        out,
        "# HELP tenant_ledger_commit_microseconds_total Time spent in durable ledger commits.\n\
         # TYPE tenant_ledger_commit_microseconds_total counter\ntenant_ledger_commit_microseconds_total {}",
        state.ledger.commit_micros()
    );
    let _ = writeln!(
        out,
        "# HELP tenant_ledger_zero_cost_rows_total Ledger rows of calls that produced tokens at zero cost.\n\
         # TYPE tenant_ledger_zero_cost_rows_total counter\ntenant_ledger_zero_cost_rows_total {}",
        state.ledger.zero_cost_rows()
    );
    let _ = writeln!(
        out,
        "# HELP tenant_ledger_cost_differs_rows_total Ledger rows whose provider-reported cost differs from the price book's.\n\
         # TYPE tenant_ledger_cost_differs_rows_total counter\ntenant_ledger_cost_differs_rows_total {}",
        state.ledger.cost_differs_rows()
    );
    let gate = state.ledger.gate();
    let _ = writeln!(
        out,
        "# HELP tenant_admissions_leased_total Model calls admitted from a lease, without a statement.\n\
         # TYPE tenant_admissions_leased_total counter\ntenant_admissions_leased_total {}",
        gate.local_admissions()
    );
    let _ = writeln!(
        out,
        "# HELP tenant_admission_statements_total Admission statements (own holds, lease grants, returns).\n\
         # TYPE tenant_admission_statements_total counter\ntenant_admission_statements_total {}",
        gate.statements()
    );
    out
}

/// The operator listener's router: `GET /metrics`.
pub fn metrics_app(state: AppState) -> Router {
    Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let state = state.clone();
            async move { metrics_text(&state) }
        }),
    )
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve_local(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt as _;
    // TCP_NODELAY on every accepted connection: a streamed chunk leaves at once, never held back by
    // Nagle's algorithm waiting for the client's (delayed) ACK.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
    });
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Runs `app` as an AWS Lambda function behind API Gateway (HTTP API).
pub async fn run_lambda(state: AppState) -> Result<(), lambda_http::Error> {
    lambda_http::run(app(state)).await
}
