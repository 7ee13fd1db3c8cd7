//! Row level security as the app role sees it, over tables holding rows of two tenants.
//! Fixtures are written through provisioning and the superuser connection (which bypasses RLS);
//! every assertion about isolation is made through `app_db()` (the request path's role).

use tenantry::db::tenant_schema_name;
use tenantry::db::tenant_tx::{set_local_tenant_sql, SET_TENANT_SQL};
use tenantry::db::TENANT_TABLES;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Transaction};
use uuid::Uuid;

use crate::helpers::{citus_workers, provision_tenant, test_db, TestDb};

type Params = Vec<Box<dyn ToSql + Sync>>;

struct Seeded {
    id: Uuid,
    admin: Uuid,
    member: Uuid,
    projects: Vec<Uuid>,
    tasks: Vec<Uuid>,
}

/// Two provisioned tenants with users, projects, members, tasks, audit rows and events each.
async fn two_tenants(db: &TestDb) -> (Seeded, Seeded) {
    let pools = db.pools();
    let a = provision_tenant(&db.config, &pools, "tenant-a").await;
    let b = provision_tenant(&db.config, &pools, "tenant-b").await;
    let su = db.superuser_db().await;
    (
        seed(&su, a.tenant.id, a.admin_id).await,
        seed(&su, b.tenant.id, b.admin_id).await,
    )
}

async fn seed(su: &Client, tenant: Uuid, admin: Uuid) -> Seeded {
    let member = Uuid::now_v7();
    su.execute(
        "insert into app.users (tenant_id, id, email, name) values ($1, $2, $3, 'Member')",
        &[&tenant, &member, &format!("member-{tenant}@example.com")],
    )
    .await
    .unwrap();
    let projects = vec![Uuid::now_v7(), Uuid::now_v7()];
    for (i, p) in projects.iter().enumerate() {
        su.execute(
            "insert into app.projects (tenant_id, id, name) values ($1, $2, $3)",
            &[&tenant, p, &format!("Project {i}")],
        )
        .await
        .unwrap();
        su.execute(
            "insert into app.project_members (tenant_id, project_id, user_id) values ($1, $2, $3)",
            &[&tenant, p, &member],
        )
        .await
        .unwrap();
    }
    let mut tasks = Vec::new();
    for (i, p) in [projects[0], projects[0], projects[1]].iter().enumerate() {
        let id = Uuid::now_v7();
        su.execute(
            "insert into app.tasks (tenant_id, id, project_id, title, assignee_id) values ($1, $2, $3, $4, $5)",
            &[&tenant, &id, p, &format!("Task {i}"), &admin],
        )
        .await
        .unwrap();
        tasks.push(id);
    }
    su.execute(
        "insert into app.audit_logs (tenant_id, id, user_id, action, resource, resource_id) \
         values ($1, $2, $3, 'create', 'task', $4)",
        &[&tenant, &Uuid::now_v7(), &admin, &tasks[0].to_string()],
    )
    .await
    .unwrap();
    su.execute(
        "insert into app.api_keys (tenant_id, id, prefix, key_hash, created_by) values ($1, $2, 'tk_x', $3, $4)",
        &[&tenant, &Uuid::now_v7(), &format!("hash-{tenant}"), &admin],
    )
    .await
    .unwrap();
    su.execute(
        "insert into app.outbox (tenant_id, id, event_type, payload) values ($1, $2, 'task.created', '{}')",
        &[&tenant, &Uuid::now_v7()],
    )
    .await
    .unwrap();
    su.execute(
        "insert into app.flag_overrides (tenant_id, flag_key, value) values ($1, 'beta', 'true')",
        &[&tenant],
    )
    .await
    .unwrap();
    su.execute(
        "insert into app.settings_versions (tenant_id, version, settings, previous, change) \
         values ($1, 1, '{}', '{}', 'settings')",
        &[&tenant],
    )
    .await
    .unwrap();
    let (webhook, message) = (Uuid::now_v7(), Uuid::now_v7());
    for (sql, params) in [
        (
            "insert into app.webhooks (tenant_id, id, url, events, secret_ciphertext, secret_key_id) \
             values ($1, $2, 'https://example.com/', '{task.*}', '\\x00', 'plain')",
            vec![&webhook as &(dyn ToSql + Sync)],
        ),
        (
            "insert into app.webhook_messages (tenant_id, id, webhook_id, event_type, body) \
             values ($1, $2, $3, 'task.created', '{}')",
            vec![&message as &(dyn ToSql + Sync), &webhook],
        ),
        (
            "insert into app.webhook_deliveries (tenant_id, id, message_id, webhook_id, attempt, status) \
             values ($1, gen_random_uuid(), $2, $3, 1, 'failed')",
            vec![&message as &(dyn ToSql + Sync), &webhook],
        ),
        (
            "insert into app.webhook_rate_windows (tenant_id, window_start) values ($1, now())",
            vec![],
        ),
    ] {
        let mut all: Vec<&(dyn ToSql + Sync)> = vec![&tenant];
        all.extend(params);
        su.execute(sql, &all).await.unwrap();
    }
    su.execute(
        "insert into app.usage_events (tenant_id, id, idempotency_key, metric, quantity, occurred_at) \
         values ($1, $2, 'k', 'emails_sent', 1, now())",
        &[&tenant, &Uuid::now_v7()],
    )
    .await
    .unwrap();
    su.execute(
        "insert into app.usage_rollups (tenant_id, granularity, period_start, metric, quantity) \
         values ($1, 'hour', date_trunc('hour', now()), 'emails_sent', 1)",
        &[&tenant],
    )
    .await
    .unwrap();
    su.execute(
        "insert into app.subscriptions (tenant_id, plan, status) values ($1, 'free', 'active')",
        &[&tenant],
    )
    .await
    .unwrap();
    // Billing (V9): the account row comes with provisioning.
    su.execute(
        "insert into app.invoices (tenant_id, id, stripe_invoice_id, currency, amount_due, \
         amount_paid, stripe_created, event_at, object) \
         values ($1, $2, $3, 'usd', 100, 0, now(), now(), '{}')",
        &[&tenant, &Uuid::now_v7(), &format!("in_{}", tenant.simple())],
    )
    .await
    .unwrap();
    su.execute(
        "insert into app.stripe_events (tenant_id, event_id, type, created, outcome) \
         values ($1, $2, 'invoice.paid', now(), 'applied')",
        &[&tenant, &format!("evt_{}", tenant.simple())],
    )
    .await
    .unwrap();
    let schema = tenant_schema_name(tenant);
    for kind in ["login", "view"] {
        su.execute(
            &format!(
                "insert into {schema}.events (tenant_id, id, event_type, occurred_at) values ($1, $2, $3, now())"
            ),
            &[&tenant, &Uuid::now_v7(), &kind],
        )
        .await
        .unwrap();
    }
    Seeded {
        id: tenant,
        admin,
        member,
        projects,
        tasks,
    }
}

