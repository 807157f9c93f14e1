//! What an idle sidecar keeps resident of the heap. glibc's allocator gives
//! each thread that allocates an arena of its own and keeps freed memory in
//! them for reuse; a sidecar that builds a 10,000-file revision once and
//! then idles would hold that peak for ever. Elsewhere (musl, other
//! allocators) both calls do nothing.

/// At most two arenas, for the runtime's threads to share: a sync
/// allocates in bursts from one blocking thread at a time, so more arenas
/// only keep more freed memory apart.
pub fn few_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt sets one allocator tunable; called before the runtime
    // starts its threads, it cannot race an allocation's choice of arena.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns the free pages of every arena to the system: called after a
/// sync that built a revision, whose tree, bundle and findings are freed by
/// then.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory, under the allocator's
    // own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
