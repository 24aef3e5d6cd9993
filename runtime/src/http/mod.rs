//! `app(state) -> axum::Router` and its two entry points: a local server and AWS Lambda; and the
//! operator's metrics listener.
//!
//! The layer order is fixed here: request id, the access log, error shapes, then auth over everything
//! (before routing), then the per-route permission check. This module wires; it must not hold business logic.

pub mod anthropic;
pub mod console;
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
    // The console's pages call the API in-process: the same table without the console's routes,
    // behind the same layers.
    let api = layered(
        state.clone(),
        routes::ROUTES
            .iter()
            .filter(|r| !routes::is_console(r.path)),
    );
    layered(state.clone(), routes::ROUTES.iter())
        .layer(axum::Extension(console::ConsoleApi(api)))
        .layer(from_fn_with_state(
            console::content_security_policy(&state.auth),
            console::headers,
        ))
}

fn layered<'r>(state: AppState, specs: impl Iterator<Item = &'r routes::RouteSpec>) -> Router {
    let mut router: Router<AppState> = Router::new();
    for spec in specs {
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

/// The operator's metrics (OpenMetrics text, every name under `tenantctl_`): what the request path
/// records (`telemetry::METRICS`: request, upstream and first-token latency, tokens and cost by
/// tenant and model, budget holds, ledger write time) and the figures the modules keep (denials by
/// reason, verifications, JWKS fetches and last success, secret cache, pools, ledger commits,
/// admissions). Served on a separate (operator) listener, never on the tenant API.
pub async fn metrics_text(state: &AppState) -> String {
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::Unit;
    use std::sync::atomic::Ordering::Relaxed;

    use crate::telemetry::counter;
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Reason {
        reason: &'static str,
    }
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct IssuerOutcome {
        issuer: String,
        outcome: &'static str,
    }
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Issuer {
        issuer: String,
    }
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Result {
        result: &'static str,
    }
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct ConnState {
        state: &'static str,
    }
    let mut r = crate::telemetry::registry();
    let m = &state.auth.metrics;
    let denials = Family::<Reason, Counter>::default();
    let counts = state.auth.denial_counts();
    for reason in crate::auth::jwt::DenyReason::ALL {
        let n = counts.get(reason.code()).copied().unwrap_or(0);
        denials
            .get_or_create(&Reason {
                reason: reason.code(),
            })
            .inc_by(n);
    }
    r.register(
        "auth_denials",
        "Requests refused at the edge, by reason",
        denials,
    );
    r.register(
        "auth_admitted",
        "Requests whose token was accepted",
        counter(m.admitted.load(Relaxed)),
    );
    r.register(
        "auth_verifications",
        "Token signature verifications (cache misses)",
        counter(m.verifications.load(Relaxed)),
    );
    r.register(
        "auth_cache_hits",
        "Tokens accepted from the verified-token cache",
        counter(m.cache_hits.load(Relaxed)),
    );
    let fetches = Family::<IssuerOutcome, Counter>::default();
    let last = Family::<Issuer, Gauge>::default();
    for name in state.auth.issuer_names() {
        if let Some(keys) = state.auth.keys(name) {
            for (outcome, n) in [
                ("attempt", keys.stats.attempts.load(Relaxed)),
                ("failure", keys.stats.failures.load(Relaxed)),
            ] {
                fetches
                    .get_or_create(&IssuerOutcome {
                        issuer: name.to_owned(),
                        outcome,
                    })
                    .inc_by(n);
            }
            last.get_or_create(&Issuer {
                issuer: name.to_owned(),
            })
            .set(i64::try_from(keys.stats.last_success_unix.load(Relaxed)).unwrap_or(0));
        }
    }
    r.register(
        "jwks_fetches",
        "JWKS fetches per issuer, by outcome",
        fetches,
    );
    r.register(
        "jwks_last_success_timestamp_seconds",
        "When each issuer's key set was last fetched successfully (Unix time; 0: never)",
        last,
    );
    let secrets = Family::<Result, Counter>::default();
    let (hits, misses) = state.secrets.hits_and_fetches();
    secrets
        .get_or_create(&Result { result: "hit" })
        .inc_by(hits);
    secrets
        .get_or_create(&Result { result: "miss" })
        .inc_by(misses);
    r.register(
        "secret_cache_requests",
        "Secret reads on the request path: from memory (hit) or from the store (miss)",
        secrets,
    );
    let usage = state.data.pool_usage().await;
    let conns = Family::<ConnState, Gauge>::default();
    conns
        .get_or_create(&ConnState { state: "in_use" })
        .set(i64::try_from(usage.size.saturating_sub(usage.available)).unwrap_or(0));
    conns
        .get_or_create(&ConnState { state: "idle" })
        .set(i64::try_from(usage.available).unwrap_or(0));
    r.register(
        "db_pool_connections",
        "Tenant database connections held by this process's pools",
        conns,
    );
    let pools = Gauge::<i64>::default();
    pools.set(i64::try_from(usage.pools).unwrap_or(0));
    r.register("db_pools", "Tenant connection pools kept", pools);
    r.register(
        "db_statements",
        "Statements run through tenant handles",
        counter(state.data.statements()),
    );
    let tenants = Gauge::<i64>::default();
    tenants.set(i64::try_from(state.directory.len()).unwrap_or(0));
    r.register("directory_tenants", "Tenants in the registry copy", tenants);
    r.register(
        "ledger_commits",
        "Durable ledger commits (a group commit holds many rows)",
        counter(state.ledger.commits()),
    );
    r.register(
        "ledger_rows",
        "Ledger rows committed",
        counter(state.ledger.rows()),
    );
    let commit_time = Counter::<f64, std::sync::atomic::AtomicU64>::default();
    #[expect(
        clippy::cast_precision_loss,
        reason = "microseconds of commit time fit in an f64's mantissa for centuries"
    )]
    commit_time.inc_by(state.ledger.commit_micros() as f64 / 1e6);
    r.register_with_unit(
        "ledger_commit",
        "Time spent in durable ledger commits",
        Unit::Seconds,
        commit_time,
    );
    r.register(
        "ledger_zero_cost_rows",
        "Ledger rows of calls that produced tokens at zero cost",
        counter(state.ledger.zero_cost_rows()),
    );
    r.register(
        "ledger_cost_differs_rows",
        "Ledger rows whose provider-reported cost differs from the price book's",
        counter(state.ledger.cost_differs_rows()),
    );
    let gate = state.ledger.gate();
    r.register(
        "admissions_leased",
        "Model calls admitted from a lease, without a statement",
        counter(gate.local_admissions()),
    );
    r.register(
        "admission_statements",
        "Admission statements (own holds, lease grants, returns)",
        counter(gate.statements()),
    );
    crate::telemetry::encode(&r)
}

/// The content type of `metrics_text`.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The operator listener's router: `GET /metrics`.
pub fn metrics_app(state: AppState) -> Router {
    Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let state = state.clone();
            async move {
                (
                    [(http::header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
                    metrics_text(&state).await,
                )
            }
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
