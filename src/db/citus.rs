//! The Citus deployment mode (`tenantry migrate --citus`, docs/scale-out.md). Everything Citus
//! needs beyond plain PostgreSQL is done here, as steps of its own, so the migration files
//! (and their checksums) stay what plain PostgreSQL runs:
//!
//! - the shared migrations run one statement at a time (Citus refuses some DDL, `CREATE INDEX`
//!   on a distributed table among it, inside a query string of several statements);
//! - the tables of `app` that carry `tenant_id` are distributed by it, colocated; the others
//!   (`plans`, `tenants`, `platform_audit_logs`, flag definitions, plan prices) become
//!   reference tables, copied to every node. Their foreign keys are dropped first and added
//!   again after, or Citus would turn the whole graph of tables into local tables;
//! - policies take the plain form `tenant_id = nullif(current_setting(..), '')::uuid`: Citus
//!   refuses sub-selects in the policies of distributed tables (same meaning, fail closed);
//! - the tenant context reaches the workers through `SET LOCAL` (see `tenant_tx`), which
//!   `citus.propagate_set_commands = 'local'` on the database makes Citus forward;
//! - each tenant schema becomes a distributed schema (schema-based sharding: all its tables on
//!   one node, placed by Citus), at the end of its provisioning transaction.
//!
//! Every step looks at the catalog first, so a run that was interrupted resumes and a second
//! run changes nothing.

use std::sync::Arc;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio_postgres::{Client, GenericClient};
use uuid::Uuid;

use super::roles::quote_ident;
use super::template::shared_runner;
use super::{tenant_schema_name, DbError};
use crate::config::RoleNames;

pub use super::pool::IS_CITUS_SQL;

/// Whether the database behind `client` has the Citus extension.
pub async fn is_citus(client: &impl GenericClient) -> Result<bool, DbError> {
    Ok(client.query_one(IS_CITUS_SQL, &[]).await?.get(0))
}

/// What the login (superuser) connection sets up before the owner's migrations, on Citus:
/// - the owner role may log in: Citus opens its connections to the workers as the current
///   role, which is the owner while DDL runs (`SET ROLE`); workers must accept it (trust on a
///   private network, a password in `pg_dist_authinfo`, or a `.pgpass`);
/// - `citus.propagate_set_commands = 'local'` for every session of this database, so that the
///   tenant context (`SET LOCAL`) reaches the workers;
/// - the app role skips Citus's permission check on its shard locks (below).
pub async fn prepare_database(login: &Client, roles: &RoleNames) -> Result<(), DbError> {
    let row = login
        .query_one(
            "select rolsuper, current_database() from pg_roles where rolname = current_user",
            &[],
        )
        .await?;
    let is_superuser: bool = row.get(0);
    let database: String = row.get(1);
    if !is_superuser {
        tracing::info!("DATABASE_URL is not a superuser: the Citus settings are expected already");
        return Ok(());
    }
    // Only when needed: roles are shared by every database of the cluster, and two databases
    // migrated at once would otherwise update the same role row ("tuple concurrently
    // updated").
    let can_login: bool = login
        .query_one(
            "select coalesce((select rolcanlogin from pg_roles where rolname = $1), false)",
            &[&roles.owner],
        )
        .await?
        .get(0);
    if !can_login {
        login
            .batch_execute(&format!("ALTER ROLE {} LOGIN", roles.owner))
            .await?;
    }
    login
        .batch_execute(&format!(
            "ALTER DATABASE {} SET citus.propagate_set_commands = 'local'",
            quote_ident(&database)
        ))
        .await?;
    // A write to a reference table that references another (the app role's update of its
    // tenant's row in `tenants`, which references `plans`) makes Citus lock the referenced
    // table's shard on the first worker through `lock_shard_resources`, which demands a write
    // privilege on that table: the app role may only read `plans`. The check only keeps other
    // roles from blocking writes with those locks; granting the app role a write privilege on
    // `plans` would widen what it may change instead. Citus propagates the setting to the
    // workers (and to nodes added later) with the role.
    login
        .batch_execute(&format!(
            "ALTER ROLE {} IN DATABASE {} SET citus.skip_advisory_lock_permission_checks = on",
            roles.app,
            quote_ident(&database)
        ))
        .await?;
    // The platform's operations (the admin role) read across tenants, a statement over every
    // shard that Citus runs over several connections per node, then write a reference table
    // in the same transaction (a flag checked against every tenant's overrides, then written),
    // which Citus refuses after such a parallel statement. Sequential mode runs them over one
    // connection per node; they are rare and small beside the tenants' traffic.
    login
        .batch_execute(&format!(
            "ALTER ROLE {} IN DATABASE {} SET citus.multi_shard_modify_mode = 'sequential'",
            roles.admin,
            quote_ident(&database)
        ))
        .await?;
    // Citus creates a role on the workers when an object that needs it is distributed, as the
    // current role: the owner, during provisioning, which may not give the admin role its
    // BYPASSRLS. The superuser has Citus create the three roles now, through a throwaway
    // table granted to them.
    login
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS tenantry_citus_roles CASCADE; \
             CREATE SCHEMA tenantry_citus_roles; \
             CREATE TABLE tenantry_citus_roles.r (x int); \
             GRANT SELECT ON tenantry_citus_roles.r TO {}, {}, {}",
            roles.owner, roles.app, roles.admin
        ))
        .await?;
    login
        .batch_execute("SELECT citus_schema_distribute('tenantry_citus_roles')")
        .await?;
    login
        .batch_execute("DROP SCHEMA tenantry_citus_roles CASCADE")
        .await?;
    let workers: i64 = login
        .query_one(
            "select count(*) from pg_dist_node where noderole = 'primary' and isactive \
             and groupid <> 0",
            &[],
        )
        .await?
        .get(0);
    if workers == 0 {
        tracing::warn!("Citus has no worker node: every shard stays on the coordinator");
    }
    Ok(())
}

