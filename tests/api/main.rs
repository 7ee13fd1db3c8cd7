//! Integration tests against the real PostgreSQL and Redis. Every test gets its own database
//! and its own server (see helpers::spawn_app), so they run in parallel.

// Test code: a panic on the unexpected is how a test fails, and its casts are of small counts
// and fixtures whose wrong value fails an assertion.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

mod actors;
mod admin_bypass;
mod analytics;
mod analytics_durability;
mod analytics_ops;
mod analytics_user_ids;
mod audit;
mod auth;
mod billing;
mod caches;
mod catalog;
mod cli;
mod cluster;
mod concurrency;
mod config_snapshot;
mod corrupt_rows;
mod coverage_cli;
mod dashboard;
mod domain;
mod explain;
mod fake_stripe;
mod fixtures;
mod flags;
mod helpers;
mod hostile;
mod isolation;
mod jobs;
mod lifecycle;
mod metering;
mod migrate;
mod ofrep;
mod openapi;
mod pagination;
mod plans;
mod privacy;
mod provisioning;
mod ratelimit;
mod resolution;
mod rls;
mod schemathesis;
mod secret_scan;
mod secrets;
mod settings;
mod shutdown;
mod single_tenant;
mod smoke;
mod ssrf;
mod tenant_tx;
mod tls;
mod two_instances;
mod usage;
mod webhooks;
mod webhooks_durability;
mod ws;
