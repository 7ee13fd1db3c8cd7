//! Operator actions on tenants. Reads and status changes go through the admin role (it must see
//! every tenant); purging drops schemas, so it goes through the owner. Every action is written
//! to the platform audit log in the same transaction ([`with_platform_action`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Transaction};
use serde_json::{json, Value};
use uuid::Uuid;

use super::model::{Tenant, TENANT_COLUMNS};
use super::TenancyError;
use crate::db::{begin_tenant_tx, tenant_schema_name, PgPool, TENANT_TABLES};
use crate::page::{Keyset, Page, PageRequest};

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

/// Who did what to which tenant, for the platform audit log.
pub struct PlatformAction<'a> {
    actor: &'static str,
    action: &'a str,
    tenant: Option<Uuid>,
    request_id: Option<&'a str>,
    /// The tenant the transaction is bound to (its context set), for work that row-level
    /// security holds to one tenant.
    bind: Option<Uuid>,
}

impl<'a> PlatformAction<'a> {
    /// An action of the platform operator (the HTTP operator routes, the CLI).
    pub fn operator(action: &'a str, tenant: Option<Uuid>, request_id: Option<&'a str>) -> Self {
        PlatformAction {
            actor: "operator",
            action,
            tenant,
            request_id,
            bind: None,
        }
    }

    /// An action of the server itself on one tenant (the purge), bound to that tenant: the
    /// owner role that does it is held to one tenant by row-level security.
    fn system(action: &'a str, tenant: Uuid) -> Self {
        PlatformAction {
            actor: "system",
            action,
            tenant: Some(tenant),
            request_id: None,
            bind: Some(tenant),
        }
    }

    /// Runs the work in a transaction bound to `tenant`.
    pub fn in_tenant(self, tenant: Uuid) -> Self {
        PlatformAction {
            bind: Some(tenant),
            ..self
        }
    }
}

/// Runs `work` in one transaction of `pool` and writes `action` to the platform audit log in
/// that transaction before it commits, so an action is on record exactly when it took effect.
/// `work` may fill in the audit row's details (`{}` unless it does); its error rolls everything
/// back, the audit row included.
pub async fn with_platform_action<T>(
    pool: &PgPool,
    action: PlatformAction<'_>,
    work: impl AsyncFnOnce(&Transaction<'_>, &mut Value) -> Result<T, TenancyError>,
) -> Result<T, TenancyError> {
    let mut conn = pool.get().await?;
    let tx = match action.bind {
        Some(tenant) => begin_tenant_tx(&mut conn, tenant).await?,
        None => conn.transaction().await?,
    };
    let mut details = json!({});
    let done = work(&tx, &mut details).await?;
    record_platform_action(
        &tx,
        action.actor,
        action.action,
        action.tenant,
        details,
        action.request_id,
    )
    .await?;
    tx.commit().await?;
    Ok(done)
}

/// Tenants in id order.
pub static TENANTS: Keyset<Uuid> = Keyset::ascending("tenants", &["id"]);

pub async fn list(
    admin: &PgPool,
    include_deleted: bool,
    page: &PageRequest<Uuid>,
    request_id: Option<&str>,
) -> Result<Page<Tenant>, TenancyError> {
    let action = PlatformAction::operator("tenant.list", None, request_id);
    with_platform_action(admin, action, async |tx, _| {
        page.fetch(
            tx,
            &format!("select {TENANT_COLUMNS} from app.tenants where ($1 or deleted_at is null)"),
            &[&include_deleted],
            Tenant::from_row,
            |t| t.id,
        )
        .await
    })
    .await
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
        .unwrap_or(Err(TenancyError::NotFound))
}

pub async fn get(
    admin: &PgPool,
    id: Uuid,
    request_id: Option<&str>,
) -> Result<Tenant, TenancyError> {
    let action = PlatformAction::operator("tenant.read", Some(id), request_id);
    with_platform_action(admin, action, async |tx, _| {
        find(tx.client(), &id.to_string()).await
    })
    .await
}

/// A tenant that is not deleted.
async fn find_live(tx: &Transaction<'_>, id: Uuid) -> Result<Tenant, TenancyError> {
    let tenant = find(tx.client(), &id.to_string()).await?;
    if tenant.deleted_at.is_some() {
        return Err(TenancyError::NotFound);
    }
    Ok(tenant)
}

pub async fn set_status(
    admin: &PgPool,
    id: Uuid,
    suspended: bool,
    request_id: Option<&str>,
) -> Result<Tenant, TenancyError> {
    let (status, verb) = if suspended {
        ("suspended", "suspend")
    } else {
        ("active", "resume")
    };
    let action = format!("tenant.{verb}");
    let action = PlatformAction::operator(&action, Some(id), request_id);
    with_platform_action(admin, action, async |tx, _| {
        let before = find_live(tx, id).await?;
        let row = tx
            .query_one(
                &format!(
                    "update app.tenants set status = $2, updated_at = now() where id = $1 returning {TENANT_COLUMNS}"
                ),
                &[&id, &status],
            )
            .await?;
        let after = Tenant::from_row(&row)?;
        write_tenant_audit(
            tx,
            id,
            verb,
            json!({"before": before, "after": after}),
            request_id,
        )
        .await?;
        Ok(after)
    })
    .await
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
    let action = PlatformAction::operator("tenant.delete", Some(id), request_id);
    with_platform_action(admin, action, async |tx, _| {
        let tenant = find_live(tx, id).await?;
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
            tx,
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
        Ok(())
    })
    .await
}

/// `retention` as chrono counts it; a period too long for chrono is the default 30 days.
fn retention_period(retention: Duration) -> chrono::Duration {
    chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::days(30))
}

