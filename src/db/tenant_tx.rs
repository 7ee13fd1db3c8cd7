//! Transactions bound to one tenant. The context is set with `set_config(.., true)`, which is
//! local to the transaction: it cannot leak to the next user of a pooled connection, and a
//! connection outside a transaction reads '' (no rows under the policies).

use std::future::Future;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};

use deadpool_postgres::{ClientWrapper, Transaction};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};
use uuid::Uuid;

use super::pool::PgConn;
use super::{DbError, PooledConn};

pub const SET_TENANT_SQL: &str = "select set_config('app.current_tenant', $1, true)";

/// A deadpool transaction bound to `tenant`, for code outside the tenant actors (jobs, the
/// resolver's checks, maintenance). Operations of the actors use [`TenantTx`].
pub async fn begin_tenant_tx(
    conn: &mut PooledConn,
    tenant: Uuid,
) -> Result<Transaction<'_>, DbError> {
    let tx = conn.transaction().await?;
    let stmt = tx.prepare_cached(SET_TENANT_SQL).await?;
    tx.execute(&stmt, &[&tenant.to_string()]).await?;
    Ok(tx)
}

/// The transaction a tenant operation runs in: every statement sent through it runs after
/// `BEGIN` and the tenant's `set_config`, on one pooled connection.
///
/// Unlike a deadpool `Transaction`, opening one does not wait for the server:
/// [`TenantTx::open`] writes `BEGIN` and `set_config` without waiting and hands back the
/// transaction at once, so the operation's first query is written right behind them and the
/// three share one round trip (tokio-postgres keeps requests of one connection in order). If
/// `BEGIN` failed, that query ran outside any transaction with no tenant set, where the
/// policies show no row and refuse every write; the caller then reports the `opened` error,
/// never the query's result.
///
/// It must end with [`commit`](TenantTx::commit) or [`rollback`](TenantTx::rollback). One that
/// is dropped open leaves its connection marked, and the pool retires that connection.
pub struct TenantTx<'a> {
    conn: &'a PgConn,
    /// Set once COMMIT went out with the operation's last statement.
    committed: AtomicBool,
}

impl<'a> TenantTx<'a> {
    /// Sends `BEGIN` and the tenant context without waiting. The returned future must be polled
    /// before anything is sent through the transaction (it sends on its first poll), and its
    /// error, if any, wins over whatever the operation returned.
    pub fn open(
        conn: &'a PgConn,
        tenant: Uuid,
    ) -> (
        TenantTx<'a>,
        impl Future<Output = Result<(), DbError>> + Send + 'a,
    ) {
        conn.mark_in_transaction(true);
        let opened = async move {
            let tenant = tenant.hyphenated().to_string();
            // Both are written on the first poll, in this order; set_config is a statement the
            // connection prepared when it was opened, so the server only binds and runs it
            // (parsing and planning it on every request cost PostgreSQL a fifth of its time).
            let (begun, set) = futures_util::future::join(
                conn.batch_execute("begin"),
                conn.execute(conn.set_tenant_statement(), &[&tenant]),
            )
            .await;
            begun?;
            set?;
            Ok(())
        };
        let tx = TenantTx {
            conn,
            committed: AtomicBool::new(false),
        };
        (tx, opened)
    }

    /// Opens the transaction and waits until the server has it.
    pub async fn begin(conn: &'a PgConn, tenant: Uuid) -> Result<TenantTx<'a>, DbError> {
        let (tx, opened) = TenantTx::open(conn, tenant);
        if let Err(err) = opened.await {
            tx.rollback().await;
            return Err(err);
        }
        Ok(tx)
    }

    /// For code written against tokio-postgres' `GenericClient`.
    pub fn client(&self) -> &tokio_postgres::Client {
        self.conn
    }

    pub async fn commit(self) -> Result<(), DbError> {
        if !self.committed.load(Ordering::Acquire) {
            self.conn.batch_execute("commit").await?;
        }
        self.conn.mark_in_transaction(false);
        Ok(())
    }

    /// Runs an operation's last statement with COMMIT written right behind it: one round trip
    /// for a read that is a whole operation. Nothing may be sent through the transaction
    /// afterwards (it has ended; a later statement would run with no tenant set and see no
    /// row). If the statement fails, PostgreSQL turns that COMMIT into a rollback.
    pub async fn query_opt_then_commit(
        &self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, DbError> {
        let (row, committed) = futures_util::future::join(
            self.conn.query_opt(statement, params),
            self.conn.batch_execute("commit"),
        )
        .await;
        if committed.is_ok() {
            self.committed.store(true, Ordering::Release);
        }
        let row = row?;
        committed?;
        Ok(row)
    }

    /// Best effort: when even the rollback fails the connection stays marked and is retired.
    pub async fn rollback(self) {
        if self.committed.load(Ordering::Acquire)
            || self.conn.batch_execute("rollback").await.is_ok()
        {
            self.conn.mark_in_transaction(false);
        }
    }
}

impl Deref for TenantTx<'_> {
    type Target = ClientWrapper;
    fn deref(&self) -> &ClientWrapper {
        self.conn
    }
}

/// The schema of a tenant is derived from its id only, never from input, because the name is
/// pasted into DDL and into refinery's history table name.
pub fn tenant_schema_name(tenant: Uuid) -> String {
    format!("t_{}", tenant.simple())
}
