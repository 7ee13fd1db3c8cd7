//! tenantry: a multi-tenant SaaS backend. See DESIGN.md for the architecture; `startup` builds
//! the server, `cli` is the operator's command line.

pub mod actors;
pub mod allocator;
pub mod analytics;
pub mod audit;
pub mod auth;
pub mod billing;
pub mod cache;
pub mod cli;
pub mod config;
pub mod context;
pub mod dashboard;
pub mod db;
pub mod domain;
pub mod error;
pub mod flags;
pub mod http;
pub mod input;
pub mod jobs;
pub mod metrics;
pub mod net;
pub mod page;
pub mod privacy;
pub mod ratelimit;
pub mod secrets;
pub mod startup;
pub mod state;
pub mod supervise;
pub mod telemetry;
pub mod tenancy;
pub mod tenant_config;
pub mod usage;
pub mod webhooks;
