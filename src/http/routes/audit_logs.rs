//! GET /audit-logs: the tenant's audit trail, for its admins.

use actix_web::{get, web, HttpResponse};

use crate::audit::AuditLog;
use crate::domain::audit_logs::{AuditQuery, ListAuditLogs};
use crate::http::extract::Query;
use crate::http::problem::Problem;
use crate::http::tenant::TenantRequest;
use crate::page::Page;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list_audit_logs);
}

#[utoipa::path(get, path = "/audit-logs", tag = "audit", params(AuditQuery), security(("bearer" = [])),
    responses((status = 200, description = "Newest first", body = Page<AuditLog>), (status = 403), (status = 422)))]
#[get("/audit-logs")]
pub async fn list_audit_logs(
    req: TenantRequest,
    query: Query<AuditQuery>,
) -> Result<HttpResponse, Problem> {
    let page = req
        .execute(ListAuditLogs(
            query.into_inner(),
            req.state().cursors.clone(),
        ))
        .await?;
    Ok(HttpResponse::Ok().json(page))
}
