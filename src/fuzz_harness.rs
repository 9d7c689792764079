//! Fuzz harnesses: one pure `pub fn <target>(data: &[u8])` per fuzz target,
//! shared by the cargo-fuzz targets in `fuzz/` and by the corpus replay in
//! `tests/fuzz_corpus.rs`, so what is fuzzed and what is replayed never
//! drift apart.
//!
//! Invariant: a harness panics only when the code under test breaks one of
//! the properties it states (a malformed reply, invalid JSON, a limit
//! exceeded, a record that does not survive a rewrite) or panics itself;
//! any byte string is a valid input. Harnesses touch no network and no
//! clock; `config_load` and `spool_entry` write files, only in a private
//! temp directory of the process.
//! Not part of the product's API.

mod config;
mod mapping;
mod records;
mod smtp;

pub use config::config_load;
pub use mapping::{mime_postmark, postal_rewrite};
pub use records::{maildrop_reader, spool_entry};
pub use smtp::smtp_session;

/// A harness: panics when the input breaks an invariant.
pub type Harness = fn(&[u8]);

/// Every target, by name: what the replay test walks.
pub const TARGETS: &[(&str, Harness)] = &[
    ("smtp_session", smtp_session),
    ("mime_postmark", mime_postmark),
    ("postal_rewrite", postal_rewrite),
    ("config_load", config_load),
    ("maildrop_reader", maildrop_reader),
    ("spool_entry", spool_entry),
];

/// The first byte of `data` as option bits and the rest; `(0, [])` when empty.
fn split_options(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((first, rest)) => (*first, rest),
        None => (0, data),
    }
}

/// A private directory (mode 0700) for this process's scratch files.
fn scratch_dir() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("postrelay-fuzz-{}", std::process::id()));
        crate::spool::fsio::create_dir(&dir).expect("create the scratch directory");
        dir
    })
}
