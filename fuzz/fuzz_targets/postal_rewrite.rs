//! Fuzz target `postal_rewrite`: the harness `postrelay::fuzz_harness::postal_rewrite`, which
//! the corpus replay test (`tests/fuzz_corpus.rs`) runs too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| postrelay::fuzz_harness::postal_rewrite(data));
