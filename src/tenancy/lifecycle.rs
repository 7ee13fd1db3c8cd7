//! Operator actions on tenants. Reads and status changes go through the admin role (it must see
//! every tenant); purging drops schemas, so it goes through the owner. Every action is written
//! to the platform audit log in the same transaction.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde_json::{json, Value};
use uuid::Uuid;

use super::model::{Tenant, TENANT_COLUMNS};
use super::TenancyError;
use crate::db::{tenant_schema_name, PgPool, TENANT_TABLES};

pub async fn record_platform_action(
    client: &impl GenericClient,
    actor: &str,
    action: &str,
    tenant: Option<Uuid>,
    details: Value,
    request_id: Option<&str>,
) -> Result<(), TenancyError> {
    client
        .execute(
            "insert into app.platform_audit_logs (id, actor, action, target_tenant_id, details, request_id) \
             values ($1, $2, $3, $4, $5, $6)",
            &[&Uuid::now_v7(), &actor, &action, &tenant, &details, &request_id],
        )
        .await?;
    Ok(())
}

pub struct Page {
    pub items: Vec<Tenant>,
    pub next_cursor: Option<Uuid>,
}

pub async fn list(
    admin: &PgPool,
    include_deleted: bool,
    limit: i64,
    cursor: Option<Uuid>,
    request_id: Option<&str>,
) -> Result<Page, TenancyError> {
    let limit = limit.clamp(1, 500);
    let mut conn = admin.get().await?;
    let tx = conn.transaction().await?;
    let rows = tx
        .query(
            &format!(
                "select {TENANT_COLUMNS} from app.tenants \
                 where ($1 or deleted_at is null) and ($2::uuid is null or id > $2) \
                 order by id limit $3"
            ),
            &[&include_deleted, &cursor, &(limit + 1)],
        )
        .await?;
    record_platform_action(&tx, "operator", "tenant.list", None, json!({}), request_id).await?;
    tx.commit().await?;
    let mut items: Vec<Tenant> = rows.iter().map(Tenant::from_row).collect();
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|t| t.id)
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// Finds a tenant by id or slug, deleted ones included (the CLI and restore need them).
pub async fn find(client: &tokio_postgres::Client, key: &str) -> Result<Tenant, TenancyError> {
    let row = match Uuid::parse_str(key) {
        Ok(id) => {
            client
                .query_opt(
                    &format!("select {TENANT_COLUMNS} from app.tenants where id = $1"),
                    &[&id],
                )
                .await?
        }
        Err(_) => {
            client
                .query_opt(
                    &format!("select {TENANT_COLUMNS} from app.tenants where slug = $1"),
                    &[&key],
                )
                .await?
        }
    };
    row.map(|r| Tenant::from_row(&r))
        .ok_or(TenancyError::NotFound)
}

pub async fn get(
    admin: &PgPool,
    id: Uuid,
    request_id: Option<&str>,
) -> Result<Tenant, TenancyError> {
    let mut conn = admin.get().await?;
    let tx = conn.transaction().await?;
    let tenant = find(tx.client(), &id.to_string()).await?;
    record_platform_action(
        &tx,
        "operator",
        "tenant.read",
        Some(id),
        json!({}),
        request_id,
    )
    .await?;
    tx.commit().await?;
    Ok(tenant)
}

