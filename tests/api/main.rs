//! Integration tests against the real PostgreSQL and Redis. Every test gets its own database
//! and its own server (see helpers::spawn_app), so they run in parallel.

mod actors;
mod admin_bypass;
mod analytics;
mod analytics_durability;
mod analytics_ops;
mod audit;
mod auth;
mod catalog;
mod cli;
mod concurrency;
mod corrupt_rows;
mod domain;
mod explain;
mod fixtures;
mod helpers;
mod isolation;
mod jobs;
mod lifecycle;
mod metering;
mod migrate;
mod openapi;
mod provisioning;
mod ratelimit;
mod resolution;
mod rls;
mod shutdown;
mod smoke;
mod tenant_tx;
mod ws;
