//! The provider conformance suite: every adapter (OpenAI, Azure OpenAI, a self-hosted
//! OpenAI-compatible server, Anthropic, Bedrock) against the mock provider server on real HTTP,
//! through `ModelRouter` with keys from a real secret store. One macro, one table of adapters: an
//! adapter added without a row here is an adapter without tests.
//!
//! Each row proves: plain and streamed completions with the provider's own usage (and, for the
//! OpenAI wire, that usage was asked for in the stream), tool calls both ways, the tenant's own key
//! on the wire, one key re-read after a 401 (rotation without restart), retries of 429 and 500 but
//! not of a stream that already started, a mid-stream disconnect reported as a cut, and a cancelled
//! stream closing the upstream connection.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use runtime::domain::{ModelId, ProviderId, TenantId};
use runtime::models::chat::{ChatMessage, ChatRequest, Role, StreamEvent, Tool};
use runtime::models::providers::{ProviderError, UpstreamConfig};
use runtime::models::{ModelRouter, key_name};
use runtime::registry::ModelPolicy;
use runtime::registry::policy::{Endpoint, ProviderPolicy};
use runtime::secrets::cache::SecretCache;
use runtime::secrets::{LocalSecretStore, SecretStore};
use secrecy::SecretString;
use tests::mock_provider::{Config, Fault, MockProvider, Wire};

/// One adapter under test: which provider, which model, how its endpoint points at the mock.
struct Row {
    provider: ProviderId,
    model: &'static str,
    wire: Wire,
    endpoint: fn(&str) -> Endpoint,
    /// The upstream name the mock sees in its path or body.
    upstream: &'static str,
    /// Whether the tenant's key is on the wire (Bedrock signs with the deployment's AWS identity).
    keyed: bool,
}

const AKID: &str = "AKIDTENANTCTLTEST";

struct Fixture {
    mock: MockProvider,
    router: ModelRouter,
    store: SecretStore,
    tenant: TenantId,
    policy: ModelPolicy,
    row: &'static Row,
    _dir: tempfile::TempDir,
}

fn random_key(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

async fn fixture(row: &'static Row, config: Config, upstream: UpstreamConfig) -> Fixture {
    let mock = MockProvider::start(config).await;
    let dir = tempfile::tempdir().unwrap();
    let store = SecretStore::Local(LocalSecretStore::open(&dir.path().join("store")).unwrap());
    let tenant = TenantId::parse("acme").unwrap();
    let keys = Arc::new(SecretCache::new(store.clone(), Duration::from_secs(300)));
    let credentials = aws_credential_types::Credentials::new(
        AKID,
        uuid::Uuid::new_v4().simple().to_string(),
        None,
        None,
        "test",
    );
    let router = ModelRouter::new(upstream, keys)
        .unwrap()
        .with_aws_credentials(
            aws_credential_types::provider::SharedCredentialsProvider::new(credentials),
        );
    let mut policy =
        ModelPolicy::only(row.provider, vec![ModelId::parse(row.model).unwrap()]).unwrap();
    policy.providers.insert(
        row.provider,
        ProviderPolicy {
            models: vec![ModelId::parse(row.model).unwrap()],
            endpoint: (row.endpoint)(&mock.url()),
        },
    );
    assert!(policy.problems().is_empty(), "{:?}", policy.problems());
    Fixture {
        mock,
        router,
        store,
        tenant,
        policy,
        row,
        _dir: dir,
    }
}

impl Fixture {
    async fn put_key(&self, value: &str) {
        let name = key_name(&self.tenant, self.row.provider).unwrap();
        self.store
            .put(&name, &SecretString::from(value.to_owned()))
            .await
            .unwrap();
    }

    fn request(&self, text: &str) -> ChatRequest {
        ChatRequest {
            model: self.row.model.to_owned(),
            messages: vec![
                ChatMessage::text(Role::System, "be brief"),
                ChatMessage::text(Role::User, text),
            ],
            ..ChatRequest::default()
        }
    }

    fn routes(&self) -> Vec<runtime::models::Route> {
        ModelRouter::plan(
            &self.policy,
            &cli::prices::builtin().for_tenant("acme"),
            self.row.model,
        )
        .unwrap()
    }

    async fn complete(
        &self,
        request: &ChatRequest,
    ) -> Result<runtime::models::chat::Completion, ProviderError> {
        self.router
            .complete(&self.tenant, &self.routes(), request)
            .await
            .map(|(_, c)| c)
    }

    async fn stream(
        &self,
        request: &ChatRequest,
    ) -> Result<Vec<Result<StreamEvent, ProviderError>>, ProviderError> {
        let (_, s) = self
            .router
            .stream(&self.tenant, &self.routes(), request)
            .await?;
        Ok(s.collect().await)
    }

    fn credentials_seen(&self) -> Vec<Option<String>> {
        self.mock
            .received()
            .into_iter()
            .map(|r| r.credential)
            .collect()
    }
}

fn text_of(events: &[Result<StreamEvent, ProviderError>]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            Ok(StreamEvent::Text(t)) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

async fn plain_and_streamed_completions_carry_the_providers_own_usage(row: &'static Row) {
    let f = fixture(row, Config::default(), UpstreamConfig::default()).await;
    let key = random_key("tk-");
    f.put_key(&key).await;
    let c = f.complete(&f.request("hello there friend")).await.unwrap();
    assert!(
        c.content
            .starts_with(&format!("mock reply from {}", row.upstream)),
        "{}",
        c.content
    );
    // The mock counts whitespace words: 2 (system) + 3 (user) in, 12 out.
    assert_eq!(
        (
            c.usage.input_tokens,
            c.usage.output_tokens,
            c.usage.estimated
        ),
        (5, 12, false)
    );
    let events = f.stream(&f.request("hello there friend")).await.unwrap();
    assert_eq!(
        text_of(&events),
        c.content,
        "the stream carries the same text"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Ok(StreamEvent::Finish(_))))
    );
    let usage: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Ok(StreamEvent::Usage(u)) => Some(*u),
            _ => None,
        })
        .collect();
    assert_eq!(
        usage
            .last()
            .map(|u| (u.input_tokens, u.output_tokens, u.estimated)),
        Some((5, 12, false)),
        "{events:?}"
    );
    let received = f.mock.received();
    assert_eq!(received.len(), 2);
    if row.wire == Wire::Openai || row.wire == Wire::Azure {
        assert_eq!(
            received[1].body["stream_options"]["include_usage"], true,
            "usage is asked for in the stream"
        );
    }
    let want = if row.keyed {
        Some(key.clone())
    } else {
        Some(AKID.to_owned())
    };
    assert_eq!(
        f.credentials_seen(),
        vec![want.clone(), want],
        "the tenant's own credential reached the provider"
    );
}

