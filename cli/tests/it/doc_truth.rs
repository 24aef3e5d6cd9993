//! Issue 13 item 7: the documents name only what exists. Every repository path a document names in
//! backticks exists; every `tenantctl` command line in them names a real subcommand and only flags
//! that command (or every command) takes, checked against the clap definitions.

/// The documents read: the README and everything under `docs/`.
fn documents() -> Vec<(String, String)> {
    let root = cli::testing::repo_root();
    let mut out = vec![(
        "README.md".to_owned(),
        std::fs::read_to_string(root.join("README.md")).unwrap(),
    )];
    let mut stack = vec![root.join("docs")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "md") {
                let name = p.strip_prefix(&root).unwrap().display().to_string();
                out.push((name, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    out
}

/// The spans between backticks, outside fenced blocks.
fn code_spans(text: &str) -> Vec<String> {
    let mut prose = String::new();
    let mut fenced = false;
    for l in text.lines() {
        if l.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            prose.push_str(l);
            prose.push('\n');
        }
    }
    prose
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// A path as the documents write it: `tests/it/X` and `cli/it/X` are short for each crate's
/// integration tests (`tests/tests/it/X`, `cli/tests/it/X`).
fn resolve(path: &str) -> String {
    if let Some(rest) = path.strip_prefix("tests/it/") {
        format!("tests/tests/it/{rest}")
    } else if let Some(rest) = path.strip_prefix("cli/it/") {
        format!("cli/tests/it/{rest}")
    } else {
        path.to_owned()
    }
}

const TOP: [&str; 10] = [
    "cli/",
    "runtime/",
    "docs/",
    "scripts/",
    "bench/",
    "tests/",
    "templates/",
    "tenants/",
    "prices/",
    ".ci/",
];

#[test]
fn every_repository_path_a_document_names_exists() {
    let root = cli::testing::repo_root();
    let mut missing = Vec::new();
    for (doc, text) in documents() {
        for span in code_spans(&text) {
            let first = span.split_whitespace().next().unwrap_or_default();
            // `path:line`, `path::item`, a trailing punctuation mark.
            let mut parts = first.splitn(2, "::");
            let path = parts
                .next()
                .unwrap_or_default()
                .split(':')
                .next()
                .unwrap_or_default()
                .trim_end_matches([',', '.', ')']);
            let item = parts.next();
            if !TOP.iter().any(|t| path.starts_with(t))
                || path.contains(['*', '<', '{', '$'])
                || path.ends_with("...")
                || path.starts_with("bench/out/")
            {
                continue;
            }
            let file = root.join(resolve(path));
            if !file.exists() {
                missing.push(format!("{doc}: `{span}`: no such file"));
                continue;
            }
            // `file.rs::a_test_name` (or its beginning, `a_test_...`) names a function in it.
            if let Some(item) = item.filter(|_| path.ends_with(".rs")) {
                let name = item
                    .trim_end_matches([',', '.', ')'])
                    .trim_end_matches("...")
                    .trim_end_matches('_');
                let name = name.split("::").last().unwrap_or_default();
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                let found = if item.contains("...") {
                    text.contains(&format!("fn {name}"))
                } else {
                    text.contains(&format!("fn {name}("))
                        || text.contains(&format!("fn {name}<"))
                        || text.contains(&format!("mod {name}"))
                };
                if !name.is_empty() && !found {
                    missing.push(format!("{doc}: `{span}`: no `{name}` in it"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "documents name paths that do not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_tenantctl_command_line_in_the_documents_is_a_real_command_with_real_flags() {
    use clap::CommandFactory as _;
    let mut cli = cli::args::Cli::command();
    cli.build();
    let mut wrong = Vec::new();
    for (doc, text) in documents() {
        // Command lines: code spans and the lines of fenced blocks.
        let mut lines: Vec<String> = code_spans(&text);
        let mut fenced = false;
        for l in text.lines() {
            if l.trim_start().starts_with("```") {
                fenced = !fenced;
            } else if fenced {
                lines.push(l.to_owned());
            }
        }
        for line in lines {
            for part in line.split(['|', ';', '&', '(', '$']) {
                let words: Vec<&str> = part.split_whitespace().collect();
                let Some(i) = words.iter().position(|w| *w == "tenantctl") else {
                    continue;
                };
                let words = &words[i + 1..];
                let mut cmd = &cli;
                let mut path = vec!["tenantctl".to_owned()];
                let mut skip_value = false;
                for w in words {
                    if std::mem::take(&mut skip_value) {
                        continue;
                    }
                    if w.starts_with('#') {
                        break;
                    }
                    if let Some(flag) = w.strip_prefix("--") {
                        let flag = flag.split('=').next().unwrap_or_default();
                        if flag.is_empty()
                            || !flag.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                        {
                            continue;
                        }
                        let arg = cmd.get_arguments().chain(cli.get_arguments()).find(|a| {
                            a.get_long() == Some(flag)
                                || a.get_all_aliases().is_some_and(|al| al.contains(&flag))
                        });
                        let known = arg.is_some() || matches!(flag, "help" | "version");
                        skip_value =
                            !w.contains('=') && arg.is_some_and(|a| a.get_action().takes_values());
                        if !known {
                            wrong.push(format!(
                                "{doc}: `{}`: no flag `--{flag}` in `{}`",
                                part.trim(),
                                path.join(" ")
                            ));
                        }
                        continue;
                    }
                    if cmd.has_subcommands()
                        && w.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                    {
                        match cmd.find_subcommand(w) {
                            Some(sub) => {
                                cmd = sub;
                                path.push((*w).to_owned());
                            }
                            None if path.len() == 1 => {
                                // Prose like "tenantctl is": only a word right after `tenantctl`
                                // that is no command and is followed by flags counts.
                                if words.iter().any(|x| x.starts_with("--")) {
                                    wrong.push(format!(
                                        "{doc}: `{}`: no command `{w}`",
                                        part.trim()
                                    ));
                                }
                                break;
                            }
                            None => {
                                wrong.push(format!(
                                    "{doc}: `{}`: no command `{w}` under `{}`",
                                    part.trim(),
                                    path.join(" ")
                                ));
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "documents name commands or flags that do not exist:\n{}",
        wrong.join("\n")
    );
}
