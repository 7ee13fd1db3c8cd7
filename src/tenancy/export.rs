//! GDPR export: every live row of a tenant as NDJSON, one JSON object a line with a `type`
//! member, streamed row by row so a large tenant never sits in memory whole.

use futures_util::{pin_mut, StreamExt};
use tokio::sync::mpsc;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::TenancyError;
use crate::db::tenant_schema_name;

/// (type name, query). Password hashes never leave the database.
const SHARED_EXPORTS: &[(&str, &str)] = &[
    ("tenant", "select to_jsonb(t) - 'schema_version' from app.tenants t where id = $1"),
    ("user", "select to_jsonb(t) - 'password_hash' from app.users t where tenant_id = $1 and deleted_at is null order by id"),
    ("project", "select to_jsonb(t) from app.projects t where tenant_id = $1 and deleted_at is null order by id"),
    ("project_member", "select to_jsonb(t) from app.project_members t where tenant_id = $1 and deleted_at is null order by project_id, user_id"),
    ("task", "select to_jsonb(t) from app.tasks t where tenant_id = $1 and deleted_at is null order by id"),
    ("api_key", "select to_jsonb(t) - 'key_hash' from app.api_keys t where tenant_id = $1 and deleted_at is null order by id"),
    ("flag_override", "select to_jsonb(t) from app.flag_overrides t where tenant_id = $1 and deleted_at is null order by flag_key"),
    ("audit_log", "select to_jsonb(t) from app.audit_logs t where tenant_id = $1 and deleted_at is null order by id"),
    ("webhook", "select to_jsonb(t) - 'secret_ciphertext' - 'previous_secret_ciphertext' from app.webhooks t where tenant_id = $1 and deleted_at is null order by id"),
    ("settings_version", "select to_jsonb(t) from app.settings_versions t where tenant_id = $1 and deleted_at is null order by version"),
    ("usage_event", "select to_jsonb(t) from app.usage_events t where tenant_id = $1 and deleted_at is null order by id"),
    ("usage_rollup", "select to_jsonb(t) from app.usage_rollups t where tenant_id = $1 and deleted_at is null order by granularity, period_start, metric"),
    ("subscription", "select to_jsonb(t) from app.subscriptions t where tenant_id = $1 and deleted_at is null"),
    ("billing_account", "select to_jsonb(t) from app.billing_accounts t where tenant_id = $1 and deleted_at is null"),
    ("invoice", "select to_jsonb(t) from app.invoices t where tenant_id = $1 and deleted_at is null order by id"),
    ("stripe_event", "select to_jsonb(t) from app.stripe_events t where tenant_id = $1 and deleted_at is null order by event_id"),
];

/// Sends each line to `out`. `tx` has the tenant's context set; every query also filters by
/// tenant_id, so it is correct under a BYPASSRLS role too. Stops early when `out` is closed.
pub async fn export(
    tx: &impl GenericClient,
    tenant: Uuid,
    out: mpsc::Sender<String>,
) -> Result<u64, TenancyError> {
    let mut lines = 0u64;
    for (kind, sql) in SHARED_EXPORTS {
        lines += stream_query(tx, kind, sql, tenant, &out).await?;
    }
    let schema = tenant_schema_name(tenant);
    let tables: Vec<String> = tx
        .query(
            "select table_name::text from information_schema.tables \
             where table_schema = $1 and table_type = 'BASE TABLE' \
             and table_name <> 'refinery_schema_history' order by table_name",
            &[&schema],
        )
        .await?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    // A person asking for their data gets the events they sent, as they sent them. The
    // rollups are counts over everybody and the activity masks a bit encoding of those same
    // events: nothing more about anyone, unreadable as is.
    let tables = tables
        .into_iter()
        .filter(|t| !crate::analytics::DERIVED_TABLES.contains(&t.as_str()));
    for table in tables {
        // Table names come from the catalog of the tenant's own schema.
        let sql = format!(
            "select to_jsonb(t) from {schema}.{} t where tenant_id = $1",
            crate::db::roles::quote_ident(&table)
        );
        lines += stream_query(tx, &table, &sql, tenant, &out).await?;
    }
    Ok(lines)
}

async fn stream_query(
    tx: &impl GenericClient,
    kind: &str,
    sql: &str,
    tenant: Uuid,
    out: &mpsc::Sender<String>,
) -> Result<u64, TenancyError> {
    let rows = tx.query_raw(sql, [&tenant]).await?;
    pin_mut!(rows);
    let mut count = 0;
    while let Some(row) = rows.next().await {
        let mut value: serde_json::Value = row?.get(0);
        if let Some(obj) = value.as_object_mut() {
            obj.insert("type".into(), serde_json::Value::String(kind.to_string()));
        }
        if out.send(value.to_string()).await.is_err() {
            return Ok(count);
        }
        count += 1;
    }
    Ok(count)
}
