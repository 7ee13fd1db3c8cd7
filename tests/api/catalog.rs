//! The data rules of DESIGN.md, read back from pg_catalog of a migrated database that holds a
//! provisioned tenant schema.
//!
//! This test is data-driven on purpose: it does not list the tables it checks. Every table of
//! any non-system schema (the shared `app` schema and every `t_*` tenant schema) that has a
//! `tenant_id` column is held to the rules, so a table added carelessly by a later migration or
//! template version breaks it without anyone having to remember to extend this file.
//! `careless_objects_are_reported` proves the checker does catch each broken rule.

use std::collections::BTreeSet;

use tenantry::config::RoleNames;
use tenantry::db::TENANT_TABLES;
use tokio_postgres::Client;

use crate::helpers::{provision_tenant, test_db};

const POLICY_EXPR: &str =
    "tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid)";
/// The policies' form on Citus, which refuses sub-selects in the policies of distributed
/// tables (docs/scale-out.md): same meaning, the expression evaluated per row.
const CITUS_POLICY_EXPR: &str =
    "tenant_id = nullif(current_setting('app.current_tenant', true), '')::uuid";

fn policy_expr() -> &'static str {
    if crate::helpers::citus_workers().is_some() {
        CITUS_POLICY_EXPR
    } else {
        POLICY_EXPR
    }
}

