//! Operations that misbehave on purpose, for the tests of supervision and back-pressure
//! (served only with `Config::fault_injection`, which only the test harness sets).

use std::time::Duration;

use futures_util::future::BoxFuture;

use super::TenantOp;
use crate::auth::Caller;
use crate::db::{DbError, TenantTx};

/// Panics inside the tenant's transaction.
pub struct PanicOp;

impl TenantOp for PanicOp {
    type Output = ();
    type Error = DbError;

    fn run<'a>(
        self,
        _tx: &'a TenantTx<'a>,
        caller: &'a Caller,
    ) -> BoxFuture<'a, Result<(), DbError>> {
        Box::pin(async move { panic!("injected panic in the work of tenant {}", caller.tenant_id) })
    }
}

/// Holds the tenant's connection lease for `ms` milliseconds (at most 10 s), like a slow query.
pub struct SleepOp {
    pub ms: u64,
}

impl TenantOp for SleepOp {
    type Output = ();
    type Error = DbError;

    fn run<'a>(
        self,
        tx: &'a TenantTx<'a>,
        _caller: &'a Caller,
    ) -> BoxFuture<'a, Result<(), DbError>> {
        Box::pin(async move {
            tx.execute("select 1", &[]).await?;
            tokio::time::sleep(Duration::from_millis(self.ms.min(10_000))).await;
            Ok(())
        })
    }
}

/// Which PostgreSQL backend ran an operation, with or without opening the tenant's schema: shows
/// which operations spend their connection's budget of tenant schemas.
pub struct BackendPidOp<const OPENS_SCHEMA: bool>;

impl<const OPENS_SCHEMA: bool> TenantOp for BackendPidOp<OPENS_SCHEMA> {
    type Output = i32;
    type Error = DbError;
    const OPENS_TENANT_SCHEMA: bool = OPENS_SCHEMA;

    fn run<'a>(
        self,
        tx: &'a TenantTx<'a>,
        _caller: &'a Caller,
    ) -> BoxFuture<'a, Result<i32, DbError>> {
        Box::pin(async move {
            let row = tx.query_one("select pg_backend_pid()", &[]).await?;
            Ok(row.get(0))
        })
    }
}
