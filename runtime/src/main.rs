//! `tenant-runtime`: runs the runtime from a JSON config: inline in `TENANTCTL_RUNTIME_CONFIG_JSON` (a
//! Lambda's environment) or in the file named by `TENANTCTL_RUNTIME_CONFIG`.
//!
//! On AWS Lambda (`AWS_LAMBDA_RUNTIME_API` is set) it serves Lambda events; otherwise it listens on
//! `TENANTCTL_RUNTIME_LISTEN` (default `127.0.0.1:8080`) until SIGTERM or Ctrl-C, then stops taking
//! connections and drains the requests in flight (streams included: each row reaches the ledger
//! before its response ends) before it exits.
//!
//! Logs: JSON lines on stderr (`TENANTCTL_LOG_FORMAT=text` for a terminal), filtered by
//! `TENANTCTL_LOG` (default `info`). Traces: OTLP over HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is
//! set (off by default).

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TENANTCTL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let guard = match runtime::telemetry::LogFormat::from_env(runtime::telemetry::LogFormat::Json)
        .and_then(|format| runtime::telemetry::init(format, filter, false, "tenantctl-runtime"))
    {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let code = match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "tenant-runtime failed");
            ExitCode::from(1)
        }
    };
    // Exports the spans still buffered.
    drop(guard);
    code
}

/// SIGTERM (what a container platform sends) or Ctrl-C.
async fn stop_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping: draining the requests in flight");
}

async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // Inline JSON (a Lambda's environment) or a file path (a server).
    let text = match (
        std::env::var("TENANTCTL_RUNTIME_CONFIG_JSON"),
        std::env::var_os("TENANTCTL_RUNTIME_CONFIG"),
    ) {
        (Ok(json), _) => json,
        (Err(_), Some(path)) => std::fs::read_to_string(&path)?,
        (Err(_), None) => {
            return Err("set `TENANTCTL_RUNTIME_CONFIG` (a JSON file) or `TENANTCTL_RUNTIME_CONFIG_JSON` (inline JSON)".into());
        }
    };
    let config: runtime::RuntimeConfig = serde_json::from_str(&text)?;
    let state = runtime::AppState::from_config(&config).await?;
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        runtime::http::run_lambda(state).await?;
        return Ok(());
    }
    let addr =
        std::env::var("TENANTCTL_RUNTIME_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!(%addr, "listening");
    runtime::http::serve_local(listener, state, stop_signal()).await?;
    Ok(())
}
