//! The crate's layering, checked against its source (docs/architecture.md, "Layers").
//!
//! Every `.rs` file under `supervisor/src/<module>` is read at test time and each reference
//! to another top-level module is collected: `crate::x::…`, groups such as
//! `crate::{x::y, z::{…}}`, and `super::` chains that climb out to the crate root. Comments
//! and string literals are skipped. The test fails, naming the file, line and reference, when
//! the module graph has a cycle or when a module uses one that is not in a lower layer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, bottom first. A module may use only modules of lower layers; the modules of one
/// layer are independent of each other. A new top-level module must be placed here.
const LAYERS: &[&[&str]] = &[
    // The machine as data: the syscall table and errnos, path patterns, exit statuses; escaping
    // text for a person.
    &["kernel", "glob", "exit", "text", "secret"],
    // The raw system calls no crate wraps, by those numbers.
    &["sys"],
    // Who runs and who signs; freezing and killing a cgroup; the transactional workspace's layer.
    &["identity", "keys", "respond", "workspace"],
    // The profile language.
    &["profile"],
    // Pure compilation of a profile for one run, the monitor's configuration included.
    &["policy"],
    // Building the sandbox; loading and attaching the probes; decoding what they report.
    &["launch", "probes", "events"],
    // The signed trace.
    &["trace"],
    // The live monitor; the post-run persistence scan.
    &["detect", "persist"],
    // One run's components; the host check.
    &["session", "doctor", "selftest"],
];

/// Files under src/ that are not modules of a layer: the crate root, the binary, this test.
const NOT_LAYERED: &[&str] = &[
    "lib.rs",
    "main.rs",
    "cli_approvals.rs",
    "cli_args.rs",
    "cli_changes.rs",
    "cli_policy",
    "cli_run.rs",
    "layers_test.rs",
];

/// One reference to a top-level module, from a given line of a file.
#[derive(Debug)]
struct Ref {
    line: usize,
    module: String,
    text: String,
}

/// `code` with comments, string and char literals blanked out (line breaks kept).
fn strip(code: &str) -> String {
    let b = code.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        let start = i;
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if b[i] == b'r' && !ident_before(b, i) && raw_string_hashes(&b[i + 1..]).is_some() {
            let hashes = raw_string_hashes(&b[i + 1..]).unwrap_or(0);
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            i += 2 + hashes;
            while i < b.len() && !b[i..].starts_with(&close) {
                i += 1;
            }
            i += close.len();
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if b[i] == b'\'' && (b.get(i + 1) == Some(&b'\\') || b.get(i + 2) == Some(&b'\'')) {
            // A char literal ('x', '\n', '\\', '\''), not a lifetime.
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else {
            i += 1;
            continue;
        }
        let end = i.min(b.len());
        blank(&mut out, start, end);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// After an `r`: the number of `#` of a raw string that starts here (not a raw identifier).
fn raw_string_hashes(b: &[u8]) -> Option<usize> {
    let hashes = b.iter().take_while(|&&c| c == b'#').count();
    (b.get(hashes) == Some(&b'"')).then_some(hashes)
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn ident_before(b: &[u8], i: usize) -> bool {
    i > 0 && is_ident(b[i - 1])
}

fn trailing_ident(s: &str) -> &str {
    let n = s.bytes().rev().take_while(|&c| is_ident(c)).count();
    &s[s.len() - n..]
}

fn ident_at(s: &str) -> &str {
    let n = s.bytes().take_while(|&c| is_ident(c)).count();
    &s[..n]
}

/// Each element of a use group `{a::b, c, d::{e}}` with its byte offset in `group`, which
/// starts just after the `{`. Nested groups at the top (`{{a, b}}`) are flattened.
fn group_elements(group: &str) -> Vec<(usize, String)> {
    let mut spans = Vec::new();
    let (mut depth, mut from, mut end) = (0, 0, group.len());
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                end = i;
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                spans.push(from..i);
                from = i + 1;
            }
            _ => {}
        }
    }
    spans.push(from..end);
    spans
        .into_iter()
        .flat_map(|span| {
            let e = &group[span.clone()];
            let at = span.start + (e.len() - e.trim_start().len());
            let e = e.trim();
            match e.strip_prefix('{') {
                Some(inner) => group_elements(inner)
                    .into_iter()
                    .map(|(o, inner)| (at + 1 + o, inner))
                    .collect(),
                None => vec![(at, e.split_whitespace().collect::<Vec<_>>().join(" "))],
            }
        })
        .filter(|(_, e)| !e.is_empty())
        .collect()
}

/// References to top-level modules in one file whose module sits `depth` levels below the
/// crate root (`x.rs`, `x/mod.rs`: 1; `x/y.rs`: 2).
fn references(code: &str, depth: usize) -> Vec<Ref> {
    let code = strip(code);
    let b = code.as_bytes();
    let line_of = |i: usize| 1 + b[..i].iter().filter(|&&c| c == b'\n').count();
    let mut refs = Vec::new();
    // Inline `mod x { … }` blocks open at this point: the brace depth each one opened at.
    let mut inline_mods: Vec<usize> = Vec::new();
    let mut braces: usize = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'{' => {
                let before = code[..i].trim_end();
                let name = trailing_ident(before);
                if !name.is_empty() && trailing_ident(before[..before.len() - name.len()].trim_end()) == "mod"
                {
                    inline_mods.push(braces);
                }
                braces += 1;
            }
            b'}' => {
                braces = braces.saturating_sub(1);
                if inline_mods.last() == Some(&braces) {
                    inline_mods.pop();
                }
            }
            _ => {}
        }
        if ident_before(b, i) || !(b[i..].starts_with(b"crate::") || b[i..].starts_with(b"super::")) {
            i += 1;
            continue;
        }
        // The path from the crate root, if this one starts there.
        let start = i;
        let rest = if b[i..].starts_with(b"crate::") {
            i += "crate::".len();
            Some(&code[i..])
        } else {
            let mut supers = 0;
            while code[i..].starts_with("super::") {
                supers += 1;
                i += "super::".len();
            }
            (supers == depth + inline_mods.len()).then(|| &code[i..])
        };
        let Some(rest) = rest.map(str::trim_start) else {
            continue;
        };
        let prefix = code[start..code.len() - rest.len()].trim_end();
        let paths = match rest.strip_prefix('{') {
            Some(group) => {
                let at = code.len() - group.len();
                group_elements(group)
                    .into_iter()
                    .map(|(o, e)| (at + o, format!("{prefix}{{{e}}}"), e))
                    .collect()
            }
            None => {
                let path = &rest[..rest.bytes().take_while(|&c| is_ident(c) || c == b':').count()];
                vec![(start, format!("{prefix}{path}"), path.to_string())]
            }
        };
        for (at, text, path) in paths {
            let module = ident_at(&path);
            if !module.is_empty() && module != "self" {
                refs.push(Ref {
                    line: line_of(at),
                    module: module.to_string(),
                    text,
                });
            }
        }
    }
    refs
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// (using module, file, reference) for every reference to another top-level module.
type Edges = Vec<(String, String, Ref)>;

