//! The one-way module map of `src/lib.rs`, checked on the source: no module
//! of the mail path imports one that depends on it. Test code (files named
//! `*tests.rs` and inline `#[cfg(test)]` modules) may reach across.

use std::fs;
use std::path::{Path, PathBuf};

/// Each module and the crate modules its (non-test) code must not import.
const FORBIDDEN: &[(&str, &[&str])] = &[
    (
        "message",
        &[
            "mapping",
            "smtp",
            "spool",
            "delivery",
            "backends",
            "config",
            "observability",
            "cli",
            "control",
            "app",
        ],
    ),
    (
        "mapping",
        &[
            "smtp",
            "spool",
            "delivery",
            "backends",
            "observability",
            "cli",
            "control",
            "app",
        ],
    ),
    ("smtp", &["delivery", "backends", "cli", "control", "app"]),
    (
        "spool",
        &[
            "smtp", "mapping", "delivery", "backends", "cli", "control", "app",
        ],
    ),
    (
        "backends",
        &["smtp", "spool", "delivery", "cli", "control", "app"],
    ),
    ("delivery", &["smtp", "cli", "control", "app"]),
    (
        "maildrop",
        &[
            "smtp", "mapping", "delivery", "backends", "cli", "control", "app",
        ],
    ),
    (
        "config",
        &[
            "smtp", "spool", "mapping", "delivery", "backends", "cli", "control", "app",
        ],
    ),
];

fn sources(module: &str) -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let file = src.join(format!("{module}.rs"));
    if file.exists() {
        out.push(file);
    }
    let mut dirs = vec![src.join(module)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.retain(|p| {
        !p.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with("tests.rs")
    });
    out
}

/// The file's code before its inline test module.
fn production_code(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap();
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

#[test]
fn no_module_imports_one_that_depends_on_it() {
    let mut violations = Vec::new();
    for (module, forbidden) in FORBIDDEN {
        let files = sources(module);
        assert!(!files.is_empty(), "no sources found for {module}");
        for path in files {
            let code = production_code(&path);
            for (n, line) in code.lines().enumerate() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                for target in *forbidden {
                    if line.contains(&format!("crate::{target}::"))
                        || line.contains(&format!("crate::{target};"))
                        || line.contains(&format!("crate::{target}}}"))
                        || line.contains(&format!("crate::{{{target}"))
                    {
                        violations.push(format!(
                            "{}:{}: {module} imports {target}: {}",
                            path.display(),
                            n + 1,
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}
