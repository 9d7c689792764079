//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) and the
//! crash reproducers (`fuzz/regressions/<target>/`) through the same harness
//! functions the cargo-fuzz targets run, on stable, in `cargo test`: an input
//! that once broke an invariant keeps proving it fixed, and the corpus keeps
//! every reached path exercised as the code changes.

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use postrelay::fuzz_harness::{self, Harness};

/// The files of `fuzz/<kind>/<target>/`, sorted; none when the folder is absent.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs every corpus and regression input of `target`; fails naming each
/// input whose harness panicked.
fn replay(target: &str, harness: Harness) {
    let corpus = inputs("corpus", target);
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/{target} is empty or missing"
    );
    let mut failed = Vec::new();
    let files: Vec<PathBuf> = corpus
        .into_iter()
        .chain(inputs("regressions", target))
        .collect();
    for path in &files {
        let data = fs::read(path).unwrap();
        if catch_unwind(AssertUnwindSafe(|| harness(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} {target} inputs broke an invariant:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}

/// The harness `TARGETS` names `target`.
fn harness(target: &str) -> Harness {
    fuzz_harness::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, f)| *f)
        .unwrap_or_else(|| panic!("no harness named {target}"))
}

#[test]
fn every_fuzz_target_has_a_corpus_and_a_replay_test() {
    let replayed = [
        "smtp_session",
        "mime_postmark",
        "postal_rewrite",
        "config_load",
        "maildrop_reader",
        "spool_entry",
    ];
    let named: Vec<&str> = fuzz_harness::TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(named, replayed);
    let targets = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    for name in named {
        assert!(
            targets.join(format!("{name}.rs")).is_file(),
            "no fuzz target for {name}"
        );
    }
}

#[test]
fn smtp_session_corpus_replays_cleanly() {
    replay("smtp_session", harness("smtp_session"));
}

#[test]
fn mime_postmark_corpus_replays_cleanly() {
    replay("mime_postmark", harness("mime_postmark"));
}

#[test]
fn postal_rewrite_corpus_replays_cleanly() {
    replay("postal_rewrite", harness("postal_rewrite"));
}

#[test]
fn config_load_corpus_replays_cleanly() {
    replay("config_load", harness("config_load"));
}

#[test]
fn maildrop_reader_corpus_replays_cleanly() {
    replay("maildrop_reader", harness("maildrop_reader"));
}

#[test]
fn spool_entry_corpus_replays_cleanly() {
    replay("spool_entry", harness("spool_entry"));
}
