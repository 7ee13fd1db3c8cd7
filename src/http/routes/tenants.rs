//! Operator endpoints: provisioning and the tenant lifecycle.

use actix_web::{delete, get, post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::cache::Invalidation;
use crate::http::extract::{Json, PlatformOperator, Query, RequestId};
use crate::http::problem::Problem;
use crate::http::ratelimit::PerClientAddress;
use crate::page::Page;
use crate::state::AppState;
use crate::tenancy::{lifecycle, provision, NewTenant, Tenant};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(create_tenant)
        .service(list_tenants)
        .service(get_tenant)
        .service(suspend_tenant)
        .service(resume_tenant)
        .service(delete_tenant)
        .service(restore_tenant);
}

#[derive(Serialize, ToSchema)]
pub struct AdminUser {
    pub id: Uuid,
    pub email: String,
}

#[derive(Serialize, ToSchema)]
pub struct Credentials {
    pub token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TenantCreated {
    pub tenant: Tenant,
    pub admin: AdminUser,
    pub credentials: Credentials,
}

#[derive(Deserialize, IntoParams)]
pub struct ListQuery {
    #[serde(default)]
    pub include_deleted: bool,
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[utoipa::path(post, path = "/tenants", tag = "tenants", request_body = NewTenant,
    security(("operator" = [])),
    responses((status = 201, body = TenantCreated), (status = 401), (status = 409), (status = 422),
        (status = 429, description = "too many requests from this client address: Retry-After")))]
#[post("/tenants", wrap = "PerClientAddress::new(\"tenants\")")]
pub async fn create_tenant(
    _op: PlatformOperator,
    state: web::Data<AppState>,
    request_id: RequestId,
    body: Json<NewTenant>,
) -> Result<HttpResponse, Problem> {
    let created = provision(
        &state.provision_context(),
        body.into_inner(),
        Some(&request_id.0),
    )
    .await?;
    Ok(HttpResponse::Created().json(TenantCreated {
        tenant: created.tenant,
        admin: AdminUser {
            id: created.admin_id,
            email: created.admin_email,
        },
        credentials: Credentials {
            token: created.token,
            password: created.generated_password,
        },
    }))
}

#[utoipa::path(get, path = "/admin/tenants", tag = "tenants", params(ListQuery),
    security(("operator" = [])), responses((status = 200, body = Page<Tenant>), (status = 401), (status = 422)))]
#[get("/admin/tenants")]
pub async fn list_tenants(
    _op: PlatformOperator,
    state: web::Data<AppState>,
    request_id: RequestId,
    query: Query<ListQuery>,
) -> Result<HttpResponse, Problem> {
    let page = lifecycle::TENANTS.parse(&state.cursors, query.limit, query.cursor.as_deref())?;
    let tenants = lifecycle::list(
        &state.pools.admin,
        query.include_deleted,
        &page,
        Some(&request_id.0),
    )
    .await?;
    Ok(HttpResponse::Ok().json(tenants))
}

#[utoipa::path(get, path = "/admin/tenants/{id}", tag = "tenants", security(("operator" = [])),
    responses((status = 200, body = Tenant), (status = 404)))]
#[get("/admin/tenants/{id}")]
pub async fn get_tenant(
    _op: PlatformOperator,
    state: web::Data<AppState>,
    request_id: RequestId,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    let tenant = lifecycle::get(&state.pools.admin, *id, Some(&request_id.0)).await?;
    Ok(HttpResponse::Ok().json(tenant))
}

#[utoipa::path(post, path = "/admin/tenants/{id}/suspend", tag = "tenants", security(("operator" = [])),
    responses((status = 200, body = Tenant), (status = 404)))]
#[post("/admin/tenants/{id}/suspend")]
pub async fn suspend_tenant(
    _op: PlatformOperator,
    state: web::Data<AppState>,
    request_id: RequestId,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    let tenant = lifecycle::set_status(&state.pools.admin, *id, true, Some(&request_id.0)).await?;
    state.invalidate(Invalidation::Tenant(*id)).await;
    Ok(HttpResponse::Ok().json(tenant))
}

#[utoipa::path(post, path = "/admin/tenants/{id}/resume", tag = "tenants", security(("operator" = [])),
    responses((status = 200, body = Tenant), (status = 404)))]
#[post("/admin/tenants/{id}/resume")]
pub async fn resume_tenant(
    _op: PlatformOperator,
    state: web::Data<AppState>,
    request_id: RequestId,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    let tenant = lifecycle::set_status(&state.pools.admin, *id, false, Some(&request_id.0)).await?;
    state.invalidate(Invalidation::Tenant(*id)).await;
    Ok(HttpResponse::Ok().json(tenant))
}

#[utoipa::path(delete, path = "/admin/tenants/{id}", tag = "tenants", security(("operator" = [])),
    responses((status = 204), (status = 404)))]
#[delete("/admin/tenants/{id}")]
pub async fn delete_tenant(
    _op: PlatformOperator,
    state: web::Data<AppState>,
    request_id: RequestId,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    lifecycle::soft_delete(&state.pools.admin, *id, Some(&request_id.0)).await?;
    state.invalidate(Invalidation::Tenant(*id)).await;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(post, path = "/admin/tenants/{id}/restore", tag = "tenants", security(("operator" = [])),
    responses((status = 200, body = Tenant), (status = 404), (status = 409), (status = 410)))]
#[post("/admin/tenants/{id}/restore")]
pub async fn restore_tenant(
    _op: PlatformOperator,
    state: web::Data<AppState>,
    request_id: RequestId,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    let tenant = lifecycle::restore(
        &state.pools.admin,
        *id,
        state.config.retention,
        Some(&request_id.0),
    )
    .await?;
    state.invalidate(Invalidation::Tenant(*id)).await;
    Ok(HttpResponse::Ok().json(tenant))
}
