//! The OpenAPI 3.1 description served at /openapi.json (browsable at /docs, see
//! `routes::dashboard`). Every
//! route is listed here; a test checks the document names the paths of API.md.

use actix_web::{get, web, HttpResponse};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::openapi_common::CommonResponses;
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
    modifiers(&SecuritySchemes, &CommonResponses),
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
        routes::tenant_config::list_plans,
        routes::tenant_config::put_plan,
        routes::tenant_config::move_tenant,
        routes::tenant_config::get_settings,
        routes::tenant_config::patch_settings,
        routes::tenant_config::put_branding,
        routes::tenant_config::get_branding,
        super::ws::analytics_socket,
        routes::flags::features,
        routes::flags::put_flag,
        routes::flags::flag_versions,
        routes::flags::rollback_flag,
        routes::flags::put_override,
        routes::flags::delete_override,
        routes::ofrep::evaluate_flag,
        routes::ofrep::evaluate_flags,
        routes::dashboard::app,
        routes::dashboard::docs,
        routes::webhooks::list_webhooks,
        routes::webhooks::create_webhook,
        routes::webhooks::get_webhook,
        routes::webhooks::update_webhook,
        routes::webhooks::delete_webhook,
        routes::webhooks::test_webhook,
        routes::webhooks::rotate_secret,
        routes::webhooks::list_deliveries,
        routes::webhooks::retry_delivery,
        routes::webhooks::replay_dead,
        routes::usage::post_events,
        routes::usage::get_usage,
        routes::billing::get_billing,
        routes::billing::list_invoices,
        routes::billing::stripe_webhook,
        routes::privacy::create_erasure,
        routes::privacy::get_erasure,
    ),
)]
pub struct ApiDoc;

pub fn configure(cfg: &mut web::ServiceConfig) {
    // /docs is served with the dashboard's assets (routes::dashboard).
    cfg.service(openapi_json);
}

#[get("/openapi.json")]
async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use utoipa::OpenApi;

    use super::ApiDoc;

    fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
        match value {
            Value::Object(members) => {
                for (key, value) in members {
                    match (key.as_str(), value) {
                        ("$ref", Value::String(target)) => found.push(target),
                        _ => refs(value, found),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
            _ => {}
        }
    }

    /// The input types of `crate::input` are schemas of their own: each reference must resolve.
    #[test]
    fn every_schema_reference_resolves() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(!found.is_empty());
        for target in found {
            let name = target
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected reference {target}"));
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "{target} does not resolve"
            );
        }
        let title = &doc["components"]["schemas"]["NewTask"]["properties"]["title"];
        let title = match title.get("$ref").and_then(Value::as_str) {
            Some(target) => &doc["components"]["schemas"][target.rsplit('/').next().unwrap()],
            None => title,
        };
        assert_eq!(title["type"], "string", "{title}");
    }
}
