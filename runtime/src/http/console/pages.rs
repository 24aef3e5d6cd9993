//! The console's pages. Each takes the signed-in caller (`Signed`), calls the API as it, and renders
//! what the API answered; a section the caller may not read shows the API's refusal instead.

use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};

use super::html::{bars, esc, stacked, table, usd};
use super::{ApiFailure, Signed, field};
use crate::state::AppState;

/// The stylesheet, served from this origin (the CSP allows no other).
pub const STYLESHEET: &str = include_str!("console.css");

/// The pages of the navigation: path, label, the permission that opens it, and whether it is the
/// platform's (an operator's) page.
const NAV: &[(&str, &str, &str, bool)] = &[
    ("/console/me", "My usage", "me:read", false),
    ("/console/models", "Models", "models:read", false),
    ("/console/usage", "Usage", "usage:read", false),
    ("/console/finance", "Finance", "usage:read", false),
    ("/console/members", "Members", "members:read", false),
    ("/console/policy", "Model policy", "policy:read", false),
    (
        "/console/credentials",
        "Credentials",
        "credentials:read",
        false,
    ),
    ("/console/audit", "Audit", "audit:read", false),
    (
        "/console/platform",
        "Tenants",
        "platform:tenants:read",
        true,
    ),
    (
        "/console/platform/spend",
        "Spend",
        "platform:usage:read",
        true,
    ),
    (
        "/console/platform/reconciliations",
        "Reconciliation",
        "platform:usage:read",
        true,
    ),
    (
        "/console/platform/prices",
        "Price book",
        "platform:prices:read",
        true,
    ),
];

/// A whole page: header (who is signed in, sign out), navigation, `body`.
pub fn frame(signed: Option<&Signed>, title: &str, active: &str, body: String) -> Response {
    let mut out = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{} - tenantctl console</title><link rel=\"icon\" href=\"data:,\"><link rel=\"stylesheet\" href=\"/console/assets/console.css\"></head><body><a class=\"skip\" href=\"#main\">Skip to content</a><header><span class=\"brand\">tenantctl console</span>",
        esc(title)
    );
    if let Some(s) = signed {
        let (who, of) = s.who();
        let _ = write!(
            out,
            "<span class=\"who\" id=\"who\">{} &middot; {}</span><form method=\"post\" action=\"/console/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Sign out</button></form>",
            esc(&who),
            esc(&of),
            esc(&s.csrf)
        );
    }
    out.push_str("</header>");
    if let Some(s) = signed {
        out.push_str("<nav aria-label=\"Console\"><ul>");
        for (path, label, permission, platform) in NAV {
            if *platform == s.is_operator() && s.may(permission) {
                let current = if *path == active {
                    " aria-current=\"page\""
                } else {
                    ""
                };
                let _ = write!(out, "<li><a href=\"{path}\"{current}>{label}</a></li>");
            }
        }
        out.push_str("</ul></nav>");
    }
    let _ = write!(
        out,
        "<main id=\"main\"><h1>{}</h1>{body}</main></body></html>",
        esc(title)
    );
    Html(out).into_response()
}

/// A page saying what went wrong, where, and what to do.
pub fn error_page(status: StatusCode, title: &str, what: &str, hint: &str) -> Response {
    let mut r = frame(
        None,
        title,
        "",
        format!(
            "<p class=\"error\" role=\"alert\">{}</p><p>{}. <a href=\"/console\">Back to the console</a>.</p>",
            esc(what),
            esc(hint)
        ),
    );
    *r.status_mut() = status;
    r
}

/// The API's refusal of one section, shown in its place.
fn refused(f: &ApiFailure) -> String {
    format!(
        "<p class=\"error\" role=\"alert\" data-status=\"{}\">The API answered {} <code>{}</code>: {}</p>",
        f.status,
        f.status,
        esc(&f.code),
        esc(&f.message)
    )
}

/// A section from one API call: its rendering, or the API's refusal.
async fn section(signed: &Signed, uri: &str, render: impl FnOnce(&Value) -> String) -> String {
    match signed.get(uri).await {
        Ok(v) => render(&v),
        Err(f) => refused(&f),
    }
}

fn rows(v: &Value, key: &str) -> Vec<Value> {
    v[key].as_array().cloned().unwrap_or_default()
}

fn csrf_input(signed: &Signed) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&signed.csrf)
    )
}

/// A notice after a write (`?done=...` / `?failed=...` from the redirect).
fn notice(q: &Notice) -> String {
    match (&q.done, &q.failed) {
        (_, Some(f)) => format!("<p class=\"error\" role=\"alert\">{}</p>", esc(f)),
        (Some(d), None) => format!("<p class=\"ok\" role=\"status\">{}</p>", esc(d)),
        _ => String::new(),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct Notice {
    done: Option<String>,
    failed: Option<String>,
}

/// After a write: back to `page` with what happened.
fn after_write(page: &str, result: Result<String, ApiFailure>) -> Response {
    let query = match result {
        Ok(done) => url::form_urlencoded::Serializer::new(String::new())
            .append_pair("done", &done)
            .finish(),
        Err(f) => url::form_urlencoded::Serializer::new(String::new())
            .append_pair(
                "failed",
                &format!("The API answered {} {}: {}", f.status, f.code, f.message),
            )
            .finish(),
    };
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, format!("{page}?{query}"))],
    )
        .into_response()
}

