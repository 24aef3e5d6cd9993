//! Finds the line and column of a field path in block-style YAML, for errors found after parsing
//! (cross-field rules). Best effort: when a path cannot be followed it returns the deepest parent found.

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

pub fn display_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn is_content(line: &str) -> bool {
    let t = line.trim_start();
    !t.is_empty() && !t.starts_with('#') && t != "---"
}

fn key_of(text: &str) -> Option<&str> {
    let t = text.trim_start();
    let (key, _) = t.split_once(':')?;
    let key = key.trim().trim_matches('"').trim_matches('\'');
    Some(key)
}

/// Returns 1-based (line, column) of `path` in `source`.
pub fn locate(source: &str, path: &[Seg]) -> Option<(usize, usize)> {
    let lines: Vec<&str> = source.lines().collect();
    // The current block: lines [start, end) whose content is indented more than `parent_indent`.
    let mut start = 0usize;
    let mut parent_indent: Option<usize> = None;
    let mut found: Option<(usize, usize)> = None;
    for seg in path {
        let mut hit = None;
        let mut seen = 0usize;
        let mut block_indent: Option<usize> = None;
        for (i, line) in lines.iter().enumerate().skip(start) {
            if !is_content(line) {
                continue;
            }
            let indent = indent_of(line);
            if parent_indent.is_some_and(|p| indent <= p) {
                break;
            }
            let this_indent = *block_indent.get_or_insert(indent);
            let body = &line[indent..];
            match seg {
                Seg::Key(k) => {
                    let (col, text) = match body.strip_prefix("- ") {
                        Some(rest) if indent == this_indent => (indent + 2, rest),
                        _ => (indent, body),
                    };
                    if (indent == this_indent || col == this_indent + 2)
                        && key_of(text) == Some(k.as_str())
                    {
                        hit = Some((i, col));
                        break;
                    }
                }
                Seg::Index(n) => {
                    if indent == this_indent && body.starts_with('-') {
                        if seen == *n {
                            hit = Some((i, indent + 2));
                            break;
                        }
                        seen += 1;
                    }
                    if indent == this_indent && body.starts_with('[') && key_of(body).is_none() {
                        hit = Some((i, indent));
                        break;
                    }
                }
            }
        }
        let Some((line, col)) = hit else { break };
        found = Some((line + 1, col + 1));
        // An inline value (`key: [a, b]` or `key: value`) ends the walk here.
        start = line + 1;
        parent_indent = Some(col);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Seg {
        Seg::Key(s.into())
    }

    #[test]
    fn finds_nested_keys_and_sequence_items() {
        let src = "version: 1\nmodels:\n  providers:\n    mock:\n      - a\n      - b\n  default: x\ntags:\n  cost-center: y\n";
        assert_eq!(locate(src, &[k("models"), k("default")]), Some((7, 3)));
        assert_eq!(
            locate(
                src,
                &[k("models"), k("providers"), k("mock"), Seg::Index(1)]
            ),
            Some((6, 9))
        );
        assert_eq!(locate(src, &[k("tags"), k("cost-center")]), Some((9, 3)));
        assert_eq!(locate(src, &[k("models"), k("missing")]), Some((2, 1)));
        assert_eq!(locate(src, &[k("nothing")]), None);
    }
}
