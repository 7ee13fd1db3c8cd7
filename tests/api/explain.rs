//! The tenant-scoped queries of the request path use indexes led by tenant_id once the shared
//! tables hold many tenants: 1,000 tenants x 5 users x 3 projects x 20 tasks (60,000 tasks),
//! 20 audit rows each, loaded with generate_series and analysed, then EXPLAINed as the app role
//! under one tenant's context.

use serde_json::Value;
use tenantry::db::tenant_tx::SET_TENANT_SQL;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::helpers::test_db;

const LOAD: &str = "
insert into app.tenants (id, name, slug, subdomain, plan)
select gen_random_uuid(), 'Bulk ' || g, 'bulk-' || g, 'bulk-' || g, 'free'
from generate_series(1, 1000) g;

insert into app.users (tenant_id, id, email, name, role, created_at)
select t.id, md5(t.id::text || 'u' || u)::uuid, 'user' || u || '@' || t.slug || '.example.com',
       'User ' || u, case when u = 1 then 'admin' else 'member' end, now() - make_interval(days => u)
from app.tenants t cross join generate_series(1, 5) u;

insert into app.projects (tenant_id, id, name, created_at)
select t.id, md5(t.id::text || 'p' || p)::uuid, 'Project ' || p, now() - make_interval(days => p)
from app.tenants t cross join generate_series(1, 3) p;

insert into app.project_members (tenant_id, project_id, user_id)
select p.tenant_id, p.id, md5(p.tenant_id::text || 'u' || u)::uuid
from app.projects p cross join generate_series(1, 5) u;

insert into app.tasks (tenant_id, id, project_id, title, status, assignee_id, created_at)
select p.tenant_id, gen_random_uuid(), p.id, 'Task ' || n, (array['todo', 'in_progress', 'done'])[1 + n % 3],
       md5(p.tenant_id::text || 'u' || (1 + n % 5))::uuid, now() - make_interval(hours => n)
from app.projects p cross join generate_series(1, 20) n;

insert into app.audit_logs (tenant_id, id, user_id, action, resource, resource_id, created_at)
select t.id, gen_random_uuid(), md5(t.id::text || 'u1')::uuid, 'update', 'task', n::text,
       now() - make_interval(mins => n)
from app.tenants t cross join generate_series(1, 20) n;

analyze app.tenants, app.users, app.projects, app.project_members, app.tasks, app.audit_logs;
";

/// Every scan of `table` in the plan, as (node type, index names used).
fn scans_of(node: &Value, table: &str, out: &mut Vec<(String, Vec<String>)>) {
    let node_type = node["Node Type"].as_str().unwrap_or_default().to_string();
    if node["Relation Name"] == table {
        let mut indexes = Vec::new();
        if let Some(name) = node["Index Name"].as_str() {
            indexes.push(name.to_string());
        }
        if node_type == "Bitmap Heap Scan" {
            bitmap_indexes(node, &mut indexes);
        }
        out.push((node_type, indexes));
    }
    if let Some(children) = node["Plans"].as_array() {
        for child in children {
            scans_of(child, table, out);
        }
    }
}

fn bitmap_indexes(node: &Value, out: &mut Vec<String>) {
    if let Some(children) = node["Plans"].as_array() {
        for child in children {
            if child["Node Type"] == "Bitmap Index Scan" {
                out.push(child["Index Name"].as_str().unwrap_or_default().to_string());
            }
            bitmap_indexes(child, out);
        }
    }
}

async fn leads_with_tenant_id(db: &Client, index: &str) -> bool {
    db.query_one(
        "select i.indkey[0] = (select attnum from pg_attribute \
                               where attrelid = i.indrelid and attname = 'tenant_id') \
         from pg_index i join pg_class c on c.oid = i.indexrelid \
         join pg_namespace n on n.oid = c.relnamespace \
         where n.nspname = 'app' and c.relname = $1",
        &[&index],
    )
    .await
    .unwrap()
    .get::<_, Option<bool>>(0)
    .unwrap_or(false)
}

