//! Turns the README's Rust snippets into doctests of this package (`cargo test --workspace`
//! compiles every one; a snippet that stops compiling fails the run).
//!
//! A snippet preceded by `<!-- doctest: NAME -->` gets the context in `tests/readme/NAME.rs`
//! as hidden lines (the README shows only the snippet). A context holds `// items` where the
//! snippet's items go, and `// statements` where its statements go: the snippet's lines from
//! its first `let` at the start of a line on. Without a context, a snippet compiles as it is.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme_path = root.join("../README.md");
    println!("cargo:rerun-if-changed={}", readme_path.display());
    println!("cargo:rerun-if-changed={}", root.join("readme").display());
    let readme = std::fs::read_to_string(&readme_path).expect("README.md");
    let mut out = String::new();
    let mut context: Option<String> = None;
    let mut lines = readme.lines().enumerate();
    while let Some((number, line)) = lines.next() {
        if let Some(name) = line.trim().strip_prefix("<!-- doctest:").and_then(|rest| rest.strip_suffix("-->")) {
            context = Some(name.trim().to_owned());
            continue;
        }
        let fence = line.trim_start();
        let is_fence = fence.starts_with("```") || fence.starts_with("~~~");
        let rust = is_fence && fence[3..].trim_start_matches(['`', '~']).to_ascii_lowercase().starts_with("rust");
        // A snippet this harness would not see is an error, not a silent skip.
        if rust && (!line.starts_with("```rust") || line.starts_with("````")) {
            panic!("README.md line {}: a Rust snippet is read when its fence is ```rust at the start of the line (no indent, no ~~~, lower case): {line}", number + 1);
        }
        if rust && line.contains("ignore") {
            panic!("README.md line {}: README snippets compile (use `no_run` where one needs a broker): {line}", number + 1);
        }
        if !rust {
            if is_fence && !fence.trim_start_matches(['`', '~']).is_empty() {
                if let Some(name) = &context {
                    panic!("README.md line {}: `<!-- doctest: {name} -->` is followed by a block that is not Rust", number + 1);
                }
            }
            continue;
        }
        let mut snippet = Vec::new();
        for (_, line) in lines.by_ref() {
            if line.starts_with("```") {
                break;
            }
            snippet.push(line);
        }
        writeln!(out, "README.md line {}:\n\n{line}", number + 1).unwrap();
        let split = snippet.iter().position(|l| l.starts_with("let ")).unwrap_or(snippet.len());
        let (items, statements) = snippet.split_at(split);
        match context.take() {
            None => {
                for l in &snippet {
                    writeln!(out, "{l}").unwrap();
                }
            }
            Some(name) => {
                let path = root.join("readme").join(format!("{name}.rs"));
                let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let mut placed = (items.is_empty(), statements.is_empty());
                for l in text.lines() {
                    match l.trim() {
                        "// items" => {
                            items.iter().for_each(|s| writeln!(out, "{s}").unwrap());
                            placed.0 = true;
                        }
                        "// statements" => {
                            statements.iter().for_each(|s| writeln!(out, "{s}").unwrap());
                            placed.1 = true;
                        }
                        _ if l.is_empty() => writeln!(out, "#").unwrap(),
                        _ => writeln!(out, "# {l}").unwrap(),
                    }
                }
                assert!(placed == (true, true), "{}: the context has no place for the snippet's items or statements", path.display());
            }
        }
        writeln!(out, "```\n").unwrap();
    }
    if let Some(name) = context {
        panic!("README.md: `<!-- doctest: {name} -->` is followed by no Rust snippet");
    }
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("readme.md");
    std::fs::write(dest, out).unwrap();
}
