//! The API's OpenAPI 3.1 document, generated from the one route table (`routes::ROUTES`): every
//! route's path, method, operation id, summary, the permission it needs (as the bearer scheme's
//! scope and `x-permission`), its path parameters, and the one error shape every failure uses. The
//! checked-in copy is `docs/openapi.json`; a test fails when it differs from what this generates.
//! Served at `GET /openapi.json`. This module describes; it decides nothing.

use serde_json::{Map, Value, json};

use crate::http::routes::{PERMISSIONS, ROUTES, RouteSpec};

/// Media types of a route's successful answer, beyond JSON.
fn extra_media(route: &RouteSpec) -> &'static [&'static str] {
    match route.operation_id {
        // `stream: true` answers server-sent events.
        "createChatCompletion" | "createMessage" => &["text/event-stream"],
        // `format=csv`.
        "getUsageReport" | "getUsageDaily" | "getUsageByModel" | "getUsageBySubject" => {
            &["text/csv"]
        }
        // Liveness answers the text `ok`.
        "liveness" => &["text/plain"],
        // One event per line.
        "exportAuditEvents" => &["application/jsonl"],
        _ => &[],
    }
}

/// The error schema a route's failures use: Anthropic's on `/v1/messages`, OpenAI's elsewhere.
fn error_ref(route: &RouteSpec) -> &'static str {
    if route.path == "/v1/messages" {
        "#/components/responses/AnthropicError"
    } else {
        "#/components/responses/Error"
    }
}

/// The status of a route's success: 201 for the routes that create an object.
pub fn success_status(route: &RouteSpec) -> &'static str {
    match route.operation_id {
        "createConversation"
        | "createConversationMessage"
        | "createPromptTemplate"
        | "createPromptTemplateVersion"
        | "startReconciliation" => "201",
        _ => "200",
    }
}

fn string(max: u64) -> Value {
    json!({"type": "string", "maxLength": max})
}

/// A route's JSON body, where it takes one: every field it accepts (any other is a 400).
fn request_schema(route: &RouteSpec) -> Option<Value> {
    let object = |props: Value, required: &[&str]| json!({"type": "object", "properties": props, "required": required, "additionalProperties": false});
    Some(match route.operation_id {
        "createConversation" => object(
            json!({"title": {"type": "string", "minLength": 1, "maxLength": 200},
                   "model": {"type": "string", "minLength": 1, "maxLength": 200},
                   "system_prompt": string(32768)}),
            &["title", "model"],
        ),
        "renameConversation" => object(
            json!({"title": {"type": "string", "minLength": 1, "maxLength": 200}}),
            &["title"],
        ),
        "createConversationMessage" => object(
            json!({"content": {"type": "string", "minLength": 1, "maxLength": 32768}}),
            &["content"],
        ),
        "createPromptTemplate" => object(
            json!({"name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,63}$"},
                   "description": string(1000),
                   "body": {"type": "string", "minLength": 1, "maxLength": 65536}}),
            &["name", "body"],
        ),
        "updatePromptTemplate" => object(json!({"description": string(1000)}), &["description"]),
        "createPromptTemplateVersion" => object(
            json!({"body": {"type": "string", "minLength": 1, "maxLength": 65536}}),
            &["body"],
        ),
        "renderPromptTemplate" => object(
            json!({"version": {"type": "integer", "minimum": 1},
                   "variables": {"type": "object", "additionalProperties": {"type": "string"}}}),
            &[],
        ),
        "narrowModelPolicy" => object(
            json!({"disabled_models": {"type": "array", "items": {"type": "string", "maxLength": 200}}}),
            &["disabled_models"],
        ),
        "narrowLimits" => object(
            json!({"monthly_budget_micro_usd": {"type": ["integer", "null"], "minimum": 1},
                   "requests_per_minute": {"type": ["integer", "null"], "minimum": 1, "maximum": 4_294_967_295_u64},
                   "tokens_per_minute": {"type": ["integer", "null"], "minimum": 1}}),
            &[],
        ),
        "suspendTenant" | "resumeTenant" => {
            object(json!({"reason": {"type": "string", "maxLength": 500}}), &[])
        }
        "setCredential" | "rotateCredential" => object(
            json!({"value": {"type": "string", "minLength": 1, "maxLength": 8192, "writeOnly": true}}),
            &["value"],
        ),
        "setMemberRoles" => object(
            json!({"roles": {"type": "array", "minItems": 1, "items": {"type": "string",
                   "enum": crate::auth::roles::TENANT_ROLES.iter().map(|(n, _)| *n).collect::<Vec<_>>()}}}),
            &["roles"],
        ),
        _ if matches!(
            route.method,
            http::Method::POST | http::Method::PUT | http::Method::PATCH
        ) =>
        {
            json!({"type": "object"})
        }
        _ => return None,
    })
}

