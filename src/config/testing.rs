//! Loading helpers the config tests share.

use std::collections::HashMap;

use super::{Loaded, Mode, load_from, load_with};

pub(super) fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Loads `toml` as the config file with `pairs` as the environment.
pub(super) fn load_toml(toml: &str, pairs: &[(&str, &str)], mode: Mode) -> Result<Loaded, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("postrelay.toml");
    std::fs::write(&path, toml).unwrap();
    load_with(Some(&path), &env(pairs), mode).map_err(|e| e.to_string())
}

/// Loads from the environment alone; the error as text.
pub(super) fn load_env(pairs: &[(&str, &str)]) -> Result<Loaded, String> {
    load_from(None, &env(pairs)).map_err(|e| e.to_string())
}

pub(super) fn err(pairs: &[(&str, &str)]) -> String {
    load_env(pairs).expect_err("should be refused")
}
