//! Feature flags: `GET /features` for tenant users; the operator's definitions, versions,
//! rollback and per-tenant overrides. Every change is published as a cache invalidation.

use actix_web::{delete, get, post, put, web, HttpResponse};
use serde_json::Value;
use uuid::Uuid;

use crate::cache::Invalidation;
use crate::flags::model::{
    DefinitionBody, Features, FlagVersionPage, Override, OverrideBody, RollbackBody, VersionQuery,
};
use crate::flags::{admin, ops, Definition};
use crate::http::extract::{PlatformOperator, RequestId};
use crate::http::problem::Problem;
use crate::http::tenant::TenantRequest;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(features)
        .service(put_flag)
        .service(flag_versions)
        .service(rollback_flag)
        .service(put_override)
        .service(delete_override);
}

#[utoipa::path(get, path = "/features", tag = "flags", security(("bearer" = [])),
    responses((status = 200, body = Features,
        description = "Every flag's value for the current tenant and user (rollouts by user)"),
        (status = 401)))]
#[get("/features")]
pub async fn features(req: TenantRequest) -> Result<HttpResponse, Problem> {
    let definitions = req.state().flag_definitions().await?;
    let inputs = ops::for_user(&definitions, &req.caller)?;
    Ok(HttpResponse::Ok().json(ops::features(inputs, &req)))
}

fn saved(created: bool) -> actix_web::HttpResponseBuilder {
    if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    }
}

#[utoipa::path(put, path = "/admin/flags/{key}", tag = "flags", request_body = DefinitionBody,
    params(("key" = String, Path, description = "1 to 128 of letters, digits, '.', '_', '-'")),
    security(("operator" = [])),
    responses((status = 201, body = Definition, description = "Created (version 1)"),
        (status = 200, body = Definition, description = "The next version, or unchanged"),
        (status = 401), (status = 409, description = "Overrides of another type exist"),
        (status = 422)))]
#[put("/admin/flags/{key}")]
pub async fn put_flag(
    _op: PlatformOperator,
    state: web::Data<AppState>,
    request_id: RequestId,
    key: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, Problem> {
    let saved_flag =
        admin::put_definition(&state.pools.admin, &key, &body, Some(&request_id.0)).await?;
    if saved_flag.changed {
        state.invalidate(Invalidation::Flags { tenant: None }).await;
    }
    Ok(saved(saved_flag.created).json(saved_flag.value))
}

#[utoipa::path(get, path = "/admin/flags/{key}/versions", tag = "flags", params(VersionQuery),
    security(("operator" = [])),
    responses((status = 200, body = FlagVersionPage), (status = 401), (status = 404), (status = 422)))]
#[get("/admin/flags/{key}/versions")]
pub async fn flag_versions(
    _op: PlatformOperator,
    state: web::Data<AppState>,
    key: web::Path<String>,
    query: web::Query<VersionQuery>,
) -> Result<HttpResponse, Problem> {
    let page = admin::versions(
        &state.pools.admin,
        &key,
        query.limit,
        query.cursor.as_deref(),
    )
    .await?;
    Ok(HttpResponse::Ok().json(page))
}

#[utoipa::path(post, path = "/admin/flags/{key}/rollback", tag = "flags", request_body = RollbackBody,
    security(("operator" = [])),
    responses((status = 200, body = Definition, description = "A new version equal to the one restored"),
        (status = 401), (status = 404), (status = 409), (status = 422)))]
#[post("/admin/flags/{key}/rollback")]
pub async fn rollback_flag(
    _op: PlatformOperator,
    state: web::Data<AppState>,
    request_id: RequestId,
    key: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, Problem> {
    let flag = admin::rollback(&state.pools.admin, &key, &body, Some(&request_id.0)).await?;
    state.invalidate(Invalidation::Flags { tenant: None }).await;
    Ok(HttpResponse::Ok().json(flag))
}

#[utoipa::path(put, path = "/admin/tenants/{id}/flags/{key}", tag = "flags", request_body = OverrideBody,
    security(("operator" = [])),
    responses((status = 201, body = Override), (status = 200, body = Override),
        (status = 401), (status = 404, description = "No such tenant or flag"), (status = 422)))]
#[put("/admin/tenants/{id}/flags/{key}")]
pub async fn put_override(
    _op: PlatformOperator,
    state: web::Data<AppState>,
    request_id: RequestId,
    path: web::Path<(Uuid, String)>,
    body: web::Json<Value>,
) -> Result<HttpResponse, Problem> {
    let (tenant, key) = path.into_inner();
    let saved_override =
        admin::put_override(&state.pools.admin, tenant, &key, &body, Some(&request_id.0)).await?;
    if saved_override.changed {
        state
            .invalidate(Invalidation::Flags {
                tenant: Some(tenant),
            })
            .await;
    }
    Ok(saved(saved_override.created).json(saved_override.value))
}

#[utoipa::path(delete, path = "/admin/tenants/{id}/flags/{key}", tag = "flags",
    security(("operator" = [])),
    responses((status = 204), (status = 401), (status = 404, description = "No such tenant or override")))]
#[delete("/admin/tenants/{id}/flags/{key}")]
pub async fn delete_override(
    _op: PlatformOperator,
    state: web::Data<AppState>,
    request_id: RequestId,
    path: web::Path<(Uuid, String)>,
) -> Result<HttpResponse, Problem> {
    let (tenant, key) = path.into_inner();
    admin::delete_override(&state.pools.admin, tenant, &key, Some(&request_id.0)).await?;
    state
        .invalidate(Invalidation::Flags {
            tenant: Some(tenant),
        })
        .await;
    Ok(HttpResponse::NoContent().finish())
}
