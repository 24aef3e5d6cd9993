//! Telemetry: Prometheus metrics through `prometheus-client` (all under the `tenantctl_` prefix) and
//! traces through OpenTelemetry (OTLP over HTTP, off unless `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set), plus the log format. A leaf module: it knows no
//! other module of the runtime; the edge (`http::metrics_text`) adds the figures other modules keep.
//!
//! Metrics recorded on the request path live in `METRICS`, one per process (what a Prometheus
//! scrape of the process sees). Label sets are bounded: routes are operation ids, tiers and
//! outcomes are fixed words; only the usage counters carry the tenant and model, as finance asks.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The prefix of every metric name.
pub const PREFIX: &str = "tenantctl";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The route's operation id (`chat_completions`), `unknown` for no route.
    pub route: &'static str,
    pub method: &'static str,
    /// The caller tenant's tier (`pool`, `schema`, `dedicated`), `platform` for an operator, `none`
    /// before a token was verified.
    pub tier: &'static str,
    /// `2xx`, `4xx`, `5xx`.
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub provider: &'static str,
    /// `chat`, `stream`, `embeddings`.
    pub operation: &'static str,
    /// `ok` or `error`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub tenant: String,
    pub model: String,
    /// `input` or `output`.
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CostLabels {
    pub tenant: String,
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HoldLabels {
    /// `admitted`, or the refusal: `budget`, `subject_budget`, `requests`, `tokens`.
    pub outcome: &'static str,
}

type Hist = Family<HttpLabels, Histogram, fn() -> Histogram>;

fn latency_buckets() -> Histogram {
    // 250 µs to about 65 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 19))
}

fn slow_buckets() -> Histogram {
    // 5 ms to about 80 s: upstream calls and first tokens.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// The metrics recorded on the request path.
#[derive(Debug)]
pub struct Metrics {
    pub http_request_duration: Hist,
    pub upstream_request_duration: Family<UpstreamLabels, Histogram, fn() -> Histogram>,
    pub time_to_first_token: Family<ProviderLabels, Histogram, fn() -> Histogram>,
    pub model_tokens: Family<TokenLabels, Counter>,
    pub model_cost_micro_usd: Family<CostLabels, Counter>,
    pub budget_holds: Family<HoldLabels, Counter>,
    /// From a ledger row handed to the writer to its durable commit (the writer's lag).
    pub ledger_write_duration: Histogram,
}

/// This process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    http_request_duration: Family::new_with_constructor(latency_buckets),
    upstream_request_duration: Family::new_with_constructor(slow_buckets),
    time_to_first_token: Family::new_with_constructor(slow_buckets),
    model_tokens: Family::default(),
    model_cost_micro_usd: Family::default(),
    budget_holds: Family::default(),
    ledger_write_duration: latency_buckets(),
});

impl Metrics {
    /// Registers every metric of the process into `registry` (handles share the values).
    pub fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "http_request_duration",
            "API requests by route, method, caller tier and status class",
            Unit::Seconds,
            self.http_request_duration.clone(),
        );
        registry.register_with_unit(
            "upstream_request_duration",
            "Model provider calls until the provider answered (or accepted a stream)",
            Unit::Seconds,
            self.upstream_request_duration.clone(),
        );
        registry.register_with_unit(
            "time_to_first_token",
            "Streamed calls: from the call to the first generated token",
            Unit::Seconds,
            self.time_to_first_token.clone(),
        );
        registry.register(
            "model_tokens",
            "Model tokens recorded in the ledger, by tenant, model and direction",
            self.model_tokens.clone(),
        );
        registry.register(
            "model_cost_micro_usd",
            "Cost recorded in the ledger in micro-USD, by tenant and model",
            self.model_cost_micro_usd.clone(),
        );
        registry.register(
            "budget_holds",
            "Admissions of model calls against budgets and rate limits, by outcome",
            self.budget_holds.clone(),
        );
        registry.register_with_unit(
            "ledger_write_duration",
            "From a ledger row handed to the writer to its durable commit",
            Unit::Seconds,
            self.ledger_write_duration.clone(),
        );
    }

    /// A ledger row committed: its tokens and cost.
    pub fn usage(&self, tenant: &str, model: &str, input: u64, output: u64, cost_micro_usd: i64) {
        for (direction, n) in [("input", input), ("output", output)] {
            self.model_tokens
                .get_or_create(&TokenLabels {
                    tenant: tenant.to_owned(),
                    model: model.to_owned(),
                    direction,
                })
                .inc_by(n);
        }
        self.model_cost_micro_usd
            .get_or_create(&CostLabels {
                tenant: tenant.to_owned(),
                model: model.to_owned(),
            })
            .inc_by(u64::try_from(cost_micro_usd).unwrap_or(0));
    }

    pub fn upstream(
        &self,
        provider: &'static str,
        operation: &'static str,
        ok: bool,
        took: Duration,
    ) {
        self.upstream_request_duration
            .get_or_create(&UpstreamLabels {
                provider,
                operation,
                outcome: if ok { "ok" } else { "error" },
            })
            .observe(took.as_secs_f64());
    }

    pub fn first_token(&self, provider: &'static str, took: Duration) {
        self.time_to_first_token
            .get_or_create(&ProviderLabels { provider })
            .observe(took.as_secs_f64());
    }

    pub fn hold(&self, outcome: &'static str) {
        self.budget_holds
            .get_or_create(&HoldLabels { outcome })
            .inc();
    }
}

