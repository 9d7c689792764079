//! `config_load`: TOML text → the configuration, as `postrelay` loads a
//! file (defaults, then the file, then validation), without secrets or
//! environment.
//!
//! Properties: the text is refused with a message or loaded; a loaded
//! configuration prints (`check-config`'s TOML) as text that loads again to
//! the same configuration.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use crate::config::{self, Mode};

pub fn config_load(data: &[u8]) {
    let path = scratch_file();
    std::fs::write(path, data).expect("write the scratch config");
    let config = match config::load_with(Some(path), &HashMap::new(), Mode::Tools) {
        Ok(loaded) => loaded.config,
        Err(e) => {
            assert!(!e.to_string().is_empty(), "refused without a message");
            return;
        }
    };
    let printed = config.to_toml();
    std::fs::write(path, &printed).expect("write the scratch config");
    match config::load_with(Some(path), &HashMap::new(), Mode::Tools) {
        Ok(again) => assert_eq!(
            again.config.to_toml(),
            printed,
            "printed config loads differently"
        ),
        Err(e) => panic!("printed config does not load: {e}\n{printed}"),
    }
}

/// The scratch config file, rewritten each run.
fn scratch_file() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| super::scratch_dir().join("postrelay.toml"))
}
