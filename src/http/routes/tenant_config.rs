//! Plans, settings and branding (API.md "Plans, settings, branding, feature flags"). Reads come
//! from the tenant's config snapshot; every change is followed by `AppState::invalidate`, so the
//! tenant's next request sees it on every instance.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{get, patch, put, web, HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::cache::Invalidation;
use crate::http::extract::{PlatformOperator, RequestId};
use crate::http::problem::Problem;
use crate::http::tenant::{PublicTenantRequest, TenantRequest};
use crate::state::AppState;
use crate::tenancy::Tenant;
use crate::tenant_config::plans::{self, PlanChange};
use crate::tenant_config::settings::{self, SettingsChange, SettingsView, UpdateSettings};
use crate::tenant_config::{Branding, Plan};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list_plans)
        .service(put_plan)
        .service(move_tenant)
        .service(get_settings)
        .service(patch_settings)
        .service(put_branding)
        .service(get_branding);
}

/// Plans are public and change rarely; tenant branding is public and may be cached by any
/// cache on the way, briefly, per tenant (see `Vary`).
const PUBLIC_SHORT: &str = "public, max-age=60";
/// What names the tenant of a `GET /branding`.
const BRANDING_VARY: &str = "Host, X-Tenant-ID, Authorization";

#[derive(Serialize, ToSchema)]
pub struct PlanList {
    pub items: Vec<Plan>,
    /// Always null: the catalog is one page.
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/plans", tag = "plans",
    responses((status = 200, body = PlanList, description = "Every plan, the cheapest first; `null` limits are unlimited")))]
#[get("/plans")]
pub async fn list_plans(state: web::Data<AppState>) -> Result<HttpResponse, Problem> {
    let items = plans::list(&state.pools.app).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, PUBLIC_SHORT))
        .json(PlanList {
            items,
            next_cursor: None,
        }))
}

#[utoipa::path(put, path = "/admin/plans/{plan}", tag = "plans", request_body = Plan,
    security(("operator" = [])),
    params(("plan" = String, Path, description = "The plan's name: a lowercase letter, then lowercase letters, digits or _")),
    responses((status = 200, body = Plan, description = "Replaced"), (status = 201, body = Plan, description = "Created"),
        (status = 401), (status = 422, description = "Validation failed: `errors[{field, message}]`, e.g. `limits.max_users`")))]
#[put("/admin/plans/{plan}")]
pub async fn put_plan(
    _op: PlatformOperator,
    state: web::Data<AppState>,
    request_id: RequestId,
    name: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, Problem> {
    let plan = plans::parse_plan(&name, &body)?;
    let saved = plans::save(&state.pools.admin, plan, Some(&request_id.0)).await?;
    state.actors.snapshots().forget_logged(&saved.tenants).await;
    state
        .invalidate(Invalidation::Plan(saved.plan.name.clone()))
        .await;
    let mut answer = if saved.created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(answer.json(saved.plan))
}

#[utoipa::path(put, path = "/admin/tenants/{id}/plan", tag = "plans", request_body = PlanChange,
    security(("operator" = [])),
    responses((status = 200, body = Tenant), (status = 401), (status = 404),
        (status = 422, description = "No such plan (`plan`)")))]
#[put("/admin/tenants/{id}/plan")]
pub async fn move_tenant(
    _op: PlatformOperator,
    state: web::Data<AppState>,
    request_id: RequestId,
    id: web::Path<Uuid>,
    body: web::Json<PlanChange>,
) -> Result<HttpResponse, Problem> {
    let tenant = plans::move_tenant(
        &state.pools.admin,
        *id,
        body.into_inner(),
        Some(&request_id.0),
    )
    .await?;
    state.invalidate(Invalidation::Tenant(*id)).await;
    Ok(HttpResponse::Ok().json(tenant))
}

#[utoipa::path(get, path = "/settings", tag = "settings", security(("bearer" = [])),
    responses((status = 200, body = SettingsView), (status = 401), (status = 403)))]
