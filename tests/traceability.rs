//! Requirement traceability: every normative statement in `spec/` has an ID, every ID is covered
//! by at least one test that names it (`// covers: ID`), no test names an unknown ID, and no ID
//! is defined twice. Writes `spec/traceability.md` (ID → statement → tests, plus the number of
//! IDs per document, so that deleting requirements shows up in review and in the diff).
//!
//! In CI (`CI` set in the environment) a stale `spec/traceability.md` fails the test, so the
//! committed table always matches the spec and the tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// A requirement defined in a spec document.
struct Requirement {
    doc: String,
    line: usize,
    statement: String,
}

/// One `// covers:` reference.
struct Coverage {
    file: String,
    line: usize,
    test: String,
}

/// Directories never scanned for sources.
const SKIP_DIRS: &[&str] = &[".git", "target", "corpus", "artifacts", "node_modules"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rel(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

/// Whether `s` has the shape of a requirement ID: `AB-CD-12` (upper-case words and digits,
/// at least two parts joined by '-', last part a number).
fn is_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        })
        && parts[0].starts_with(|c: char| c.is_ascii_uppercase())
        && parts
            .last()
            .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()))
}

/// The line with inline code spans (between backticks) removed: an ID quoted in code is an
/// example, not a definition.
fn without_code_spans(line: &str) -> String {
    line.split('`').step_by(2).collect::<Vec<_>>().join(" ")
}

/// Finds definitions `**[ID]**` on a line; returns (id, text after it).
fn definitions(line: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let original = line;
    let line = without_code_spans(line);
    let mut rest = line.as_str();
    while let Some(start) = rest.find("**[") {
        let after = &rest[start + 3..];
        let Some(end) = after.find("]**") else { break };
        let id = &after[..end];
        let tail = &after[end + 3..];
        if is_id(id) {
            // The statement text comes from the original line, code spans included.
            let marker = format!("**[{id}]**");
            let statement = original
                .find(&marker)
                .map_or(tail, |at| &original[at + marker.len()..]);
            found.push((id.to_string(), statement.trim().to_string()));
        }
        rest = tail;
    }
    found
}