/// The rule as PostgreSQL renders it (`pg_get_expr`), so a policy written with other spacing or
/// casts still compares equal.
async fn canonical_policy_expr(db: &Client) -> String {
    db.batch_execute(&format!(
        "CREATE TEMP TABLE IF NOT EXISTS rls_probe (tenant_id uuid);
         DROP POLICY IF EXISTS probe ON rls_probe;
         CREATE POLICY probe ON rls_probe USING ({});",
        policy_expr()
    ))
    .await
    .unwrap();
    db.query_one(
        "select pg_get_expr(polqual, polrelid) from pg_policy \
         where polrelid = 'pg_temp.rls_probe'::regclass and polname = 'probe'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// Every broken rule, one line each. Empty means the catalog follows DESIGN.md.
pub async fn catalog_violations(db: &Client, roles: &RoleNames) -> Vec<String> {
    let mut v = Vec::new();
    let canonical = canonical_policy_expr(db).await;

    // Relations holding a tenant_id, in every schema but PostgreSQL's own (pg_temp included).
    let tables = db
        .query(
            "select c.oid, n.nspname::text, c.relname::text, c.relkind::text, c.relrowsecurity, \
                    c.relforcerowsecurity, a.attnum, a.attnotnull, format_type(a.atttypid, a.atttypmod) \
             from pg_class c \
             join pg_namespace n on n.oid = c.relnamespace \
             join pg_attribute a on a.attrelid = c.oid and a.attname = 'tenant_id' \
                  and a.attnum > 0 and not a.attisdropped \
             where c.relkind in ('r', 'p', 'm', 'f') \
               and n.nspname <> 'information_schema' and n.nspname not like 'pg\\_%' \
             order by 2, 3",
            &[],
        )
        .await
        .unwrap();
    assert!(
        !tables.is_empty(),
        "no table with tenant_id found: wrong database?"
    );
    let mut app_tenant_tables = BTreeSet::new();
    let mut fk_edges: Vec<(String, String)> = Vec::new();

    for t in &tables {
        let oid: u32 = t.get(0);
        let schema: String = t.get(1);
        let name: String = t.get(2);
        let kind: String = t.get(3);
        let rls: bool = t.get(4);
        let force: bool = t.get(5);
        let tenant_attnum: i16 = t.get(6);
        let not_null: bool = t.get(7);
        let ty: String = t.get(8);
        let q = format!("{schema}.{name}");
        if schema == "app" && (kind == "r" || kind == "p") {
            app_tenant_tables.insert(name.clone());
        }
        if kind == "m" || kind == "f" {
            v.push(format!(
                "{q}: a {} holds tenant_id but cannot be guarded by row level security",
                if kind == "m" {
                    "materialized view"
                } else {
                    "foreign table"
                }
            ));
            continue;
        }

        if !rls {
            v.push(format!("{q}: row level security is not enabled"));
        }
        if !force {
            v.push(format!("{q}: row level security is not forced"));
        }
        if !not_null {
            v.push(format!("{q}: tenant_id is nullable"));
        }
        if ty != "uuid" {
            v.push(format!("{q}: tenant_id is {ty}, not uuid"));
        }

        // Policies. Permissive policies are OR-ed together, so every one of them must be the
        // tenant rule; one `USING (true)` beside a correct policy opens the table.
        let policies = db
            .query(
                "select polname::text, polcmd::text, polpermissive, \
                        (0::oid = any(polroles) or \
                         (select oid from pg_roles where rolname = $2) = any(polroles)), \
                        pg_get_expr(polqual, polrelid), pg_get_expr(polwithcheck, polrelid) \
                 from pg_policy where polrelid = $1",
                &[&oid, &roles.app],
            )
            .await
            .unwrap();
        for (cmd, label) in [
            ("r", "SELECT"),
            ("a", "INSERT"),
            ("w", "UPDATE"),
            ("d", "DELETE"),
        ] {
            let covered = policies.iter().any(|p| {
                let pcmd: String = p.get(1);
                let permissive: bool = p.get(2);
                let applies: bool = p.get(3);
                permissive && applies && (pcmd == cmd || pcmd == "*")
            });
            if !covered {
                v.push(format!("{q}: no policy for {label}"));
            }
        }
        for p in &policies {
            let pname: String = p.get(0);
            let pcmd: String = p.get(1);
            let permissive: bool = p.get(2);
            let applies_to_app: bool = p.get(3);
            let qual: Option<String> = p.get(4);
            let check: Option<String> = p.get(5);
            if !permissive {
                continue; // restrictive policies only narrow what the permissive ones allow
            }
            // A policy granted only to another role (the owner, for the outbox claim function)
            // cannot open rows to the app role; the app role is a member of no role (checked
            // below), so it cannot borrow one.
            if !applies_to_app {
                continue;
            }
            // USING filters the rows SELECT, UPDATE and DELETE see; WITH CHECK (or USING when
            // it is absent) filters the rows INSERT and UPDATE write.
            if matches!(pcmd.as_str(), "r" | "w" | "d" | "*") && qual.as_deref() != Some(&canonical)
            {
                v.push(format!(
                    "{q}: permissive policy {pname} USING {qual:?} is not the tenant rule"
                ));
            }
            if matches!(pcmd.as_str(), "a" | "w" | "*")
                && check.as_deref().or(qual.as_deref()) != Some(&canonical)
            {
                v.push(format!(
                    "{q}: permissive policy {pname} WITH CHECK {check:?} is not the tenant rule"
                ));
            }
        }

        // Keys and indexes: tenant_id leads every one of them.
        let indexes = db
            .query(
                "select ic.relname::text, i.indisprimary, i.indisunique, i.indkey[0] \
                 from pg_index i join pg_class ic on ic.oid = i.indexrelid \
                 where i.indrelid = $1 order by 1",
                &[&oid],
            )
            .await
            .unwrap();
        if !indexes.iter().any(|i| i.get::<_, bool>(1)) {
            v.push(format!("{q}: has no primary key"));
        }
        for i in &indexes {
            let iname: String = i.get(0);
            let primary: bool = i.get(1);
            let unique: bool = i.get(2);
            let first: i16 = i.get(3);
            if first != tenant_attnum {
                let what = if primary {
                    "primary key"
                } else if unique {
                    "unique index"
                } else {
                    "index"
                };
                v.push(format!("{q}: {what} {iname} does not lead with tenant_id"));
            }
        }

        // Foreign keys: tenant_id is part of the key and points at the referenced row's own
        // tenant (its tenant_id, or app.tenants.id), so no row can point into another tenant.
        let fks = db
            .query(
                "select con.conname::text, con.confrelid::regclass::text, \
                        (select a.attname::text from pg_attribute a \
                          where a.attrelid = con.confrelid \
                            and a.attnum = con.confkey[array_position(con.conkey, $2::int2)]) \
                 from pg_constraint con where con.contype = 'f' and con.conrelid = $1 order by 1",
                &[&oid, &tenant_attnum],
            )
            .await
            .unwrap();
        for fk in &fks {
            let cname: String = fk.get(0);
            let target: String = fk.get(1);
            let target_col: Option<String> = fk.get(2);
            match target_col.as_deref() {
                None => v.push(format!(
                    "{q}: foreign key {cname} to {target} does not include tenant_id"
                )),
                Some("tenant_id") => {
                    if schema == "app" {
                        if let Some(t) = target.strip_prefix("app.") {
                            fk_edges.push((name.clone(), t.to_string()));
                        }
                    }
                }
                Some("id") if target == "app.tenants" => {}
                Some(other) => v.push(format!(
                    "{q}: foreign key {cname} maps tenant_id to {target}.{other}"
                )),
            }
        }

        if schema == "app" {
            let has_deleted_at = db
                .query_opt(
                    "select 1 from pg_attribute where attrelid = $1 and attname = 'deleted_at' \
                     and not attisdropped and atttypid = 'timestamptz'::regtype",
                    &[&oid],
                )
                .await
                .unwrap()
                .is_some();
            if !has_deleted_at {
                v.push(format!("{q}: lacks deleted_at timestamptz (soft delete)"));
            }
        }
    }

    // The list the lifecycle code iterates (soft delete, restore, purge) is the catalog's.
    let listed: BTreeSet<String> = TENANT_TABLES.iter().map(|t| t.to_string()).collect();
    if listed.len() != TENANT_TABLES.len() {
        v.push("db::TENANT_TABLES lists a table twice".into());
    }
    if listed != app_tenant_tables {
        v.push(format!(
            "db::TENANT_TABLES is {listed:?} but the app tables with tenant_id are {app_tenant_tables:?}"
        ));
    }
    // Purge deletes in the reverse order of TENANT_TABLES, so a referenced table is listed
    // before the tables pointing at it.
    for (from, to) in &fk_edges {
        let pos = |t: &str| TENANT_TABLES.iter().position(|x| *x == t);
        if from != to {
            if let (Some(f), Some(t)) = (pos(from), pos(to)) {
                if t > f {
                    v.push(format!(
                        "db::TENANT_TABLES lists {to} after {from}, which references it"
                    ));
                }
            }
        }
    }

    role_violations(db, roles, &mut v).await;
    object_violations(db, &mut v).await;
    v
}

async fn role_violations(db: &Client, roles: &RoleNames, v: &mut Vec<String>) {
    let app = &roles.app;
    let row = db
        .query_one(
            "select rolsuper, rolbypassrls, rolcreaterole, rolcreatedb from pg_roles where rolname = $1",
            &[app],
        )
        .await
        .unwrap();
    for (i, attr) in ["SUPERUSER", "BYPASSRLS", "CREATEROLE", "CREATEDB"]
        .iter()
        .enumerate()
    {
        if row.get::<_, bool>(i) {
            v.push(format!("app role {app} has {attr}"));
        }
    }
    // A member of another role could SET ROLE to it (the owner may disable RLS).
    for r in db
        .query(
            "select r.rolname::text from pg_auth_members m join pg_roles r on r.oid = m.roleid \
             where m.member = (select oid from pg_roles where rolname = $1)",
            &[app],
        )
        .await
        .unwrap()
    {
        v.push(format!(
            "app role {app} is a member of {}",
            r.get::<_, String>(0)
        ));
    }
    for r in db
        .query(
            "select pg_describe_object(classid, objid, objsubid) from pg_shdepend \
             where refclassid = 'pg_authid'::regclass and deptype = 'o' \
               and refobjid = (select oid from pg_roles where rolname = $1) \
               and dbid in (0, (select oid from pg_database where datname = current_database()))",
            &[app],
        )
        .await
        .unwrap()
    {
        v.push(format!("app role {app} owns {}", r.get::<_, String>(0)));
    }
    for r in db
        .query(
            "select n.nspname::text || '.' || c.relname::text, p.privilege \
             from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             cross join unnest(array['TRUNCATE', 'REFERENCES', 'TRIGGER']) as p(privilege) \
             where c.relkind in ('r', 'p', 'v', 'm', 'f') and has_table_privilege($1, c.oid, p.privilege) \
             union all \
             select n.nspname::text || '.' || c.relname::text, 'REFERENCES (column)' \
             from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             where c.relkind in ('r', 'p', 'v', 'm', 'f') \
               and not has_table_privilege($1, c.oid, 'REFERENCES') \
               and has_any_column_privilege($1, c.oid, 'REFERENCES') \
             order by 1, 2",
            &[app],
        )
        .await
        .unwrap()
    {
        v.push(format!(
            "app role {app} has {} on {}",
            r.get::<_, String>(1),
            r.get::<_, String>(0)
        ));
    }
    // CREATE on a schema would let it create (and so own) objects.
    for r in db
        .query(
            "select nspname::text from pg_namespace \
             where has_schema_privilege($1, oid, 'CREATE') \
               and nspname <> 'information_schema' and nspname not like 'pg\\_%'",
            &[app],
        )
        .await
        .unwrap()
    {
        v.push(format!(
            "app role {app} may CREATE in schema {}",
            r.get::<_, String>(0)
        ));
    }
    // audit_logs is append-only for the request path.
    for (privilege, expected) in [
        ("SELECT", true),
        ("INSERT", true),
        ("UPDATE", false),
        ("DELETE", false),
        ("TRUNCATE", false),
        ("REFERENCES", false),
        ("TRIGGER", false),
    ] {
        let has: bool = db
            .query_one(
                "select has_table_privilege($1, 'app.audit_logs', $2)",
                &[app, &privilege],
            )
            .await
            .unwrap()
            .get(0);
        if has != expected {
            v.push(format!(
                "app role {app} {} {privilege} on app.audit_logs",
                if has { "has" } else { "lacks" }
            ));
        }
    }
    let column_update: bool = db
        .query_one(
            "select has_any_column_privilege($1, 'app.audit_logs', 'UPDATE')",
            &[app],
        )
        .await
        .unwrap()
        .get(0);
    if column_update {
        v.push(format!(
            "app role {app} may UPDATE columns of app.audit_logs"
        ));
    }

    let admin = db
        .query_one(
            "select rolbypassrls, rolsuper from pg_roles where rolname = $1",
            &[&roles.admin],
        )
        .await
        .unwrap();
    if !admin.get::<_, bool>(0) {
        v.push(format!("admin role {} lacks BYPASSRLS", roles.admin));
    }
    if admin.get::<_, bool>(1) {
        v.push(format!("admin role {} is a superuser", roles.admin));
    }
    // The audit trails are append-only for the operators too; a tenant's delete and restore
    // may only mark and unmark its audit rows.
    for (table, privilege, expected) in [
        ("app.audit_logs", "INSERT", true),
        ("app.audit_logs", "UPDATE", false),
        ("app.audit_logs", "DELETE", false),
        ("app.audit_logs", "TRUNCATE", false),
        ("app.platform_audit_logs", "INSERT", true),
        ("app.platform_audit_logs", "UPDATE", false),
        ("app.platform_audit_logs", "DELETE", false),
        ("app.platform_audit_logs", "TRUNCATE", false),
    ] {
        let has: bool = db
            .query_one(
                "select has_table_privilege($1, $2, $3)",
                &[&roles.admin, &table, &privilege],
            )
            .await
            .unwrap()
            .get(0);
        if has != expected {
            v.push(format!(
                "admin role {} {} {privilege} on {table}",
                roles.admin,
                if has { "has" } else { "lacks" }
            ));
        }
    }
    for (table, column, expected) in [
        ("app.audit_logs", "deleted_at", true),
        ("app.audit_logs", "changes", false),
        ("app.audit_logs", "actor", false),
        ("app.platform_audit_logs", "details", false),
    ] {
        let has: bool = db
            .query_one(
                "select has_column_privilege($1, $2, $3, 'UPDATE')",
                &[&roles.admin, &table, &column],
            )
            .await
            .unwrap()
            .get(0);
        if has != expected {
            v.push(format!(
                "admin role {} {} UPDATE of {table}.{column}",
                roles.admin,
                if has { "has" } else { "lacks" }
            ));
        }
    }
}

async fn object_violations(db: &Client, v: &mut Vec<String>) {
    // A view runs with its owner's rights unless security_invoker is set: the owner is subject
    // to FORCE but a view owned by a BYPASSRLS or superuser role would leak every tenant.
    // Views of an extension (Citus's `citus_tables`, ...) are the extension's, not ours.
    for r in db
        .query(
            "select n.nspname::text || '.' || c.relname::text \
             from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             where c.relkind = 'v' and n.nspname <> 'information_schema' and n.nspname not like 'pg\\_%' \
               and not exists (select 1 from unnest(coalesce(c.reloptions, '{}')) o \
                               where lower(o) in ('security_invoker=true', 'security_invoker=on', \
                                                  'security_invoker=1', 'security_invoker=yes')) \
               and not exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass \
                               and d.objid = c.oid and d.deptype = 'e') \
             order by 1",
            &[],
        )
        .await
        .unwrap()
    {
        v.push(format!(
            "view {} lacks security_invoker",
            r.get::<_, String>(0)
        ));
    }
    // A materialized view stores rows outside row level security, whatever its columns.
    for r in db
        .query(
            "select n.nspname::text || '.' || c.relname::text \
             from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             where c.relkind = 'm' and n.nspname <> 'information_schema' and n.nspname not like 'pg\\_%' \
             order by 1",
            &[],
        )
        .await
        .unwrap()
    {
        v.push(format!(
            "materialized view {} bypasses row level security",
            r.get::<_, String>(0)
        ));
    }
    for r in db
        .query(
            "select p.oid::regprocedure::text \
             from pg_proc p join pg_namespace n on n.oid = p.pronamespace \
             where p.prosecdef and n.nspname <> 'information_schema' and n.nspname not like 'pg\\_%' \
               and not exists (select 1 from unnest(coalesce(p.proconfig, '{}')) c \
                               where c like 'search\\_path=%') \
             order by 1",
            &[],
        )
        .await
        .unwrap()
    {
        v.push(format!(
            "SECURITY DEFINER function {} has no pinned search_path",
            r.get::<_, String>(0)
        ));
    }
}

#[tokio::test]
async fn catalog_follows_the_data_rules() {
    let db = test_db().await;
    let pools = db.pools();
    let tenant = provision_tenant(&db.config, &pools, "catalog").await;
    let client = db.superuser_db().await;
    let schema = tenantry::db::tenant_schema_name(tenant.tenant.id);
    // The tenant schema is part of what is checked, not only the shared one.
    let checked: i64 = client
        .query_one(
            "select count(*) from pg_attribute a join pg_class c on c.oid = a.attrelid \
             join pg_namespace n on n.oid = c.relnamespace \
             where n.nspname = $1 and a.attname = 'tenant_id'",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        checked > 0,
        "the tenant schema {schema} has no tenant table"
    );

    let violations = catalog_violations(&client, &db.config.roles).await;
    assert!(
        violations.is_empty(),
        "the catalog breaks the data rules:\n  {}",
        violations.join("\n  ")
    );
}

/// The checker itself: objects added carelessly are each reported.
#[tokio::test]
async fn careless_objects_are_reported() {
    let db = test_db().await;
    let client = db.superuser_db().await;
    let app = &db.config.roles.app;
    // One statement at a time: Citus forwards a query string of several statements whole to
    // its workers once one of them concerns a distributed object, and they refuse it.
    let careless = format!(
            "CREATE TABLE app.careless (id uuid PRIMARY KEY, tenant_id uuid, plan text, note text);
             CREATE INDEX careless_note_idx ON app.careless (note);
             ALTER TABLE app.careless ADD CONSTRAINT careless_plan_fkey
                 FOREIGN KEY (plan) REFERENCES app.plans (name);
             GRANT SELECT, TRUNCATE, REFERENCES ON app.careless TO {app};

             CREATE TABLE app.leaky (tenant_id uuid NOT NULL, id uuid NOT NULL,
                 deleted_at timestamptz, PRIMARY KEY (tenant_id, id));
             ALTER TABLE app.leaky ENABLE ROW LEVEL SECURITY;
             ALTER TABLE app.leaky FORCE ROW LEVEL SECURITY;
             CREATE POLICY ok_select ON app.leaky FOR SELECT USING ({expr});
             CREATE POLICY ok_insert ON app.leaky FOR INSERT WITH CHECK ({expr});
             CREATE POLICY ok_update ON app.leaky FOR UPDATE USING ({expr});
             CREATE POLICY open_select ON app.leaky FOR SELECT USING (true);

             CREATE VIEW app.careless_view AS SELECT * FROM app.users;
             CREATE FUNCTION app.careless_fn() RETURNS int SECURITY DEFINER LANGUAGE sql AS 'select 1';
             CREATE TABLE app.owned_by_app (x int);
             ALTER TABLE app.owned_by_app OWNER TO {app};",
            expr = policy_expr()
        );
    for statement in careless.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        client.batch_execute(statement).await.unwrap();
    }

    let violations = catalog_violations(&client, &db.config.roles).await;
    let expected = [
        "app.careless: row level security is not enabled",
        "app.careless: row level security is not forced",
        "app.careless: tenant_id is nullable",
        "app.careless: no policy for SELECT",
        "app.careless: no policy for DELETE",
        "app.careless: primary key careless_pkey does not lead with tenant_id",
        "app.careless: index careless_note_idx does not lead with tenant_id",
        "app.careless: foreign key careless_plan_fkey to app.plans does not include tenant_id",
        "app.careless: lacks deleted_at",
        "app.leaky: no policy for DELETE",
        "app.leaky: permissive policy open_select USING",
        "db::TENANT_TABLES is",
        "has TRUNCATE on app.careless",
        "has REFERENCES on app.careless",
        "owns table app.owned_by_app",
        "view app.careless_view lacks security_invoker",
        "SECURITY DEFINER function app.careless_fn() has no pinned search_path",
    ];
    let missing: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|e| !violations.iter().any(|v| v.contains(e)))
        .collect();
    assert!(
        missing.is_empty(),
        "not reported: {missing:#?}\nreported: {violations:#?}"
    );
    // The correct policies of app.leaky are not reported, only the open one.
    assert!(
        !violations
            .iter()
            .any(|v| v.contains("ok_select") || v.contains("ok_update")),
        "{violations:#?}"
    );
}
