//! /privacy: the erasure of one data subject of the tenant (API.md "Operations",
//! docs/privacy.md). Tenant admins only.

use actix_web::{get, post, web, HttpResponse};
use uuid::Uuid;

use crate::cache::Invalidation;
use crate::http::extract::Json;
use crate::http::problem::Problem;
use crate::http::tenant::TenantRequest;
use crate::privacy::{self, Erasure, ErasureRequest, GetErasure};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(create_erasure).service(get_erasure);
}

#[utoipa::path(post, path = "/privacy/erasure", tag = "privacy", request_body = ErasureRequest, security(("bearer" = [])),
    responses((status = 202, body = Erasure, description = "Recorded and, as it runs within the request, already complete: the subject's personal data is gone from every table and tenant schema, the audit trail keeps their actions under `pseudonym`"),
        (status = 403, description = "Not an admin"),
        (status = 404, description = "No such user in this tenant"),
        (status = 409, description = "The subject is the tenant's last admin (`last_admin`)"),
        (status = 422, description = "Neither or both of `user_id` and `email`, or not an email address")))]
#[post("/privacy/erasure")]
pub async fn create_erasure(
    req: TenantRequest,
    body: Json<ErasureRequest>,
) -> Result<HttpResponse, Problem> {
    req.admin()?;
    let subject = body.into_inner().subject()?;
    let erasure = privacy::erase(&req.state().pools.owner, &req, subject).await?;
    // Their tokens and sessions die with them, on every instance.
    for user in &erasure.user_ids {
        req.state()
            .invalidate(Invalidation::User {
                tenant: req.tenant_id,
                user: *user,
            })
            .await;
    }
    req.state()
        .invalidate(Invalidation::ApiKeys(req.tenant_id))
        .await;
    Ok(HttpResponse::Accepted().json(erasure))
}

#[utoipa::path(get, path = "/privacy/erasure/{id}", tag = "privacy", security(("bearer" = [])),
    responses((status = 200, body = Erasure), (status = 403, description = "Not an admin"),
        (status = 404, description = "No such erasure in this tenant")))]
#[get("/privacy/erasure/{id}")]
pub async fn get_erasure(req: TenantRequest, id: web::Path<Uuid>) -> Result<HttpResponse, Problem> {
    let erasure = req.execute(GetErasure(*id)).await?;
    Ok(HttpResponse::Ok().json(erasure))
}