fn spec_docs() -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = fs::read_dir(root().join("spec"))
        .expect("spec/ must exist")
        .map(|e| e.expect("readable spec/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .filter(|p| p.file_name().is_some_and(|n| n != "traceability.md"))
        .collect();
    docs.sort();
    docs
}

fn rust_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !SKIP_DIRS.contains(&name.as_str()) && !name.starts_with("target") {
                rust_sources(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// The name of the first `fn` at or after line `from` (0-based), if any within a few lines.
fn next_fn_name(lines: &[&str], from: usize) -> Option<String> {
    lines.iter().skip(from).take(12).find_map(|l| {
        let t = l.trim_start();
        let idx = t.find("fn ")?;
        let prefix = &t[..idx];
        if !prefix
            .split_whitespace()
            .all(|w| matches!(w, "pub" | "async" | "pub(crate)" | "const"))
        {
            return None;
        }
        let name: String = t[idx + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        (!name.is_empty()).then_some(name)
    })
}

/// The name of the closest `fn` at or before line `at` (for `covers:` inside a test body).
fn enclosing_fn_name(lines: &[&str], at: usize) -> Option<String> {
    (0..=at)
        .rev()
        .take(80)
        .find_map(|i| next_fn_name(&lines[i..=i], 0))
}

#[test]
fn every_requirement_is_covered_and_every_reference_exists() {
    let mut reqs: BTreeMap<String, Requirement> = BTreeMap::new();
    let mut per_doc: BTreeMap<String, usize> = BTreeMap::new();
    let mut problems: Vec<String> = Vec::new();

    for doc in spec_docs() {
        let text = fs::read_to_string(&doc).expect("readable spec document");
        let name = rel(&doc);
        per_doc.entry(name.clone()).or_insert(0);
        for (i, line) in text.lines().enumerate() {
            for (id, statement) in definitions(line) {
                *per_doc.entry(name.clone()).or_insert(0) += 1;
                if let Some(prev) = reqs.get(&id) {
                    problems.push(format!(
                        "{id} is defined twice: {}:{} and {name}:{}",
                        prev.doc,
                        prev.line,
                        i + 1
                    ));
                    continue;
                }
                reqs.insert(
                    id,
                    Requirement {
                        doc: name.clone(),
                        line: i + 1,
                        statement,
                    },
                );
            }
        }
    }

    // Every ID mentioned anywhere in the spec (with a known prefix) must be defined.
    let prefixes: std::collections::BTreeSet<String> = reqs
        .keys()
        .filter_map(|id| id.split('-').next().map(str::to_string))
        .collect();
    for doc in spec_docs() {
        let text = fs::read_to_string(&doc).expect("readable spec document");
        for (i, line) in text.lines().enumerate() {
            for word in line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
                let word = word.trim_matches('-');
                let known_prefix = word.split('-').next().is_some_and(|p| prefixes.contains(p));
                if known_prefix && is_id(word) && !reqs.contains_key(word) {
                    problems.push(format!(
                        "{}:{}: mentions undefined ID `{word}`",
                        rel(&doc),
                        i + 1
                    ));
                }
            }
        }
    }

    let mut sources = Vec::new();
    rust_sources(&root(), &mut sources);
    sources.sort();
    let mut covers: BTreeMap<String, Vec<Coverage>> = BTreeMap::new();
    for src in &sources {
        let text = fs::read_to_string(src).expect("readable source file");
        let lines: Vec<&str> = text.lines().collect();
        let has_tests = text.contains("#[test]")
            || text.contains("#[tokio::test")
            || text.contains("proptest!");
        for (i, line) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            let Some(list) = trimmed.strip_prefix("// covers:") else {
                continue;
            };
            let file = rel(src);
            if !has_tests {
                problems.push(format!(
                    "{file}:{}: `covers:` in a file with no tests",
                    i + 1
                ));
            }
            let test = next_fn_name(&lines, i + 1)
                .or_else(|| enclosing_fn_name(&lines, i))
                .unwrap_or_else(|| "?".to_string());
            for id in list
                .split([',', ' '])
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                if !reqs.contains_key(id) {
                    problems.push(format!("{file}:{}: covers unknown ID `{id}`", i + 1));
                    continue;
                }
                covers.entry(id.to_string()).or_default().push(Coverage {
                    file: file.clone(),
                    line: i + 1,
                    test: test.clone(),
                });
            }
        }
    }

    for (id, req) in &reqs {
        if !covers.contains_key(id) {
            problems.push(format!(
                "{id} ({}:{}) has no covering test",
                req.doc, req.line
            ));
        }
    }

    // The generated table.
    let mut table = String::new();
    table.push_str(
        "# Traceability\n\nGenerated by `cargo test --test traceability` from `spec/*.md` and the \
         `// covers:` comments in the tests. Do not edit by hand.\n\n## Requirements per document\n\n\
         | document | requirements |\n|---|---|\n",
    );
    for (doc, n) in &per_doc {
        let _ = writeln!(table, "| `{doc}` | {n} |");
    }
    let _ = writeln!(table, "| **total** | {} |\n", reqs.len());
    table.push_str("## Requirement → tests\n\n| ID | statement | covered by |\n|---|---|---|\n");
    for (id, req) in &reqs {
        let tests = covers
            .get(id)
            .map(|cs| {
                cs.iter()
                    .map(|c| format!("`{}` ({}:{})", c.test, c.file, c.line))
                    .collect::<Vec<_>>()
                    .join("<br>")
            })
            .unwrap_or_else(|| "**none**".to_string());
        let statement = req.statement.replace('|', "\\|");
        let _ = writeln!(table, "| {id} | {statement} | {tests} |");
    }

    let out = root().join("spec/traceability.md");
    let old = fs::read_to_string(&out).unwrap_or_default();
    if old != table {
        fs::write(&out, &table).expect("write spec/traceability.md");
        if std::env::var_os("CI").is_some() {
            problems.push(
                "spec/traceability.md was stale: run `cargo test --test traceability` and commit it"
                    .to_string(),
            );
        }
    }

    eprintln!("traceability: {} requirements", reqs.len());
    for (doc, n) in &per_doc {
        eprintln!("  {doc}: {n}");
    }
    assert!(
        problems.is_empty(),
        "traceability problems:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn id_shape_and_definition_parsing() {
    assert!(is_id("SF-HDR-1"));
    assert!(is_id("DS-12"));
    assert!(!is_id("SF-HDR"));
    assert!(!is_id("sf-hdr-1"));
    assert!(!is_id("SF--1"));
    let defs = definitions("- **[SF-HDR-1]** A header MUST be short. See **[not-an-id]**.");
    assert_eq!(defs.len(), 1);
    assert_eq!(defs[0].0, "SF-HDR-1");
    assert!(defs[0].1.starts_with("A header MUST"));
    assert!(definitions("write `**[SF-HDR-1]**` like this").is_empty());
    let defs = definitions("- **[KS-1]** `KID = a << b` MUST hold.");
    assert_eq!(defs[0].1, "`KID = a << b` MUST hold.");
}