fn segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[derive(Debug, Deserialize)]
pub struct Home {
    signed_out: Option<String>,
}

/// `GET /console`: the sign-in page, or the caller's first page when signed in.
pub async fn home(
    State(state): State<AppState>,
    signed: Result<Signed, super::NotSigned>,
    Query(q): Query<Home>,
) -> Response {
    if state.console.is_none() {
        return crate::http::error::ApiError::NotFound.into_response();
    }
    if let Ok(s) = signed {
        let to = if s.is_operator() {
            "/console/platform"
        } else {
            "/console/me"
        };
        return (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response();
    }
    let why = match q.signed_out.as_deref() {
        Some("expired") => {
            "<p class=\"ok\" role=\"status\">Your session expired: sign in again.</p>"
        }
        Some("rejected") => {
            "<p class=\"error\" role=\"alert\">Your sign-in is no longer accepted (the token was refused): sign in again.</p>"
        }
        Some("bye") => "<p class=\"ok\" role=\"status\">Signed out.</p>",
        Some("invalid") => {
            "<p class=\"error\" role=\"alert\">Your session could not be read: sign in again.</p>"
        }
        _ => "",
    };
    frame(
        None,
        "Sign in",
        "",
        format!(
            "{why}<form method=\"get\" action=\"/console/login\" class=\"signin\"><label for=\"tenant\">Tenant id</label><input id=\"tenant\" name=\"tenant\" required autocomplete=\"organization\" pattern=\"[a-z0-9\\-]+\" aria-describedby=\"tenant-help\"><p id=\"tenant-help\" class=\"help\">Your organisation's id on this platform; you sign in with its identity provider.</p><button type=\"submit\">Sign in</button></form><form method=\"get\" action=\"/console/login\" class=\"signin\"><input type=\"hidden\" name=\"staff\" value=\"1\"><button type=\"submit\" id=\"staff\">Sign in as platform staff</button></form>"
        ),
    )
}

/// `GET /console/assets/console.css`.
pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
        .into_response()
}

const MODEL_COLUMNS: &[(&str, &str)] = &[
    ("provider", "Provider"),
    ("model", "Model"),
    ("requests", "Requests"),
    ("input_tokens", "Input tokens"),
    ("output_tokens", "Output tokens"),
    ("cost_micro_usd", "Cost"),
];

/// `GET /console/me`: the caller's own usage this month and the models it may use.
pub async fn me(signed: Signed) -> Response {
    let usage = section(&signed, "/v1/me/usage", |v| {
        let mut out = format!(
            "<p>From {} to {} (UTC): <strong id=\"own-total\" data-micro-usd=\"{}\">{}</strong> over {} requests.</p>",
            esc(v["from"].as_str().unwrap_or_default()),
            esc(v["to"].as_str().unwrap_or_default()),
            v["totals"]["cost_micro_usd"].as_i64().unwrap_or(0),
            usd(v["totals"]["cost_micro_usd"].as_i64().unwrap_or(0)),
            v["totals"]["requests"].as_i64().unwrap_or(0)
        );
        if let Some(b) = v["budget"].as_object() {
            let _ = write!(
                out,
                "<p>Your own budget this month: {} of {} spent.</p>",
                usd(b["spent_this_month_micro_usd"].as_i64().unwrap_or(0)),
                usd(b["monthly_budget_micro_usd"].as_i64().unwrap_or(0))
            );
        }
        out + &table("own-usage", "Your usage by model", MODEL_COLUMNS, &rows(v, "models"))
    })
    .await;
    let models = section(&signed, "/v1/models", |v| {
        table(
            "own-models",
            "Models you may use",
            &[("id", "Model"), ("owned_by", "Provider")],
            &rows(v, "data"),
        )
    })
    .await;
    frame(
        Some(&signed),
        "My usage",
        "/console/me",
        format!(
            "<section aria-labelledby=\"own-h\"><h2 id=\"own-h\">This month</h2>{usage}</section><section aria-labelledby=\"models-h\"><h2 id=\"models-h\">Models</h2>{models}</section>"
        ),
    )
}

/// `GET /console/models`: the tenant's models.
pub async fn models(signed: Signed) -> Response {
    let body = section(&signed, "/v1/models", |v| {
        table(
            "models",
            "The models your tenant's policy permits",
            &[("id", "Model"), ("owned_by", "Provider")],
            &rows(v, "data"),
        )
    })
    .await;
    frame(Some(&signed), "Models", "/console/models", body)
}

#[derive(Debug, Deserialize)]
pub struct Range {
    from: Option<String>,
    to: Option<String>,
}

impl Range {
    fn query(&self) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        if let Some(f) = self.from.as_deref().filter(|f| !f.is_empty()) {
            s.append_pair("from", f);
        }
        if let Some(t) = self.to.as_deref().filter(|t| !t.is_empty()) {
            s.append_pair("to", t);
        }
        s.finish()
    }

    fn form(&self, action: &str) -> String {
        format!(
            "<form method=\"get\" action=\"{action}\" class=\"range\"><label for=\"from\">From</label><input id=\"from\" name=\"from\" value=\"{}\" placeholder=\"YYYY-MM-DD\"><label for=\"to\">To</label><input id=\"to\" name=\"to\" value=\"{}\" placeholder=\"YYYY-MM-DD\"><button type=\"submit\">Show</button></form>",
            esc(self.from.as_deref().unwrap_or_default()),
            esc(self.to.as_deref().unwrap_or_default())
        )
    }
}