async fn tool_calls_round_trip_plain_and_streamed(row: &'static Row) {
    let f = fixture(row, Config::default(), UpstreamConfig::default()).await;
    f.put_key(&random_key("tk-")).await;
    let mut request = f.request("weather?");
    request.tools = vec![Tool {
        name: "get_weather".into(),
        description: Some("Weather by city".into()),
        parameters: serde_json::json!({"type": "object", "properties": {"city": {"type": "string"}}}),
        strict: None,
    }];
    let c = f.complete(&request).await.unwrap();
    assert_eq!(c.tool_calls.len(), 1, "{c:?}");
    assert_eq!(c.tool_calls[0].name, "get_weather");
    let args: serde_json::Value = serde_json::from_str(&c.tool_calls[0].arguments).unwrap();
    assert_eq!(args, serde_json::json!({"city": "Paris"}));
    assert_eq!(c.finish, runtime::models::chat::FinishReason::ToolCalls);
    let events = f.stream(&request).await.unwrap();
    let mut name = None;
    let mut arguments = String::new();
    for e in &events {
        if let Ok(StreamEvent::ToolCall {
            name: n,
            arguments: a,
            index,
            ..
        }) = e
        {
            assert_eq!(*index, 0);
            if n.is_some() {
                name.clone_from(n);
            }
            arguments.push_str(a);
        }
    }
    assert_eq!(name.as_deref(), Some("get_weather"), "{events:?}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&arguments).unwrap(),
        serde_json::json!({"city": "Paris"})
    );
    assert!(
        events.contains(&Ok(StreamEvent::Finish(
            runtime::models::chat::FinishReason::ToolCalls
        ))),
        "{events:?}"
    );
}

async fn a_refused_key_is_read_again_once_and_the_rotated_key_is_used(row: &'static Row) {
    // docs/security.md case 50: rotation takes effect without a restart.
    if !row.keyed {
        return;
    }
    let f = fixture(row, Config::default(), UpstreamConfig::default()).await;
    let (old, new) = (random_key("old-"), random_key("new-"));
    f.put_key(&old).await;
    f.complete(&f.request("one")).await.unwrap();
    // Rotate: the store and the provider move to the new key; the router still caches the old one.
    f.put_key(&new).await;
    f.mock.accept_only(&[&new]);
    let c = f.complete(&f.request("two")).await.unwrap();
    assert!(!c.content.is_empty());
    assert_eq!(
        f.credentials_seen(),
        vec![Some(old.clone()), Some(old.clone()), Some(new.clone())],
        "one refused attempt with the cached key, then the re-read key"
    );
    // A key the provider refuses even after re-reading is reported, not retried forever.
    f.mock.accept_only(&["neither"]);
    let err = f.complete(&f.request("three")).await.unwrap_err();
    assert!(matches!(err, ProviderError::Unauthorized { .. }), "{err:?}");
    assert_eq!(f.mock.received().len(), 5);
}

