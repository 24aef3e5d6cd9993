//! The one route table: every route, its permission, and the handler it names.
//!
//! Every route is declared once in `ROUTES` with the permission it needs; `app()` builds the router from
//! this table, the auth layer reads public routes from it, and the permission layer looks routes up in
//! it. A route with `permission: None` is public.

use axum::routing::{MethodRouter, delete, get, patch, post, put};
use http::Method;

use crate::http::console as c;
use crate::http::handlers as h;
use crate::http::handlers::{
    chat_completions, embeddings, get_model, healthz, list_models, me, messages, openapi,
    readiness, usage, usage_report,
};
use crate::http::objects as o;
use crate::http::platform as p;
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
    (
        "me:read",
        "read who the token says you are (`GET /v1/me`) and your own usage (`GET /v1/me/usage`)",
    ),
    ("models:read", "list the tenant's models"),
    ("chat:write", "call the tenant's chat models"),
    ("embeddings:write", "call the tenant's embedding models"),
    ("usage:read", "read the tenant's usage, reports and budget"),
    (
        "conversations:read",
        "read the caller's own conversations and their messages",
    ),
    (
        "conversations:write",
        "create, rename and delete the caller's own conversations, and post messages (metered)",
    ),
    (
        "templates:read",
        "read and render the tenant's prompt templates",
    ),
    (
        "templates:write",
        "create prompt templates and add versions (a version never changes)",
    ),
    ("members:read", "read the tenant's members and their roles"),
    (
        "members:write",
        "grant and remove the tenant roles of the tenant's members (audited)",
    ),
    (
        "audit:read",
        "read, export and verify the tenant's audit chain",
    ),
    (
        "credentials:read",
        "list the tenant's provider credentials: names and versions, never values",
    ),
    (
        "credentials:write",
        "set, rotate and delete the tenant's provider credentials (write-only, audited)",
    ),
    ("policy:read", "read the tenant's model policy and limits"),
    (
        "policy:write",
        "narrow the tenant's model policy and limits within what the platform registered (audited)",
    ),
    (
        "platform:tenants:read",
        "platform operators: read the registry's tenants",
    ),
    (
        "platform:tenants:write",
        "platform operators: suspend and resume tenants (audited in the platform's chain)",
    ),
    (
        "platform:usage:read",
        "platform operators and finance: every tenant's usage",
    ),
    (
        "platform:prices:read",
        "platform operators and finance: the price book",
    ),
    (
        "platform:reconciliations:run",
        "platform operators and finance: reconcile a tenant's month against its provider's cost export",
    ),
    (
        "platform:audit:read",
        "platform operators and auditors: read and verify the platform's chain of a tenant",
    ),
];

