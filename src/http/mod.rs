//! HTTP: middleware, extractors and one routes file per area.

pub mod extract;
pub mod middleware;
pub mod routes;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    routes::health::configure(cfg);
    routes::tenants::configure(cfg);
}
