//! HTTP: middleware, extractors and one routes file per area.

pub mod extract;
pub mod middleware;
pub mod openapi;
mod openapi_common;
pub mod problem;
pub mod ratelimit;
pub mod routes;
pub mod tenant;
pub mod tls;
pub mod ws;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    routes::health::configure(cfg);
    // The router tries routes in this order, each dynamic one with a regex: the busiest
    // tenant routes come first (the routes of the other areas share no path with them).
    // OFREP first of all: its scope costs the others one prefix comparison, while walking the
    // regexes before it was 40% of an evaluation's instructions (docs/benchmarks.md, issue 12).
    routes::ofrep::configure(cfg);
    routes::tasks::configure(cfg);
    routes::auth::configure(cfg);
    routes::tenants::configure(cfg);
    routes::current_tenant::configure(cfg);
    routes::operations::configure(cfg);
    openapi::configure(cfg);
    routes::users::configure(cfg);
    routes::projects::configure(cfg);
    routes::audit_logs::configure(cfg);
    routes::analytics::configure(cfg);
    routes::tenant_config::configure(cfg);
    routes::flags::configure(cfg);
    routes::webhooks::configure(cfg);
    routes::usage::configure(cfg);
    routes::billing::configure(cfg);
    routes::privacy::configure(cfg);
    ws::configure(cfg);
    routes::dashboard::configure(cfg);
}