pub async fn restore(
    admin: &PgPool,
    id: Uuid,
    retention: Duration,
    request_id: Option<&str>,
) -> Result<Tenant, TenancyError> {
    let action = PlatformAction::operator("tenant.restore", Some(id), request_id);
    with_platform_action(admin, action, async |tx, _| {
        let tenant = find(tx.client(), &id.to_string()).await?;
        let Some(deleted_at) = tenant.deleted_at else {
            return Err(TenancyError::NotDeleted);
        };
        if deleted_at + retention_period(retention) < Utc::now() {
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
        let after = Tenant::from_row(&row)?;
        write_tenant_audit(
            tx,
            id,
            "restore",
            json!({"before": tenant, "after": after}),
            request_id,
        )
        .await?;
        Ok(after)
    })
    .await
}

/// Removes, for good, tenants deleted longer ago than `retention`: their rows, their schema
/// and the tenant row, one tenant per transaction. Returns the purged ids.
pub async fn purge_expired(owner: &PgPool, retention: Duration) -> Result<Vec<Uuid>, TenancyError> {
    let cutoff = Utc::now() - retention_period(retention);
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
    let action = PlatformAction::system("tenant.purge", id);
    let purged = with_platform_action(owner, action, async |tx, _| {
        // Re-checked under a row lock: the tenant may have been restored since the listing.
        let still_expired = tx
            .query_opt(
                "select 1 from app.tenants where id = $1 and deleted_at < $2 for update",
                &[&id, &cutoff],
            )
            .await?
            .is_some();
        if !still_expired {
            return Err(TenancyError::NotFound);
        }
        remove_tenant(tx, id).await
    })
    .await;
    match purged {
        Ok(()) => {
            tracing::info!(tenant_id = %id, "purged deleted tenant");
            Ok(true)
        }
        // No longer an expired tenant: restored, or purged by another instance meanwhile.
        Err(TenancyError::NotFound) => Ok(false),
        Err(err) => Err(err),
    }
}

/// Every row of the tenant in every shared table, its schema, and its tenants row.
async fn remove_tenant(tx: &Transaction<'_>, id: Uuid) -> Result<(), TenancyError> {
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
    Ok(())
}

/// Erases one tenant at once, live or deleted, without waiting for the retention period (an
/// erasure request of the whole customer: `tenantry tenants purge <tenant> --now`). The
/// platform audit log keeps that it happened, to which tenant id, and how many rows went: no
/// name, slug or other data of the tenant.
pub async fn purge_now(owner: &PgPool, id: Uuid) -> Result<u64, TenancyError> {
    let action = PlatformAction::operator("tenant.purge", Some(id), None).in_tenant(id);
    with_platform_action(owner, action, async |tx, details| {
        let found = tx
            .query_opt("select 1 from app.tenants where id = $1 for update", &[&id])
            .await?
            .is_some();
        if !found {
            return Err(TenancyError::NotFound);
        }
        let mut rows = 0u64;
        for table in TENANT_TABLES {
            let n: i64 = tx
                .query_one(
                    &format!("select count(*) from app.{table} where tenant_id = $1"),
                    &[&id],
                )
                .await?
                .get(0);
            rows += u64::try_from(n).unwrap_or(0);
        }
        remove_tenant(tx, id).await?;
        *details = json!({"immediate": true, "shared_rows": rows});
        Ok(rows)
    })
    .await
}
