//! The module graph points one way. A source scan of `src/` resolves every `use` and every
//! `crate::`/`super::`/`self::` path to the file that defines it, then checks that
//! - each top-level module imports only from the layers below it ([`LAYERS`]),
//! - nothing inside the crate imports through the crate root's re-exports, and
//! - the graph of files has no cycle (a `mod.rs` that re-exports its children is part of it, so
//!   a child cannot import from its own `mod.rs`).
//!
//! The scanner is tested on small trees of its own first, so that a broken scan cannot pass
//! vacuously.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers, bottom first. A module may import from modules of lower layers only.
const LAYERS: &[&[&str]] = &[
    &["name", "reason", "phase", "date", "sys"],
    &["hello"],
    &["rules"],
    &["policy"],
    &["config"],
    &["outcome"],
    &["metrics"],
    &["access_log"],
    &["proxy"],
    &["reload", "handover"],
    &["lifecycle"],
    &["cli"],
];

#[test]
fn src_imports_point_down_and_form_no_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    read_tree(&root, &root, &mut files);
    assert!(files.len() > 20, "the scan found too few files: {:?}", files.keys());
    let problems = check(&files);
    assert!(problems.is_empty(), "the module graph is not one-way:\n{}", problems.join("\n"));
}

#[test]
fn the_scanner_reports_a_back_import() {
    let tree = [
        ("lib.rs", "mod hello;\nmod rules;\npub use crate::rules::Rule;\n"),
        ("hello/mod.rs", "mod parse;\npub use parse::parse;\n"),
        ("hello/parse.rs", "use crate::rules::rule::Rule; // a back-import\npub fn parse() {}\n"),
        ("rules/mod.rs", "pub mod rule;\n"),
        ("rules/rule.rs", "use crate::hello::parse;\npub struct Rule;\n"),
    ];
    let problems = check(&owned(&tree));
    assert!(
        problems.iter().any(|p| p.contains("hello/parse.rs") && p.contains("rules/rule.rs") && p.contains("layer")),
        "{problems:?}"
    );
}

#[test]
fn the_scanner_reports_a_cycle_and_an_import_through_the_root() {
    let tree = [
        ("lib.rs", "mod proxy;\npub use crate::proxy::server::Server;\n"),
        ("proxy/mod.rs", "mod server;\nmod connection;\npub use server::Server;\n"),
        ("proxy/server.rs", "use super::connection::handle;\npub struct Server;\n"),
        ("proxy/connection.rs", "use super::Server;\nuse crate::Server as S;\npub fn handle() {}\n"),
    ];
    let problems = check(&owned(&tree));
    assert!(problems.iter().any(|p| p.starts_with("cycle") && p.contains("proxy/mod.rs")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("through the crate root")), "{problems:?}");
}

#[test]
fn the_scanner_reads_use_trees_comments_and_test_modules() {
    let src = "// use crate::proxy::x;\n/* use crate::cli; */\nuse crate::{name::Name, rules::{file::{self, X}, rule::Verdict}};\n\
               fn f() { let s = \"crate::proxy\"; crate::hello::parse(); }\n\
               #[cfg(test)]\nmod tests {\n    use super::*;\n    use super::super::sibling;\n}\n";
    let mut paths: Vec<String> =
        paths_in(&["reload".to_string()], src).into_iter().filter(|p| p.1.is_none()).map(|p| p.0.join("::")).collect();
    paths.sort();
    assert_eq!(
        paths,
        ["hello::parse", "name::Name", "reload::*", "rules::file", "rules::file::X", "rules::rule::Verdict", "sibling"]
    );
}

fn owned(tree: &[(&str, &str)]) -> BTreeMap<String, String> {
    tree.iter().map(|(p, s)| (p.to_string(), s.to_string())).collect()
}

/// Every `.rs` file under `dir`, by its path relative to `root`; `main.rs` is the binary, not
/// part of the library's graph.
fn read_tree(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            read_tree(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).expect("under src").to_string_lossy().replace('\\', "/");
            if rel != "main.rs" {
                out.insert(rel, std::fs::read_to_string(&path).expect("a source file"));
            }
        }
    }
}