fn fast_retries() -> UpstreamConfig {
    UpstreamConfig {
        backoff_ms: 1,
        max_backoff_ms: 5,
        ..UpstreamConfig::default()
    }
}

async fn rate_limits_and_server_errors_are_retried_and_other_failures_are_not(row: &'static Row) {
    let f = fixture(row, Config::default(), fast_retries()).await;
    f.put_key(&random_key("tk-")).await;
    f.mock.fail_next([
        Fault::RateLimited {
            retry_after_secs: 0,
        },
        Fault::ServerError,
    ]);
    f.complete(&f.request("retry me")).await.unwrap();
    assert_eq!(f.mock.received().len(), 3, "429, 500, then success");
    f.mock.clear();
    f.mock
        .fail_next([Fault::ServerError, Fault::ServerError, Fault::ServerError]);
    let err = f.complete(&f.request("give up")).await.unwrap_err();
    assert!(matches!(err, ProviderError::Unavailable(_)), "{err:?}");
    assert_eq!(
        f.mock.received().len(),
        3,
        "max_attempts bounds the retries"
    );
    f.mock.clear();
    f.mock.fail_next([Fault::RateLimited {
        retry_after_secs: 0,
    }]);
    let events = f.stream(&f.request("stream after a 429")).await.unwrap();
    assert!(
        events.iter().all(Result::is_ok),
        "a refusal before the stream starts is retried: {events:?}"
    );
    assert_eq!(f.mock.received().len(), 2);
}

async fn a_stream_cut_mid_way_is_reported_and_never_retried(row: &'static Row) {
    // Paced, so the first chunks leave the mock before it drops the connection.
    let config = Config {
        chunk_delay: Duration::from_millis(5),
        ..Config::default()
    };
    let f = fixture(row, config, fast_retries()).await;
    f.put_key(&random_key("tk-")).await;
    f.mock.fail_next([Fault::CutAfter(3)]);
    let events = f.stream(&f.request("cut me")).await.unwrap();
    assert!(
        !text_of(&events).is_empty(),
        "some text arrived first: {events:?}"
    );
    assert!(
        matches!(events.last(), Some(Err(ProviderError::Cut(_)))),
        "{events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Ok(StreamEvent::Finish(_))))
    );
    assert_eq!(
        f.mock.received().len(),
        1,
        "bytes may have reached the client: no retry"
    );
}