/// The shared migrations on Citus: each file split into its statements, run one at a time in
/// the file's transaction, and recorded in refinery's own history table and format, so a plain
/// `refinery` run and this one agree on what was applied. Returns how many were applied.
pub async fn migrate_shared(owner: &Client) -> Result<usize, DbError> {
    owner
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS app.refinery_schema_history (\
             version int4 PRIMARY KEY, name VARCHAR(255), applied_on VARCHAR(255), \
             checksum VARCHAR(255))",
        )
        .await?;
    let applied: Vec<(i32, String, String)> = owner
        .query(
            "select version, name, checksum from app.refinery_schema_history order by version",
            &[],
        )
        .await?
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mut migrations = shared_runner().get_migrations().clone();
    migrations.sort_by_key(|m| m.version());
    let mut count = 0;
    for m in &migrations {
        if let Some((_, name, checksum)) = applied.iter().find(|(v, _, _)| *v == m.version()) {
            if *name != m.name() || *checksum != m.checksum().to_string() {
                return Err(DbError::TemplateDiverges(format!(
                    "shared migration V{}__{} differs from V{}__{name} as applied",
                    m.version(),
                    m.name(),
                    m.version()
                )));
            }
            continue;
        }
        let Some(sql) = m.sql() else { continue };
        let run = async {
            owner.batch_execute("BEGIN").await?;
            for statement in split_statements(&plain_policy_text(sql)) {
                owner.batch_execute(&statement).await?;
            }
            let applied_on = OffsetDateTime::now_utc()
                .format(&Rfc3339)
                .unwrap_or_default();
            owner
                .execute(
                    "insert into app.refinery_schema_history (version, name, applied_on, checksum) \
                     values ($1, $2, $3, $4)",
                    &[
                        &m.version(),
                        &m.name(),
                        &applied_on,
                        &m.checksum().to_string(),
                    ],
                )
                .await?;
            owner.batch_execute("COMMIT").await
        };
        if let Err(err) = run.await {
            let _ = owner.batch_execute("ROLLBACK").await;
            return Err(migration_error("app", m.version(), m.name(), err));
        }
        count += 1;
    }
    Ok(count)
}