/// A file's module path: `proxy/server.rs` is `["proxy", "server"]`, `proxy/mod.rs` and
/// `lib.rs` are their directory's module.
fn module_of(file: &str) -> Vec<String> {
    let trimmed = file.trim_end_matches(".rs");
    let mut parts: Vec<String> = trimmed.split('/').map(str::to_string).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// Every problem with the graph of `files` (relative path → source).
fn check(files: &BTreeMap<String, String>) -> Vec<String> {
    let modules: BTreeMap<Vec<String>, &str> = files.keys().map(|f| (module_of(f), f.as_str())).collect();
    let mut problems = Vec::new();
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (file, source) in files {
        let here = module_of(file);
        for (path, relative) in paths_in(&here, source) {
            // A relative path names a child module, or another crate.
            if let Some(scope) = relative
                && !path.get(..=scope).is_some_and(|child| modules.contains_key(child))
            {
                continue;
            }
            // The longest prefix of the path that is a file's module is the file it comes from.
            let Some(target) = (0..=path.len()).rev().find_map(|n| modules.get(&path[..n]).copied()) else { continue };
            if target == file {
                continue;
            }
            if target == "lib.rs" && !path.is_empty() && file != "lib.rs" {
                problems.push(format!("{file}: imports `crate::{}` through the crate root", path.join("::")));
                continue;
            }
            edges.entry(file.as_str()).or_default().insert(target);
            let (from, to) = (layer(&here), layer(&module_of(target)));
            match (from, to) {
                (Ok(Some(from)), Ok(Some(to))) if here[0] != module_of(target)[0] && to >= from => {
                    problems.push(format!(
                        "{file} (layer {from}) imports {target} (layer {to}): a module imports only from lower layers"
                    ))
                }
                (Err(top), _) | (_, Err(top)) => problems.push(format!("module `{top}` has no layer in LAYERS")),
                _ => {}
            }
        }
    }
    if let Some(cycle) = find_cycle(&edges) {
        problems.push(format!("cycle: {}", cycle.join(" -> ")));
    }
    problems.sort();
    problems.dedup();
    problems
}

/// The layer of a module path; `Ok(None)` for the crate root, `Err` for a module without one.
fn layer(module: &[String]) -> Result<Option<usize>, String> {
    let Some(top) = module.first() else { return Ok(None) };
    LAYERS.iter().position(|l| l.contains(&top.as_str())).map(Some).ok_or_else(|| top.clone())
}

/// One cycle of the file graph, if there is any.
fn find_cycle<'a>(edges: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Option<Vec<&'a str>> {
    fn visit<'a>(
        node: &'a str,
        edges: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        state: &mut BTreeMap<&'a str, bool>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<&'a str>> {
        match state.get(node) {
            Some(true) => {
                let at = stack.iter().position(|n| *n == node).expect("on the stack");
                let mut cycle = stack[at..].to_vec();
                cycle.push(node);
                return Some(cycle);
            }
            Some(false) => return None,
            None => {}
        }
        state.insert(node, true);
        stack.push(node);
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, state, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        state.insert(node, false);
        None
    }
    let mut state = BTreeMap::new();
    edges.keys().find_map(|node| visit(node, edges, &mut state, &mut Vec::new()))
}

/// Every path a file names, from the crate root, with `self`/`super` resolved against `module`
/// and the inline modules (`mod tests { … }`) the path sits in. A `use` path that starts with
/// none of `crate`, `self` or `super` is relative: it names a child module of the scope, whose
/// length comes with it, or another crate.
fn paths_in(module: &[String], source: &str) -> Vec<(Vec<String>, Option<usize>)> {
    let code = strip(source);
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    // Inline modules open at a brace depth; `scope` is the module path at each point.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < bytes.len() {
        let scope = || module.iter().cloned().chain(inline.iter().map(|(m, _)| m.clone())).collect::<Vec<_>>();
        match bytes[i] {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            _ if word_at(bytes, i, "mod") => {
                let rest = &code[i + 3..];
                let name: String = rest.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                let after = rest.trim_start()[name.len()..].trim_start();
                if after.starts_with('{') {
                    inline.push((name, depth));
                }
            }
            _ if word_at(bytes, i, "use") => {
                let end = code[i..].find(';').map_or(code.len(), |e| i + e);
                let scope = scope();
                for tree in expand(code[i + 3..end].trim()) {
                    match absolute(&scope, &tree) {
                        Some(path) => out.push((path, None)),
                        None => {
                            let path = scope.iter().cloned().chain(tree.split("::").map(|s| s.trim().to_string()));
                            out.push((path.collect(), Some(scope.len())));
                        }
                    }
                }
                i = end;
                continue;
            }
            _ if ["crate::", "super::", "self::"]
                .iter()
                .any(|k| word_at(bytes, i, k.trim_end_matches(':')) && code[i..].starts_with(k)) =>
            {
                let len =
                    code[i..].find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(code.len() - i);
                let text = code[i..i + len].trim_end_matches(':');
                if let Some(path) = absolute(&scope(), text) {
                    out.push((path, None));
                }
                i += len;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Whether the identifier `word` starts at `i` (not inside a longer identifier).
fn word_at(bytes: &[u8], i: usize, word: &str) -> bool {
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    bytes[i..].starts_with(word.as_bytes())
        && (i == 0 || !ident(bytes[i - 1]))
        && bytes.get(i + word.len()).is_none_or(|&b| !ident(b))
}

/// `a::{b, c::{d, self}}` → `a::b`, `a::c::d`, `a::c`; ` as x` dropped.
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree.split_whitespace().collect::<Vec<_>>().join(" ");
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap_or_default().trim().to_string()];
    };
    let prefix = tree[..open].trim_end_matches("::").trim();
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut items = Vec::new();
    let (mut level, mut start) = (0, 0);
    for (k, c) in inner.char_indices() {
        match c {
            '{' => level += 1,
            '}' => level -= 1,
            ',' if level == 0 => {
                items.push(&inner[start..k]);
                start = k + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    let join = |item: String| match (prefix.is_empty(), item.as_str()) {
        (_, "self") => prefix.to_string(),
        (true, _) => item,
        (false, _) => format!("{prefix}::{item}"),
    };
    items.into_iter().map(str::trim).filter(|s| !s.is_empty()).flat_map(expand).map(join).collect()
}

/// The path from the crate root; `None` for paths into other crates.
fn absolute(scope: &[String], path: &str) -> Option<Vec<String>> {
    let mut segments = path.split("::").map(str::trim).filter(|s| !s.is_empty());
    let mut at: Vec<String> = match segments.next()? {
        "crate" => Vec::new(),
        "self" => scope.to_vec(),
        "super" => scope[..scope.len().checked_sub(1)?].to_vec(),
        _ => return None,
    };
    for s in segments {
        match s {
            "super" => {
                at.pop()?;
            }
            "self" => {}
            _ => at.push(s.to_string()),
        }
    }
    Some(at)
}

/// The source without comments, string literals or character literals (their text is not
/// code), keeping line structure.
fn strip(source: &str) -> String {
    let b = source.as_bytes();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let end = source[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            i = end;
        } else if b[i] == b'r'
            && (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
        {
            let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
            let close = format!("\"{}", "#".repeat(hashes));
            let body = i + 2 + hashes;
            i = source[body..].find(&close).map_or(b.len(), |e| body + e + close.len());
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && (b.get(i + 2) == Some(&b'\'') || (b.get(i + 1) == Some(&b'\\'))) {
            let end = source[i + 1..].find('\'').map_or(b.len(), |e| i + 1 + e);
            // An escaped quote: `'\''`.
            let end = if b.get(end - 1) == Some(&b'\\') && b.get(end + 1) == Some(&b'\'') { end + 1 } else { end };
            i = end + 1;
            out.push_str("' '");
        } else {
            let c = source[i..].chars().next().expect("in bounds");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}
