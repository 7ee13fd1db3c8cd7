//! The current tenant as its own users see it: its row (GET /tenant) and the GDPR export.

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use super::{export, lifecycle, TenancyError, Tenant};
use crate::actors::TenantOp;
use crate::auth::Caller;
use crate::db::TenantTx;

/// The caller's tenant.
pub struct GetCurrentTenant;

impl TenantOp for GetCurrentTenant {
    type Output = Tenant;
    type Error = TenancyError;
    const OPENS_TENANT_SCHEMA: bool = false;

    fn run<'a>(
        self,
        tx: &'a TenantTx<'a>,
        caller: &'a Caller,
    ) -> BoxFuture<'a, Result<Tenant, TenancyError>> {
        Box::pin(async move { lifecycle::find(tx.client(), &caller.tenant_id.to_string()).await })
    }
}

/// Every row of the caller's tenant, one JSON line each, sent to `out` as it is read; the
/// output is how many lines were sent (`tenancy::export`).
pub struct ExportTenant {
    pub out: mpsc::Sender<String>,
}

impl TenantOp for ExportTenant {
    type Output = u64;
    type Error = TenancyError;

    fn run<'a>(
        self,
        tx: &'a TenantTx<'a>,
        caller: &'a Caller,
    ) -> BoxFuture<'a, Result<u64, TenancyError>> {
        Box::pin(async move { export::export(tx.client(), caller.tenant_id, self.out).await })
    }
}
