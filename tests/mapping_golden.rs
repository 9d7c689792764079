//! Golden tests: every `tests/fixtures/mapping/NN-name.eml`, with its
//! envelope from `NN-name.envelope.json`, is mapped for Postmark (always) and
//! for Postal (when a `NN-name.postal.*` file exists) and compared byte for
//! byte with `NN-name.<backend>.json` (the calls and warnings) or
//! `NN-name.<backend>.error` (the SMTP reply for a refused message).
//!
//! `UPDATE_GOLDEN=1 cargo test --test mapping_golden` rewrites the expected
//! files; review the diff before committing. To give a fixture a Postal
//! golden, create an empty `NN-name.postal.json` and run the update.

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use postrelay::mapping::{self, Mapped, MappingError, MappingOptions};
use postrelay::message::Envelope;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mapping");

type MapFn = fn(&Envelope, &[u8], &MappingOptions) -> Result<Mapped, MappingError>;

#[test]
fn every_fixture_maps_exactly_as_its_golden_files_say() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut failures = Vec::new();
    let fixtures = fixtures();
    assert!(fixtures.len() >= 77, "fixtures missing from {DIR}");
    for stem in &fixtures {
        let raw = fs::read(stem.with_extension("eml")).unwrap();
        let envelope_text = fs::read_to_string(stem.with_extension("envelope.json"))
            .unwrap_or_else(|e| panic!("{}: envelope sidecar: {e}", stem.display()));
        let envelope: Envelope = serde_json::from_str(&envelope_text).unwrap();
        let backends: [(&str, MapFn, usize, bool); 2] = [
            (
                "postmark",
                mapping::postmark::map,
                mapping::POSTMARK_MAX_MESSAGE_SIZE,
                true,
            ),
            (
                "postal",
                mapping::postal::map,
                mapping::POSTAL_MAX_MESSAGE_SIZE,
                has_golden(stem, "postal"),
            ),
        ];
        for (backend, map, max_message_size, wanted) in backends {
            if !wanted {
                continue;
            }
            let opts = MappingOptions {
                default_stream: "outbound".into(),
                ignore_unsupported: false,
                max_message_size,
            };
            let (ext, actual) = render(map(&envelope, &raw, &opts));
            let path = stem.with_extension(format!("{backend}.{ext}"));
            if update {
                write_golden(stem, backend, &path, &actual);
            } else if let Some(problem) = compare(&path, &actual) {
                failures.push(problem);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "\n{}\n(run with UPDATE_GOLDEN=1 to accept)",
        failures.join("\n")
    );
}

#[test]
fn golden_comparison_reports_a_changed_line() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join("golden-self-check.json");
    fs::write(&path, "{\n  \"Subject\": \"old\"\n}\n").unwrap();
    let problem =
        compare(&path, "{\n  \"Subject\": \"new\"\n}\n").expect("a change must be reported");
    assert!(
        problem.contains("-   \"Subject\": \"old\"")
            && problem.contains("+   \"Subject\": \"new\""),
        "{problem}"
    );
    assert!(compare(&path, "{\n  \"Subject\": \"old\"\n}\n").is_none());
    assert!(
        compare(&dir.join("absent.json"), "x").is_some(),
        "a missing golden file is a failure"
    );
}

/// Fixture paths without extension (`.../01-outlook-inline-image`), sorted.
fn fixtures() -> Vec<PathBuf> {
    let mut stems: Vec<PathBuf> = fs::read_dir(DIR)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .map(|p| p.with_extension(""))
        .collect();
    stems.sort();
    stems
}

fn has_golden(stem: &Path, backend: &str) -> bool {
    ["json", "error"]
        .iter()
        .any(|ext| stem.with_extension(format!("{backend}.{ext}")).exists())
}

/// (file extension, file content) for a mapping result.
fn render(result: Result<Mapped, MappingError>) -> (&'static str, String) {
    match result {
        Ok(mapped) => {
            let calls: Vec<_> = mapped
                .calls
                .iter()
                .map(|c| serde_json::json!({ "recipients": c.recipients, "body": c.body() }))
                .collect();
            let doc = serde_json::json!({ "calls": calls, "warnings": mapped.warnings });
            ("json", serde_json::to_string_pretty(&doc).unwrap() + "\n")
        }
        Err(err) => {
            let (code, enhanced, text) = err.smtp_reply();
            ("error", format!("{code} {enhanced} {text}\n"))
        }
    }
}

fn write_golden(stem: &Path, backend: &str, path: &Path, actual: &str) {
    for ext in ["json", "error"] {
        let other = stem.with_extension(format!("{backend}.{ext}"));
        if other != path && other.exists() {
            fs::remove_file(other).unwrap();
        }
    }
    fs::write(path, actual).unwrap();
}

/// `None` when `path` holds exactly `actual`, else a readable report.
fn compare(path: &Path, actual: &str) -> Option<String> {
    let name = path.file_name().unwrap().to_string_lossy();
    let Ok(expected) = fs::read_to_string(path) else {
        return Some(format!(
            "=== {name}: golden file missing; the mapping produced:\n{actual}"
        ));
    };
    if expected == actual {
        return None;
    }
    let mut report = format!(
        "=== {name} differs (- expected, + actual):\n{}",
        diff(&expected, actual)
    );
    if let (Some(old), Some(new)) = (decoded_data(&expected), decoded_data(actual)) {
        report += &format!("--- decoded Postal `data`:\n{}", diff(&old, &new));
    }
    Some(report)
}

/// The base64 `data` fields of a Postal golden, decoded, for readable diffs.
fn decoded_data(doc: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(doc).ok()?;
    let mut out = String::new();
    for call in value["calls"].as_array()? {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(call["body"]["data"].as_str()?)
            .ok()?;
        out += &String::from_utf8_lossy(&bytes).replace("\r\n", "⏎\n");
    }
    Some(out)
}

/// A line diff (longest common subsequence) showing changes with two lines
/// of context.
fn diff(expected: &str, actual: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', a[i]));
            (i, j) = (i + 1, j + 1);
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    let near_change = |k: usize| {
        ops[k.saturating_sub(2)..(k + 3).min(ops.len())]
            .iter()
            .any(|(op, _)| *op != ' ')
    };
    let mut out = String::new();
    for (k, (op, line)) in ops.iter().enumerate() {
        if near_change(k) {
            out += &format!("{op} {line}\n");
        }
    }
    out
}
