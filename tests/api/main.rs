//! Integration tests against the real PostgreSQL and Redis. Every test gets its own database
//! and its own server (see helpers::spawn_app), so they run in parallel.

mod actors;
mod auth;
mod catalog;
mod cli;
mod explain;
mod helpers;
mod lifecycle;
mod migrate;
mod openapi;
mod provisioning;
mod resolution;
mod rls;
mod smoke;