/// Days in the month of `day` (`YYYY-MM-DD`), and `day`'s number.
fn month_position(day: &str) -> Option<(i64, i64)> {
    let y: i64 = day.get(0..4)?.parse().ok()?;
    let m: i64 = day.get(5..7)?.parse().ok()?;
    let d: i64 = day.get(8..10)?.parse().ok()?;
    let days = match m {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    Some((days, d))
}

/// The month-end projection: this month's spend so far at its daily rate to the month's last day.
pub fn projected_month_end(spent: i64, day: i64, days: i64) -> i64 {
    if day <= 0 {
        return spent;
    }
    i64::try_from(i128::from(spent) * i128::from(days) / i128::from(day)).unwrap_or(i64::MAX)
}

/// `GET /console/usage`: the tenant's usage over time (chart), by model and by subject, and this
/// month's budget burn-down with its projected month end.
pub async fn usage(signed: Signed, Query(r): Query<Range>) -> Response {
    let q = r.query();
    let (d, m, s) = (
        format!("/v1/usage/daily?{q}"),
        format!("/v1/usage/models?{q}"),
        format!("/v1/usage/subjects?{q}"),
    );
    // The burn-down needs this month by day: the range's answer when the range is this month
    // (the default), else one more call.
    let this_month = async {
        if q.is_empty() {
            None
        } else {
            Some(signed.get("/v1/usage/daily").await)
        }
    };
    let (daily, models, subjects, month) =
        tokio::join!(signed.get(&d), signed.get(&m), signed.get(&s), this_month,);
    let month = month.unwrap_or_else(|| daily.clone());
    let mut body = r.form("/console/usage");
    match &daily {
        Ok(v) => {
            let points: Vec<(String, i64)> = rows(v, "data")
                .iter()
                .map(|d| {
                    (
                        d["day"].as_str().unwrap_or_default().to_owned(),
                        d["cost_micro_usd"].as_i64().unwrap_or(0),
                    )
                })
                .collect();
            let _ = write!(
                body,
                "<section aria-labelledby=\"daily-h\"><h2 id=\"daily-h\">Spend by day, {} to {}</h2><p>Total <strong id=\"range-total\" data-micro-usd=\"{}\">{}</strong> over {} requests.</p>{}{}</section>",
                esc(v["from"].as_str().unwrap_or_default()),
                esc(v["to"].as_str().unwrap_or_default()),
                v["totals"]["cost_micro_usd"].as_i64().unwrap_or(0),
                usd(v["totals"]["cost_micro_usd"].as_i64().unwrap_or(0)),
                v["totals"]["requests"].as_i64().unwrap_or(0),
                bars("daily-chart", "Spend by UTC day", &points, None),
                table(
                    "daily",
                    "Spend by UTC day",
                    &[
                        ("day", "Day"),
                        ("requests", "Requests"),
                        ("input_tokens", "Input tokens"),
                        ("output_tokens", "Output tokens"),
                        ("cost_micro_usd", "Cost")
                    ],
                    &rows(v, "data")
                )
            );
        }
        Err(f) => body.push_str(&refused(f)),
    }
    if let Ok(v) = &month {
        // The burn-down: this month's spend accumulated day by day against the budget.
        let budget = v["budget"]["monthly_budget_micro_usd"]
            .as_i64()
            .unwrap_or(0);
        let spent = v["budget"]["spent_this_month_micro_usd"]
            .as_i64()
            .unwrap_or(0);
        let to = v["to"].as_str().unwrap_or_default();
        let (days, day) = month_position(to).unwrap_or((30, 1));
        let mut cumulative = 0i64;
        let mut points = Vec::new();
        for d in rows(v, "data") {
            cumulative = cumulative.saturating_add(d["cost_micro_usd"].as_i64().unwrap_or(0));
            points.push((d["day"].as_str().unwrap_or_default().to_owned(), cumulative));
        }
        let projected = projected_month_end(spent, day, days);
        let over = budget > 0 && projected > budget;
        let _ = write!(
            body,
            "<section aria-labelledby=\"burn-h\"><h2 id=\"burn-h\">Budget this month</h2><dl class=\"facts\"><dt>Budget</dt><dd id=\"budget\" data-micro-usd=\"{budget}\">{}</dd><dt>Spent</dt><dd id=\"spent\" data-micro-usd=\"{spent}\">{}</dd><dt>Remaining</dt><dd id=\"remaining\" data-micro-usd=\"{}\">{}</dd><dt>Projected at month end</dt><dd id=\"projected\" data-micro-usd=\"{projected}\" class=\"{}\">{}{}</dd></dl>{}</section>",
            usd(budget),
            usd(spent),
            v["budget"]["remaining_micro_usd"].as_i64().unwrap_or(0),
            usd(v["budget"]["remaining_micro_usd"].as_i64().unwrap_or(0)),
            if over { "warn" } else { "" },
            usd(projected),
            if over { " (over budget)" } else { "" },
            bars(
                "burn-chart",
                "Cumulative spend this month against the budget",
                &points,
                Some(("budget", budget))
            )
        );
    }
    let _ = write!(
        body,
        "<section aria-labelledby=\"models-h\"><h2 id=\"models-h\">By model</h2>{}</section><section aria-labelledby=\"subjects-h\"><h2 id=\"subjects-h\">By subject</h2>{}</section>",
        match &models {
            Ok(v) => table(
                "by-model",
                "Usage by model",
                MODEL_COLUMNS,
                &rows(v, "data")
            ),
            Err(f) => refused(f),
        },
        match &subjects {
            Ok(v) => table(
                "by-subject",
                "Usage by subject",
                &[
                    ("subject", "Subject"),
                    ("requests", "Requests"),
                    ("input_tokens", "Input tokens"),
                    ("output_tokens", "Output tokens"),
                    ("cost_micro_usd", "Cost")
                ],
                &rows(v, "data")
            ),
            Err(f) => refused(f),
        }
    );
    frame(Some(&signed), "Usage", "/console/usage", body)
}

#[derive(Debug, Deserialize)]
pub struct Month {
    month: Option<String>,
}

impl Month {
    fn value(&self) -> String {
        self.month
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| {
                crate::domain::utc_today()
                    .get(..7)
                    .unwrap_or_default()
                    .to_owned()
            })
    }
}