fn migration_error(schema: &str, version: i32, name: &str, err: tokio_postgres::Error) -> DbError {
    let reason = err
        .as_db_error()
        .map(|db| db.message().to_string())
        .unwrap_or_else(|| err.to_string());
    tracing::error!(schema, version, name, %reason, "Citus migration statement failed");
    DbError::Postgres(Arc::new(err))
}

/// Distributes what is not distributed yet in `app`, in one transaction: policies to the plain
/// form, foreign keys out, reference and distributed tables, foreign keys back.
pub async fn distribute_shared(owner: &Client) -> Result<(), DbError> {
    let pending = owner
        .query(
            "select c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname), \
                    exists (select 1 from pg_attribute a where a.attrelid = c.oid \
                            and a.attname = 'tenant_id' and not a.attisdropped) \
             from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             where n.nspname = 'app' and c.relkind in ('r', 'p') and not c.relispartition \
               and c.relname <> 'refinery_schema_history' \
               and not exists (select 1 from pg_dist_partition p where p.logicalrelid = c.oid \
                               and (p.partmethod = 'h' or p.repmodel = 't')) \
             order by c.relname",
            &[],
        )
        .await?;
    if pending.is_empty() {
        return Ok(());
    }
    let oids: Vec<u32> = pending.iter().map(|r| r.get(0)).collect();
    owner.batch_execute("BEGIN").await?;
    let run = async {
        // Creating shards after reading reference tables in one transaction needs one
        // connection per node.
        owner
            .batch_execute("SET LOCAL citus.multi_shard_modify_mode TO 'sequential'")
            .await?;
        owner.batch_execute(&plain_policies_sql("app")).await?;
        let foreign_keys = owner
            .query(
                "select quote_ident(n.nspname) || '.' || quote_ident(c.relname), \
                        quote_ident(k.conname), pg_get_constraintdef(k.oid) \
                 from pg_constraint k join pg_class c on c.oid = k.conrelid \
                 join pg_namespace n on n.oid = c.relnamespace \
                 where k.contype = 'f' and (k.conrelid = any($1) or k.confrelid = any($1)) \
                 order by 1, 2",
                &[&oids],
            )
            .await?;
        for fk in &foreign_keys {
            let (table, name): (String, String) = (fk.get(0), fk.get(1));
            owner
                .batch_execute(&format!("ALTER TABLE {table} DROP CONSTRAINT {name}"))
                .await?;
        }
        for row in &pending {
            let (table, has_tenant): (String, bool) = (row.get(1), row.get(2));
            if has_tenant {
                continue;
            }
            owner
                .execute(
                    "select create_reference_table($1::text::regclass)",
                    &[&table],
                )
                .await?;
        }
        for row in &pending {
            let (table, has_tenant): (String, bool) = (row.get(1), row.get(2));
            if !has_tenant {
                continue;
            }
            owner
                .execute(
                    "select create_distributed_table($1::text::regclass, 'tenant_id', \
                     colocate_with => 'default')",
                    &[&table],
                )
                .await?;
        }
        for fk in &foreign_keys {
            let (table, name, definition): (String, String, String) =
                (fk.get(0), fk.get(1), fk.get(2));
            owner
                .batch_execute(&format!(
                    "ALTER TABLE {table} ADD CONSTRAINT {name} {definition}"
                ))
                .await?;
        }
        owner.batch_execute("COMMIT").await
    };
    if let Err(err) = run.await {
        let _ = owner.batch_execute("ROLLBACK").await;
        return Err(migration_error("app", 0, "distribute", err));
    }
    Ok(())
}

/// The key of the transaction-level advisory lock that serialises provisioning on Citus.
const PROVISION_LOCK_KEY: i64 = 0x7465_6e61_6e74_7076; // "tenantpv"

