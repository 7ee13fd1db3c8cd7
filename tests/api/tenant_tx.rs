//! The tenant operations' transaction (`db::TenantTx`): BEGIN, the tenant context and the first
//! query travel together, the context never outlives the transaction, and a transaction
//! abandoned halfway never reaches the next user of its pooled connection.

use tenantry::db::{Pools, TenantTx};
use uuid::Uuid;

use crate::helpers::{provision_tenant, test_db, TestDb};

/// A database with one tenant and an app pool of a single connection, so every `get` is the
/// same connection unless the pool retired it.
async fn one_connection_pool() -> (TestDb, Pools, Uuid) {
    let mut db = test_db().await;
    db.config.app_shared_pool_size = 1;
    let pools = db.pools();
    let tenant = provision_tenant(&db.config, &pools, "txtenant")
        .await
        .tenant
        .id;
    (db, pools, tenant)
}

async fn backend_pid(pools: &Pools) -> i32 {
    let conn = pools.app.get().await.unwrap();
    conn.query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

async fn context_outside_transactions(pools: &Pools) -> String {
    let conn = pools.app.get().await.unwrap();
    conn.query_one(
        "select coalesce(current_setting('app.current_tenant', true), '')",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// Users the tests' writes renamed, as the tenant sees them in a transaction of its own.
async fn users_named_changed(pools: &Pools, tenant: Uuid) -> i64 {
    let conn = pools.app.get().await.unwrap();
    let tx = TenantTx::begin(&conn, tenant).await.unwrap();
    let changed: i64 = tx
        .query_one(
            "select count(*) from app.users where tenant_id = $1 and name = 'changed'",
            &[&tenant],
        )
        .await
        .unwrap()
        .get(0);
    tx.commit().await.unwrap();
    changed
}

#[tokio::test]
async fn the_first_query_sent_behind_open_runs_in_the_tenant_context() {
    let (_db, pools, tenant) = one_connection_pool().await;
    let conn = pools.app.get().await.unwrap();
    let (tx, opened) = TenantTx::open(&conn, tenant);
    let query = async {
        tx.query_one(
            "select current_setting('app.current_tenant'), \
             (select count(*) from app.users where tenant_id = $1)",
            &[&tenant],
        )
        .await
    };
    let (opened, row) = futures_util::future::join(opened, query).await;
    opened.unwrap();
    let row = row.unwrap();
    assert_eq!(row.get::<_, String>(0), tenant.to_string());
    assert_eq!(
        row.get::<_, i64>(1),
        1,
        "the tenant's admin is visible under RLS"
    );
    tx.commit().await.unwrap();
    assert!(!conn.in_transaction());
    drop(conn);
    assert_eq!(context_outside_transactions(&pools).await, "");
}

#[tokio::test]
async fn a_finished_transaction_keeps_its_connection() {
    let (_db, pools, tenant) = one_connection_pool().await;
    let before = backend_pid(&pools).await;
    {
        let conn = pools.app.get().await.unwrap();
        let tx = TenantTx::begin(&conn, tenant).await.unwrap();
        tx.commit().await.unwrap();
        let tx = TenantTx::begin(&conn, tenant).await.unwrap();
        tx.rollback().await;
    }
    assert_eq!(backend_pid(&pools).await, before);
}

#[tokio::test]
async fn an_abandoned_transaction_retires_its_connection() {
    let (_db, pools, tenant) = one_connection_pool().await;
    let before = backend_pid(&pools).await;
    {
        let conn = pools.app.get().await.unwrap();
        // Ends without commit or rollback, as when a request's future is cancelled.
        let tx = TenantTx::begin(&conn, tenant).await.unwrap();
        tx.execute(
            "update app.users set name = 'changed' where tenant_id = $1",
            &[&tenant],
        )
        .await
        .unwrap();
        assert!(conn.in_transaction());
    }
    let after = backend_pid(&pools).await;
    assert_ne!(after, before, "the open transaction must not be handed on");
    assert_eq!(context_outside_transactions(&pools).await, "");
    let changed = users_named_changed(&pools, tenant).await;
    assert_eq!(changed, 0, "the abandoned write was never committed");
}

#[tokio::test]
async fn a_last_read_commits_with_its_statement_and_keeps_the_connection() {
    let (_db, pools, tenant) = one_connection_pool().await;
    let before = backend_pid(&pools).await;
    {
        let conn = pools.app.get().await.unwrap();
        let (tx, opened) = TenantTx::open(&conn, tenant);
        let read = async {
            let stmt = tx
                .prepare_cached("select count(*) from app.users where tenant_id = $1")
                .await
                .unwrap();
            tx.query_opt_then_commit(&stmt, &[&tenant]).await
        };
        let (opened, row) = futures_util::future::join(opened, read).await;
        opened.unwrap();
        let users: i64 = row.unwrap().expect("one row").get(0);
        assert_eq!(users, 1);
        // The transaction is over: the context is gone on this very connection.
        let context: String = conn
            .query_one(
                "select coalesce(current_setting('app.current_tenant', true), '')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(context, "");
        // The actor still calls commit; it sends nothing more and releases the connection.
        tx.commit().await.unwrap();
        assert!(!conn.in_transaction());
    }
    assert_eq!(backend_pid(&pools).await, before);
}

#[tokio::test]
async fn a_single_statement_read_runs_in_the_tenant_context_and_leaves_none_behind() {
    let (_db, pools, tenant) = one_connection_pool().await;
    let before = backend_pid(&pools).await;
    {
        let conn = pools.app.get().await.unwrap();
        let stmt = conn
            .prepare_cached(
                "select current_setting('app.current_tenant'), \
                 (select count(*) from app.users where tenant_id = $1)",
            )
            .await
            .unwrap();
        let tx = TenantTx::single_statement(&conn, tenant);
        let row = tx
            .query_opt_then_commit(&stmt, &[&tenant])
            .await
            .unwrap()
            .expect("one row");
        assert_eq!(row.get::<_, String>(0), tenant.to_string());
        assert_eq!(
            row.get::<_, i64>(1),
            1,
            "the tenant's admin is visible under RLS"
        );
        assert!(!conn.in_transaction());
        // SAVEPOINT is refused outside a transaction block.
        assert!(
            conn.batch_execute("savepoint probe").await.is_err(),
            "no transaction block is left open"
        );
        tx.commit().await.unwrap();
    }
    assert_eq!(backend_pid(&pools).await, before);
    assert_eq!(context_outside_transactions(&pools).await, "");
}

#[tokio::test]
async fn a_failed_single_statement_read_leaves_a_clean_connection() {
    let (_db, pools, tenant) = one_connection_pool().await;
    let before = backend_pid(&pools).await;
    {
        let conn = pools.app.get().await.unwrap();
        let stmt = conn
            .prepare_cached("select 1 / ($1::int - 1)")
            .await
            .unwrap();
        let tx = TenantTx::single_statement(&conn, tenant);
        let failed = tx.query_opt_then_commit(&stmt, &[&1i32]).await;
        assert!(failed.is_err(), "division by zero is reported");
        tx.rollback().await;
        assert!(!conn.in_transaction());
    }
    assert_eq!(backend_pid(&pools).await, before);
    assert_eq!(context_outside_transactions(&pools).await, "");
}

#[tokio::test]
async fn a_last_statement_that_fails_is_rolled_back_not_committed() {
    let (_db, pools, tenant) = one_connection_pool().await;
    {
        let conn = pools.app.get().await.unwrap();
        let tx = TenantTx::begin(&conn, tenant).await.unwrap();
        tx.execute(
            "update app.users set name = 'changed' where tenant_id = $1",
            &[&tenant],
        )
        .await
        .unwrap();
        let stmt = conn
            .prepare_cached("select 1 / ($1::int - 1)")
            .await
            .unwrap();
        assert!(tx.query_opt_then_commit(&stmt, &[&1i32]).await.is_err());
        tx.rollback().await;
        assert!(!conn.in_transaction());
    }
    let changed = users_named_changed(&pools, tenant).await;
    assert_eq!(
        changed, 0,
        "the write before the failed statement was rolled back"
    );
}

#[tokio::test]
async fn a_single_statement_transaction_sends_nothing_else_in_the_tenant_context() {
    let (_db, pools, tenant) = one_connection_pool().await;
    let conn = pools.app.get().await.unwrap();
    let tx = TenantTx::single_statement(&conn, tenant);
    // Misuse: a statement sent directly, not through query_opt_then_commit. It must fail
    // closed: no tenant context, so RLS shows no row.
    let users: i64 = tx
        .query_one(
            "select count(*) from app.users where tenant_id = $1",
            &[&tenant],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(users, 0);
    tx.commit().await.unwrap();
}
