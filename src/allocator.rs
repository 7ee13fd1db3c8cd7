//! The process's memory allocator: mimalloc, for the server, the CLI and the tests alike.
//!
//! Two reasons, both measured here:
//! - Speed: a GET allocates and frees a few dozen small blocks (request, headers, futures,
//!   rows, JSON) on one thread; glibc's malloc and free were a fifth of the server's CPU.
//! - Memory: every argon2 password hash (login, provisioning) allocates 19 MiB on a blocking
//!   thread. glibc raises its mmap threshold after the first such block is freed and keeps the
//!   next ones in per-thread arenas, never given back (the server grew to ~800 MB after
//!   provisioning a few dozen tenants). mimalloc returns freed large blocks to the OS shortly
//!   after they are freed: 45 MB after provisioning 1,000 tenants through the API.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
