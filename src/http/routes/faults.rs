//! Test-only routes that make a tenant's work fail on purpose, to prove supervision and
//! back-pressure, or show which database connection ran it. Registered only when `Config::fault_injection` is set, which no environment
//! variable can do: only the test harness sets it.

use std::time::Duration;

use actix_web::{post, web, HttpResponse};
use futures_util::future::BoxFuture;
use serde::Deserialize;

use crate::actors::TenantOp;
use crate::auth::Caller;
use crate::db::DbError;
use crate::http::extract::Query;
use crate::http::problem::Problem;
use crate::http::tenant::TenantRequest;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(panic_in_tenant_work)
        .service(sleep_in_tenant_work)
        .service(backend_of_tenant_work);
}

struct PanicOp;

impl TenantOp for PanicOp {
    type Output = ();
    type Error = DbError;

    fn run<'a>(
        self,
        _tx: &'a crate::db::TenantTx<'a>,
        caller: &'a Caller,
    ) -> BoxFuture<'a, Result<(), DbError>> {
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
    type Error = DbError;

    fn run<'a>(
        self,
        tx: &'a crate::db::TenantTx<'a>,
        _caller: &'a Caller,
    ) -> BoxFuture<'a, Result<(), DbError>> {
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
    q: Query<SleepQuery>,
) -> Result<HttpResponse, Problem> {
    req.execute(SleepOp { ms: q.ms }).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Which PostgreSQL backend ran an operation, with or without opening the tenant's schema: shows
/// which operations spend their connection's budget of tenant schemas.
struct BackendPidOp<const OPENS_SCHEMA: bool>;

impl<const OPENS_SCHEMA: bool> TenantOp for BackendPidOp<OPENS_SCHEMA> {
    type Output = i32;
    type Error = DbError;
    const OPENS_TENANT_SCHEMA: bool = OPENS_SCHEMA;

    fn run<'a>(
        self,
        tx: &'a crate::db::TenantTx<'a>,
        _caller: &'a Caller,
    ) -> BoxFuture<'a, Result<i32, DbError>> {
        Box::pin(async move {
            let row = tx.query_one("select pg_backend_pid()", &[]).await?;
            Ok(row.get(0))
        })
    }
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
