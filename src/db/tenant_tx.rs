//! Transactions bound to one tenant. The context is set with `set_config(.., true)`, which is
//! local to the transaction: it cannot leak to the next user of a pooled connection, and a
//! connection outside a transaction reads '' (no rows under the policies).

use deadpool_postgres::Transaction;
use uuid::Uuid;

use super::{DbError, PooledConn};

pub const SET_TENANT_SQL: &str = "select set_config('app.current_tenant', $1, true)";

pub async fn begin_tenant_tx(
    conn: &mut PooledConn,
    tenant: Uuid,
) -> Result<Transaction<'_>, DbError> {
    let tx = conn.transaction().await?;
    let stmt = tx.prepare_cached(SET_TENANT_SQL).await?;
    tx.execute(&stmt, &[&tenant.to_string()]).await?;
    Ok(tx)
}

/// The schema of a tenant is derived from its id only, never from input, because the name is
/// pasted into DDL and into refinery's history table name.
pub fn tenant_schema_name(tenant: Uuid) -> String {
    format!("t_{}", tenant.simple())
}
