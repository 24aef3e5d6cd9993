//! The console's HTML: escaping, the page frame, tables, and the charts, drawn as SVG on the server
//! (no script runs in the browser; the Content-Security-Policy forbids it). Coordinates and money
//! are integers: amounts are micro-USD and shown as dollars with six decimals cut to cents.

use std::fmt::Write as _;

use serde_json::Value;

/// `text` safe inside an element or a quoted attribute.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Micro-USD as dollars: `$1,234.56` (cents, rounded half away from zero), negative with a minus;
/// an amount under a cent but not zero exactly (`$0.000026`), never as `$0.00`.
pub fn usd(micro: i64) -> String {
    let neg = micro < 0;
    let abs = i128::from(micro).abs();
    if abs > 0 && abs < 10_000 {
        return format!(
            "{}${}",
            if neg { "-" } else { "" },
            usd_exact(micro).trim_start_matches('-')
        );
    }
    let cents = (abs + 5_000) / 10_000;
    let (dollars, cents) = (cents / 100, cents % 100);
    let digits = dollars.to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{}${grouped}.{cents:02}", if neg { "-" } else { "" })
}

/// Micro-USD exactly, for a `title` or a data attribute (`1234567` -> `1.234567`).
pub fn usd_exact(micro: i64) -> String {
    let abs = i128::from(micro).abs();
    format!(
        "{}{}.{:06}",
        if micro < 0 { "-" } else { "" },
        abs / 1_000_000,
        abs % 1_000_000
    )
}

