//! Fuzz target `spool_entry`: the harness `postrelay::fuzz_harness::spool_entry`, which
//! the corpus replay test (`tests/fuzz_corpus.rs`) runs too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| postrelay::fuzz_harness::spool_entry(data));