/// A fresh registry with the process's metrics and the build info, for one scrape; the caller adds
/// the figures other modules keep, then encodes it with `encode`.
pub fn registry() -> Registry {
    let mut registry = Registry::with_prefix(PREFIX);
    METRICS.register(&mut registry);
    registry.register(
        "build",
        "The build serving: version and target",
        prometheus_client::metrics::info::Info::new(vec![
            ("version", env!("CARGO_PKG_VERSION")),
            ("arch", std::env::consts::ARCH),
        ]),
    );
    registry
}

/// The registry in the Prometheus text format (OpenMetrics).
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}

/// A counter holding `n`, for figures another module counts (registered per scrape).
pub fn counter(n: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(n);
    c
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (production, Lambda: what log pipelines parse).
    Json,
    /// Human-readable lines (a terminal).
    Text,
}

impl LogFormat {
    /// `TENANTCTL_LOG_FORMAT` (`json` or `text`), else `default`.
    pub fn from_env(default: LogFormat) -> Result<LogFormat, String> {
        match std::env::var("TENANTCTL_LOG_FORMAT").as_deref() {
            Err(_) => Ok(default),
            Ok("json") => Ok(LogFormat::Json),
            Ok("text") => Ok(LogFormat::Text),
            Ok(other) => Err(format!(
                "TENANTCTL_LOG_FORMAT is `{other}`; use `json` or `text`"
            )),
        }
    }
}

/// Flushes and stops the trace exporter when dropped (after the server drained).
#[derive(Debug)]
#[must_use = "dropping it at once stops the trace exporter"]
pub struct TracingGuard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl TracingGuard {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for TracingGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.force_flush();
            let _ = p.shutdown();
        }
    }
}

/// Whether the OTLP exporter is configured (the standard OpenTelemetry variables).
pub fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
}

/// Installs the global subscriber: logs in `format` on stderr filtered by `filter`, and, when OTLP
/// is configured, spans exported over OTLP/HTTP (`OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf`, the
/// default, or `http/json`) as service `service` (`OTEL_SERVICE_NAME` overrides it). W3C
/// `traceparent` is the propagation format.
pub fn init(
    format: LogFormat,
    filter: tracing_subscriber::EnvFilter,
    ansi: bool,
    service: &str,
) -> Result<TracingGuard, String> {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let provider = if otlp_configured() {
        let protocol = match std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
            Ok("http/json") => opentelemetry_otlp::Protocol::HttpJson,
            Ok("http/protobuf") | Err(_) => opentelemetry_otlp::Protocol::HttpBinary,
            Ok(other) => {
                return Err(format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL is `{other}`; this build exports `http/protobuf` or `http/json`"
                ));
            }
        };
        let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service.to_owned());
        // The blocking HTTP client must not be built on an async runtime's thread.
        let exporter = std::thread::spawn(move || {
            use opentelemetry_otlp::WithExportConfig as _;
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(protocol)
                .with_timeout(Duration::from_secs(5))
                .build()
        })
        .join()
        .map_err(|_| "the OTLP exporter could not be built".to_owned())?
        .map_err(|e| format!("the OTLP exporter: {e}"))?;
        Some(
            opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name(service)
                        .build(),
                )
                .build(),
        )
    } else {
        None
    };
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("tenantctl"))
            .with_threads(false)
            .with_tracked_inactivity(false)
    });
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let logs: Box<dyn tracing_subscriber::Layer<_> + Send + Sync> = match format {
        LogFormat::Json => Box::new(fmt.json().with_span_list(false)),
        LogFormat::Text => Box::new(fmt),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(otel)
        .try_init()
        .map_err(|e| format!("installing the log subscriber: {e}"))?;
    Ok(TracingGuard { provider })
}

/// The remote parent a request names in its `traceparent` header, if any.
pub fn remote_parent(headers: &http::HeaderMap) -> opentelemetry::Context {
    struct Headers<'a>(&'a http::HeaderMap);
    impl opentelemetry::propagation::Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(http::HeaderName::as_str).collect()
        }
    }
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)))
}

/// Makes `span` a child of the request's remote parent (W3C `traceparent`).
pub fn set_parent(span: &tracing::Span, headers: &http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let parent = remote_parent(headers);
    let _ = span.set_parent(parent);
}

/// The `traceparent` (and `tracestate`) of the current span, for a call made on its behalf.
pub fn inject_current(headers: &mut http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    struct Headers<'a>(&'a mut http::HeaderMap);
    impl opentelemetry::propagation::Injector for Headers<'_> {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(key.as_bytes()),
                http::HeaderValue::from_str(&value),
            ) {
                self.0.insert(k, v);
            }
        }
    }
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut Headers(headers))
    });
}
