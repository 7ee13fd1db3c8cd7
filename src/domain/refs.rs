//! Checks that a reference resolves to a live row of the caller's tenant, shared by the
//! operations of several resources (a task names a project and a user, a membership both).
//! The rows are share-locked: a concurrent delete waits for the transaction that checked them.

use uuid::Uuid;

use super::{query_opt, DomainError};
use crate::db::TenantTx;

/// A live project of the tenant, share-locked: a concurrent delete waits for this transaction,
/// so nothing can be attached to a project that is being deleted.
pub(crate) async fn project_is_live(
    tx: &TenantTx<'_>,
    tenant: Uuid,
    id: Uuid,
) -> Result<bool, DomainError> {
    Ok(query_opt(
        tx,
        "select 1 from app.projects where tenant_id = $1 and id = $2 and deleted_at is null for share",
        &[&tenant, &id],
    )
    .await?
    .is_some())
}

/// A live user of the tenant, share-locked against a concurrent delete.
pub(crate) async fn user_is_live(
    tx: &TenantTx<'_>,
    tenant: Uuid,
    user: Uuid,
) -> Result<bool, DomainError> {
    Ok(query_opt(
        tx,
        "select 1 from app.users where tenant_id = $1 and id = $2 and deleted_at is null for share",
        &[&tenant, &user],
    )
    .await?
    .is_some())
}