async fn dropping_a_stream_closes_the_upstream_connection(row: &'static Row) {
    let config = Config {
        chunk_delay: Duration::from_millis(40),
        words: 50,
        ..Config::default()
    };
    let f = fixture(row, config, UpstreamConfig::default()).await;
    f.put_key(&random_key("tk-")).await;
    let (_, mut s) = f
        .router
        .stream(&f.tenant, &f.routes(), &f.request("long"))
        .await
        .unwrap();
    let first = s.next().await;
    assert!(matches!(first, Some(Ok(_))), "{first:?}");
    drop(s);
    let cancelled = &f.mock.shared.cancelled_streams;
    for _ in 0..100 {
        if cancelled.load(std::sync::atomic::Ordering::SeqCst) == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the provider kept streaming to a client that went away");
}

async fn a_missing_key_is_refused_before_any_upstream_call(row: &'static Row) {
    // A self-hosted server's key is optional (`a_self_hosted_server_without_a_stored_key_...`).
    if !row.keyed || row.provider == ProviderId::OpenaiCompatible {
        return;
    }
    let f = fixture(row, Config::default(), UpstreamConfig::default()).await;
    let err = f.complete(&f.request("no key")).await.unwrap_err();
    assert!(matches!(err, ProviderError::KeyUnavailable(_)), "{err:?}");
    assert!(f.mock.received().is_empty());
}

macro_rules! conformance {
    ($($name:ident => $row:expr;)*) => {$(
        mod $name {
            use super::*;
            static ROW: Row = $row;
            #[tokio::test]
            async fn plain_and_streamed_completions_carry_the_providers_own_usage() { super::plain_and_streamed_completions_carry_the_providers_own_usage(&ROW).await }
            #[tokio::test]
            async fn tool_calls_round_trip_plain_and_streamed() { super::tool_calls_round_trip_plain_and_streamed(&ROW).await }
            #[tokio::test]
            async fn a_refused_key_is_read_again_once_and_the_rotated_key_is_used() { super::a_refused_key_is_read_again_once_and_the_rotated_key_is_used(&ROW).await }
            #[tokio::test]
            async fn rate_limits_and_server_errors_are_retried_and_other_failures_are_not() { super::rate_limits_and_server_errors_are_retried_and_other_failures_are_not(&ROW).await }
            #[tokio::test]
            async fn a_stream_cut_mid_way_is_reported_and_never_retried() { super::a_stream_cut_mid_way_is_reported_and_never_retried(&ROW).await }
            #[tokio::test]
            async fn dropping_a_stream_closes_the_upstream_connection() { super::dropping_a_stream_closes_the_upstream_connection(&ROW).await }
            #[tokio::test]
            async fn a_missing_key_is_refused_before_any_upstream_call() { super::a_missing_key_is_refused_before_any_upstream_call(&ROW).await }
        }
    )*};
}

fn base(url: &str) -> Endpoint {
    Endpoint {
        base_url: Some(url.to_owned()),
        region: Some("eu-west-1".into()),
        ..Endpoint::default()
    }
}

conformance! {
    openai => Row { provider: ProviderId::Openai, model: "gpt-4o-mini", wire: Wire::Openai, upstream: "gpt-4o-mini", keyed: true,
        endpoint: |url| base(&format!("{url}/v1")) };
    azure_openai => Row { provider: ProviderId::AzureOpenai, model: "gpt-4o-mini", wire: Wire::Azure, upstream: "acme-mini", keyed: true,
        endpoint: |url| Endpoint {
            api_version: Some("2024-10-21".into()),
            deployments: [(ModelId::parse("gpt-4o-mini").unwrap(), "acme-mini".to_owned())].into(),
            ..base(url)
        } };
    openai_compatible => Row { provider: ProviderId::OpenaiCompatible, model: "llama-3.1-8b-instruct", wire: Wire::Openai, upstream: "llama-3.1-8b-instruct", keyed: true,
        endpoint: |url| base(&format!("{url}/v1")) };
    anthropic => Row { provider: ProviderId::Anthropic, model: "claude-haiku-4-5", wire: Wire::Anthropic, upstream: "claude-haiku-4-5", keyed: true,
        endpoint: base };
    bedrock => Row { provider: ProviderId::Bedrock, model: "anthropic.claude-3-5-haiku-20241022-v1:0", wire: Wire::Bedrock, upstream: "anthropic.claude-3-5-haiku-20241022-v1:0", keyed: false,
        endpoint: base };
}

#[tokio::test]
async fn azure_calls_name_the_deployment_and_api_version_and_send_the_key_as_api_key() {
    static ROW: Row = Row {
        provider: ProviderId::AzureOpenai,
        model: "gpt-4o-mini",
        wire: Wire::Azure,
        upstream: "gpt-4o-mini",
        keyed: true,
        endpoint: |url| Endpoint {
            api_version: Some("2024-10-21".into()),
            deployments: [(
                ModelId::parse("gpt-4o-mini").unwrap(),
                "acme-mini".to_owned(),
            )]
            .into(),
            ..base(url)
        },
    };
    let f = fixture(&ROW, Config::default(), UpstreamConfig::default()).await;
    f.put_key("azure-key-for-acme").await;
    f.complete(&f.request("hi")).await.unwrap();
    let r = &f.mock.received()[0];
    assert_eq!(r.path, "/openai/deployments/acme-mini/chat/completions");
    assert_eq!(r.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(r.credential.as_deref(), Some("azure-key-for-acme"));
}

#[tokio::test]
async fn a_self_hosted_server_without_a_stored_key_is_called_without_one() {
    static ROW: Row = Row {
        provider: ProviderId::OpenaiCompatible,
        model: "llama-3.1-8b-instruct",
        wire: Wire::Openai,
        upstream: "llama-3.1-8b-instruct",
        keyed: true,
        endpoint: |url| base(&format!("{url}/v1")),
    };
    let f = fixture(&ROW, Config::default(), UpstreamConfig::default()).await;
    f.complete(&f.request("hi")).await.unwrap();
    assert_eq!(f.credentials_seen(), vec![None]);
}

#[tokio::test]
async fn usage_a_provider_does_not_report_is_counted_here_and_marked_estimated() {
    static ROW: Row = Row {
        provider: ProviderId::Openai,
        model: "gpt-4o-mini",
        wire: Wire::Openai,
        upstream: "gpt-4o-mini",
        keyed: true,
        endpoint: |url| base(&format!("{url}/v1")),
    };
    let f = fixture(
        &ROW,
        Config {
            omit_usage: true,
            ..Config::default()
        },
        UpstreamConfig::default(),
    )
    .await;
    f.put_key(&random_key("tk-")).await;
    let c = f.complete(&f.request("count me")).await.unwrap();
    assert!(c.usage.estimated);
    assert!(
        c.usage.input_tokens > 0 && c.usage.output_tokens > 0,
        "{c:?}"
    );
    let events = f.stream(&f.request("count me")).await.unwrap();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Ok(StreamEvent::Usage(_)))),
        "nothing to report: the service counts"
    );
}