#[tokio::test]
async fn tenant_queries_use_tenant_leading_indexes_at_a_thousand_tenants() {
    // The plans asserted are plain PostgreSQL's: on Citus the coordinator's plan is a
    // distributed scan and each shard is planned on its worker.
    if crate::helpers::citus_workers().is_some() {
        eprintln!("skipped on Citus: asserts plain PostgreSQL's plans");
        return;
    }
    let db = test_db().await;
    let su = db.superuser_db().await;
    su.batch_execute(LOAD).await.unwrap();
    let total: i64 = su
        .query_one("select count(*) from app.tasks", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 60_000);

    let tenant: Uuid = su
        .query_one("select id from app.tenants where slug = 'bulk-500'", &[])
        .await
        .unwrap()
        .get(0);
    let row = su
        .query_one(
            "select p.id, t.id from app.projects p join app.tasks t on t.tenant_id = p.tenant_id and t.project_id = p.id \
             where p.tenant_id = $1 limit 1",
            &[&tenant],
        )
        .await
        .unwrap();
    let (project, task): (Uuid, Uuid) = (row.get(0), row.get(1));
    let email = "USER3@bulk-500.example.com".to_string();
    // A page boundary inside the tenant's rows, as a cursor carries it (page::PageRequest).
    let after: (chrono::DateTime<chrono::Utc>, Uuid) = {
        let r = su
            .query_one(
                "select created_at, id from app.tasks where tenant_id = $1 order by created_at, id offset 10 limit 1",
                &[&tenant],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    let later: (chrono::DateTime<chrono::Utc>, Uuid) =
        (after.0 + chrono::Duration::days(365), Uuid::max());
    let earlier: (chrono::DateTime<chrono::Utc>, Uuid) =
        (after.0 - chrono::Duration::days(365), Uuid::nil());

    let queries: Vec<(&str, &str, Vec<&(dyn ToSql + Sync)>)> = vec![
        (
            "tasks",
            "select * from app.tasks where tenant_id = $1 and id = $2 and deleted_at is null",
            vec![&tenant, &task],
        ),
        (
            "tasks",
            "select * from app.tasks where tenant_id = $1 and project_id = $2 and deleted_at is null \
             order by created_at limit 50",
            vec![&tenant, &project],
        ),
        (
            "tasks",
            "select * from app.tasks where tenant_id = $1 and deleted_at is null \
             order by created_at desc limit 50",
            vec![&tenant],
        ),
        (
            "users",
            "select * from app.users where tenant_id = $1 and lower(email) = lower($2) and deleted_at is null",
            vec![&tenant, &email],
        ),
        (
            "audit_logs",
            "select * from app.audit_logs where tenant_id = $1 order by created_at desc limit 50",
            vec![&tenant],
        ),
        (
            "projects",
            "select * from app.projects where tenant_id = $1 and deleted_at is null order by created_at limit 50",
            vec![&tenant],
        ),
        // The list endpoints' keyset pages past a cursor, as page::PageRequest::fetch sends them.
        (
            "tasks",
            "select * from app.tasks where tenant_id = $1 and deleted_at is null \
             and (created_at, id) > ($2, $3) order by created_at, id limit $4",
            vec![&tenant, &after.0, &after.1, &51i64],
        ),
        (
            "tasks",
            "select * from app.tasks where tenant_id = $1 and deleted_at is null and project_id = $2 \
             and (created_at, id) > ($3, $4) order by created_at, id limit $5",
            vec![&tenant, &project, &earlier.0, &earlier.1, &51i64],
        ),
        (
            "users",
            "select * from app.users where tenant_id = $1 and deleted_at is null \
             and (created_at, id) > ($2, $3) order by created_at, id limit $4",
            vec![&tenant, &earlier.0, &earlier.1, &51i64],
        ),
        (
            "project_members",
            "select * from app.project_members where tenant_id = $1 and project_id = $2 and deleted_at is null \
             and (created_at, user_id) > ($3, $4) order by created_at, user_id limit $5",
            vec![&tenant, &project, &earlier.0, &earlier.1, &51i64],
        ),
        (
            "audit_logs",
            "select * from app.audit_logs where tenant_id = $1 and deleted_at is null \
             and (created_at, id) < ($2, $3) order by created_at desc, id desc limit $4",
            vec![&tenant, &later.0, &later.1, &51i64],
        ),
    ];

    let mut app = db.app_db().await;
    let mut failures = Vec::new();
    for (table, sql, params) in &queries {
        let tx = app.transaction().await.unwrap();
        tx.execute(SET_TENANT_SQL, &[&tenant.to_string()])
            .await
            .unwrap();
        // The query does return the tenant's rows: the plan is for real work, not an empty set.
        let rows = tx.query(*sql, params).await.unwrap();
        assert!(!rows.is_empty(), "{sql} returned nothing");
        let plan: Value = tx
            .query_one(&format!("explain (format json) {sql}"), params)
            .await
            .unwrap()
            .get(0);
        tx.commit().await.unwrap();
        let mut scans = Vec::new();
        scans_of(&plan[0]["Plan"], table, &mut scans);
        if scans.is_empty() {
            failures.push(format!("{sql}: no scan of {table} in {plan}"));
            continue;
        }
        for (node_type, indexes) in &scans {
            if indexes.is_empty() {
                failures.push(format!("{sql}: {node_type} on {table} uses no index"));
            }
            for index in indexes {
                if !leads_with_tenant_id(&su, index).await {
                    failures.push(format!(
                        "{sql}: {node_type} on {table} uses {index}, not led by tenant_id"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
