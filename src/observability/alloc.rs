//! The allocator's share of peak memory.
//!
//! glibc gives every thread that allocates concurrently an arena of its own
//! (up to 8 per core) and keeps freed memory in each. A relay checks and
//! maps multi-megabyte messages on tokio's blocking threads, so a burst of
//! large messages left several hundred MB resident in idle arenas although
//! the checks themselves stayed within `smtp.check_memory`
//! (`bench/memory.py`: 766 MB peak for twenty 10 MB messages with glibc's
//! default, 350 MB with two arenas). Two arenas keep both cores allocating
//! in parallel. An operator's own `MALLOC_ARENA_MAX` wins.

/// Caps glibc's malloc arenas at two, unless `MALLOC_ARENA_MAX` is set.
/// Call before the runtime starts its threads.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes allocator tuning; no threads exist yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
