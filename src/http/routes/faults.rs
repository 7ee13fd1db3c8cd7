//! Test-only routes that make a tenant's work fail on purpose, to prove supervision and
//! back-pressure. Registered only when `Config::fault_injection` is set, which no environment
//! variable can do: only the test harness sets it.

use std::time::Duration;

use actix_web::{post, web, HttpResponse};
use futures_util::future::BoxFuture;
use serde::Deserialize;

use crate::actors::{Caller, TenantOp};
use crate::error::Problem;
use crate::http::tenant::TenantRequest;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(panic_in_tenant_work)
        .service(sleep_in_tenant_work);
}

struct PanicOp;

impl TenantOp for PanicOp {
    type Output = ();

    fn run<'a>(
        self,
        _tx: &'a crate::db::TenantTx<'a>,
        caller: &'a Caller,
    ) -> BoxFuture<'a, Result<(), Problem>> {
        Box::pin(async move { panic!("injected panic in the work of tenant {}", caller.tenant_id) })
    }
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

struct SleepOp {
    ms: u64,
}

impl TenantOp for SleepOp {
    type Output = ();

    fn run<'a>(
        self,
        tx: &'a crate::db::TenantTx<'a>,
        _caller: &'a Caller,
    ) -> BoxFuture<'a, Result<(), Problem>> {
        Box::pin(async move {
            // Holds the tenant's connection lease like a slow query would.
            tx.execute("select 1", &[]).await?;
            tokio::time::sleep(Duration::from_millis(self.ms.min(10_000))).await;
            Ok(())
        })
    }
}

#[post("/__faults/sleep")]
async fn sleep_in_tenant_work(
    req: TenantRequest,
    q: web::Query<SleepQuery>,
) -> Result<HttpResponse, Problem> {
    req.execute(SleepOp { ms: q.ms }).await?;
    Ok(HttpResponse::NoContent().finish())
}
