//! `tenantctl serve`: the runtime for every onboarded tenant, plus the dev identity provider, on
//! loopback. Shares nothing with the runtime but its public API (`runtime::AppState`, `runtime::app`).

use std::net::SocketAddr;

use anyhow::{Context, Result};
use runtime::state::RuntimeConfig;
use tokio::sync::watch;

use crate::devidp;
use crate::platform::Platform;
use crate::provision::Target;

/// A running server pair; dropping `shutdown` or calling `stop` ends both.
#[derive(Debug)]
pub struct Running {
    pub api_addr: SocketAddr,
    pub idp_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub state: runtime::AppState,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Running {
    /// Stops both servers gracefully and waits for them.
    pub async fn stop(self) -> Result<()> {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            task.await.context("server task panicked")??;
        }
        Ok(())
    }
}

fn signal(rx: &watch::Receiver<bool>) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut rx = rx.clone();
    async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

/// Where to listen. Port 0 picks a free port.
#[derive(Debug, Clone, Copy)]
pub struct Listen {
    pub api: SocketAddr,
    pub idp: SocketAddr,
    pub metrics: SocketAddr,
}

impl Listen {
    /// Every listener on a free loopback port (tests).
    pub fn loopback_any() -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            api: any,
            idp: any,
            metrics: any,
        }
    }
}

/// Binds the listeners and starts serving: the API, the dev identity provider's JWKS, and the
/// operator metrics.
pub async fn start(target: &Target, platform: &Platform, listen: Listen) -> Result<Running> {
    start_with(
        target,
        platform,
        listen,
        runtime::metering::writer::CommitMode::Auto,
    )
    .await
}

/// `start`, with the ledger's commit mode given.
pub async fn start_with(
    target: &Target,
    platform: &Platform,
    listen: Listen,
    ledger_commit: runtime::metering::writer::CommitMode,
) -> Result<Running> {
    let Listen { api, idp, metrics } = listen;
    // The key exists before the JWKS is first served (created on first use).
    devidp::signer(&target.secrets).await?;
    let idp_listener = tokio::net::TcpListener::bind(idp)
        .await
        .with_context(|| format!("cannot listen on `{idp}` for the dev identity provider\nhint: pass `--idp-listen` with a free port"))?;
    let idp_addr = idp_listener.local_addr()?;
    let api_listener = tokio::net::TcpListener::bind(api).await.with_context(|| {
        format!("cannot listen on `{api}`\nhint: pass `--listen` with a free port")
    })?;
    let api_addr = api_listener.local_addr()?;
    let metrics_listener = tokio::net::TcpListener::bind(metrics)
        .await
        .with_context(|| format!("cannot listen on `{metrics}` for metrics\nhint: pass `--metrics-listen` with a free port"))?;
    let metrics_addr = metrics_listener.local_addr()?;
    let (tx, rx) = watch::channel(false);
    let mut tasks = Vec::new();
    // The console is served on the API's own address; the dev identity provider registers its
    // callback there.
    let public_url = format!("http://{api_addr}");
    let oidc = std::sync::Arc::new(devidp::Oidc::new(
        format!("http://{idp_addr}"),
        vec![format!("{public_url}/console/callback")],
    ));
    ensure_console_key(&target.secrets).await?;
    tasks.push(tokio::spawn(devidp::serve(
        idp_listener,
        target.secrets.clone(),
        oidc.clone(),
        signal(&rx),
    )));
    let mut issuers = platform.runtime_issuers(&devidp::jwks_url(idp_addr));
    if platform.dev_issuer
        && let Some(i) = issuers
            .iter_mut()
            .find(|i| i.name == crate::platform::PLATFORM_ISSUER)
    {
        i.console = Some(oidc.console_client());
    }
    // With the dev identity provider, its tokens for the operator audience are the platform
    // staff's (`tenantctl token --operator`): they reach the platform routes only.
    let mut deployment = runtime::auth::DeploymentPolicy::default();
    if platform.dev_issuer
        && let Some(i) = issuers
            .iter_mut()
            .find(|i| i.name == crate::platform::PLATFORM_ISSUER)
    {
        i.audiences.push(devidp::OPERATOR_AUDIENCE.to_owned());
        deployment.platform = Some(runtime::auth::PlatformAccess {
            issuer: i.name.clone(),
            audience: devidp::OPERATOR_AUDIENCE.to_owned(),
        });
    }
    let config = RuntimeConfig {
        namespace: target.namespace.clone(),
        database: target.endpoint.clone(),
        secrets_dir: target.secrets_dir.clone(),
        secret_store: runtime::state::SecretStoreKind::Local,
        issuers,
        deployment,
        registry_refresh_secs: 2,
        registry_max_stale_secs: 6,
        max_connections_per_tenant: 4,
        max_in_flight_per_tenant: 32,
        tenant: None,
        provider_key_ttl_secs: 60,
        upstream: Default::default(),
        ledger_commit,
        console: Some(runtime::state::ConsoleConfig {
            public_url: public_url.clone(),
            session_key_secret: runtime::state::CONSOLE_SESSION_KEY.to_owned(),
        }),
    };
    let state = match runtime::AppState::from_config(&config).await {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(true);
            return Err(anyhow::Error::new(e).context("starting the runtime"));
        }
    };
    oidc.use_directory(state.directory.clone());
    tasks.push(tokio::spawn(runtime::http::serve_local(
        api_listener,
        state.clone(),
        signal(&rx),
    )));
    let metrics_app = runtime::http::metrics_app(state.clone());
    let stop = signal(&rx);
    tasks.push(tokio::spawn(async move {
        axum::serve(metrics_listener, metrics_app)
            .with_graceful_shutdown(stop)
            .await
    }));
    Ok(Running {
        api_addr,
        idp_addr,
        metrics_addr,
        state,
        shutdown: tx,
        tasks,
    })
}

/// The console's session key: 32 random bytes as hex in the secret store, created on first use
/// (every `serve` of this deployment seals and opens sessions with the same one).
async fn ensure_console_key(secrets: &runtime::secrets::SecretStore) -> Result<()> {
    let name = runtime::secrets::SecretName::parse(runtime::state::CONSOLE_SESSION_KEY)?;
    if !secrets.exists(&name).await? {
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes)
            .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        secrets
            .put(&name, &secrecy::SecretString::from(hex))
            .await?;
    }
    Ok(())
}
