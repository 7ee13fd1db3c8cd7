//! Test-only routes that make a tenant's work fail on purpose, to prove supervision and
//! back-pressure, or show which database connection ran it. Registered only when `Config::fault_injection` is set, which no environment
//! variable can do: only the test harness sets it.

use actix_web::{post, web, HttpResponse};
use serde::Deserialize;

use crate::actors::faults::{BackendPidOp, PanicOp, SleepOp};
use crate::http::extract::Query;
use crate::http::problem::Problem;
use crate::http::tenant::TenantRequest;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(panic_in_tenant_work)
        .service(sleep_in_tenant_work)
        .service(backend_of_tenant_work);
}

#[post("/__faults/panic")]
async fn panic_in_tenant_work(req: TenantRequest) -> Result<HttpResponse, Problem> {
    req.execute(PanicOp).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
struct SleepQuery {
    ms: u64,
}

#[post("/__faults/sleep")]
async fn sleep_in_tenant_work(
    req: TenantRequest,
    q: Query<SleepQuery>,
) -> Result<HttpResponse, Problem> {
    req.execute(SleepOp { ms: q.ms }).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
struct BackendQuery {
    #[serde(default)]
    tenant_schema: bool,
}

#[post("/__faults/backend")]
async fn backend_of_tenant_work(
    req: TenantRequest,
    q: Query<BackendQuery>,
) -> Result<HttpResponse, Problem> {
    let pid = if q.tenant_schema {
        req.execute(BackendPidOp::<true>).await?
    } else {
        req.execute(BackendPidOp::<false>).await?
    };
    Ok(HttpResponse::Ok().json(serde_json::json!({ "pid": pid })))
}
