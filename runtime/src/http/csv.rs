//! CSV for the people who open it in a spreadsheet: RFC 4180 quoting, and a text cell a spreadsheet
//! would run as a formula (`=`, `+`, `-`, `@`, tab, carriage return first) is prefixed with `'`, so a
//! subject or model name can never become a formula in finance's workbook.

use std::fmt::Write as _;

use crate::service::usage::{GroupBy, Report};

/// Appends one text cell (quoted as needed, a would-be formula defused). Finance's CLI reports use
/// it too.
pub fn cell(out: &mut String, value: &str) {
    let guarded = matches!(
        value.chars().next(),
        Some('=' | '+' | '-' | '@' | '\t' | '\r')
    );
    let value = if guarded {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(&value);
    }
}

/// A usage report as CSV: a header, then one line per group (integer counts and micro-USD; no total
/// line, so a column's sum is the report's total).
pub fn report(report: &Report) -> String {
    let mut out = String::new();
    let keys = match report.group_by {
        GroupBy::Day => "day",
        GroupBy::Model => "provider,model",
        GroupBy::Subject => "subject",
    };
    let _ = writeln!(
        out,
        "{keys},requests,input_tokens,output_tokens,cost_micro_usd"
    );
    for r in &report.rows {
        let fields: Vec<&str> = match report.group_by {
            GroupBy::Day => vec![r.day.as_deref().unwrap_or_default()],
            GroupBy::Model => vec![
                r.provider.as_deref().unwrap_or_default(),
                r.model.as_deref().unwrap_or_default(),
            ],
            GroupBy::Subject => vec![r.subject.as_deref().unwrap_or_default()],
        };
        for f in fields {
            cell(&mut out, f);
            out.push(',');
        }
        let _ = writeln!(
            out,
            "{},{},{},{}",
            r.requests, r.input_tokens, r.output_tokens, r.cost_micro_usd
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::usage::{DayRange, ReportRow, Totals};

    #[test]
    fn cells_are_quoted_and_formulas_defused() {
        let row = |subject: &str| ReportRow {
            subject: Some(subject.into()),
            requests: 1,
            input_tokens: 2,
            output_tokens: 3,
            cost_micro_usd: 4,
            ..ReportRow::default()
        };
        let r = Report {
            range: DayRange {
                from: "2026-12-01".into(),
                to: "2026-12-31".into(),
            },
            group_by: GroupBy::Subject,
            rows: vec![
                row("alice"),
                row("=HYPERLINK(\"http://x\")"),
                row("a,b"),
                row("-1+2"),
                row("line\nbreak"),
            ],
            totals: Totals::default(),
        };
        assert_eq!(
            report(&r),
            "subject,requests,input_tokens,output_tokens,cost_micro_usd\n\
             alice,1,2,3,4\n\
             \"'=HYPERLINK(\"\"http://x\"\")\",1,2,3,4\n\
             \"a,b\",1,2,3,4\n\
             '-1+2,1,2,3,4\n\
             \"line\nbreak\",1,2,3,4\n"
        );
    }
}