/// A route's query parameters: name, JSON schema, what it does.
fn query_parameters(route: &RouteSpec) -> Vec<(&'static str, Value, &'static str)> {
    // The range of UTC days every usage route takes, and a report's format.
    let days = || {
        vec![
            (
                "from",
                json!({"type": "string"}),
                "the first UTC day, `YYYY-MM-DD` or `YYYY-MM`",
            ),
            (
                "to",
                json!({"type": "string"}),
                "the last UTC day, `YYYY-MM-DD` or `YYYY-MM`",
            ),
        ]
    };
    let format = (
        "format",
        json!({"type": "string", "enum": ["json", "csv"]}),
        "the answer's format",
    );
    let limit = |max: u64| json!({"type": "integer", "minimum": 1, "maximum": max});
    let uuid = json!({"type": "string", "format": "uuid"});
    let seq = json!({"type": "integer", "minimum": 0});
    let text = json!({"type": "string", "maxLength": 200});
    match route.operation_id {
        "getUsage" => vec![
            ("limit", limit(1000), "rows per page (100 by default)"),
            ("after", uuid, "the previous page's `last_id`"),
        ],
        "startReconciliation" => vec![
            (
                "month",
                json!({"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"}),
                "the month, YYYY-MM (UTC); required",
            ),
            (
                "tolerance_micro_usd",
                json!({"type": "integer", "minimum": 0}),
                "extra variance accepted per day and model",
            ),
        ],
        "listReconciliationRuns" => vec![
            ("tenant", text.clone(), "one tenant's runs"),
            ("limit", limit(100), "runs (20 by default)"),
        ],
        "listPlatformAuditEvents" => vec![
            ("limit", limit(1000), "events per page (100 by default)"),
            (
                "after",
                seq.clone(),
                "the previous page's `last_id` (a number)",
            ),
        ],
        "getPlatformUsage" | "getTenantUsage" => days(),
        "getUsageDaily" | "getUsageByModel" | "getUsageBySubject" => {
            [days(), vec![format]].concat()
        }
        "getUsageReport" => [
            days(),
            vec![
                (
                    "group_by",
                    json!({"type": "string", "enum": ["day", "model", "subject"]}),
                    "rows by",
                ),
                format,
            ],
        ]
        .concat(),
        "listConversations" => vec![
            (
                "limit",
                limit(100),
                "conversations per page (20 by default)",
            ),
            ("after", uuid, "the previous page's `last_id`"),
            ("title", text, "titles containing this, case-insensitive"),
        ],
        "listConversationMessages" | "listPromptTemplateVersions" => vec![
            ("limit", limit(100), "items per page"),
            ("after", seq, "the previous page's `last_id` (a number)"),
        ],
        "listPromptTemplates" => vec![
            ("limit", limit(100), "templates per page (20 by default)"),
            ("after", uuid, "the previous page's `last_id`"),
            ("name", text, "names starting with this"),
        ],
        "listMembers" => vec![
            ("limit", limit(100), "members per page (50 by default)"),
            (
                "after",
                text.clone(),
                "the previous page's `last_id` (a subject)",
            ),
            ("role", text, "members holding this role"),
        ],
        "listAuditEvents" => vec![
            ("limit", limit(1000), "events per page (100 by default)"),
            ("after", seq, "the previous page's `last_id` (a number)"),
            ("action", text.clone(), "actions starting with this"),
            ("outcome", text.clone(), "this outcome only"),
            ("actor", text, "this actor only (`issuer/subject`)"),
        ],
        _ => Vec::new(),
    }
}

fn operation(route: &RouteSpec) -> Value {
    let mut op = Map::new();
    op.insert("operationId".into(), json!(route.operation_id));
    op.insert("summary".into(), json!(route.summary));
    let mut parameters = vec![json!({"$ref": "#/components/parameters/RequestId"})];
    for segment in route.path.split('/') {
        if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let schema = match name {
                "conversation_id" | "message_id" | "template_id" => {
                    json!({"type": "string", "format": "uuid"})
                }
                "seq" | "version" => json!({"type": "integer", "minimum": 1}),
                _ => json!({"type": "string", "minLength": 1}),
            };
            parameters.push(json!({
                "name": name, "in": "path", "required": true, "schema": schema,
            }));
        }
    }
    for (name, schema, description) in query_parameters(route) {
        parameters.push(json!({
            "name": name, "in": "query", "required": false, "schema": schema,
            "description": description,
        }));
    }
    op.insert("parameters".into(), Value::Array(parameters));
    match route.permission {
        Some(p) => {
            op.insert("security".into(), json!([{"bearer": [p]}]));
            op.insert("x-permission".into(), json!(p));
        }
        None => {
            op.insert("security".into(), json!([]));
        }
    }
    if route.operation_id == "startReconciliation" {
        op.insert(
            "requestBody".into(),
            json!({"required": true, "content": {"text/csv": {"schema": {"type": "string"}}}}),
        );
    } else if let Some(schema) = request_schema(route) {
        op.insert(
            "requestBody".into(),
            json!({"required": true, "content": {"application/json": {"schema": schema}}}),
        );
    }
    let mut content = Map::new();
    if route.operation_id != "liveness" {
        content.insert(
            "application/json".into(),
            json!({"schema": {"type": "object"}}),
        );
    }
    for media in extra_media(route) {
        content.insert((*media).into(), json!({"schema": {"type": "string"}}));
    }
    let mut responses = Map::new();
    responses.insert(
        success_status(route).into(),
        json!({
            "description": "success",
            "headers": {"x-request-id": {"$ref": "#/components/headers/RequestId"}},
            "content": content,
        }),
    );
    responses.insert("4XX".into(), json!({"$ref": error_ref(route)}));
    responses.insert("5XX".into(), json!({"$ref": error_ref(route)}));
    op.insert("responses".into(), Value::Object(responses));
    Value::Object(op)
}