/// The tenant context as the server sets it: `set_config` on plain PostgreSQL; on Citus a
/// `SET LOCAL`, the one form that reaches the workers' shards.
async fn set_context(tx: &Transaction<'_>, tenant: Uuid) -> Result<(), tokio_postgres::Error> {
    if citus_workers().is_some() {
        tx.batch_execute(&set_local_tenant_sql(tenant)).await
    } else {
        tx.execute(SET_TENANT_SQL, &[&tenant.to_string()])
            .await
            .map(|_| ())
    }
}

/// Runs one statement in its own transaction, with the tenant context when given.
async fn exec_as(
    client: &mut Client,
    tenant: Option<Uuid>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    if let Some(t) = tenant {
        set_context(&tx, t).await?;
    }
    let n = tx.execute(sql, params).await?;
    tx.commit().await?;
    Ok(n)
}

/// (rows visible, rows visible of another tenant than `tenant`) in its own transaction.
async fn visible_as(client: &mut Client, tenant: Option<Uuid>, table: &str) -> (i64, i64) {
    let tx = client.transaction().await.unwrap();
    if let Some(t) = tenant {
        set_context(&tx, t).await.unwrap();
    }
    let other = tenant.unwrap_or(Uuid::nil());
    let row = tx
        .query_one(
            &format!("select count(*), count(*) filter (where tenant_id <> $1) from {table}"),
            &[&other],
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    (row.get(0), row.get(1))
}

async fn rows_of(su: &Client, table: &str, tenant: Uuid) -> i64 {
    su.query_one(
        &format!("select count(*) from {table} where tenant_id = $1"),
        &[&tenant],
    )
    .await
    .unwrap()
    .get(0)
}

/// A fingerprint of every row of a tenant in a table, read by the superuser.
async fn snapshot(su: &Client, table: &str, tenant: Uuid) -> String {
    su.query_one(
        &format!(
            "select count(*)::text || ':' || md5(coalesce(string_agg(t::text, '|' order by t::text), '')) \
             from {table} t where tenant_id = $1"
        ),
        &[&tenant],
    )
    .await
    .unwrap()
    .get(0)
}

fn assert_rls_violation(result: Result<u64, tokio_postgres::Error>, what: &str) {
    let err = result.expect_err(&format!("{what}: should have been rejected"));
    let db = err.as_db_error().unwrap_or_else(|| panic!("{what}: {err}"));
    assert_eq!(db.code(), &SqlState::INSUFFICIENT_PRIVILEGE, "{what}: {db}");
    assert!(
        db.message().contains("row-level security"),
        "{what}: {}",
        db.message()
    );
}

/// A row moved to another tenant is refused: by the policies' WITH CHECK on plain PostgreSQL;
/// on Citus `tenant_id` is the distribution column, which no update may change at all.
fn assert_move_refused(result: Result<u64, tokio_postgres::Error>, what: &str) {
    if citus_workers().is_none() {
        return assert_rls_violation(result, what);
    }
    let err = result.expect_err(&format!("{what}: should have been rejected"));
    assert_eq!(
        err.as_db_error().map(|d| d.code()),
        Some(&SqlState::FEATURE_NOT_SUPPORTED),
        "{what}: {err}"
    );
}

fn assert_fk_violation(result: Result<u64, tokio_postgres::Error>, what: &str) {
    let err = result.expect_err(&format!("{what}: should have been rejected"));
    assert_eq!(
        err.as_db_error().map(|d| d.code()),
        Some(&SqlState::FOREIGN_KEY_VIOLATION),
        "{what}: {err}"
    );
}

fn app_tables() -> Vec<String> {
    TENANT_TABLES.iter().map(|t| format!("app.{t}")).collect()
}

#[tokio::test]
async fn a_tenant_context_sees_only_its_own_rows() {
    let db = test_db().await;
    let (a, b) = two_tenants(&db).await;
    let su = db.superuser_db().await;
    let mut app = db.app_db().await;
    let mut tables = app_tables();
    tables.push(format!("{}.events", tenant_schema_name(a.id)));
    for table in &tables {
        let own = rows_of(&su, table, a.id).await;
        assert!(own > 0, "{table}: fixture has no row of A");
        assert_eq!(
            visible_as(&mut app, Some(a.id), table).await,
            (own, 0),
            "{table} under A's context"
        );
    }
    for table in app_tables() {
        let own = rows_of(&su, &table, b.id).await;
        assert_eq!(
            visible_as(&mut app, Some(b.id), &table).await,
            (own, 0),
            "{table} under B's context"
        );
    }
    // Asking for B's rows explicitly under A's context finds nothing either.
    let tx = app.transaction().await.unwrap();
    tx.execute(SET_TENANT_SQL, &[&a.id.to_string()])
        .await
        .unwrap();
    let n: i64 = tx
        .query_one(
            "select count(*) from app.tasks where tenant_id = $1 and id = any($2)",
            &[&b.id, &b.tasks],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn no_context_or_an_empty_one_sees_no_rows() {
    let db = test_db().await;
    let (a, _b) = two_tenants(&db).await;
    let su = db.superuser_db().await;
    let mut tables = app_tables();
    tables.push(format!("{}.events", tenant_schema_name(a.id)));
    for table in &tables {
        let all: i64 = su
            .query_one(&format!("select count(*) from {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert!(all > 0, "{table}: fixture is empty");
    }

    // A fresh connection: never had a context.
    let mut fresh = db.app_db().await;
    for table in &tables {
        assert_eq!(visible_as(&mut fresh, None, table).await.0, 0, "{table}");
        let n: i64 = fresh
            .query_one(&format!("select count(*) from {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{table} outside a transaction");
    }

    // A connection that had A's context in an earlier transaction, committed or rolled back:
    // the setting now reads '' and must match nothing.
    let mut reused = db.app_db().await;
    for table in &tables {
        assert!(visible_as(&mut reused, Some(a.id), table).await.0 > 0);
        let setting: String = reused
            .query_one("select current_setting('app.current_tenant', true)", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(setting, "", "the context outlived its transaction");
        assert_eq!(visible_as(&mut reused, None, table).await.0, 0, "{table}");
        let n: i64 = reused
            .query_one(&format!("select count(*) from {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{table} after a committed tenant transaction");

        let tx = reused.transaction().await.unwrap();
        tx.execute(SET_TENANT_SQL, &[&a.id.to_string()])
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(
            visible_as(&mut reused, None, table).await.0,
            0,
            "{table} after rollback"
        );
    }

    // An explicit empty context, transaction-local and session-wide, and a reset one.
    for sql in [
        "select set_config('app.current_tenant', '', true)",
        "select set_config('app.current_tenant', '', false)",
    ] {
        for table in &tables {
            let tx = reused.transaction().await.unwrap();
            tx.execute(sql, &[]).await.unwrap();
            let n: i64 = tx
                .query_one(&format!("select count(*) from {table}"), &[])
                .await
                .unwrap()
                .get(0);
            tx.commit().await.unwrap();
            assert_eq!(n, 0, "{table} with {sql}");
        }
    }
    reused
        .batch_execute(&format!(
            "SET app.current_tenant = '{}'; RESET app.current_tenant",
            a.id
        ))
        .await
        .unwrap();
    for table in &tables {
        assert_eq!(
            visible_as(&mut reused, None, table).await.0,
            0,
            "{table} after RESET"
        );
    }

    // A malformed context fails the statement rather than matching anything.
    let tx = reused.transaction().await.unwrap();
    tx.execute(SET_TENANT_SQL, &[&"not-a-uuid"]).await.unwrap();
    assert!(tx.query("select * from app.tasks", &[]).await.is_err());
}

#[tokio::test]
async fn writes_never_reach_another_tenant() {
    let db = test_db().await;
    let (a, b) = two_tenants(&db).await;
    let su = db.superuser_db().await;
    let mut app = db.app_db().await;
    let before: Vec<String> = {
        let mut v = Vec::new();
        for t in app_tables() {
            v.push(snapshot(&su, &t, b.id).await);
        }
        v
    };

    // INSERT with B's tenant_id under A's context.
    let inserts: Vec<(&str, String, Params)> = vec![
        (
            "users",
            "insert into app.users (tenant_id, id, email) values ($1, $2, 'x@example.com')".into(),
            vec![Box::new(b.id), Box::new(Uuid::now_v7())],
        ),
        (
            "projects",
            "insert into app.projects (tenant_id, id, name) values ($1, $2, 'Injected')".into(),
            vec![Box::new(b.id), Box::new(Uuid::now_v7())],
        ),
        (
            "project_members",
            "insert into app.project_members (tenant_id, project_id, user_id) values ($1, $2, $3)"
                .into(),
            vec![Box::new(b.id), Box::new(b.projects[1]), Box::new(b.admin)],
        ),
        (
            "tasks",
            "insert into app.tasks (tenant_id, id, project_id, title) values ($1, $2, $3, 'Injected')"
                .into(),
            vec![Box::new(b.id), Box::new(Uuid::now_v7()), Box::new(b.projects[0])],
        ),
        (
            "audit_logs",
            "insert into app.audit_logs (tenant_id, id, action, resource) values ($1, $2, 'create', 'x')"
                .into(),
            vec![Box::new(b.id), Box::new(Uuid::now_v7())],
        ),
        (
            "api_keys",
            "insert into app.api_keys (tenant_id, id, prefix, key_hash, created_by) values ($1, $2, 'tk_', 'h', $3)"
                .into(),
            vec![Box::new(b.id), Box::new(Uuid::now_v7()), Box::new(b.admin)],
        ),
        (
            "outbox",
            "insert into app.outbox (tenant_id, id, event_type, payload) values ($1, $2, 'x', '{}')"
                .into(),
            vec![Box::new(b.id), Box::new(Uuid::now_v7())],
        ),
        (
            "settings_versions",
            "insert into app.settings_versions (tenant_id, version, settings, previous, change) \
             values ($1, 99, '{}', '{}', 'settings')"
                .into(),
            vec![Box::new(b.id)],
        ),
        (
            "webhooks",
            "insert into app.webhooks (tenant_id, id, url, events, secret_ciphertext, secret_key_id) \
             values ($1, $2, 'https://example.com/', '{task.created}', '\\x00', 'plain')"
                .into(),
            vec![Box::new(b.id), Box::new(Uuid::now_v7())],
        ),
        (
            "usage_events",
            "insert into app.usage_events (tenant_id, id, idempotency_key, metric, quantity, occurred_at) \
             values ($1, $2, 'injected', 'x', 1, now())"
                .into(),
            vec![Box::new(b.id), Box::new(Uuid::now_v7())],
        ),
        (
            "webhook_messages",
            "insert into app.webhook_messages (tenant_id, id, webhook_id, event_type, body) \
             values ($1, $2, $2, 'task.created', '{}')"
                .into(),
            vec![Box::new(b.id), Box::new(Uuid::now_v7())],
        ),
        (
            "webhook_deliveries",
            "insert into app.webhook_deliveries (tenant_id, id, message_id, webhook_id, attempt, status) \
             values ($1, $2, $2, $2, 1, 'failed')"
                .into(),
            vec![Box::new(b.id), Box::new(Uuid::now_v7())],
        ),
        (
            "webhook_rate_windows",
            "insert into app.webhook_rate_windows (tenant_id, window_start) values ($1, now())"
                .into(),
            vec![Box::new(b.id)],
        ),
        (
            "usage_rollups",
            "insert into app.usage_rollups (tenant_id, granularity, period_start, metric, quantity) \
             values ($1, 'day', now(), 'x', 1)"
                .into(),
            vec![Box::new(b.id)],
        ),
        (
            "subscriptions",
            "insert into app.subscriptions (tenant_id, plan, status) values ($1, 'free', 'injected')"
                .into(),
            vec![Box::new(b.id)],
        ),
        (
            "billing_accounts",
            "insert into app.billing_accounts (tenant_id, stripe_customer_id) values ($1, 'cus_x')"
                .into(),
            vec![Box::new(b.id)],
        ),
        (
            "stripe_events",
            "insert into app.stripe_events (tenant_id, event_id, type, created, outcome) \
             values ($1, 'evt_injected', 'invoice.paid', now(), 'applied')"
                .into(),
            vec![Box::new(b.id)],
        ),
        (
            "invoices",
            "insert into app.invoices (tenant_id, id, stripe_invoice_id, currency, amount_due, \
             amount_paid, stripe_created, event_at, object) \
             values ($1, $2, 'in_injected', 'usd', 0, 0, now(), now(), '{}')"
                .into(),
            vec![Box::new(b.id), Box::new(Uuid::now_v7())],
        ),
    ];
    // Tables the app role only reads: any write is refused before RLS is even asked.
    let read_only = [(
        "flag_overrides",
        "insert into app.flag_overrides (tenant_id, flag_key, value) values ($1, 'x', '1')",
    )];
    for (table, sql) in read_only {
        for tenant in [a.id, b.id] {
            let err = exec_as(&mut app, Some(a.id), sql, &[&tenant])
                .await
                .expect_err(table);
            assert_eq!(
                err.as_db_error().map(|d| d.code()),
                Some(&SqlState::INSUFFICIENT_PRIVILEGE),
                "{table}: {err}"
            );
        }
    }
    // A table added to TENANT_TABLES must get its cross-tenant insert case here.
    let covered: std::collections::BTreeSet<&str> = inserts
        .iter()
        .map(|(t, _, _)| *t)
        .chain(read_only.iter().map(|(t, _)| *t))
        .collect();
    let expected: std::collections::BTreeSet<&str> =
        tenantry::db::TENANT_TABLES.iter().copied().collect();
    assert_eq!(
        covered, expected,
        "cross-tenant insert cases do not cover TENANT_TABLES"
    );
    for (table, sql, params) in &inserts {
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref()).collect();
        assert_rls_violation(
            exec_as(&mut app, Some(a.id), sql, &params).await,
            &format!("insert into {table} with B's tenant_id under A"),
        );
        // Without any context nothing can be inserted at all.
        assert_rls_violation(
            exec_as(&mut app, None, sql, &params).await,
            &format!("insert into {table} without context"),
        );
    }

    // UPDATE without a WHERE touches exactly A's rows; aiming at B's rows touches none.
    let updates = [
        ("users", "update app.users set name = name || ' (edited)'"),
        ("projects", "update app.projects set description = 'edited'"),
        (
            "project_members",
            // No stable function over a column (`created_at + interval ..`): Citus refuses it.
            "update app.project_members set created_at = created_at",
        ),
        ("tasks", "update app.tasks set title = title || ' (edited)'"),
    ];
    for (table, sql) in updates {
        let own = rows_of(&su, &format!("app.{table}"), a.id).await as u64;
        assert_eq!(
            exec_as(&mut app, Some(a.id), sql, &[]).await.unwrap(),
            own,
            "{sql}"
        );
        let aimed = format!("{sql} where tenant_id = $1");
        assert_eq!(
            exec_as(&mut app, Some(a.id), &aimed, &[&b.id])
                .await
                .unwrap(),
            0,
            "{aimed}"
        );
    }
    let n = exec_as(
        &mut app,
        Some(a.id),
        "update app.tasks set status = 'done' where id = any($1)",
        &[&b.tasks],
    )
    .await
    .unwrap();
    assert_eq!(n, 0, "update of B's tasks by id under A");

    // UPDATE moving A's row to B is refused by the policies' WITH CHECK.
    for (table, sql) in [
        ("users", "update app.users set tenant_id = $1 where id = $2"),
        ("tasks", "update app.tasks set tenant_id = $1 where id = $2"),
        (
            "projects",
            "update app.projects set tenant_id = $1 where id = $2",
        ),
    ] {
        let id = match table {
            "users" => a.member,
            "tasks" => a.tasks[2],
            _ => a.projects[1],
        };
        assert_move_refused(
            exec_as(&mut app, Some(a.id), sql, &[&b.id, &id]).await,
            &format!("moving a row of {table} to B"),
        );
    }
    assert_move_refused(
        exec_as(
            &mut app,
            Some(a.id),
            "update app.project_members set tenant_id = $1 where project_id = $2",
            &[&b.id, &a.projects[0]],
        )
        .await,
        "moving a project member to B",
    );

    // audit_logs is append-only for the app role: no UPDATE or DELETE at all.
    for sql in [
        "update app.audit_logs set action = 'tampered'",
        "delete from app.audit_logs",
    ] {
        let err = exec_as(&mut app, Some(a.id), sql, &[])
            .await
            .expect_err(sql);
        assert_eq!(
            err.as_db_error().map(|d| d.code()),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {err}"
        );
    }

    // DELETE without a WHERE removes exactly A's rows, children first.
    for table in ["project_members", "tasks", "projects"] {
        let own = rows_of(&su, &format!("app.{table}"), a.id).await as u64;
        assert!(own > 0);
        let aimed = format!("delete from app.{table} where tenant_id = $1");
        assert_eq!(
            exec_as(&mut app, Some(a.id), &aimed, &[&b.id])
                .await
                .unwrap(),
            0,
            "{aimed}"
        );
        let sql = format!("delete from app.{table}");
        assert_eq!(
            exec_as(&mut app, Some(a.id), &sql, &[]).await.unwrap(),
            own,
            "{sql}"
        );
        assert_eq!(rows_of(&su, &format!("app.{table}"), a.id).await, 0);
    }
    let n = exec_as(
        &mut app,
        Some(a.id),
        "delete from app.users where id = $1",
        &[&b.member],
    )
    .await
    .unwrap();
    assert_eq!(n, 0, "delete of B's user by id under A");

    let after: Vec<String> = {
        let mut v = Vec::new();
        for t in app_tables() {
            v.push(snapshot(&su, &t, b.id).await);
        }
        v
    };
    assert_eq!(before, after, "B's rows changed: {:?}", app_tables());
}

#[tokio::test]
async fn a_tenant_schema_table_is_isolated_too() {
    let db = test_db().await;
    let (a, b) = two_tenants(&db).await;
    let su = db.superuser_db().await;
    let mut app = db.app_db().await;
    // RLS, not the schema name, is what isolates a tenant's table: put a row of B in A's
    // schema (as a misrouted write would) and check A still never reaches it.
    let table = format!("{}.events", tenant_schema_name(a.id));
    let b_event = Uuid::now_v7();
    su.execute(
        &format!(
            "insert into {table} (tenant_id, id, event_type, occurred_at) values ($1, $2, 'b-event', now())"
        ),
        &[&b.id, &b_event],
    )
    .await
    .unwrap();
    let b_before = snapshot(&su, &table, b.id).await;
    let own = rows_of(&su, &table, a.id).await;
    assert_eq!(own, 2);

    assert_eq!(visible_as(&mut app, Some(a.id), &table).await, (2, 0));
    assert_eq!(visible_as(&mut app, Some(b.id), &table).await, (1, 0));
    assert_eq!(visible_as(&mut app, None, &table).await, (0, 0));
    let tx = app.transaction().await.unwrap();
    tx.execute("select set_config('app.current_tenant', '', true)", &[])
        .await
        .unwrap();
    let n: i64 = tx
        .query_one(&format!("select count(*) from {table}"), &[])
        .await
        .unwrap()
        .get(0);
    tx.commit().await.unwrap();
    assert_eq!(n, 0);

    assert_rls_violation(
        exec_as(
            &mut app,
            Some(a.id),
            &format!(
                "insert into {table} (tenant_id, id, event_type, occurred_at) values ($1, $2, 'x', now())"
            ),
            &[&b.id, &Uuid::now_v7()],
        )
        .await,
        "insert of a B event under A",
    );
    assert_eq!(
        exec_as(
            &mut app,
            Some(a.id),
            &format!("update {table} set event_type = 'edited'"),
            &[]
        )
        .await
        .unwrap(),
        2
    );
    assert_eq!(
        exec_as(
            &mut app,
            Some(a.id),
            &format!("update {table} set event_type = 'edited' where id = $1"),
            &[&b_event]
        )
        .await
        .unwrap(),
        0
    );
    assert_rls_violation(
        exec_as(
            &mut app,
            Some(a.id),
            &format!("update {table} set tenant_id = $1"),
            &[&b.id],
        )
        .await,
        "moving A's events to B",
    );
    assert_eq!(
        exec_as(&mut app, Some(a.id), &format!("delete from {table}"), &[])
            .await
            .unwrap(),
        2
    );
    assert_eq!(rows_of(&su, &table, a.id).await, 0);
    assert_eq!(snapshot(&su, &table, b.id).await, b_before);
}

#[tokio::test]
async fn cross_tenant_foreign_keys_are_refused_even_when_rls_is_bypassed() {
    let db = test_db().await;
    let (a, b) = two_tenants(&db).await;
    // The superuser bypasses RLS entirely and the admin role has BYPASSRLS: only the composite
    // foreign keys stand between them and a row pointing into another tenant.
    let mut su = db.superuser_db().await;
    let mut admin = db.admin_db().await;
    for (who, client) in [("superuser", &mut su), ("admin", &mut admin)] {
        assert_fk_violation(
            exec_as(
                client,
                None,
                "insert into app.tasks (tenant_id, id, project_id, title) values ($1, $2, $3, 'cross')",
                &[&a.id, &Uuid::now_v7(), &b.projects[0]],
            )
            .await,
            &format!("{who}: task of A in B's project"),
        );
        assert_fk_violation(
            exec_as(
                client,
                None,
                "insert into app.tasks (tenant_id, id, project_id, title, assignee_id) \
                 values ($1, $2, $3, 'cross', $4)",
                &[&a.id, &Uuid::now_v7(), &a.projects[0], &b.member],
            )
            .await,
            &format!("{who}: task of A assigned to B's user"),
        );
        assert_fk_violation(
            exec_as(
                client,
                None,
                "insert into app.project_members (tenant_id, project_id, user_id) values ($1, $2, $3)",
                &[&a.id, &a.projects[1], &b.admin],
            )
            .await,
            &format!("{who}: B's user member of A's project"),
        );
        assert_fk_violation(
            exec_as(
                client,
                None,
                "update app.tasks set project_id = $2 where tenant_id = $1 and id = $3",
                &[&a.id, &b.projects[1], &a.tasks[0]],
            )
            .await,
            &format!("{who}: moving A's task into B's project"),
        );
        // Moving a referenced row to another tenant would strand its children. On Citus
        // `tenant_id` is the distribution column, which no update may change at all.
        let moved = exec_as(
            client,
            None,
            "update app.projects set tenant_id = $2, name = 'moved ' || id \
             where tenant_id = $1 and id = $3",
            &[&a.id, &b.id, &a.projects[0]],
        )
        .await;
        let what = format!("{who}: moving A's project with its tasks to B");
        if citus_workers().is_some() {
            let err = moved.expect_err(&what);
            assert_eq!(
                err.as_db_error().map(|d| d.code()),
                Some(&SqlState::FEATURE_NOT_SUPPORTED),
                "{what}: {err}"
            );
        } else {
            assert_fk_violation(moved, &what);
        }
    }
}

#[tokio::test]
async fn tenant_rows_are_walled_off_and_resolution_hands_back_routing_data_only() {
    let db = test_db().await;
    let (a, b) = two_tenants(&db).await;
    let su = db.superuser_db().await;
    su.execute(
        "update app.tenants set settings = '{\"branding\": {\"name\": \"B secret\"}}' where id = $1",
        &[&b.id],
    )
    .await
    .unwrap();
    let mut app = db.app_db().await;

    // No context: no tenant row at all, however the query is written.
    let n: i64 = app
        .query_one("select count(*) from app.tenants", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // A's context: an unfiltered query returns A's row and nothing of B's.
    let tx = app.transaction().await.unwrap();
    tx.execute(SET_TENANT_SQL, &[&a.id.to_string()])
        .await
        .unwrap();
    let ids: Vec<Uuid> = tx
        .query("select id from app.tenants", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, [a.id]);
    // Nor can it change B's row.
    let changed = tx
        .execute(
            "update app.tenants set settings = '{}' where id = $1",
            &[&b.id],
        )
        .await
        .unwrap();
    assert_eq!(changed, 0);
    tx.commit().await.unwrap();

    // Resolution works before any context, by each key, and returns routing data only.
    let slug_b: String = su
        .query_one("select slug from app.tenants where id = $1", &[&b.id])
        .await
        .unwrap()
        .get(0);
    let by_id = app
        .query("select * from app.resolve_tenant($1, null, null)", &[&b.id])
        .await
        .unwrap();
    let by_slug = app
        .query(
            "select * from app.resolve_tenant(null, $1, null)",
            &[&slug_b],
        )
        .await
        .unwrap();
    for rows in [&by_id, &by_slug] {
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].get::<_, Uuid>("id"), b.id);
        let columns: Vec<&str> = rows[0].columns().iter().map(|c| c.name()).collect();
        assert_eq!(columns, ["id", "slug", "subdomain", "plan", "suspended"]);
    }
    // A deleted tenant does not resolve.
    su.execute(
        "update app.tenants set deleted_at = now() where id = $1",
        &[&b.id],
    )
    .await
    .unwrap();
    let gone = app
        .query("select * from app.resolve_tenant($1, null, null)", &[&b.id])
        .await
        .unwrap();
    assert!(gone.is_empty());
    let listed: Vec<Uuid> = app
        .query("select id from app.live_tenant_plans()", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(listed, [a.id]);

    // Only the app role may call them: not PUBLIC.
    for function in [
        "app.resolve_tenant(uuid, text, text)",
        "app.live_tenant_plans()",
    ] {
        let public: bool = su
            .query_one(
                // A NULL acl is the default: PUBLIC may execute.
                "select p.proacl is null or exists (select 1 from aclexplode(p.proacl) a \
                   where a.grantee = 0 and a.privilege_type = 'EXECUTE') \
                 from pg_proc p where p.oid = $1::text::regprocedure",
                &[&function],
            )
            .await
            .unwrap()
            .get(0);
        assert!(!public, "{function} is executable by PUBLIC");
    }
}
