//! Integration tests against the real PostgreSQL and Redis. Every test gets its own database
//! and its own server (see helpers::spawn_app), so they run in parallel.

mod helpers;
mod smoke;
mod catalog;
mod rls;
mod provisioning;
mod lifecycle;
mod migrate;
mod explain;
