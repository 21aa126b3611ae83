//! The layer rules of docs/architecture.md, checked on the source: `codec`
//! imports nothing from the crate but itself; `dedup` imports only `codec`
//! (and `tokio::sync` for waiters); neither touches sockets, metrics or
//! configuration types, nor the Redis client. `store` (the Redis store)
//! implements dedup's store interface and publishes its metrics; it knows
//! nothing of the proxy or the flags.

use std::path::{Path, PathBuf};

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// Every `crate::x` path and external crate path named in `layer`'s files
/// that is not allowed, as "file: line".
fn violations(layer: &str, allowed_crate: &[&str], forbidden: &[&str]) -> Vec<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join(layer);
    let mut bad = Vec::new();
    for file in sources(&root) {
        let text = std::fs::read_to_string(&file).unwrap();
        // Unit tests at the end of a file may drive the code with a runtime.
        let lines = text.lines().take_while(|l| l.trim() != "#[cfg(test)]");
        for (n, line) in lines.enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let mut rest = code;
            while let Some(i) = rest.find("crate::") {
                let after = &rest[i + "crate::".len()..];
                let module: String = after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !allowed_crate.contains(&module.as_str()) {
                    bad.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
                rest = after;
            }
            for f in forbidden {
                if code.contains(f) {
                    bad.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    bad
}

const NO_IO: &[&str] = &[
    "metrics::",
    "clap",
    "tokio::net",
    "tokio::io",
    "tokio::time",
    "tokio::spawn",
    "tokio_util",
    "std::net",
    "std::fs",
];

#[test]
fn codec_imports_nothing_from_the_crate_but_itself() {
    let bad = violations("codec", &["codec"], NO_IO);
    assert!(
        bad.is_empty(),
        "codec reaches outside itself:\n{}",
        bad.join("\n")
    );
}

#[test]
fn dedup_imports_only_the_codec_and_does_no_io() {
    let mut forbidden = NO_IO.to_vec();
    forbidden.push("redis::");
    let bad = violations("dedup", &["codec", "dedup"], &forbidden);
    assert!(
        bad.is_empty(),
        "dedup reaches upward or does I/O:\n{}",
        bad.join("\n")
    );
}

#[test]
fn store_imports_only_dedup_and_metrics() {
    let bad = violations(
        "store",
        &["store", "dedup", "metrics"],
        &["clap", "proxy::"],
    );
    assert!(
        bad.is_empty(),
        "store reaches into the proxy or the flags:\n{}",
        bad.join("\n")
    );
}