#[get("/settings")]
pub async fn get_settings(req: TenantRequest) -> Result<HttpResponse, Problem> {
    req.admin()?;
    Ok(HttpResponse::Ok().json(SettingsView {
        settings: req.config.settings.clone(),
        version: req.config.settings_version,
    }))
}

#[utoipa::path(patch, path = "/settings", tag = "settings", security(("bearer" = [])),
    request_body(content = Object, description = "A JSON merge of `timezone` (IANA name), `locale` (BCP 47) and `branding` ({logo_url, primary_color, accent_color}); other members are refused"),
    responses((status = 200, body = SettingsView), (status = 401), (status = 403),
        (status = 422, description = "Validation failed: `errors[{field, message}]`, e.g. `branding.primary_color`")))]
#[patch("/settings")]
pub async fn patch_settings(
    req: TenantRequest,
    body: web::Json<Value>,
) -> Result<HttpResponse, Problem> {
    req.admin()?;
    let patch = settings::parse_patch(&body).await?;
    let view = req
        .execute(UpdateSettings(SettingsChange::Patch(patch)))
        .await?;
    req.state()
        .invalidate(Invalidation::Config(req.tenant_id))
        .await;
    Ok(HttpResponse::Ok().json(view))
}

#[utoipa::path(put, path = "/settings/branding", tag = "settings", request_body = Branding,
    security(("bearer" = [])),
    responses((status = 200, body = Branding), (status = 401), (status = 403),
        (status = 422, description = "Validation failed: colours are #rrggbb; `logo_url` null or an https URL to a public host")))]
#[put("/settings/branding")]
pub async fn put_branding(
    req: TenantRequest,
    body: web::Json<Value>,
) -> Result<HttpResponse, Problem> {
    req.admin()?;
    let branding = settings::parse_branding(&body).await?;
    let view = req
        .execute(UpdateSettings(SettingsChange::Branding(branding)))
        .await?;
    req.state()
        .invalidate(Invalidation::Config(req.tenant_id))
        .await;
    Ok(HttpResponse::Ok().json(view.settings.branding))
}

#[utoipa::path(get, path = "/branding", tag = "settings",
    params(("X-Tenant-ID" = Option<String>, Header, description = "The tenant (id or slug), unless named by the subdomain"),
        ("If-None-Match" = Option<String>, Header, description = "An ETag of an earlier answer")),
    responses((status = 200, body = Branding, description = "With `ETag` and `Cache-Control`"),
        (status = 304, description = "Unchanged since the ETag given"),
        (status = 400, description = "No tenant named"), (status = 404, description = "No such tenant")))]
#[get("/branding")]
pub async fn get_branding(
    req: PublicTenantRequest,
    http: HttpRequest,
) -> Result<HttpResponse, Problem> {
    let config = &req.0.config;
    let etag = config.branding_etag();
    let fresh = http
        .headers()
        .get(header::IF_NONE_MATCH)
        .is_some_and(|given| etag_matches(given, &etag));
    let mut answer = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    answer
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, PUBLIC_SHORT))
        .insert_header((header::VARY, BRANDING_VARY));
    Ok(if fresh {
        answer.finish()
    } else {
        answer.json(&config.settings.branding)
    })
}

/// `If-None-Match` against our strong `etag`, with the weak comparison RFC 9110 prescribes
/// for it: `*`, or any tag of the list equal to ours once a `W/` prefix is set aside.
fn etag_matches(given: &HeaderValue, etag: &str) -> bool {
    let Ok(given) = given.to_str() else {
        return false;
    };
    given
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match() {
        let etag = "\"abc\"";
        for (given, hit) in [
            ("\"abc\"", true),
            ("W/\"abc\"", true),
            ("\"x\", \"abc\"", true),
            ("*", true),
            ("\"abcd\"", false),
            ("abc", false),
        ] {
            assert_eq!(
                etag_matches(&HeaderValue::from_static(given), etag),
                hit,
                "{given}"
            );
        }
    }
}
