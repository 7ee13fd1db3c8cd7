//! The three roles of DESIGN.md and their grants. Role names come from configuration and are
//! validated as plain identifiers before they reach any statement here.

use std::time::Duration;

use tokio_postgres::{error::SqlState, Client, GenericClient};

use super::DbError;
use crate::config::RoleNames;

/// Tables holding tenant data in the shared schema, with what the app role may do on each.
/// audit_logs is append-only for the app role.
pub const APP_TABLE_GRANTS: &[(&str, &str)] = &[
    ("users", "SELECT, INSERT, UPDATE, DELETE"),
    ("projects", "SELECT, INSERT, UPDATE, DELETE"),
    ("project_members", "SELECT, INSERT, UPDATE, DELETE"),
    ("tasks", "SELECT, INSERT, UPDATE, DELETE"),
    ("audit_logs", "SELECT, INSERT"),
    ("api_keys", "SELECT, INSERT, UPDATE, DELETE"),
    // Workers mark rows processed or schedule retries; nothing of the app role deletes them.
    ("outbox", "SELECT, INSERT, UPDATE"),
    ("plans", "SELECT"),
    // The history of settings: written beside each change, never rewritten.
    ("settings_versions", "SELECT, INSERT"),
    // Flags are read for evaluation; only operators (the admin role) change them.
    ("flags", "SELECT"),
    ("flag_overrides", "SELECT"),
    ("tenants", "SELECT"),
    // Outgoing webhooks: endpoints are soft-deleted; messages and attempts are history the
    // dispatcher writes and updates, never deletes.
    ("webhooks", "SELECT, INSERT, UPDATE"),
    ("webhook_messages", "SELECT, INSERT, UPDATE"),
    ("webhook_deliveries", "SELECT, INSERT, UPDATE"),
    ("webhook_rate_windows", "SELECT, INSERT, UPDATE"),
    // Usage (V8): events are never rewritten by the app role; rollups are recomputed in place.
    ("usage_events", "SELECT, INSERT"),
    ("usage_rollups", "SELECT, INSERT, UPDATE"),
    ("subscriptions", "SELECT, INSERT, UPDATE"),
    // Billing (V9): prices are operator data; Stripe's events are history, never rewritten
    // but for their outcome; invoices are updated as Stripe reports them.
    ("plan_prices", "SELECT"),
    ("billing_accounts", "SELECT, INSERT, UPDATE"),
    ("stripe_events", "SELECT, INSERT, UPDATE"),
    ("invoices", "SELECT, INSERT, UPDATE"),
];

pub struct RoleSetup<'a> {
    pub roles: &'a RoleNames,
    pub app_password: Option<String>,
    pub admin_password: Option<String>,
}

/// Creates the roles when missing and (re)asserts their attributes, so a role altered by hand
/// is brought back to what the design requires. Needs a superuser connection; a non-superuser
/// DATABASE_URL is taken to be the owner itself and only the attributes are checked.
pub async fn ensure_roles(client: &Client, setup: &RoleSetup<'_>) -> Result<(), DbError> {
    let row = client
        .query_one(
            "select rolsuper, current_database() from pg_roles where rolname = current_user",
            &[],
        )
        .await?;
    let is_superuser: bool = row.get(0);
    let database: String = row.get(1);
    if !is_superuser {
        tracing::info!("DATABASE_URL is not a superuser: roles are expected to exist already");
        return Ok(());
    }
    let r = setup.roles;
    let statements = vec![
        create_role_sql(&r.owner, "NOLOGIN"),
        format!("ALTER ROLE {} NOSUPERUSER NOBYPASSRLS", r.owner),
        create_role_sql(&r.app, "LOGIN"),
        format!(
            "ALTER ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION NOINHERIT",
            r.app
        ),
        create_role_sql(&r.admin, "LOGIN"),
        format!(
            "ALTER ROLE {} LOGIN BYPASSRLS NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOINHERIT",
            r.admin
        ),
        format!(
            "GRANT CONNECT, CREATE, TEMPORARY ON DATABASE {} TO {}",
            quote_ident(&database),
            r.owner
        ),
        format!(
            "GRANT CONNECT ON DATABASE {} TO {}, {}",
            quote_ident(&database),
            r.app,
            r.admin
        ),
    ];
    for sql in statements {
        run_role_statement(client, &sql).await?;
    }
    if let Some(password) = &setup.app_password {
        set_password(client, &r.app, password).await?;
    }
    if let Some(password) = &setup.admin_password {
        set_password(client, &r.admin, password).await?;
    }
    Ok(())
}

fn create_role_sql(role: &str, login: &str) -> String {
    // DO blocks take no parameters; the name is a validated identifier.
    format!(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN \
         CREATE ROLE {role} {login}; END IF; END $$"
    )
}

async fn set_password(client: &Client, role: &str, password: &str) -> Result<(), DbError> {
    // ALTER ROLE takes no bind parameters; quote the literal through the server.
    let literal: String = client
        .query_one("select quote_literal($1::text)", &[&password])
        .await?
        .get(0);
    run_role_statement(client, &format!("ALTER ROLE {role} PASSWORD {literal}")).await
}

