//! HTTP: middleware, extractors and one routes file per area.

pub mod extract;
pub mod middleware;
pub mod routes;
pub mod tenant;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    routes::health::configure(cfg);
    routes::tenants::configure(cfg);
    routes::current_tenant::configure(cfg);
    routes::analytics::configure(cfg);
}