/// An integer with thousands separators.
pub fn int(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::from(if n < 0 { "-" } else { "" });
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A JSON value as a table cell: money (a `*_micro_usd` key) as dollars with the exact figure in
/// `data-micro-usd` (tests compare it with the API's), integers grouped, the rest as text.
pub fn cell(key: &str, v: &Value) -> String {
    match v {
        Value::Null => "<td class=\"none\">-</td>".into(),
        Value::Number(n) if key.ends_with("micro_usd") => match n.as_i64() {
            Some(m) => format!(
                "<td class=\"num\" data-micro-usd=\"{m}\" title=\"{} USD\">{}</td>",
                usd_exact(m),
                usd(m)
            ),
            None => format!("<td>{}</td>", esc(&n.to_string())),
        },
        Value::Number(n) => match n.as_i64() {
            Some(i) => format!("<td class=\"num\" data-value=\"{i}\">{}</td>", int(i)),
            None => format!("<td>{}</td>", esc(&n.to_string())),
        },
        Value::Bool(b) => format!("<td>{}</td>", if *b { "yes" } else { "no" }),
        Value::String(s) => format!("<td>{}</td>", esc(s)),
        Value::Array(a) => format!(
            "<td>{}</td>",
            esc(&a
                .iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(", "))
        ),
        Value::Object(_) => format!("<td><code>{}</code></td>", esc(&v.to_string())),
    }
}

/// A table of `rows` with `columns` (key, heading); `id` names it for tests and links.
pub fn table(id: &str, caption: &str, columns: &[(&str, &str)], rows: &[Value]) -> String {
    let mut out = format!(
        "<table id=\"{}\"><caption>{}</caption><thead><tr>",
        esc(id),
        esc(caption)
    );
    for (key, heading) in columns {
        // Numbers are right-aligned, and so are their headings.
        let numeric = rows.first().is_some_and(|r| r[*key].is_number());
        let _ = write!(
            out,
            "<th scope=\"col\"{}>{}</th>",
            if numeric { " class=\"num\"" } else { "" },
            esc(heading)
        );
    }
    out.push_str("</tr></thead><tbody>");
    if rows.is_empty() {
        let _ = write!(
            out,
            "<tr><td colspan=\"{}\" class=\"none\">nothing yet</td></tr>",
            columns.len()
        );
    }
    for row in rows {
        out.push_str("<tr>");
        for (key, _) in columns {
            out.push_str(&cell(key, &row[*key]));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// The colours of series, in order: distinguishable, and each at least 3:1 against white.
const PALETTE: &[&str] = &[
    "#1f5fa8", "#b3541e", "#2e7d32", "#8e24aa", "#c62828", "#00838f", "#6d4c41", "#455a64",
];

/// A bar chart of `(label, micro-USD)` with an optional horizontal line (the budget).
pub fn bars(id: &str, title: &str, points: &[(String, i64)], line: Option<(&str, i64)>) -> String {
    let (w, h, pad) = (720i64, 220i64, 40i64);
    let max = points
        .iter()
        .map(|(_, v)| *v)
        .chain(line.map(|(_, v)| v))
        .max()
        .unwrap_or(0)
        .max(1);
    let n = i64::try_from(points.len()).unwrap_or(1).max(1);
    let slot = ((w - 2 * pad) / n).min(48);
    let mut out = format!(
        "<figure><svg id=\"{id}\" role=\"img\" aria-labelledby=\"{id}-t\" viewBox=\"0 0 {w} {h}\" width=\"100%\"><title id=\"{id}-t\">{}</title>",
        esc(title)
    );
    let scale = |v: i64| {
        i64::try_from(i128::from(v) * i128::from(h - 2 * pad) / i128::from(max)).unwrap_or(0)
    };
    for (i, (label, v)) in points.iter().enumerate() {
        let i = i64::try_from(i).unwrap_or(0);
        let bh = scale((*v).max(0));
        let x = pad + i * slot;
        let _ = write!(
            out,
            "<rect x=\"{x}\" y=\"{}\" width=\"{}\" height=\"{bh}\" fill=\"{}\" data-label=\"{}\" data-micro-usd=\"{v}\"><title>{}: {}</title></rect>",
            h - pad - bh,
            (slot - 2).max(1),
            PALETTE[0],
            esc(label),
            esc(label),
            usd(*v)
        );
    }
    if let Some((name, v)) = line {
        let y = h - pad - scale(v);
        let _ = write!(
            out,
            "<line x1=\"{pad}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#c62828\" stroke-width=\"2\" stroke-dasharray=\"6 4\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"12\" fill=\"#8a1c1c\">{} {}</text>",
            w - pad,
            w - pad,
            (y - 4).max(12),
            esc(name),
            usd(v)
        );
    }
    let _ = write!(
        out,
        "<line x1=\"{pad}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#333\"/><text x=\"{pad}\" y=\"{}\" font-size=\"12\" fill=\"#333\">{}</text><text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"end\" fill=\"#333\">{}</text><text x=\"4\" y=\"{}\" font-size=\"12\" fill=\"#333\">{}</text></svg></figure>",
        w - pad,
        h - pad,
        h - pad,
        h - pad + 16,
        esc(points.first().map_or("", |p| p.0.as_str())),
        w - pad,
        h - pad + 16,
        esc(points.last().map_or("", |p| p.0.as_str())),
        pad - 8,
        usd(max)
    );
    out
}

/// Horizontal stacked bars: one per `(label, [(series, micro-USD)])`, with a legend.
pub fn stacked(id: &str, title: &str, rows: &[(String, Vec<(String, i64)>)]) -> String {
    let (w, bar, gap, left) = (720i64, 22i64, 10i64, 140i64);
    let mut series: Vec<&str> = Vec::new();
    for (_, parts) in rows {
        for (s, _) in parts {
            if !series.contains(&s.as_str()) {
                series.push(s);
            }
        }
    }
    let colour =
        |s: &str| PALETTE[series.iter().position(|x| *x == s).unwrap_or(0) % PALETTE.len()];
    let max = rows
        .iter()
        .map(|(_, p)| p.iter().map(|(_, v)| (*v).max(0)).sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let n = i64::try_from(rows.len()).unwrap_or(0);
    let h = n * (bar + gap) + 20;
    let mut out = format!(
        "<figure><svg id=\"{id}\" role=\"img\" aria-labelledby=\"{id}-t\" viewBox=\"0 0 {w} {h}\" width=\"100%\"><title id=\"{id}-t\">{}</title>",
        esc(title)
    );
    let span = w - left - 100;
    for (i, (label, parts)) in rows.iter().enumerate() {
        let y = i64::try_from(i).unwrap_or(0) * (bar + gap) + 10;
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"12\" fill=\"#222\">{}</text>",
            left - 6,
            y + bar - 6,
            esc(label)
        );
        let mut x = left;
        let mut total = 0i64;
        for (s, v) in parts {
            let v = (*v).max(0);
            total += v;
            let bw = i64::try_from(i128::from(v) * i128::from(span) / i128::from(max)).unwrap_or(0);
            let _ = write!(
                out,
                "<rect x=\"{x}\" y=\"{y}\" width=\"{bw}\" height=\"{bar}\" fill=\"{}\" data-row=\"{}\" data-series=\"{}\" data-micro-usd=\"{v}\"><title>{} {}: {}</title></rect>",
                colour(s),
                esc(label),
                esc(s),
                esc(label),
                esc(s),
                usd(v)
            );
            x += bw;
        }
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"#222\">{}</text>",
            x + 6,
            y + bar - 6,
            usd(total)
        );
    }
    out.push_str("</svg><figcaption><ul class=\"legend\">");
    for s in &series {
        let _ = write!(
            out,
            "<li><svg width=\"12\" height=\"12\" aria-hidden=\"true\"><rect width=\"12\" height=\"12\" fill=\"{}\"/></svg> {}</li>",
            colour(s),
            esc(s)
        );
    }
    out.push_str("</ul></figcaption></figure>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_shown_in_dollars_and_exactly_and_text_is_escaped() {
        assert_eq!(usd(0), "$0.00");
        assert_eq!(usd(1_234_565_000), "$1,234.57");
        assert_eq!(usd(-4_999), "-$0.004999");
        assert_eq!(usd(26), "$0.000026");
        assert_eq!(usd(10_000), "$0.01");
        assert_eq!(usd(i64::MAX), "$9,223,372,036,854.78");
        assert_eq!(usd_exact(1_234_567), "1.234567");
        assert_eq!(usd_exact(-5), "-0.000005");
        assert_eq!(int(1_234_567), "1,234,567");
        assert_eq!(
            esc("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn charts_escape_labels_and_carry_exact_figures() {
        let svg = bars(
            "c",
            "t",
            &[("<a>".into(), 5), ("b".into(), 10)],
            Some(("budget", 20)),
        );
        assert!(svg.contains("data-micro-usd=\"5\"") && svg.contains("&lt;a&gt;"));
        assert!(!svg.contains("<a>"));
        let s = stacked(
            "s",
            "t",
            &[("acme".into(), vec![("m1".into(), 3), ("m2".into(), 4)])],
        );
        assert!(s.contains("data-series=\"m2\"") && s.contains("$0.00"));
    }
}