/// `GET /console/finance`: a month's spend by model with the tenant's cost-center, and its CSV.
pub async fn finance(signed: Signed, Query(m): Query<Month>) -> Response {
    let month = m.value();
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("from", &month)
        .append_pair("to", &month)
        .finish();
    let body = section(&signed, &format!("/v1/usage/models?{q}"), |v| {
        let cc = v["cost_center"].as_str().unwrap_or("(none)");
        let lines: Vec<Value> = rows(v, "data")
            .into_iter()
            .map(|mut r| {
                r["cost_center"] = json!(cc);
                r
            })
            .collect();
        let mut columns = vec![("cost_center", "Cost center")];
        columns.extend_from_slice(MODEL_COLUMNS);
        format!(
            "<p>{} to {}: <strong id=\"month-total\" data-micro-usd=\"{}\">{}</strong>, cost center <strong id=\"cost-center\">{}</strong>. <a id=\"csv\" href=\"/console/finance.csv?month={}\" download>Download CSV</a></p>{}",
            esc(v["from"].as_str().unwrap_or_default()),
            esc(v["to"].as_str().unwrap_or_default()),
            v["totals"]["cost_micro_usd"].as_i64().unwrap_or(0),
            usd(v["totals"]["cost_micro_usd"].as_i64().unwrap_or(0)),
            esc(cc),
            segment(&month),
            table("finance", "Spend by model", &columns, &lines)
        )
    })
    .await;
    let form = format!(
        "<form method=\"get\" action=\"/console/finance\" class=\"range\"><label for=\"month\">Month</label><input id=\"month\" name=\"month\" value=\"{}\" placeholder=\"YYYY-MM\"><button type=\"submit\">Show</button></form>",
        esc(&month)
    );
    frame(Some(&signed), "Finance", "/console/finance", form + &body)
}

/// `GET /console/finance.csv`: the month's CSV, exactly as the API exports it.
pub async fn finance_csv(signed: Signed, Query(m): Query<Month>) -> Response {
    let month = m.value();
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("from", &month)
        .append_pair("to", &month)
        .append_pair("format", "csv")
        .finish();
    match signed
        .call(Method::GET, &format!("/v1/usage/models?{q}"), None)
        .await
    {
        Ok((headers, bytes)) => {
            let mut r = bytes.into_response();
            for h in [header::CONTENT_TYPE, header::CONTENT_DISPOSITION] {
                if let Some(v) = headers.get(&h) {
                    r.headers_mut().insert(h, v.clone());
                }
            }
            r
        }
        Err(f) => error_page(
            StatusCode::from_u16(f.status).unwrap_or(StatusCode::BAD_GATEWAY),
            "No export",
            &format!("the API answered {} {}: {}", f.status, f.code, f.message),
            "check the month (YYYY-MM) and your permissions",
        ),
    }
}

/// `GET /console/members`: members and their roles, and the forms to change them.
pub async fn members(signed: Signed, Query(n): Query<Notice>) -> Response {
    let list = section(&signed, "/v1/members?limit=200", |v| {
        table(
            "members",
            "Members and the roles granted to them",
            &[
                ("subject", "Subject"),
                ("roles", "Roles"),
                ("granted_by", "Granted by"),
                ("updated_at", "Changed"),
            ],
            &rows(v, "data"),
        )
    })
    .await;
    let roles: String = crate::auth::roles::TENANT_ROLES
        .iter()
        .map(|(r, _)| {
            format!("<label><input type=\"checkbox\" name=\"role\" value=\"{r}\"> {r}</label>")
        })
        .collect();
    let forms = if signed.may("members:write") {
        format!(
            "<section aria-labelledby=\"grant-h\"><h2 id=\"grant-h\">Grant roles</h2><form method=\"post\" action=\"/console/members\">{}<label for=\"subject\">Subject</label><input id=\"subject\" name=\"subject\" required><fieldset><legend>Roles (exactly these; none removes the member)</legend>{roles}</fieldset><button type=\"submit\">Save roles</button></form></section>",
            csrf_input(&signed)
        )
    } else {
        String::new()
    };
    frame(
        Some(&signed),
        "Members",
        "/console/members",
        notice(&n) + &list + &forms,
    )
}

