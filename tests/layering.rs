//! The runtime's layers import one way: a module of `eventkit/src` names only modules of its own
//! layer or of those below (the module map in the crate docs and the README). Read from the
//! source: every `crate::` path (in `use` lines and inline, outside comments), every `super::`
//! path, and the crate root's re-exports (`crate::Context` is `flows::context`).
//!
//! Also reported, not failed: the import cycles left, all within one layer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first: the top folders of `eventkit/src`.
const LAYERS: &[&str] = &["core", "wire", "kafka", "flows", "app", "surfaces"];

struct Source {
    /// Module path without `crate` (`flows::consume::fetch`).
    module: Vec<String>,
    text: String,
}

fn sources(root: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel: PathBuf = path.strip_prefix(root).unwrap().with_extension("");
            let mut module: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
            if module.last().is_some_and(|m| m == "mod") {
                module.pop();
            }
            if module == ["lib"] || module.first().is_some_and(|m| m == "bin") {
                continue;
            }
            out.push(Source { module, text: std::fs::read_to_string(&path).unwrap() });
        }
    }
    out.sort_by(|a, b| a.module.cmp(&b.module));
    out
}

/// The code of a line: without its `//` comment (doc comments included).
fn code(line: &str) -> &str {
    let mut from = 0;
    while let Some(i) = line[from..].find("//").map(|i| i + from) {
        if line[..i].matches('"').count().is_multiple_of(2) {
            return &line[..i];
        }
        from = i + 2;
    }
    line
}

/// Each path starting at `prefix` (`crate::a::b::C`, `super::super::x`), as segments after it.
fn paths<'a>(text: &'a str, prefix: &str) -> Vec<Vec<&'a str>> {
    let mut out = Vec::new();
    for line in text.lines().map(code) {
        let mut rest = line;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().next_back();
            let after = &rest[i + prefix.len()..];
            rest = after;
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            let end = after.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(after.len());
            let segments: Vec<&str> = after[..end].split("::").filter(|s| !s.is_empty()).collect();
            rest = &after[end..];
            if after[end..].starts_with('{') {
                // `crate::x::{a, b::c}`: the group's members are under `x`.
                let close = after[end..].find('}').map_or(after.len(), |c| c + end);
                for member in after[end + 1..close].split(',') {
                    let mut path = segments.clone();
                    path.extend(member.trim().split("::").map(str::trim).filter(|s| !s.is_empty()));
                    out.push(path);
                }
            } else {
                out.push(segments);
            }
        }
    }
    out
}

/// The crate root's re-exports: a name at the root, to the module path it comes from.
fn root_names(lib: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for path in paths(lib, "pub use ") {
        let mut path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        if path.first().is_some_and(|s| s == "self" || s == "crate") {
            path.remove(0);
        }
        if let Some(name) = path.last().cloned() {
            let name = name.rsplit(" as ").next().unwrap_or(&name).trim().to_owned();
            out.insert(name, path);
        }
    }
    out
}

#[test]
fn no_module_imports_a_higher_layer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../eventkit/src");
    let sources = sources(&root);
    let roots = root_names(&std::fs::read_to_string(root.join("lib.rs")).unwrap());
    let modules: BTreeSet<Vec<String>> = sources.iter().map(|s| s.module.clone()).collect();
    let layer = |module: &[String]| LAYERS.iter().position(|l| module.first().is_some_and(|m| m == l));

    // Each module's imports, resolved to the longest module path they name.
    let resolve = |path: Vec<String>| -> Option<Vec<String>> {
        let path = match path.first() {
            Some(first) if !LAYERS.contains(&first.as_str()) => {
                let mut through = roots.get(first)?.clone();
                through.extend(path.into_iter().skip(1));
                through
            }
            _ => path,
        };
        (1..=path.len()).rev().map(|n| path[..n].to_vec()).find(|m| modules.contains(m))
    };
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    let mut unplaced = Vec::new();
    for s in &sources {
        if layer(&s.module).is_none() {
            unplaced.push(s.module.join("::"));
        }
        let mut named = Vec::new();
        for p in paths(&s.text, "crate::") {
            named.push(p.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        }
        for p in paths(&s.text, "super::") {
            // `super::super::x` from `a::b::c` (its file `a/b/c.rs` or `a/b/c/mod.rs`) is `a::x`.
            let ups = 1 + p.iter().take_while(|s| **s == "super").count();
            let Some(keep) = s.module.len().checked_sub(ups) else { continue };
            let mut full: Vec<String> = s.module[..keep].to_vec();
            full.extend(p.iter().skip(ups - 1).map(|s| s.to_string()));
            named.push(full);
        }
        let out = edges.entry(s.module.clone()).or_default();
        for target in named.into_iter().filter_map(resolve) {
            if target != s.module {
                out.insert(target);
            }
        }
    }
    assert!(unplaced.is_empty(), "modules outside the layer folders ({LAYERS:?}): {unplaced:?}; put each in the folder of its layer");

    let mut upward = Vec::new();
    for (from, to) in &edges {
        for t in to {
            if layer(t) > layer(from) {
                upward.push(format!("{} ({}) imports {} ({})", from.join("::"), LAYERS[layer(from).unwrap()], t.join("::"), LAYERS[layer(t).unwrap()]));
            }
        }
    }
    assert!(!edges.is_empty() && edges.values().any(|e| !e.is_empty()), "the check read imports at all");
    assert!(upward.is_empty(), "a lower layer imports a higher one:\n  {}", upward.join("\n  "));

    // The cycles left: strongly connected components of the module graph (Tarjan's).
    let cycles = cycles(&edges);
    println!("{} import cycles, each within one layer:", cycles.len());
    for c in &cycles {
        let layers: BTreeSet<usize> = c.iter().filter_map(|m| layer(m)).collect();
        assert_eq!(layers.len(), 1, "a cycle across layers: {c:?}");
        println!("  {}: {}", LAYERS[*layers.first().unwrap()], c.iter().map(|m| m.join("::")).collect::<Vec<_>>().join(", "));
    }
}

/// The modules that import each other in a ring, each ring as its members.
fn cycles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<Vec<String>>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on_stack: BTreeSet<&'a Vec<String>>,
        out: Vec<Vec<Vec<String>>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a Vec<String>) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.edges.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut ring = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    ring.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if ring.len() > 1 {
                    ring.sort();
                    self.out.push(ring);
                }
            }
        }
    }
    let mut walk = Walk { edges, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), on_stack: BTreeSet::new(), out: Vec::new() };
    for v in edges.keys() {
        if !walk.index.contains_key(v) {
            walk.visit(v);
        }
    }
    walk.out
}

/// The check itself: an upward import is found (through a `use`, an inline path, a root
/// re-export and `super::`), and a comment is not an import.
#[test]
fn the_check_sees_upward_imports() {
    let text = "use crate::flows::publish::Publisher; // crate::surfaces::admin\nfn f() -> crate::Context { todo!() }\nuse super::super::app::App;";
    let found = paths(text, "crate::");
    assert_eq!(found, vec![vec!["flows", "publish", "Publisher"], vec!["Context"]]);
    let roots = root_names("pub use flows::context::Context;\npub use self::core::error::{Error, Result};");
    assert_eq!(roots["Context"], ["flows", "context", "Context"]);
    assert_eq!(roots["Result"], ["core", "error", "Result"]);
    assert_eq!(paths(text, "super::"), vec![vec!["super", "app", "App"]]);
}