/// `value` with every object's keys in sorted order, whatever order the build's `serde_json` keeps
/// (a dependency may switch it to insertion order): the document is published and compared.
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let ordered: std::collections::BTreeMap<String, Value> =
                map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            Value::Object(ordered.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// The whole document (keys sorted).
pub fn document() -> Value {
    sorted(unsorted_document())
}

fn unsorted_document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES
        .iter()
        .filter(|r| !crate::http::routes::is_console(r.path))
    {
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(methods) = entry {
            methods.insert(route.method.as_str().to_ascii_lowercase(), operation(route));
        }
    }
    let scopes: Map<String, Value> = PERMISSIONS
        .iter()
        .map(|(p, what)| ((*p).to_owned(), json!(what)))
        .collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "tenantctl runtime API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Each tenant's API: the verified token's tenant is the only tenant a request acts for. Every operation needs the permission it names (a token scope, or a role the issuer maps to it); public operations need none.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A JWT from one of the platform's trusted issuers, bound to one tenant. The scopes an operation lists are the permissions it needs.",
                    "x-scopes": scopes,
                }
            },
            "parameters": {
                "RequestId": {
                    "name": "x-request-id",
                    "in": "header",
                    "required": false,
                    "description": "A UUID to correlate this request with its logs and ledger row; honoured when well formed, else a new one is assigned.",
                    "schema": {"type": "string", "format": "uuid"},
                }
            },
            "headers": {
                "RequestId": {
                    "description": "The request's id (the one sent, when it was a UUID), on every response.",
                    "schema": {"type": "string", "format": "uuid"},
                }
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["message", "type", "code", "request_id"],
                            "properties": {
                                "message": {"type": "string"},
                                "type": {"type": "string"},
                                "code": {"type": ["string", "null"], "description": "Stable and machine-readable."},
                                "request_id": {"type": "string", "format": "uuid"},
                            },
                        }
                    },
                },
                "AnthropicError": {
                    "type": "object",
                    "required": ["type", "error", "request_id"],
                    "properties": {
                        "type": {"const": "error"},
                        "error": {
                            "type": "object",
                            "required": ["type", "message"],
                            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
                        },
                        "request_id": {"type": "string", "format": "uuid"},
                    },
                },
            },
            "responses": {
                "Error": {
                    "description": "An error, in the OpenAI shape",
                    "headers": {"x-request-id": {"$ref": "#/components/headers/RequestId"}},
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                },
                "AnthropicError": {
                    "description": "An error, in the Anthropic shape",
                    "headers": {"x-request-id": {"$ref": "#/components/headers/RequestId"}},
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AnthropicError"}}},
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checked-in document, next to the workspace's other docs.
    fn checked_in_path() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json")
    }

    #[test]
    fn the_checked_in_openapi_document_is_current() {
        // Issue 12 item 3: the contract clients read is the one the code serves.
        let generated = serde_json::to_string_pretty(&document()).unwrap() + "\n";
        let path = checked_in_path();
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "`docs/openapi.json` is stale; regenerate it with `UPDATE_OPENAPI=1 cargo test -p runtime --lib openapi`"
        );
    }

    #[test]
    fn every_route_is_one_operation_of_the_document_and_nothing_else_is() {
        let doc = document();
        let mut ops = Vec::new();
        for (path, methods) in doc["paths"].as_object().unwrap() {
            for (method, op) in methods.as_object().unwrap() {
                ops.push((
                    method.to_ascii_uppercase(),
                    path.clone(),
                    op["operationId"].as_str().unwrap().to_owned(),
                    op["x-permission"].as_str().map(str::to_owned),
                ));
            }
        }
        let mut want: Vec<_> = ROUTES
            .iter()
            .filter(|r| !crate::http::routes::is_console(r.path))
            .map(|r| {
                (
                    r.method.as_str().to_owned(),
                    r.path.to_owned(),
                    r.operation_id.to_owned(),
                    r.permission.map(str::to_owned),
                )
            })
            .collect();
        ops.sort();
        want.sort();
        assert_eq!(ops, want);
    }
}