/// Permissions whose routes are privileged: a refused attempt at one is itself an audit event of
/// the tenant's chain (security case 30), as every action through one is.
pub const PRIVILEGED: &[&str] = &["members:write", "credentials:write", "policy:write"];

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
        path: "/v1/me/usage",
        operation_id: "getOwnUsage",
        summary: "The caller's own usage this month, by model (its own subject's rows only)",
        permission: Some("me:read"),
        handler: || get(h::me_usage),
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
    RouteSpec {
        method: Method::POST,
        path: "/v1/conversations",
        operation_id: "createConversation",
        summary: "A conversation of the caller's, answered by one model of the tenant's policy",
        permission: Some("conversations:write"),
        handler: || post(o::create_conversation),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/conversations",
        operation_id: "listConversations",
        summary: "The caller's conversations, newest first (cursor pagination, title filter)",
        permission: Some("conversations:read"),
        handler: || get(o::list_conversations),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/conversations/{conversation_id}",
        operation_id: "getConversation",
        summary: "One of the caller's conversations",
        permission: Some("conversations:read"),
        handler: || get(o::get_conversation),
    },
    RouteSpec {
        method: Method::PATCH,
        path: "/v1/conversations/{conversation_id}",
        operation_id: "renameConversation",
        summary: "Renames one of the caller's conversations",
        permission: Some("conversations:write"),
        handler: || patch(o::rename_conversation),
    },
    RouteSpec {
        method: Method::DELETE,
        path: "/v1/conversations/{conversation_id}",
        operation_id: "deleteConversation",
        summary: "Deletes one of the caller's conversations and its messages (ledger rows stay)",
        permission: Some("conversations:write"),
        handler: || delete(o::delete_conversation),
    },
    RouteSpec {
        method: Method::POST,
        path: "/v1/conversations/{conversation_id}/messages",
        operation_id: "createConversationMessage",
        summary: "Posts a message: the model answers through the router, metered, and both are stored",
        permission: Some("conversations:write"),
        handler: || post(o::create_conversation_message),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/conversations/{conversation_id}/messages",
        operation_id: "listConversationMessages",
        summary: "A conversation's messages, oldest first (cursor pagination)",
        permission: Some("conversations:read"),
        handler: || get(o::list_conversation_messages),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/conversations/{conversation_id}/messages/{message_id}",
        operation_id: "getConversationMessage",
        summary: "One message of a conversation",
        permission: Some("conversations:read"),
        handler: || get(o::get_conversation_message),
    },
    RouteSpec {
        method: Method::POST,
        path: "/v1/prompt-templates",
        operation_id: "createPromptTemplate",
        summary: "A prompt template and its version 1",
        permission: Some("templates:write"),
        handler: || post(o::create_prompt_template),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/prompt-templates",
        operation_id: "listPromptTemplates",
        summary: "The tenant's prompt templates by name (cursor pagination, name prefix filter)",
        permission: Some("templates:read"),
        handler: || get(o::list_prompt_templates),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/prompt-templates/{template_id}",
        operation_id: "getPromptTemplate",
        summary: "One prompt template",
        permission: Some("templates:read"),
        handler: || get(o::get_prompt_template),
    },
    RouteSpec {
        method: Method::POST,
        path: "/v1/prompt-templates/{template_id}/versions",
        operation_id: "createPromptTemplateVersion",
        summary: "The next version of a prompt template (versions never change)",
        permission: Some("templates:write"),
        handler: || post(o::create_prompt_template_version),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/prompt-templates/{template_id}/versions",
        operation_id: "listPromptTemplateVersions",
        summary: "A prompt template's versions, oldest first (cursor pagination)",
        permission: Some("templates:read"),
        handler: || get(o::list_prompt_template_versions),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/prompt-templates/{template_id}/versions/{version}",
        operation_id: "getPromptTemplateVersion",
        summary: "One version of a prompt template",
        permission: Some("templates:read"),
        handler: || get(o::get_prompt_template_version),
    },
    RouteSpec {
        method: Method::POST,
        path: "/v1/prompt-templates/{template_id}/render",
        operation_id: "renderPromptTemplate",
        summary: "Renders a version (the latest by default) with exactly its variables",
        permission: Some("templates:read"),
        handler: || post(o::render_prompt_template),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/members",
        operation_id: "listMembers",
        summary: "The tenant's members and the roles its admins granted them",
        permission: Some("members:read"),
        handler: || get(o::list_members),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/members/{subject}",
        operation_id: "getMember",
        summary: "One member of the tenant",
        permission: Some("members:read"),
        handler: || get(o::get_member),
    },
    RouteSpec {
        method: Method::PUT,
        path: "/v1/members/{subject}",
        operation_id: "setMemberRoles",
        summary: "Grants a subject exactly these tenant roles (audited; never one's own)",
        permission: Some("members:write"),
        handler: || put(o::set_member_roles),
    },
    RouteSpec {
        method: Method::DELETE,
        path: "/v1/members/{subject}",
        operation_id: "removeMember",
        summary: "Removes a member's granted roles (audited; never one's own)",
        permission: Some("members:write"),
        handler: || delete(o::remove_member),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/audit/events",
        operation_id: "listAuditEvents",
        summary: "The tenant's audit events, oldest first (cursor pagination; action, outcome, actor filters)",
        permission: Some("audit:read"),
        handler: || get(o::list_audit_events),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/audit/events/{seq}",
        operation_id: "getAuditEvent",
        summary: "One audit event of the tenant, by its number in the chain",
        permission: Some("audit:read"),
        handler: || get(o::get_audit_event),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/audit/export",
        operation_id: "exportAuditEvents",
        summary: "The tenant's whole audit chain as JSON lines, to verify offline",
        permission: Some("audit:read"),
        handler: || get(o::export_audit_events),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/audit/verify",
        operation_id: "verifyAuditChain",
        summary: "Checks the tenant's audit chain; names the first broken link",
        permission: Some("audit:read"),
        handler: || get(o::verify_audit_chain),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/usage/summary",
        operation_id: "getUsageSummary",
        summary: "This month so far: totals, by model, budget and rate limits",
        permission: Some("usage:read"),
        handler: || get(h::usage_summary),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/usage/daily",
        operation_id: "getUsageDaily",
        summary: "The tenant's usage by UTC day (JSON or CSV)",
        permission: Some("usage:read"),
        handler: || get(h::usage_daily),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/usage/models",
        operation_id: "getUsageByModel",
        summary: "The tenant's usage by model (JSON or CSV)",
        permission: Some("usage:read"),
        handler: || get(h::usage_by_model),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/usage/subjects",
        operation_id: "getUsageBySubject",
        summary: "The tenant's usage by subject (JSON or CSV)",
        permission: Some("usage:read"),
        handler: || get(h::usage_by_subject),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/budget",
        operation_id: "getBudget",
        summary: "This month's budget, spend and holds (and the caller's subject's)",
        permission: Some("usage:read"),
        handler: || get(h::budget),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/limits",
        operation_id: "getLimits",
        summary: "The budget and rate limits the tenant runs under",
        permission: Some("policy:read"),
        handler: || get(h::limits),
    },
    RouteSpec {
        method: Method::PUT,
        path: "/v1/policy",
        operation_id: "narrowModelPolicy",
        summary: "Disables models of the registered policy (never adds one; audited)",
        permission: Some("policy:write"),
        handler: || put(h::narrow_policy),
    },
    RouteSpec {
        method: Method::PUT,
        path: "/v1/limits",
        operation_id: "narrowLimits",
        summary: "Lowers the budget and rate limits below the registered ones (never raises; audited)",
        permission: Some("policy:write"),
        handler: || put(h::narrow_limits),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/policy",
        operation_id: "getModelPolicy",
        summary: "The tenant's model policy as the platform registered it",
        permission: Some("policy:read"),
        handler: || get(h::policy),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/credentials",
        operation_id: "listCredentials",
        summary: "The tenant's provider credentials: names and versions, never values",
        permission: Some("credentials:read"),
        handler: || get(o::list_credentials),
    },
    RouteSpec {
        method: Method::PUT,
        path: "/v1/credentials/{provider}",
        operation_id: "setCredential",
        summary: "Stores a provider credential (write-only; audited)",
        permission: Some("credentials:write"),
        handler: || put(o::set_credential),
    },
    RouteSpec {
        method: Method::POST,
        path: "/v1/credentials/{provider}/rotate",
        operation_id: "rotateCredential",
        summary: "Replaces a stored provider credential (write-only; audited)",
        permission: Some("credentials:write"),
        handler: || post(o::rotate_credential),
    },
    RouteSpec {
        method: Method::DELETE,
        path: "/v1/credentials/{provider}",
        operation_id: "deleteCredential",
        summary: "Deletes a provider credential (audited)",
        permission: Some("credentials:write"),
        handler: || delete(o::delete_credential),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/platform/tenants",
        operation_id: "listTenants",
        summary: "Platform: every tenant of the registry",
        permission: Some("platform:tenants:read"),
        handler: || get(p::list_tenants),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/platform/tenants/{tenant_id}",
        operation_id: "getTenant",
        summary: "Platform: one tenant of the registry",
        permission: Some("platform:tenants:read"),
        handler: || get(p::get_tenant),
    },
    RouteSpec {
        method: Method::POST,
        path: "/v1/platform/tenants/{tenant_id}/suspend",
        operation_id: "suspendTenant",
        summary: "Platform: suspends a tenant (403 on all its routes; audited)",
        permission: Some("platform:tenants:write"),
        handler: || post(p::suspend_tenant),
    },
    RouteSpec {
        method: Method::POST,
        path: "/v1/platform/tenants/{tenant_id}/resume",
        operation_id: "resumeTenant",
        summary: "Platform: resumes a suspended tenant (audited)",
        permission: Some("platform:tenants:write"),
        handler: || post(p::resume_tenant),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/platform/usage",
        operation_id: "getPlatformUsage",
        summary: "Platform: every tenant's usage over a range of UTC days, and the sum",
        permission: Some("platform:usage:read"),
        handler: || get(p::platform_usage),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/platform/prices",
        operation_id: "listPriceVersions",
        summary: "Platform: the imported price book's versions",
        permission: Some("platform:prices:read"),
        handler: || get(p::list_price_versions),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/platform/tenants/{tenant_id}/usage",
        operation_id: "getTenantUsage",
        summary: "Platform: one tenant's usage by model over a range of UTC days",
        permission: Some("platform:usage:read"),
        handler: || get(p::tenant_usage),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/platform/tenants/{tenant_id}/audit/events",
        operation_id: "listPlatformAuditEvents",
        summary: "Platform: the platform's audit chain of a tenant, oldest first (cursor pagination)",
        permission: Some("platform:audit:read"),
        handler: || get(p::list_platform_audit_events),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/platform/tenants/{tenant_id}/audit/verify",
        operation_id: "verifyPlatformAuditChain",
        summary: "Platform: checks the platform's chain of a tenant; names the first broken link",
        permission: Some("platform:audit:read"),
        handler: || get(p::verify_platform_audit_chain),
    },
    RouteSpec {
        method: Method::PATCH,
        path: "/v1/prompt-templates/{template_id}",
        operation_id: "updatePromptTemplate",
        summary: "Changes a prompt template's description (its versions never change)",
        permission: Some("templates:write"),
        handler: || patch(o::update_prompt_template),
    },
    RouteSpec {
        method: Method::POST,
        path: "/v1/platform/tenants/{tenant_id}/reconciliations",
        operation_id: "startReconciliation",
        summary: "Platform: reconciles a tenant's month against its provider's cost export (CSV body); kept as a run",
        permission: Some("platform:reconciliations:run"),
        handler: || post(p::start_reconciliation),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/platform/reconciliations",
        operation_id: "listReconciliationRuns",
        summary: "Platform: reconciliation runs, newest first (one tenant's with `tenant`)",
        permission: Some("platform:usage:read"),
        handler: || get(p::list_reconciliation_runs),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/platform/reconciliations/{run_id}",
        operation_id: "getReconciliationRun",
        summary: "Platform: one reconciliation run with its variances per day and model",
        permission: Some("platform:usage:read"),
        handler: || get(p::get_reconciliation_run),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/platform/checks",
        operation_id: "listTenantChecks",
        summary: "Platform: what `tenantctl status` last found of each tenant (drift), and when",
        permission: Some("platform:tenants:read"),
        handler: || get(p::list_checks),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/platform/spend",
        operation_id: "getPlatformSpend",
        summary: "Platform: each tenant's LLM spend in a month next to its AWS spend (as last read from Cost Explorer)",
        permission: Some("platform:usage:read"),
        handler: || get(p::month_spend),
    },
    RouteSpec {
        method: Method::GET,
        path: "/console",
        operation_id: "consoleHome",
        summary: "Console: the sign-in page, or the signed-in caller's first page",
        permission: None,
        handler: || get(c::home),
    },
    RouteSpec {
        method: Method::GET,
        path: "/console/assets/console.css",
        operation_id: "consoleStylesheet",
        summary: "Console: its stylesheet",
        permission: None,
        handler: || get(c::stylesheet),
    },
    RouteSpec {
        method: Method::GET,
        path: "/console/login",
        operation_id: "consoleLogin",
        summary: "Console: starts an OpenID Connect sign-in (code flow, PKCE) with the tenant's issuer",
        permission: None,
        handler: || get(c::login),
    },
    RouteSpec {
        method: Method::GET,
        path: "/console/callback",
        operation_id: "consoleCallback",
        summary: "Console: the issuer's redirect back; exchanges the code, verifies both tokens, sets the session",
        permission: None,
        handler: || get(c::callback),
    },
    RouteSpec {
        method: Method::POST,
        path: "/console/logout",
        operation_id: "consoleLogout",
        summary: "Console: ends the session (CSRF-checked)",
        permission: None,
        handler: || post(c::logout),
    },
    RouteSpec {
        method: Method::GET,
        path: "/console/me",
        operation_id: "consoleOwnUsage",
        summary: "Console: the caller's own usage and models (calls getOwnUsage, listModels)",
        permission: None,
        handler: || get(c::me),
    },
    RouteSpec {
        method: Method::GET,
        path: "/console/models",
        operation_id: "consoleModels",
        summary: "Console: the tenant's models (calls listModels)",
        permission: None,
        handler: || get(c::models),
    },
    RouteSpec {
        method: Method::GET,
        path: "/console/usage",
        operation_id: "consoleUsage",
        summary: "Console: usage over time, by model and subject, budget burn-down (calls getUsageDaily, getUsageByModel, getUsageBySubject)",
        permission: None,
        handler: || get(c::usage),
    },
    RouteSpec {
        method: Method::GET,
        path: "/console/finance",
        operation_id: "consoleFinance",
        summary: "Console: a month's spend by model and cost-center (calls getUsageByModel)",
        permission: None,
        handler: || get(c::finance),
    },
    RouteSpec {
        method: Method::GET,
        path: "/console/finance.csv",
        operation_id: "consoleFinanceCsv",
        summary: "Console: the month's CSV export (calls getUsageByModel with format=csv)",
        permission: None,
        handler: || get(c::finance_csv),
    },
    RouteSpec {
        method: Method::GET,
        path: "/console/members",
        operation_id: "consoleMembers",
        summary: "Console: members and roles (calls listMembers)",
        permission: None,
        handler: || get(c::members),
    },
    RouteSpec {
        method: Method::POST,
        path: "/console/members",
        operation_id: "consoleSetMember",
        summary: "Console: grants or removes a member's roles (CSRF-checked; calls setMemberRoles or removeMember)",
        permission: None,
        handler: || post(c::set_members),
    },
    RouteSpec {
        method: Method::GET,
        path: "/console/policy",
        operation_id: "consolePolicy",
        summary: "Console: the model policy and limits (calls getModelPolicy, getLimits)",
        permission: None,
        handler: || get(c::policy),
    },
    RouteSpec {
        method: Method::POST,
        path: "/console/policy",
        operation_id: "consoleNarrowPolicy",
        summary: "Console: disables models (CSRF-checked; calls narrowModelPolicy)",
        permission: None,
        handler: || post(c::set_policy),
    },
    RouteSpec {
        method: Method::GET,
        path: "/console/credentials",
        operation_id: "consoleCredentials",
        summary: "Console: provider credentials, never values (calls listCredentials)",
        permission: None,
        handler: || get(c::credentials),
    },
    RouteSpec {
        method: Method::POST,
        path: "/console/credentials",
        operation_id: "consoleSetCredential",
        summary: "Console: stores a provider credential, write-only (CSRF-checked; calls setCredential)",
        permission: None,
        handler: || post(c::set_credential),
    },
    RouteSpec {
        method: Method::GET,
        path: "/console/audit",
        operation_id: "consoleAudit",
        summary: "Console: the audit chain's verification and events (calls verifyAuditChain, listAuditEvents)",
        permission: None,
        handler: || get(c::audit),
    },
    RouteSpec {
        method: Method::GET,
        path: "/console/platform",
        operation_id: "consolePlatformTenants",
        summary: "Console: every tenant, tier and status (calls listTenants)",
        permission: None,
        handler: || get(c::platform),
    },
    RouteSpec {
        method: Method::GET,
        path: "/console/platform/spend",
        operation_id: "consolePlatformSpend",
        summary: "Console: spend per tenant stacked by model, next to AWS spend (calls getPlatformSpend; getPlatformUsage too for a range)",
        permission: None,
        handler: || get(c::platform_spend),
    },
    RouteSpec {
        method: Method::GET,
        path: "/console/platform/reconciliations",
        operation_id: "consoleReconciliations",
        summary: "Console: reconciliation runs and variances (calls listReconciliationRuns, getReconciliationRun)",
        permission: None,
        handler: || get(c::reconciliations),
    },
    RouteSpec {
        method: Method::GET,
        path: "/console/platform/prices",
        operation_id: "consolePrices",
        summary: "Console: the price book (calls listPriceVersions)",
        permission: None,
        handler: || get(c::prices),
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

/// Whether `path` is the web console's (`/console...`): a public route at the edge (it carries no
/// bearer token); its pages call the API in-process with the session's token (`http::console`),
/// so they hold no permission of their own. Not part of the OpenAPI document.
pub fn is_console(path: &str) -> bool {
    path == crate::http::console::PREFIX
        || path.starts_with(concat!("/console", "/"))
        || path.starts_with("/console.")
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
        for (role, perms) in crate::auth::roles::TENANT_ROLES
            .iter()
            .chain(crate::auth::roles::PLATFORM_ROLES)
        {
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
    fn docs_api_md_lists_every_route() {
        // What the API promises is what the table serves: docs/api.md's route table is generated
        // from it (regenerate with `UPDATE_OPENAPI=1 cargo test -p runtime --lib`).
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let mut routes: Vec<&RouteSpec> = ROUTES.iter().collect();
        routes.sort_by_key(|r| (r.path, r.method.as_str()));
        let mut table = String::from(
            "| method | path | operation id | permission | what |\n| --- | --- | --- | --- | --- |\n",
        );
        for r in routes {
            table.push_str(&format!(
                "| {} | `{}` | `{}` | `{}` | {} |\n",
                r.method,
                r.path,
                r.operation_id,
                r.permission.unwrap_or("(public)"),
                r.summary
            ));
        }
        let marker = "## Routes\n\n";
        let head = &doc[..doc
            .find(marker)
            .expect("docs/api.md has a `## Routes` section")
            + marker.len()];
        let want = format!("{head}{table}");
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        assert!(
            std::fs::read_to_string(&path).unwrap() == want,
            "docs/api.md's route table is stale; regenerate it with `UPDATE_OPENAPI=1 cargo test -p runtime --lib`"
        );
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