#[tokio::test]
async fn a_fallback_serves_when_the_first_provider_is_down_and_never_leaves_the_policy() {
    let primary = MockProvider::start(Config::default()).await;
    let secondary = MockProvider::start(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = SecretStore::Local(LocalSecretStore::open(&dir.path().join("store")).unwrap());
    let tenant = TenantId::parse("acme").unwrap();
    for p in [ProviderId::Openai, ProviderId::Anthropic] {
        store
            .put(
                &key_name(&tenant, p).unwrap(),
                &SecretString::from(random_key("tk-")),
            )
            .await
            .unwrap();
    }
    let router = ModelRouter::new(
        fast_retries(),
        Arc::new(SecretCache::new(store, Duration::from_secs(60))),
    )
    .unwrap();
    let mini = ModelId::parse("gpt-4o-mini").unwrap();
    let haiku = ModelId::parse("claude-haiku-4-5").unwrap();
    let mut policy = ModelPolicy::only(ProviderId::Openai, vec![mini.clone()]).unwrap();
    policy
        .providers
        .get_mut(&ProviderId::Openai)
        .unwrap()
        .endpoint = base(&format!("{}/v1", primary.url()));
    policy.providers.insert(
        ProviderId::Anthropic,
        ProviderPolicy {
            models: vec![haiku.clone()],
            endpoint: base(&secondary.url()),
        },
    );
    policy.fallbacks.insert(mini.clone(), vec![haiku.clone()]);
    assert!(policy.problems().is_empty());
    primary.fail_next([Fault::ServerError, Fault::ServerError, Fault::ServerError]);
    let routes = ModelRouter::plan(
        &policy,
        &cli::prices::builtin().for_tenant("acme"),
        "gpt-4o-mini",
    )
    .unwrap();
    let request = ChatRequest {
        model: "gpt-4o-mini".into(),
        messages: vec![ChatMessage::text(Role::User, "hi")],
        ..ChatRequest::default()
    };
    let (route, c) = router.complete(&tenant, &routes, &request).await.unwrap();
    assert_eq!(
        route.model, haiku,
        "the ledger records the model that served"
    );
    assert!(c.content.contains("claude-haiku-4-5"));
    assert_eq!(
        (primary.received().len(), secondary.received().len()),
        (3, 1)
    );
    // A fallback to a model outside the policy is refused when the manifest is checked, and never
    // planned even if a registry row carried one.
    policy
        .fallbacks
        .insert(mini.clone(), vec![ModelId::parse("gpt-4o").unwrap()]);
    assert!(!policy.problems().is_empty());
    assert_eq!(
        ModelRouter::plan(
            &policy,
            &cli::prices::builtin().for_tenant("acme"),
            "gpt-4o-mini"
        )
        .unwrap()
        .len(),
        1
    );
}

#[tokio::test]
async fn concurrent_first_uses_of_a_key_read_the_store_once() {
    static ROW: Row = Row {
        provider: ProviderId::Openai,
        model: "gpt-4o-mini",
        wire: Wire::Openai,
        upstream: "gpt-4o-mini",
        keyed: true,
        endpoint: |url| base(&format!("{url}/v1")),
    };
    let f = Arc::new(fixture(&ROW, Config::default(), UpstreamConfig::default()).await);
    f.put_key(&random_key("tk-")).await;
    let calls: Vec<_> = (0..16)
        .map(|i| {
            let f = f.clone();
            tokio::spawn(async move { f.complete(&f.request(&format!("call {i}"))).await.unwrap() })
        })
        .collect();
    for c in calls {
        c.await.unwrap();
    }
    assert_eq!(f.router.keys().fetches(), 1, "single flight");
}