/// Provisioning on Citus runs one at a time on the coordinator. Citus serialises the writes of
/// a reference table (`tenants`, `platform_audit_logs`) with a lock on its shard, taken on the
/// nodes statement by statement; two provisionings for one slug then wait for each other in
/// opposite orders (the unique index of one, that lock of the other) and both die in a
/// deadlock instead of one committing and the other seeing the unique violation (409). The
/// lock is held until the provisioning transaction ends; provisionings wait for each other's
/// DDL on Citus anyway.
pub async fn serialize_provisioning(tx: &impl GenericClient) -> Result<(), DbError> {
    tx.execute("select pg_advisory_xact_lock($1)", &[&PROVISION_LOCK_KEY])
        .await?;
    Ok(())
}

/// Tenant schemas that are not distributed schemas yet (provisioned before the database moved
/// to Citus, or by a server that was not told): each is distributed in its own transaction.
pub async fn distribute_tenant_schemas(owner: &Client) -> Result<usize, DbError> {
    let tenants: Vec<Uuid> = owner
        .query(
            "select t.id from app.tenants t \
             join pg_namespace n on n.nspname = 't_' || replace(t.id::text, '-', '') \
             where not exists (select 1 from pg_dist_schema s where s.schemaid = n.oid) \
             order by t.id",
            &[],
        )
        .await?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    for tenant in &tenants {
        owner.batch_execute("BEGIN").await?;
        let run = async {
            distribute_tenant_schema(owner, *tenant).await?;
            owner.batch_execute("COMMIT").await?;
            Ok::<(), DbError>(())
        };
        if let Err(err) = run.await {
            let _ = owner.batch_execute("ROLLBACK").await;
            return Err(err);
        }
    }
    Ok(tenants.len())
}

/// Makes a tenant's schema, built by the template as on plain PostgreSQL, a distributed schema:
/// its policies take the plain form and its tables become single-shard tables on one node,
/// colocated. Run inside the provisioning transaction, after the template.
pub async fn distribute_tenant_schema(
    tx: &impl GenericClient,
    tenant: Uuid,
) -> Result<(), DbError> {
    let schema = tenant_schema_name(tenant);
    tx.batch_execute(&plain_policies_sql(&schema)).await?;
    tx.execute(
        "select citus_schema_distribute($1::text::regnamespace)",
        &[&schema],
    )
    .await?;
    Ok(())
}

/// A migration's text with the sub-select form of the tenant check written in the plain form, so
/// that a later migration's policy on a table already distributed is accepted (the tables
/// distributed later are rewritten from the catalog by [`plain_policies_sql`]). Covers the
/// spelling of the migrations and its doubled quotes inside `format(..)` strings.
pub(super) fn plain_policy_text(sql: &str) -> String {
    sql.replace(
        "(select nullif(current_setting('app.current_tenant', true), '')::uuid)",
        "nullif(current_setting('app.current_tenant', true), '')::uuid",
    )
    .replace(
        "(select nullif(current_setting(''app.current_tenant'', true), '''')::uuid)",
        "nullif(current_setting(''app.current_tenant'', true), '''')::uuid",
    )
}

/// Rewrites every policy of `schema` whose expressions hold the sub-select form of the tenant
/// check into the plain form. `schema` is `app` or a name derived from a tenant id, never input.
fn plain_policies_sql(schema: &str) -> String {
    format!(
        r#"DO $citus$
DECLARE
    p record;
    sub constant text := '( SELECT (NULLIF(current_setting(''app.current_tenant''::text, true), ''''::text))::uuid AS "nullif")';
    plain constant text := '(NULLIF(current_setting(''app.current_tenant''::text, true), ''''::text))::uuid';
BEGIN
    FOR p IN
        SELECT schemaname, tablename, policyname, qual, with_check FROM pg_policies
        WHERE schemaname = '{schema}'
          AND (position(sub IN coalesce(qual, '')) > 0 OR position(sub IN coalesce(with_check, '')) > 0)
    LOOP
        IF p.qual IS NOT NULL AND p.with_check IS NOT NULL THEN
            EXECUTE format('ALTER POLICY %I ON %I.%I USING (%s) WITH CHECK (%s)',
                p.policyname, p.schemaname, p.tablename,
                replace(p.qual, sub, plain), replace(p.with_check, sub, plain));
        ELSIF p.qual IS NOT NULL THEN
            EXECUTE format('ALTER POLICY %I ON %I.%I USING (%s)',
                p.policyname, p.schemaname, p.tablename, replace(p.qual, sub, plain));
        ELSE
            EXECUTE format('ALTER POLICY %I ON %I.%I WITH CHECK (%s)',
                p.policyname, p.schemaname, p.tablename, replace(p.with_check, sub, plain));
        END IF;
    END LOOP;
END
$citus$"#
    )
}