pub async fn set_status(
    admin: &PgPool,
    id: Uuid,
    suspended: bool,
    request_id: Option<&str>,
) -> Result<Tenant, TenancyError> {
    let status = if suspended { "suspended" } else { "active" };
    let mut conn = admin.get().await?;
    let tx = conn.transaction().await?;
    let before = find(tx.client(), &id.to_string()).await?;
    if before.deleted_at.is_some() {
        return Err(TenancyError::NotFound);
    }
    let row = tx
        .query_one(
            &format!(
                "update app.tenants set status = $2, updated_at = now() where id = $1 returning {TENANT_COLUMNS}"
            ),
            &[&id, &status],
        )
        .await?;
    let after = Tenant::from_row(&row);
    let action = if suspended { "suspend" } else { "resume" };
    write_tenant_audit(
        &tx,
        id,
        action,
        json!({"before": before, "after": after}),
        request_id,
    )
    .await?;
    record_platform_action(
        &tx,
        "operator",
        &format!("tenant.{action}"),
        Some(id),
        json!({}),
        request_id,
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

async fn write_tenant_audit(
    client: &impl GenericClient,
    tenant: Uuid,
    action: &str,
    changes: Value,
    request_id: Option<&str>,
) -> Result<(), TenancyError> {
    client
        .execute(
            "insert into app.audit_logs (tenant_id, id, actor, action, resource, resource_id, changes, request_id) \
             values ($1, $2, 'platform', $3, 'tenant', $4, $5, $6)",
            &[&tenant, &Uuid::now_v7(), &action, &tenant.to_string(), &changes, &request_id],
        )
        .await?;
    Ok(())
}

/// Marks the tenant and every live row of it deleted, with one timestamp, in one transaction.
/// Restore clears exactly the rows carrying that timestamp, so rows deleted individually before
/// stay deleted.
pub async fn soft_delete(
    admin: &PgPool,
    id: Uuid,
    request_id: Option<&str>,
) -> Result<(), TenancyError> {
    let mut conn = admin.get().await?;
    let tx = conn.transaction().await?;
    let tenant = find(tx.client(), &id.to_string()).await?;
    if tenant.deleted_at.is_some() {
        return Err(TenancyError::NotFound);
    }
    let deleted_at: DateTime<Utc> = tx
        .query_one(
            "update app.tenants set deleted_at = now(), updated_at = now() where id = $1 returning deleted_at",
            &[&id],
        )
        .await?
        .get(0);
    // The audit row of the delete is written first so it is marked with the rest: a deleted
    // tenant keeps no live row, and a restore brings the record of its deletion back with it.
    write_tenant_audit(
        &tx,
        id,
        "delete",
        json!({"before": tenant, "after": null}),
        request_id,
    )
    .await?;
    for table in TENANT_TABLES {
        tx.execute(
            &format!("update app.{table} set deleted_at = $2 where tenant_id = $1 and deleted_at is null"),
            &[&id, &deleted_at],
        )
        .await?;
    }
    record_platform_action(
        &tx,
        "operator",
        "tenant.delete",
        Some(id),
        json!({}),
        request_id,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn restore(
    admin: &PgPool,
    id: Uuid,
    retention: Duration,
    request_id: Option<&str>,
) -> Result<Tenant, TenancyError> {
    let mut conn = admin.get().await?;
    let tx = conn.transaction().await?;
    let tenant = find(tx.client(), &id.to_string()).await?;
    let Some(deleted_at) = tenant.deleted_at else {
        return Err(TenancyError::NotDeleted);
    };
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::days(30));
    if deleted_at + retention < Utc::now() {
        return Err(TenancyError::RetentionExpired);
    }
    for table in TENANT_TABLES {
        tx.execute(
            &format!(
                "update app.{table} set deleted_at = null where tenant_id = $1 and deleted_at = $2"
            ),
            &[&id, &deleted_at],
        )
        .await?;
    }
    let row = tx
        .query_one(
            &format!(
                "update app.tenants set deleted_at = null, updated_at = now() where id = $1 returning {TENANT_COLUMNS}"
            ),
            &[&id],
        )
        .await?;
    let after = Tenant::from_row(&row);
    write_tenant_audit(
        &tx,
        id,
        "restore",
        json!({"before": tenant, "after": after}),
        request_id,
    )
    .await?;
    record_platform_action(
        &tx,
        "operator",
        "tenant.restore",
        Some(id),
        json!({}),
        request_id,
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

/// Removes, for good, tenants deleted longer ago than `retention`: their rows, their schema
/// and the tenant row, one tenant per transaction. Returns the purged ids.
pub async fn purge_expired(owner: &PgPool, retention: Duration) -> Result<Vec<Uuid>, TenancyError> {
    let cutoff =
        Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::days(30));
    let ids: Vec<Uuid> = {
        let conn = owner.get().await?;
        conn.query(
            "select id from app.tenants where deleted_at is not null and deleted_at < $1 order by deleted_at",
            &[&cutoff],
        )
        .await?
        .into_iter()
        .map(|r| r.get(0))
        .collect()
    };
    let mut purged = Vec::with_capacity(ids.len());
    for id in ids {
        if purge_one(owner, id, cutoff).await? {
            purged.push(id);
        }
    }
    Ok(purged)
}

async fn purge_one(owner: &PgPool, id: Uuid, cutoff: DateTime<Utc>) -> Result<bool, TenancyError> {
    let mut conn = owner.get().await?;
    let tx = crate::db::begin_tenant_tx(&mut conn, id).await?;
    // Re-checked under a row lock: the tenant may have been restored since the listing.
    let still_expired = tx
        .query_opt(
            "select 1 from app.tenants where id = $1 and deleted_at < $2 for update",
            &[&id, &cutoff],
        )
        .await?
        .is_some();
    if !still_expired {
        return Ok(false);
    }
    // Children before parents, for the tenant-scoped foreign keys: TENANT_TABLES lists parents
    // first (the catalog test holds it to that), so a table added there is purged too.
    for table in TENANT_TABLES.iter().rev() {
        tx.execute(
            &format!("delete from app.{table} where tenant_id = $1"),
            &[&id],
        )
        .await?;
    }
    tx.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {} CASCADE",
        tenant_schema_name(id)
    ))
    .await?;
    tx.execute("delete from app.tenants where id = $1", &[&id])
        .await?;
    record_platform_action(&tx, "system", "tenant.purge", Some(id), json!({}), None).await?;
    tx.commit().await?;
    tracing::info!(tenant_id = %id, "purged deleted tenant");
    Ok(true)
}
