//! Memory settings of the C allocator, applied once before any thread starts.
//!
//! Password hashing (argon2) allocates 19 MiB per hash on blocking threads. glibc raises its
//! mmap threshold after such a block is freed, so the next ones come from per-thread arenas and
//! are never given back: measured here, the server grew to ~800 MB after provisioning a few dozen
//! tenants. A fixed threshold keeps large blocks mmapped (returned to the OS on free), and a
//! cap on arenas bounds what small allocations can strand across threads.

/// Call first thing in `main`, before the runtime starts threads.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}
