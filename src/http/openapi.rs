//! The OpenAPI 3.1 description served at /openapi.json, and browsable docs at /docs. Every
//! route is listed here; a test checks the document names the paths of API.md.

use actix_web::{get, web, HttpResponse};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_redoc::{Redoc, Servable};

use super::routes;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT from POST /auth/login, or an API key tk_...")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "operator",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("PLATFORM_ADMIN_TOKEN"))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tenantry",
        description = "Multi-tenant SaaS backend. Errors are application/problem+json (RFC 9457) with a stable `code`.",
    ),
    modifiers(&SecuritySchemes),
    paths(
        routes::health::healthz,
        routes::health::readyz,
        routes::operations::metrics,
        routes::operations::admin_actors,
        routes::operations::admin_tasks,
        routes::tenants::create_tenant,
        routes::tenants::list_tenants,
        routes::tenants::get_tenant,
        routes::tenants::suspend_tenant,
        routes::tenants::resume_tenant,
        routes::tenants::delete_tenant,
        routes::tenants::restore_tenant,
        routes::current_tenant::current_tenant,
        routes::current_tenant::export_tenant,
        routes::auth::login,
        routes::auth::create_api_key,
        routes::auth::list_api_keys,
        routes::auth::delete_api_key,
        routes::users::list_users,
        routes::users::create_user,
        routes::users::get_user,
        routes::users::update_user,
        routes::users::delete_user,
        routes::projects::list_projects,
        routes::projects::create_project,
        routes::projects::get_project,
        routes::projects::update_project,
        routes::projects::delete_project,
        routes::projects::list_members,
        routes::projects::add_member,
        routes::projects::remove_member,
        routes::tasks::list_tasks,
        routes::tasks::create_task,
        routes::tasks::get_task,
        routes::tasks::update_task,
        routes::tasks::delete_task,
        routes::audit_logs::list_audit_logs,
        routes::analytics::ingest_events,
        routes::analytics::get_summary,
        routes::analytics::get_timeseries,
        super::ws::analytics_socket,
        routes::flags::features,
        routes::flags::put_flag,
        routes::flags::flag_versions,
        routes::flags::rollback_flag,
        routes::flags::put_override,
        routes::flags::delete_override,
        routes::ofrep::evaluate_flag,
        routes::ofrep::evaluate_flags,
    ),
)]
pub struct ApiDoc;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(openapi_json)
        .service(Redoc::with_url("/docs", ApiDoc::openapi()));
}

#[get("/openapi.json")]
async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
