//! How every AWS call is made: throttling is retried with capped, fully jittered exponential backoff
//! (on top of the SDK's own retries, which give up after three attempts), and calls can be counted
//! (the benchmarks report AWS calls per tenant).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_cloudformation::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use super::changeset::{backoff, is_throttling};

/// Attempts per call before throttling is reported as an error.
pub const MAX_ATTEMPTS: u32 = 10;
const BASE: Duration = Duration::from_millis(200);
const CAP: Duration = Duration::from_secs(20);

/// A uniform draw in [0, 1) from the OS RNG (for jitter).
pub fn jitter() -> f64 {
    let mut b = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut b);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether an SDK error is throttling (by error code, or HTTP 429).
pub fn throttled<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> bool
where
    R: std::fmt::Debug,
{
    error.code().is_some_and(is_throttling)
        || matches!(error, SdkError::ServiceError(e) if e.err().code().is_some_and(is_throttling))
}

/// Runs `call` until it succeeds, fails with something other than throttling, or has been throttled
/// `MAX_ATTEMPTS` times.
pub async fn with_backoff<T, E, R, F, Fut>(mut call: F) -> Result<T, SdkError<E, R>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, R>>>,
    E: ProvideErrorMetadata,
    R: std::fmt::Debug,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Err(e) if attempt + 1 < MAX_ATTEMPTS && throttled(&e) => {
                let delay = backoff(attempt, BASE, CAP, jitter());
                tracing::debug!(attempt, ?delay, "throttled; backing off");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Counts HTTP requests sent by every client it is installed on, in total and per operation.
#[derive(Debug, Clone, Default)]
pub struct CallCounter {
    total: Arc<AtomicU64>,
    by_operation: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl CallCounter {
    pub fn get(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// `service.Operation` -> requests.
    pub fn by_operation(&self) -> BTreeMap<String, u64> {
        self.by_operation
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "tenantctl-call-counter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.total.fetch_add(1, Ordering::Relaxed);
        if let Some(meta) = cfg.load::<Metadata>()
            && let Ok(mut map) = self.by_operation.lock()
        {
            *map.entry(format!("{}.{}", meta.service(), meta.name()))
                .or_default() += 1;
        }
        Ok(())
    }
}
