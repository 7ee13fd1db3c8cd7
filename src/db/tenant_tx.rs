//! Transactions bound to one tenant. The context is set with `set_config(.., true)`, which is
//! local to the transaction: it cannot leak to the next user of a pooled connection, and a
//! connection outside a transaction reads '' (no rows under the policies).
//!
//! On Citus (docs/scale-out.md) this module is the one place that differs: `set_config` only
//! changes the coordinator's session, never the worker nodes that hold the shards, so there
//! the context is `SET LOCAL app.current_tenant` inside an explicit `BEGIN`, which Citus sends
//! to every node taking part in the transaction (`citus.propagate_set_commands = 'local'`, set
//! on the database by `tenantry migrate --citus`). Each pooled connection knows which it is
//! talking to ([`PgConn::is_citus`]).

use std::future::Future;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};

use deadpool_postgres::{ClientWrapper, Transaction};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};
use uuid::Uuid;

use super::pool::PgConn;
pub use super::pool::SET_TENANT_SQL;
use super::{DbError, PooledConn};

/// For background writes whose loss in a PostgreSQL crash costs nothing they have not already
/// accepted (a metering interval, an at-least-once job run again): the commit returns without
/// waiting for the WAL flush. Local to the transaction, like the tenant context.
pub const COMMIT_WITHOUT_WAITING_SQL: &str = "set local synchronous_commit = off";

/// `BEGIN` and the tenant context for Citus, as one simple query (one message, one round trip).
/// `SET` takes no bind parameter: the value pasted in is a `Uuid`'s hyphenated form, never
/// input.
fn citus_begin_sql(tenant: Uuid) -> String {
    format!("BEGIN; {}", set_local_tenant_sql(tenant))
}

/// The tenant context as a `SET LOCAL` (see the module's documentation): what Citus carries to
/// its workers. Equivalent to `set_config(.., true)` on plain PostgreSQL.
pub fn set_local_tenant_sql(tenant: Uuid) -> String {
    format!("SET LOCAL app.current_tenant = '{}'", tenant.hyphenated())
}

/// Sets `tenant`'s context in the transaction `tx` has open, for code that holds a plain
/// transaction rather than a [`TenantTx`] (provisioning, migrations, maintenance): a
/// `SET LOCAL`, which works on plain PostgreSQL and on Citus alike.
pub async fn set_tenant_in_tx(
    tx: &impl tokio_postgres::GenericClient,
    tenant: Uuid,
) -> Result<(), DbError> {
    tx.batch_execute(&set_local_tenant_sql(tenant)).await?;
    Ok(())
}

/// A deadpool transaction bound to `tenant`, for code outside the tenant actors (jobs, the
/// resolver's checks, maintenance). Operations of the actors use [`TenantTx`].
pub async fn begin_tenant_tx(
    conn: &mut PooledConn,
    tenant: Uuid,
) -> Result<Transaction<'_>, DbError> {
    begin_bound(conn, tenant, false).await
}

/// [`begin_tenant_tx`] for at-least-once background writes (see
/// [`COMMIT_WITHOUT_WAITING_SQL`]): the commit setting travels with the tenant context, in the
/// same round trip.
pub async fn begin_tenant_tx_without_waiting(
    conn: &mut PooledConn,
    tenant: Uuid,
) -> Result<Transaction<'_>, DbError> {
    begin_bound(conn, tenant, true).await
}

async fn begin_bound(
    conn: &mut PooledConn,
    tenant: Uuid,
    without_waiting: bool,
) -> Result<Transaction<'_>, DbError> {
    // The connection prepared set_config when it opened; a second copy in the statement cache
    // would only cost a lookup per transaction.
    let citus = conn.is_citus();
    let set_tenant = conn.statements().set_tenant().clone();
    let tx = conn.transaction().await?;
    if citus {
        let mut sql = set_local_tenant_sql(tenant);
        if without_waiting {
            sql = format!("{sql}; {COMMIT_WITHOUT_WAITING_SQL}");
        }
        tx.batch_execute(&sql).await?;
        return Ok(tx);
    }
    let context = tenant.hyphenated().to_string();
    let params: [&(dyn ToSql + Sync); 1] = [&context];
    // Both go out before either answer is awaited: one round trip.
    let (set, sync) = futures_util::join!(tx.execute(&set_tenant, &params), async {
        if without_waiting {
            tx.batch_execute(COMMIT_WITHOUT_WAITING_SQL).await
        } else {
            Ok(())
        }
    });
    set?;
    sync?;
    Ok(tx)
}

