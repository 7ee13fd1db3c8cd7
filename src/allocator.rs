//! The process's memory allocator: mimalloc, for the server, the CLI and the tests alike.
//!
//! Two reasons, both measured here:
//! - Speed: a GET allocates and frees a few dozen small blocks (request, headers, futures,
//!   rows, JSON) on one thread; glibc's malloc and free were a fifth of the server's CPU.
//! - Memory: every argon2 password hash (login, provisioning) allocates 19 MiB on a blocking
//!   thread. glibc raised its mmap threshold after the first such block was freed and kept the
//!   next ones in per-thread arenas, never given back: the server grew to ~800 MB after
//!   provisioning a few dozen tenants (it was held down with `mallopt` before). mimalloc returns
//!   freed large blocks to the OS shortly after they are freed.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