/// Roles are global to the cluster, so several databases migrating at once (parallel tests,
/// two deployments) can race on the same role rows. Those races are retried.
async fn run_role_statement(client: &Client, sql: &str) -> Result<(), DbError> {
    let mut attempt = 0;
    loop {
        match client.batch_execute(sql).await {
            Ok(()) => return Ok(()),
            Err(err) => {
                let retryable = err.as_db_error().is_some_and(|db| {
                    [
                        SqlState::UNIQUE_VIOLATION,
                        SqlState::DUPLICATE_OBJECT,
                        SqlState::T_R_SERIALIZATION_FAILURE,
                        SqlState::INTERNAL_ERROR,
                    ]
                    .contains(db.code())
                });
                attempt += 1;
                if !retryable || attempt >= 8 {
                    return Err(err.into());
                }
                tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
            }
        }
    }
}

/// Grants on the shared schema, run as the owner after the shared migrations. Starts from
/// nothing for the app role, so a privilege granted by hand (TRUNCATE, REFERENCES) is removed.
/// The audit trails are append-only for the operators' admin role too: deleting a tenant marks
/// its audit rows with the rest (and a restore unmarks them), which is all it may change there;
/// only the owner's purge removes them. The flag versions are history, append-only as well.
pub async fn grant_shared_schema(
    client: &impl GenericClient,
    roles: &RoleNames,
) -> Result<(), DbError> {
    let mut sql = format!(
        "GRANT USAGE ON SCHEMA app TO {app}, {admin};\n\
         REVOKE ALL ON ALL TABLES IN SCHEMA app FROM {app};\n\
         REVOKE ALL ON ALL TABLES IN SCHEMA app FROM {admin};\n\
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA app TO {admin};\n\
         REVOKE UPDATE, DELETE ON app.audit_logs, app.platform_audit_logs, app.flag_versions FROM {admin};\n\
         GRANT UPDATE (deleted_at) ON app.audit_logs TO {admin};\n",
        app = roles.app,
        admin = roles.admin
    );
    for (table, privileges) in APP_TABLE_GRANTS {
        sql.push_str(&format!(
            "GRANT {privileges} ON app.{table} TO {};\n",
            roles.app
        ));
    }
    // Tenant admins change their own tenant's settings; RLS limits it to their row.
    sql.push_str(&format!(
        "GRANT UPDATE (settings, updated_at) ON app.tenants TO {};\n",
        roles.app
    ));
    // The outbox claim is the app role's only way to see across tenants (see V3).
    sql.push_str(&format!(
        "GRANT EXECUTE ON FUNCTION app.claim_outbox(integer, integer) TO {};\n",
        roles.app
    ));
    // Which tenants have outbox events due: tenant ids only (see V11).
    sql.push_str(&format!(
        "GRANT EXECUTE ON FUNCTION app.outbox_pending_tenants(integer) TO {};\n",
        roles.app
    ));
    // Which tenants have webhook messages due: tenant ids only (see V10).
    sql.push_str(&format!(
        "GRANT EXECUTE ON FUNCTION app.webhook_due_tenants(timestamptz, integer) TO {};\n",
        roles.app
    ));
    // Resolution and the retention job's tenant list, before any tenant context (see V5).
    sql.push_str(&format!(
        "GRANT EXECUTE ON FUNCTION app.resolve_tenant(uuid, text, text), \
         app.live_tenant_plans() TO {};\n",
        roles.app
    ));
    // Billing's routing reads and its one write of the tenant's status (see V9).
    sql.push_str(&format!(
        "GRANT EXECUTE ON FUNCTION app.billing_tenant_of(text), \
         app.billing_accounts_past_due(timestamptz), app.billing_customers(), \
         app.billing_set_tenant_suspended(boolean) TO {};\n",
        roles.app
    ));
    client.batch_execute(&sql).await?;
    Ok(())
}

/// Default privileges of one tenant schema, set before its template migrations run: every table
/// the owner creates there is granted to the app and admin roles as it is created, including
/// tables added by later template versions. `GRANT .. ON ALL TABLES IN SCHEMA` after the fact
/// would find the schema's tables by scanning all of pg_class, which holds every relation of
/// every tenant: a cost that grows with the number of tenants, twice per provisioning and per
/// migrated schema (bench/tenant_schemas). Idempotent.
pub async fn default_privileges_tenant_schema(
    client: &impl GenericClient,
    schema: &str,
    roles: &RoleNames,
) -> Result<(), DbError> {
    let sql = format!(
        "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema} \
         GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app};\n\
         ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema} \
         GRANT SELECT ON TABLES TO {admin};",
        owner = roles.owner,
        app = roles.app,
        admin = roles.admin
    );
    client.batch_execute(&sql).await?;
    Ok(())
}

/// Grants on one tenant schema, run after its template migrations in the same transaction (the
/// tables themselves were granted by [`default_privileges_tenant_schema`]). The history table is
/// the migrations' business only: the app role loses what the default privileges gave it there.
pub async fn grant_tenant_schema(
    client: &impl GenericClient,
    schema: &str,
    roles: &RoleNames,
) -> Result<(), DbError> {
    let sql = format!(
        "GRANT USAGE ON SCHEMA {schema} TO {app}, {admin};\n\
         REVOKE ALL ON {schema}.refinery_schema_history FROM {app};",
        app = roles.app,
        admin = roles.admin
    );
    client.batch_execute(&sql).await?;
    Ok(())
}

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