fn scan(src: &Path) -> (BTreeSet<String>, Edges) {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut modules = BTreeSet::new();
    let mut edges = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        if NOT_LAYERED.iter().any(|n| rel.starts_with(n)) {
            continue;
        }
        let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        let module = parts[0].trim_end_matches(".rs").to_string();
        let depth = parts.len() - usize::from(parts.last().is_some_and(|p| p == "mod.rs"));
        let code = std::fs::read_to_string(&file).unwrap();
        let shown = format!("supervisor/src/{}", rel.display());
        for r in references(&code, depth) {
            if r.module != module {
                edges.push((module.clone(), shown.clone(), r));
            }
        }
        modules.insert(module);
    }
    (modules, edges)
}

fn layer_of(module: &str, layers: &[&[&str]]) -> Option<usize> {
    layers.iter().position(|l| l.contains(&module))
}

/// What is wrong with `edges` against `layers`, one line each.
fn violations(modules: &BTreeSet<String>, edges: &Edges, layers: &[&[&str]]) -> Vec<String> {
    let mut bad = Vec::new();
    for m in modules {
        if layer_of(m, layers).is_none() {
            bad.push(format!(
                "module `{m}` is in no layer: add it to LAYERS in supervisor/src/layers_test.rs"
            ));
        }
    }
    for (from, file, r) in edges {
        if !modules.contains(&r.module) {
            continue; // an item of lib.rs, not a module
        }
        let (Some(lf), Some(lt)) = (layer_of(from, layers), layer_of(&r.module, layers)) else {
            continue;
        };
        let why = if lt == lf {
            format!("both are in layer {lf}, whose modules are independent of each other")
        } else if lt > lf {
            format!("`{}` is in layer {lt}, above layer {lf}", r.module)
        } else {
            continue;
        };
        bad.push(format!(
            "{file}:{}: `{}`: `{from}` may not use `{}`: {why}",
            r.line, r.text, r.module
        ));
    }
    // A cycle, with one reference for each of its steps.
    let mut graph: BTreeMap<&str, BTreeMap<&str, (&str, &Ref)>> = BTreeMap::new();
    for (from, file, r) in edges {
        if modules.contains(&r.module) {
            graph
                .entry(from)
                .or_default()
                .entry(&r.module)
                .or_insert((file, r));
        }
    }
    if let Some(cycle) = find_cycle(&graph) {
        let steps: Vec<String> = cycle
            .windows(2)
            .map(|w| {
                let (file, r) = graph[w[0]][w[1]];
                format!("{} -> {} ({file}:{}: `{}`)", w[0], w[1], r.line, r.text)
            })
            .collect();
        bad.push(format!("import cycle: {}", steps.join(", ")));
    }
    bad
}

