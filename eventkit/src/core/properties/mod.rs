//! What eventkit knows of librdkafka's configuration properties: the clients each applies to,
//! whether librdkafka marks it sensitive (its value is never shown: in errors, logs, the config's
//! `Debug`), and whether it can be set from a string at all. [`table`] is generated.

mod table;

pub(crate) use table::PROPERTIES;

/// What is shown instead of a secret value.
pub(crate) const REDACTED: &str = "<redacted>";

/// Which clients a property applies to, as librdkafka classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Any,
    Consumer,
    Producer,
}

/// A librdkafka configuration property, as librdkafka's own table describes it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Property {
    pub name: &'static str,
    /// The clients it applies to.
    pub scope: Scope,
    /// Marked sensitive by librdkafka: its value is never shown.
    pub sensitive: bool,
    /// Whether a string can set it (callbacks and internal properties are set through C
    /// functions only).
    pub settable: bool,
}

/// The property named `name` (`_` and `.` alike: names from environment variables have `.`
/// where librdkafka may have `_`).
pub(crate) fn lookup(name: &str) -> Option<&'static Property> {
    let same = |a: &str, b: &str| a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| x.eq_ignore_ascii_case(&y) || (x == b'_' || x == b'.') && (y == b'_' || y == b'.'));
    PROPERTIES.iter().find(|p| same(p.name, name))
}

/// Whether the value of the property named `name` may be shown: never for what librdkafka
/// marks sensitive (and aliases of it), nor for names librdkafka does not know (a misspelt
/// `sasl.pasword` still holds a password) or cannot take from a string (`ssl_key`).
pub(crate) fn shows_value(name: &str) -> bool {
    lookup(name).is_some_and(|p| !p.sensitive && p.settable)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The marking and kinds librdkafka's own table gives, read from the bundled sources.
    fn librdkafka_sources() -> Option<std::path::PathBuf> {
        // Offline, the resolve must be limited to this host (other platforms' crates are not downloaded).
        let rustc = std::process::Command::new("rustc").arg("-vV").output().ok()?;
        let host = String::from_utf8_lossy(&rustc.stdout).lines().find_map(|l| l.strip_prefix("host: ").map(str::to_owned))?;
        let output = std::process::Command::new(env!("CARGO"))
            .args(["metadata", "--format-version", "1", "--offline", "--filter-platform", &host])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()?;
        let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
        let manifest = metadata["packages"].as_array()?.iter().find(|p| p["name"] == "rdkafka-sys")?["manifest_path"].as_str()?.to_owned();
        Some(std::path::Path::new(&manifest).parent()?.join("librdkafka"))
    }

    #[test]
    fn the_list_matches_the_linked_librdkafka() {
        let root = librdkafka_sources().expect("rdkafka-sys's sources (cargo metadata)");
        let conf = std::fs::read_to_string(root.join("src/rdkafka_conf.c")).expect("rdkafka_conf.c");
        // Each entry of librdkafka's property table: `{FLAGS, "name", _RK_C_KIND, ...}`.
        let mut sensitive = std::collections::BTreeSet::new();
        let mut aliases = Vec::new();
        let mut unsettable = std::collections::BTreeSet::new();
        let flat: String = conf.split_whitespace().collect::<Vec<_>>().join(" ").replace("{ _RK_", "{_RK_");
        for entry in flat.split("{_RK_").skip(1) {
            let Some((flags, rest)) = entry.split_once(", \"") else { continue };
            let Some((name, rest)) = rest.split_once('"') else { continue };
            let kind = rest.trim_start_matches([',', ' ']).split([',', '}']).next().unwrap_or_default().trim();
            if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_') || !kind.starts_with("_RK_C_") {
                continue;
            }
            if flags.contains("_RK_SENSITIVE") {
                sensitive.insert(name.to_owned());
            }
            if matches!(kind, "_RK_C_PTR" | "_RK_C_INTERNAL") {
                unsettable.insert(name.to_owned());
            }
            if kind == "_RK_C_ALIAS" {
                if let Some(target) = rest.split(".sdef = \"").nth(1).and_then(|t| t.split('"').next()) {
                    aliases.push((name.to_owned(), target.to_owned()));
                }
            }
        }
        for (alias, target) in aliases {
            if sensitive.contains(&target) {
                sensitive.insert(alias);
            }
        }
        assert!(sensitive.contains("sasl.password") && sensitive.contains("ssl_key"), "the parse found librdkafka's marking: {sensitive:?}");
        let listed: std::collections::BTreeSet<String> = PROPERTIES.iter().filter(|p| p.sensitive).map(|p| p.name.to_owned()).collect();
        assert_eq!(listed, sensitive, "regenerate core/properties/table.rs with scripts/gen-kafka-properties.py");
        let listed: std::collections::BTreeSet<String> = PROPERTIES.iter().filter(|p| !p.settable).map(|p| p.name.to_owned()).collect();
        let known: std::collections::BTreeSet<String> = unsettable.into_iter().filter(|n| lookup(n).is_some()).collect();
        assert_eq!(listed, known, "regenerate core/properties/table.rs with scripts/gen-kafka-properties.py");
    }

    #[test]
    fn no_sensitive_property_shows_under_any_spelling() {
        for p in PROPERTIES.iter().filter(|p| p.sensitive) {
            for spelling in [p.name.to_owned(), p.name.replace('.', "_"), p.name.replace('_', "."), p.name.to_ascii_uppercase()] {
                assert!(!shows_value(&spelling), "{spelling}");
            }
        }
        assert!(shows_value("linger.ms") && shows_value("LINGER_MS"));
        assert!(!shows_value("sasl.pasword"), "unknown names hold anything");
    }
}
