//! Integration tests against the real PostgreSQL and Redis. Every test gets its own database
//! and its own server (see helpers::spawn_app), so they run in parallel.

mod analytics;
mod helpers;
mod smoke;