/// The transaction a tenant operation runs in: every statement sent through it runs after
/// `BEGIN` and the tenant's `set_config`, on one pooled connection.
///
/// Unlike a deadpool `Transaction`, opening one does not wait for the server:
/// [`TenantTx::open`] writes `BEGIN` and `set_config` under one Sync without waiting and hands
/// back the transaction at once, so the operation's first query is written right behind them
/// and they share one round trip (tokio-postgres keeps requests of one connection in order).
/// If `BEGIN` failed, that query ran outside any transaction with no tenant set, where the
/// policies show no row and refuse every write; the caller then reports the `opened` error,
/// never the query's result.
///
/// An operation that is a single statement needs no `BEGIN` at all:
/// [`TenantTx::single_statement`] sends nothing until that statement, which then travels with
/// the tenant context under one Sync, in the implicit transaction PostgreSQL opens for them and
/// ends at the Sync.
///
/// It must end with [`commit`](TenantTx::commit) or [`rollback`](TenantTx::rollback). One that
/// is dropped open leaves its connection marked, and the pool retires that connection.
pub struct TenantTx<'a> {
    conn: &'a PgConn,
    tenant: Uuid,
    /// No `BEGIN` was sent (see [`TenantTx::single_statement`]).
    single_statement: bool,
    /// Set once COMMIT went out with the operation's last statement.
    committed: AtomicBool,
    /// Set when an outbox event was written: the commit wakes this process's outbox worker
    /// for the tenant, so the event is not left to the worker's polling.
    enqueued: AtomicBool,
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
            if conn.is_citus() {
                conn.batch_execute(&citus_begin_sql(tenant)).await?;
                return Ok(());
            }
            let tenant = tenant.hyphenated().to_string();
            // Both statements were prepared when the connection opened, so the server only
            // binds and runs them instead of parsing and planning set_config on every request,
            // and one Sync answers for both.
            conn.pipeline(&[
                (conn.statements().begin(), &[]),
                (conn.statements().set_tenant(), &[&tenant]),
            ])
            .await?;
            Ok(())
        };
        (TenantTx::new(conn, tenant, false), opened)
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

    /// For an operation whose only statement goes through
    /// [`query_opt_then_commit`](TenantTx::query_opt_then_commit): nothing is sent now, and
    /// that statement later travels with the tenant context under a single Sync (one
    /// `ReadyForQuery` where `BEGIN`, the context, the statement and `COMMIT` took four).
    /// Anything else sent through it runs outside any transaction with no tenant set: the
    /// policies show it no row and refuse every write.
    pub fn single_statement(conn: &'a PgConn, tenant: Uuid) -> TenantTx<'a> {
        TenantTx::new(conn, tenant, true)
    }

    fn new(conn: &'a PgConn, tenant: Uuid, single_statement: bool) -> TenantTx<'a> {
        TenantTx {
            conn,
            tenant,
            single_statement,
            committed: AtomicBool::new(false),
            enqueued: AtomicBool::new(false),
        }
    }

    /// Marks the transaction as having written an outbox event (see `jobs::enqueue`).
    pub fn note_enqueued(&self) {
        self.enqueued.store(true, Ordering::Relaxed);
    }

    /// The database runs Citus: for the few statements that need a form of their own there
    /// (docs/scale-out.md), chosen by the caller from this.
    pub fn is_citus(&self) -> bool {
        self.conn.is_citus()
    }

    /// For code written against tokio-postgres' `GenericClient`.
    pub fn client(&self) -> &tokio_postgres::Client {
        self.conn
    }

    pub async fn commit(self) -> Result<(), DbError> {
        if !self.single_statement && !self.committed.load(Ordering::Acquire) {
            self.conn
                .execute(self.conn.statements().commit(), &[])
                .await?;
        }
        self.conn.mark_in_transaction(false);
        if self.enqueued.load(Ordering::Relaxed) {
            self.conn.wakes().outbox.hint(self.tenant);
        }
        Ok(())
    }

    /// Runs an operation's last statement with the end of its transaction under the same
    /// Sync: COMMIT right behind it, or, for a [`single_statement`](TenantTx::single_statement)
    /// transaction, the tenant context right before it. Nothing may be sent through the
    /// transaction afterwards (it has ended; a later statement would run with no tenant set and
    /// see no row). If the statement fails, PostgreSQL skips the COMMIT and the caller rolls
    /// back.
    pub async fn query_opt_then_commit(
        &self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, DbError> {
        let statements = self.conn.statements();
        let tenant;
        let (results, index) = if self.single_statement && self.conn.is_citus() {
            // No single-Sync form carries the context to the workers: BEGIN and SET LOCAL go
            // out right before the statement and COMMIT (one write, one round trip). The
            // connection is this operation's alone (see `run_in_tenant_tx`).
            self.conn.mark_in_transaction(true);
            let begin = citus_begin_sql(self.tenant);
            let pipeline = [(statement, params), (statements.commit(), &[][..])];
            let (opened, results) = futures_util::future::join(
                self.conn.batch_execute(&begin),
                self.conn.pipeline(&pipeline),
            )
            .await;
            match opened.and(results) {
                Ok(results) => {
                    self.conn.mark_in_transaction(false);
                    (results, 0)
                }
                Err(err) => {
                    if self.conn.batch_execute("rollback").await.is_ok() {
                        self.conn.mark_in_transaction(false);
                    }
                    return Err(err.into());
                }
            }
        } else if self.single_statement {
            tenant = self.tenant.hyphenated().to_string();
            let pipeline = [
                (
                    statements.set_tenant(),
                    &[&tenant as &(dyn ToSql + Sync)][..],
                ),
                (statement, params),
            ];
            (self.conn.pipeline(&pipeline).await?, 1)
        } else {
            let pipeline = [(statement, params), (statements.commit(), &[][..])];
            let results = self.conn.pipeline(&pipeline).await?;
            self.committed.store(true, Ordering::Release);
            (results, 0)
        };
        let mut rows = results
            .into_iter()
            .nth(index)
            .unwrap_or_default()
            .into_iter();
        let row = rows.next();
        if rows.next().is_some() {
            return Err(DbError::MoreThanOneRow);
        }
        Ok(row)
    }

    /// Best effort: when even the rollback fails the connection stays marked and is retired.
    pub async fn rollback(self) {
        if self.single_statement
            || self.committed.load(Ordering::Acquire)
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
