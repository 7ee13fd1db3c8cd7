//! tenantry: a multi-tenant SaaS backend. See DESIGN.md for the architecture; `startup` builds
//! the server, `cli` is the operator's command line.

pub mod actors;
pub mod analytics;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod http;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod tenancy;