/// Splits a migration file into its statements: at `;` outside quotes, quoted identifiers,
/// dollar-quoted bodies and comments. Empty statements (comments only) are dropped.
pub fn split_statements(sql: &str) -> Vec<String> {
    let bytes = sql.as_bytes();
    let mut statements = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let mut has_code = false;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
                continue;
            }
            b'\'' | b'"' => {
                has_code = true;
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == c {
                        if bytes.get(i + 1) == Some(&c) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
                continue;
            }
            b'$' => {
                if let Some(tag_len) = dollar_tag(&bytes[i..]) {
                    has_code = true;
                    let tag = &bytes[i..i + tag_len];
                    i += tag_len;
                    while i < bytes.len() && !bytes[i..].starts_with(tag) {
                        i += 1;
                    }
                    i += tag_len;
                    continue;
                }
            }
            b';' => {
                if has_code {
                    statements.push(sql[start..i].trim().to_string());
                }
                start = i + 1;
                has_code = false;
                i += 1;
                continue;
            }
            c if !c.is_ascii_whitespace() => has_code = true,
            _ => {}
        }
        i += 1;
    }
    if has_code && start < sql.len() {
        statements.push(sql[start..].trim().to_string());
    }
    statements
}

/// The length of a dollar-quote opening tag (`$$`, `$body$`) at the start of `s`, if any.
fn dollar_tag(s: &[u8]) -> Option<usize> {
    let mut j = 1;
    while j < s.len() {
        match s[j] {
            b'$' => return Some(j + 1),
            c if c.is_ascii_alphanumeric() || c == b'_' => {
                if j == 1 && c.is_ascii_digit() {
                    return None; // a parameter such as $1
                }
                j += 1;
            }
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::split_statements;

    #[test]
    fn splits_at_semicolons_outside_quotes_comments_and_bodies() {
        let sql = "-- a; comment\nCREATE TABLE a (x text DEFAULT ';');\n\
                   /* b; */ CREATE INDEX i ON a (x);\n\
                   DO $$ BEGIN PERFORM 1; END $$;\n\
                   CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $body$ SELECT 1; $body$;\n\
                   SELECT \"x;y\" FROM a WHERE x = $1;\n-- trailing\n";
        let statements = split_statements(sql);
        assert_eq!(statements.len(), 5, "{statements:#?}");
        assert!(statements[0].ends_with("DEFAULT ';')"));
        assert!(statements[2].starts_with("DO $$") && statements[2].ends_with("END $$"));
        assert!(statements[3].ends_with("$body$"));
        assert!(statements[4].ends_with("$1"));
    }

    #[test]
    fn policies_of_the_migrations_take_the_plain_form() {
        for m in super::shared_runner().get_migrations() {
            let sql = super::plain_policy_text(m.sql().unwrap_or_default());
            assert!(
                !sql.contains("(select nullif(current_setting("),
                "V{} keeps a sub-select",
                m.version()
            );
        }
    }

    #[test]
    fn every_shared_migration_splits() {
        for m in super::shared_runner().get_migrations() {
            let statements = split_statements(m.sql().unwrap_or_default());
            assert!(!statements.is_empty(), "V{}", m.version());
            assert!(statements.iter().all(|s| !s.is_empty()), "V{}", m.version());
        }
    }
}
