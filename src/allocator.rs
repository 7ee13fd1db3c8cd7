//! The process's memory allocator: mimalloc, for the server, the CLI and the tests alike.
//!
//! Two reasons (figures in docs/benchmarks.md):
//! - Speed: a GET allocates and frees a few dozen small blocks (request, headers, futures,
//!   rows, JSON) on one thread, and glibc's malloc and free weigh on that path.
//! - Memory: every argon2 password hash (login, provisioning) allocates 19 MiB on a blocking
//!   thread. glibc raises its mmap threshold after the first such block is freed and keeps the
//!   next ones in per-thread arenas, never given back, so a process that provisions or logs in
//!   a lot grows without bound. mimalloc returns freed large blocks to the OS shortly after
//!   they are freed.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