/// `POST /console/members`: grants a subject exactly the checked roles (none: removes it).
pub async fn set_members(signed: Signed, headers: HeaderMap, body: bytes::Bytes) -> Response {
    let fields = match signed.write_form(&headers, &body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let subject = field(&fields, "subject")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let roles: Vec<&str> = fields
        .iter()
        .filter(|(k, _)| k == "role")
        .map(|(_, v)| v.as_str())
        .collect();
    let uri = format!("/v1/members/{}", segment(&subject));
    let result = if roles.is_empty() {
        signed.call(Method::DELETE, &uri, None).await
    } else {
        signed
            .call(Method::PUT, &uri, Some(&json!({ "roles": roles })))
            .await
    };
    after_write(
        "/console/members",
        result.map(|_| format!("Saved the roles of {subject}.")),
    )
}

/// `GET /console/policy`: the model policy and limits, and the form that disables models.
pub async fn policy(signed: Signed, Query(n): Query<Notice>) -> Response {
    let (policy, limits) = tokio::join!(signed.get("/v1/policy"), signed.get("/v1/limits"));
    let mut body = notice(&n);
    match &policy {
        Ok(v) => {
            let disabled: Vec<&str> = v["disabled_models"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut registered: Vec<String> = Vec::new();
            if let Some(providers) = v["registered"]["providers"].as_object() {
                for (p, models) in providers {
                    for m in models.as_array().into_iter().flatten() {
                        if let Some(m) = m.as_str().or_else(|| m["id"].as_str()) {
                            registered.push(format!("{p}/{m}"));
                        }
                    }
                }
            }
            let _ = write!(
                body,
                "<section aria-labelledby=\"pol-h\"><h2 id=\"pol-h\">Policy as enforced</h2><pre id=\"policy\">{}</pre></section>",
                esc(&serde_json::to_string_pretty(&v["policy"]).unwrap_or_default())
            );
            if signed.may("policy:write") {
                let boxes: String = registered
                    .iter()
                    .map(|m| {
                        let model = m.split_once('/').map_or(m.as_str(), |(_, x)| x);
                        format!(
                            "<label><input type=\"checkbox\" name=\"disabled\" value=\"{}\"{}> {}</label>",
                            esc(model),
                            if disabled.contains(&model) { " checked" } else { "" },
                            esc(m)
                        )
                    })
                    .collect();
                let _ = write!(
                    body,
                    "<section aria-labelledby=\"narrow-h\"><h2 id=\"narrow-h\">Disable models</h2><form method=\"post\" action=\"/console/policy\">{}<fieldset><legend>Models of the registered policy your tenant does not use</legend>{boxes}</fieldset><button type=\"submit\">Save</button></form></section>",
                    csrf_input(&signed)
                );
            }
        }
        Err(f) => body.push_str(&refused(f)),
    }
    match &limits {
        Ok(v) => {
            let _ = write!(
                body,
                "<section aria-labelledby=\"lim-h\"><h2 id=\"lim-h\">Limits</h2><dl class=\"facts\"><dt>Monthly budget</dt><dd id=\"limit-budget\" data-micro-usd=\"{}\">{}</dd><dt>Requests per minute</dt><dd>{}</dd><dt>Tokens per minute</dt><dd>{}</dd></dl></section>",
                v["monthly_budget_micro_usd"].as_i64().unwrap_or(0),
                usd(v["monthly_budget_micro_usd"].as_i64().unwrap_or(0)),
                esc(&v["requests_per_minute"].to_string()),
                esc(&v["tokens_per_minute"].to_string())
            );
        }
        Err(f) => body.push_str(&refused(f)),
    }
    frame(Some(&signed), "Model policy", "/console/policy", body)
}

/// `POST /console/policy`: the checked models become the disabled ones.
pub async fn set_policy(signed: Signed, headers: HeaderMap, body: bytes::Bytes) -> Response {
    let fields = match signed.write_form(&headers, &body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let disabled: Vec<&str> = fields
        .iter()
        .filter(|(k, _)| k == "disabled")
        .map(|(_, v)| v.as_str())
        .collect();
    let result = signed
        .call(
            Method::PUT,
            "/v1/policy",
            Some(&json!({ "disabled_models": disabled })),
        )
        .await;
    after_write(
        "/console/policy",
        result.map(|_| "Saved the model policy.".to_owned()),
    )
}

/// `GET /console/credentials`: the provider credentials (names and versions, never values) and
/// the write-only form that sets one.
pub async fn credentials(signed: Signed, Query(n): Query<Notice>) -> Response {
    let list = section(&signed, "/v1/credentials", |v| {
        table(
            "credentials",
            "Provider credentials (values are never shown)",
            &[
                ("provider", "Provider"),
                ("version", "Version"),
                ("changed_at", "Changed"),
            ],
            &rows(v, "data"),
        )
    })
    .await;
    let form = if signed.may("credentials:write") {
        format!(
            "<section aria-labelledby=\"set-h\"><h2 id=\"set-h\">Set a credential</h2><form method=\"post\" action=\"/console/credentials\" autocomplete=\"off\">{}<label for=\"provider\">Provider</label><input id=\"provider\" name=\"provider\" required pattern=\"[a-z0-9\\-]+\"><label for=\"value\">Key</label><input id=\"value\" name=\"value\" type=\"password\" required autocomplete=\"new-password\" aria-describedby=\"value-help\"><p id=\"value-help\" class=\"help\">Write-only: the key is stored in the secret store and never shown again.</p><button type=\"submit\">Store</button></form></section>",
            csrf_input(&signed)
        )
    } else {
        String::new()
    };
    frame(
        Some(&signed),
        "Credentials",
        "/console/credentials",
        notice(&n) + &list + &form,
    )
}

/// `POST /console/credentials`: stores a provider credential (write-only).
pub async fn set_credential(signed: Signed, headers: HeaderMap, body: bytes::Bytes) -> Response {
    let fields = match signed.write_form(&headers, &body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let provider = field(&fields, "provider")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let value = field(&fields, "value").unwrap_or_default();
    let result = signed
        .call(
            Method::PUT,
            &format!("/v1/credentials/{}", segment(&provider)),
            Some(&json!({ "value": value })),
        )
        .await;
    after_write(
        "/console/credentials",
        result.map(|_| format!("Stored the {provider} credential.")),
    )
}

#[derive(Debug, Deserialize)]
pub struct AuditFilter {
    action: Option<String>,
    outcome: Option<String>,
    after: Option<String>,
}

/// `GET /console/audit`: the chain's verification, and its events (filters, pages).
pub async fn audit(signed: Signed, Query(f): Query<AuditFilter>) -> Response {
    let q = {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("limit", "50");
        for (k, v) in [
            ("action", &f.action),
            ("outcome", &f.outcome),
            ("after", &f.after),
        ] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                q.append_pair(k, v);
            }
        }
        q.finish()
    };
    let events_uri = format!("/v1/audit/events?{q}");
    let (verify, events) = tokio::join!(signed.get("/v1/audit/verify"), signed.get(&events_uri));
    let mut body = match &verify {
        Ok(v) if v["ok"] == json!(true) => format!(
            "<p class=\"ok\" id=\"chain\" data-ok=\"true\" role=\"status\">The chain verifies: {} events, head <code>{}</code>.</p>",
            v["events"].as_i64().unwrap_or(0),
            esc(v["head"]
                .as_str()
                .map_or_else(|| v["head"].to_string(), str::to_owned)
                .as_str())
        ),
        Ok(v) => format!(
            "<p class=\"error\" id=\"chain\" data-ok=\"false\" role=\"alert\">The chain is broken at event {}: {}.</p>",
            esc(&v["broken_at"].to_string()),
            esc(v["reason"].as_str().unwrap_or_default())
        ),
        Err(e) => refused(e),
    };
    let _ = write!(
        body,
        "<form method=\"get\" action=\"/console/audit\" class=\"range\"><label for=\"action\">Action</label><input id=\"action\" name=\"action\" value=\"{}\"><label for=\"outcome\">Outcome</label><input id=\"outcome\" name=\"outcome\" value=\"{}\"><button type=\"submit\">Filter</button></form>",
        esc(f.action.as_deref().unwrap_or_default()),
        esc(f.outcome.as_deref().unwrap_or_default())
    );
    match &events {
        Ok(v) => {
            body.push_str(&table(
                "events",
                "Audit events, oldest first",
                &[
                    ("seq", "#"),
                    ("at", "When"),
                    ("actor", "Actor"),
                    ("action", "Action"),
                    ("target", "Target"),
                    ("outcome", "Outcome"),
                    ("reason", "Reason"),
                ],
                &rows(v, "data"),
            ));
            if v["has_more"] == json!(true)
                && let Some(last) = v["last_id"].as_str()
            {
                let mut next = url::form_urlencoded::Serializer::new(String::new());
                next.append_pair("after", last);
                for (k, val) in [("action", &f.action), ("outcome", &f.outcome)] {
                    if let Some(val) = val.as_deref().filter(|x| !x.is_empty()) {
                        next.append_pair(k, val);
                    }
                }
                let _ = write!(
                    body,
                    "<p><a id=\"next\" href=\"/console/audit?{}\">Next events</a></p>",
                    esc(&next.finish())
                );
            }
        }
        Err(e) => body.push_str(&refused(e)),
    }
    frame(Some(&signed), "Audit", "/console/audit", body)
}

/// `GET /console/platform`: every tenant with its tier, status and drift (what `tenantctl status`
/// last found, and when).
pub async fn platform(signed: Signed, Query(n): Query<Notice>) -> Response {
    let (tenants, checks) = tokio::join!(
        signed.get("/v1/platform/tenants"),
        signed.get("/v1/platform/checks")
    );
    let body = match &tenants {
        Ok(v) => {
            let found = checks.as_ref().map(|c| rows(c, "data")).unwrap_or_default();
            let lines: Vec<Value> = rows(v, "data")
                .into_iter()
                .map(|mut t| {
                    let check = found.iter().find(|c| c["tenant"] == t["id"]);
                    let (drift, at) = match check.filter(|c| !c["checked_at"].is_null()) {
                        None => (
                            "not checked yet: run `tenantctl status`".to_owned(),
                            Value::Null,
                        ),
                        Some(c) => {
                            let found = rows(c, "findings");
                            let text = if found.is_empty() {
                                "none".to_owned()
                            } else {
                                found
                                    .iter()
                                    .map(|f| f["problem"].as_str().unwrap_or_default().to_owned())
                                    .collect::<Vec<_>>()
                                    .join("; ")
                            };
                            (text, c["checked_at"].clone())
                        }
                    };
                    t["drift"] = json!(drift);
                    t["checked_at"] = at;
                    t
                })
                .collect();
            let mut out = table(
                "tenants",
                "Tenants, and what `tenantctl status` last found",
                &[
                    ("id", "Tenant"),
                    ("display_name", "Name"),
                    ("tier", "Tier"),
                    ("status", "Status"),
                    ("suspended", "Suspended"),
                    ("drift", "Drift"),
                    ("checked_at", "Checked"),
                ],
                &lines,
            );
            if let Err(f) = &checks {
                out.push_str(&refused(f));
            }
            out
        }
        Err(f) => refused(f),
    };
    frame(
        Some(&signed),
        "Tenants",
        "/console/platform",
        notice(&n) + &body,
    )
}

/// Spend per tenant stacked by model, and the table, from a `GET /v1/platform/usage` answer (or
/// `GET /v1/platform/spend`'s, which has the same shape).
fn spend_per_tenant(v: &Value) -> String {
    let tenants = rows(v, "data");
    let mut chart: Vec<(String, Vec<(String, i64)>)> = tenants
        .iter()
        .map(|t| {
            (
                t["tenant"].as_str().unwrap_or_default().to_owned(),
                rows(t, "models")
                    .iter()
                    .map(|m| {
                        (
                            m["model"].as_str().unwrap_or_default().to_owned(),
                            m["cost_micro_usd"].as_i64().unwrap_or(0),
                        )
                    })
                    .collect(),
            )
        })
        .collect();
    chart.sort_by_key(|(_, parts)| -parts.iter().map(|(_, v)| *v).sum::<i64>());
    let lines: Vec<Value> = tenants
        .iter()
        .map(|t| {
            json!({
                "tenant": t["tenant"],
                "cost_center": t["cost_center"],
                "requests": t["totals"]["requests"],
                "input_tokens": t["totals"]["input_tokens"],
                "output_tokens": t["totals"]["output_tokens"],
                "cost_micro_usd": t["totals"]["cost_micro_usd"],
            })
        })
        .collect();
    format!(
        "<p>{} to {}: <strong id=\"platform-total\" data-micro-usd=\"{}\">{}</strong> across {} tenants.</p>{}{}",
        esc(v["from"].as_str().unwrap_or_default()),
        esc(v["to"].as_str().unwrap_or_default()),
        v["totals"]["cost_micro_usd"].as_i64().unwrap_or(0),
        usd(v["totals"]["cost_micro_usd"].as_i64().unwrap_or(0)),
        tenants.len(),
        stacked("spend-chart", "LLM spend per tenant, by model", &chart),
        table(
            "spend",
            "LLM spend per tenant",
            &[
                ("tenant", "Tenant"),
                ("cost_center", "Cost center"),
                ("requests", "Requests"),
                ("input_tokens", "Input tokens"),
                ("output_tokens", "Output tokens"),
                ("cost_micro_usd", "LLM spend"),
            ],
            &lines
        )
    )
}

/// Each tenant's LLM spend in `month` next to its AWS spend, from `GET /v1/platform/spend`.
fn llm_next_to_aws(v: &Value, month: &str) -> String {
    let lines: Vec<Value> = rows(v, "data")
        .into_iter()
        .map(|mut l| {
            l["llm_cost_micro_usd"] = l["totals"]["cost_micro_usd"].clone();
            l
        })
        .collect();
    let mut out = table(
        "llm-aws",
        &format!("LLM spend next to AWS spend, {month}"),
        &[
            ("tenant", "Tenant"),
            ("cost_center", "Cost center"),
            ("llm_cost_micro_usd", "LLM spend (ledger)"),
            ("aws_cost_micro_usd", "AWS spend (Cost Explorer)"),
            ("aws_fetched_at", "AWS spend read at"),
        ],
        &lines,
    );
    if lines.iter().any(|l| l["aws_cost_micro_usd"].is_null()) {
        out.push_str("<p class=\"help\">A tenant without AWS spend has none recorded for this month: <code>tenantctl --target aws cost report --month ");
        out.push_str(&esc(month));
        out.push_str("</code> reads it from Cost Explorer and records it.</p>");
    }
    out
}

/// `GET /console/platform/spend`: spend per tenant over a range, stacked by model, and the sum;
/// each tenant's LLM spend in the range's last month next to its AWS spend. This month (the
/// default) is one API call, `getPlatformSpend`, whose answer holds both.
pub async fn platform_spend(signed: Signed, Query(r): Query<Range>) -> Response {
    let q = r.query();
    let month = r.to.as_deref().and_then(|t| t.get(..7)).map_or_else(
        || {
            crate::domain::utc_today()
                .get(..7)
                .unwrap_or_default()
                .to_owned()
        },
        str::to_owned,
    );
    let spend_uri = format!("/v1/platform/spend?month={}", segment(&month));
    let body = if q.is_empty() {
        section(&signed, &spend_uri, |v| {
            spend_per_tenant(v) + &llm_next_to_aws(v, &month)
        })
        .await
    } else {
        let usage_uri = format!("/v1/platform/usage?{q}");
        let (usage, spend) = tokio::join!(signed.get(&usage_uri), signed.get(&spend_uri));
        let part = |a: &Result<Value, ApiFailure>, render: &dyn Fn(&Value) -> String| match a {
            Ok(v) => render(v),
            Err(f) => refused(f),
        };
        part(&usage, &spend_per_tenant) + &part(&spend, &|v| llm_next_to_aws(v, &month))
    };
    frame(
        Some(&signed),
        "Spend",
        "/console/platform/spend",
        r.form("/console/platform/spend") + &body,
    )
}

#[derive(Debug, Deserialize)]
pub struct RunQuery {
    run: Option<String>,
}

/// `GET /console/platform/reconciliations`: the runs, and one run's variances (highlighted).
pub async fn reconciliations(signed: Signed, Query(q): Query<RunQuery>) -> Response {
    let mut body = section(&signed, "/v1/platform/reconciliations", |v| {
        let mut out = String::from(
            "<table id=\"runs\"><caption>Reconciliation runs, newest first</caption><thead><tr><th scope=\"col\">Run</th><th scope=\"col\">Tenant</th><th scope=\"col\">Month</th><th scope=\"col\">Provider</th><th scope=\"col\">Lines over tolerance</th><th scope=\"col\">When</th></tr></thead><tbody>",
        );
        let runs = rows(v, "data");
        if runs.is_empty() {
            out.push_str("<tr><td colspan=\"6\" class=\"none\">no run yet: `tenantctl usage reconcile` or the API starts one</td></tr>");
        }
        for r in runs {
            let id = r["id"].as_str().map_or_else(|| r["id"].to_string(), str::to_owned);
            let _ = write!(
                out,
                "<tr class=\"{}\"><td><a href=\"/console/platform/reconciliations?run={}\">{}</a></td>{}{}{}{}{}</tr>",
                if r["over_tolerance"].as_i64().unwrap_or(0) > 0 { "variance" } else { "" },
                segment(&id),
                esc(&id),
                super::html::cell("tenant", &r["tenant"]),
                super::html::cell("month", &r["month"]),
                super::html::cell("provider", &r["provider"]),
                super::html::cell("over_tolerance", &r["over_tolerance"]),
                super::html::cell("ran_at", &r["ran_at"])
            );
        }
        out + "</tbody></table>"
    })
    .await;
    if let Some(run) = q.run.as_deref() {
        let detail = section(
            &signed,
            &format!("/v1/platform/reconciliations/{}", segment(run)),
            |v| {
                let mut out = format!(
                    "<h2>Run {}</h2><table id=\"variances\"><caption>Ledger against the provider's export, per day and model (variances highlighted)</caption><thead><tr><th scope=\"col\">Day</th><th scope=\"col\">Model</th><th scope=\"col\">Ledger</th><th scope=\"col\">Invoice</th><th scope=\"col\">Variance</th><th scope=\"col\">Tolerance</th><th scope=\"col\">Status</th></tr></thead><tbody>",
                    esc(run)
                );
                for l in rows(v, "lines") {
                    // Highlighted: every line the run did not find within tolerance.
                    let flagged = l["status"].as_str().is_some_and(|s| s != "ok");
                    let _ = write!(
                        out,
                        "<tr class=\"{}\">{}{}{}{}{}{}{}</tr>",
                        if flagged { "variance" } else { "" },
                        super::html::cell("day", &l["day"]),
                        super::html::cell("model", &l["model"]),
                        super::html::cell("ledger_micro_usd", &l["ledger_micro_usd"]),
                        super::html::cell("invoice_micro_usd", &l["invoice_micro_usd"]),
                        super::html::cell("variance_micro_usd", &l["variance_micro_usd"]),
                        super::html::cell("tolerance_micro_usd", &l["tolerance_micro_usd"]),
                        super::html::cell("status", &l["status"])
                    );
                }
                out + "</tbody></table>"
            },
        )
        .await;
        body.push_str(&detail);
    }
    frame(
        Some(&signed),
        "Reconciliation",
        "/console/platform/reconciliations",
        body,
    )
}

/// `GET /console/platform/prices`: the price book's versions, and each version's prices (per
/// million tokens).
pub async fn prices(signed: Signed) -> Response {
    let body = section(&signed, "/v1/platform/prices", |v| {
        let versions: Vec<Value> = rows(v, "data")
            .into_iter()
            .map(|mut x| {
                let short: String = x["digest"]
                    .as_str()
                    .unwrap_or_default()
                    .chars()
                    .take(12)
                    .collect();
                x["digest"] = json!(short);
                x["models"] = json!(x["body"]["prices"].as_array().map_or(0, Vec::len));
                x
            })
            .collect();
        let mut out = table(
            "prices",
            "The price book's versions",
            &[
                ("version", "Version"),
                ("effective_from", "Effective from"),
                ("models", "Models"),
                ("digest", "Digest"),
                ("imported_by", "Imported by"),
                ("imported_at", "Imported"),
            ],
            &versions,
        );
        for x in &versions {
            let lines: Vec<Value> = rows(&x["body"], "prices")
                .into_iter()
                .map(|p| {
                    json!({
                        "provider": p["provider"],
                        "model": p["model"],
                        "input_micro_usd": p["input_per_mtok"],
                        "output_micro_usd": p["output_per_mtok"],
                        "cached_input_micro_usd": p["cached_input_per_mtok"],
                        "per_request_micro_usd": p["per_request"],
                    })
                })
                .collect();
            out.push_str(&table(
                &format!("prices-{}", x["version"].as_str().unwrap_or_default()),
                &format!(
                    "Version {}: prices per million tokens",
                    x["version"].as_str().unwrap_or_default()
                ),
                &[
                    ("provider", "Provider"),
                    ("model", "Model"),
                    ("input_micro_usd", "Input"),
                    ("output_micro_usd", "Output"),
                    ("cached_input_micro_usd", "Cached input"),
                    ("per_request_micro_usd", "Per call"),
                ],
                &lines,
            ));
        }
        out
    })
    .await;
    frame(
        Some(&signed),
        "Price book",
        "/console/platform/prices",
        body,
    )
}