/// A cycle of `graph` as a path whose first and last module are the same.
fn find_cycle<'a, V>(graph: &BTreeMap<&'a str, BTreeMap<&'a str, V>>) -> Option<Vec<&'a str>> {
    fn visit<'a, V>(
        m: &'a str,
        graph: &BTreeMap<&'a str, BTreeMap<&'a str, V>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(at) = path.iter().position(|&p| p == m) {
            let mut cycle = path[at..].to_vec();
            cycle.push(m);
            return Some(cycle);
        }
        if !done.insert(m) {
            return None;
        }
        path.push(m);
        for &next in graph.get(m).into_iter().flat_map(|n| n.keys()) {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|&m| visit(m, graph, &mut Vec::new(), &mut done))
}

#[test]
fn modules_use_only_lower_layers_and_form_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (modules, edges) = scan(&src);
    assert!(
        modules.contains("policy") && !edges.is_empty(),
        "scanned nothing under {}",
        src.display()
    );
    for name in LAYERS.iter().flat_map(|l| l.iter()) {
        assert!(
            modules.contains(*name),
            "LAYERS names `{name}`, which is no module under src/"
        );
    }
    let bad = violations(&modules, &edges, LAYERS);
    assert!(
        bad.is_empty(),
        "layering broken (the layers: LAYERS in supervisor/src/layers_test.rs, docs/architecture.md):\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn references_are_found_in_every_form() {
    let code = r##"
use crate::a::b;
use crate::{c::d, e, f::{g, h}, self};
use crate::{
    i,
    j::k as l,
};
// crate::commented
/* crate::block /* nested */ crate::still_block */
const S: &str = "crate::string \" crate::escaped";
const R: &str = r#"crate::raw"#;
fn f<'a>(r#type: &'a crate::m::N, c: char) -> bool { c == '"' || c == '\\' || crate::o::p(x) }
mod inner {
    use super::super::q;
    use super::inner_sibling;
}
use super::r;
"##;
    let found: Vec<(usize, String, String)> = references(code, 1)
        .into_iter()
        .map(|r| (r.line, r.module, r.text))
        .collect();
    let names: Vec<&str> = found.iter().map(|(_, m, _)| m.as_str()).collect();
    assert_eq!(
        names,
        ["a", "c", "e", "f", "i", "j", "m", "o", "q", "r"],
        "{found:?}"
    );
    assert_eq!(found[0], (2, "a".into(), "crate::a::b".into()));
    assert_eq!(found[3], (3, "f".into(), "crate::{f::{g, h}}".into()));
    assert_eq!(found[5], (6, "j".into(), "crate::{j::k as l}".into()));
    assert_eq!(found[8], (14, "q".into(), "super::super::q".into()));
}

#[test]
fn an_upward_import_and_a_cycle_are_reported_with_their_file() {
    let layers: &[&[&str]] = &[&["low"], &["mid", "peer"], &["high"]];
    let modules: BTreeSet<String> = ["low", "mid", "peer", "high"].map(String::from).into();
    let edge = |from: &str, file: &str, code: &str| {
        references(code, 1)
            .into_iter()
            .map(|r| (from.to_string(), file.to_string(), r))
            .collect::<Vec<_>>()
    };
    let mut edges = edge("high", "src/high.rs", "use crate::{mid, low::x};");
    assert!(violations(&modules, &edges, layers).is_empty());
    edges.extend(edge("low", "src/low/a.rs", "\nfn f() { crate::high::g() }"));
    edges.extend(edge("mid", "src/mid.rs", "use crate::{peer::P};"));
    let bad = violations(&modules, &edges, layers);
    assert_eq!(bad.len(), 3, "{bad:#?}");
    assert!(
        bad[0] == "src/low/a.rs:2: `crate::high::g`: `low` may not use `high`: `high` is in layer 2, above layer 0",
        "{}",
        bad[0]
    );
    assert!(
        bad[1].ends_with(
            "`mid` may not use `peer`: both are in layer 1, whose modules are independent of each other"
        ),
        "{}",
        bad[1]
    );
    assert!(
        bad[2].starts_with("import cycle: high -> low (src/high.rs:1: `crate::{low::x}`)"),
        "{}",
        bad[2]
    );
    assert!(
        bad[2].contains("low -> high (src/low/a.rs:2: `crate::high::g`)"),
        "{}",
        bad[2]
    );
}
