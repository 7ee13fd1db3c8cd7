//! Hourly samples of every live tenant's seats (`active_users`: its live users) and storage
//! (`storage_bytes`), stored as usage events keyed `sample:<metric>:<hour>`: the first sample of
//! an hour wins, whichever instance takes it, and a restart within the hour adds nothing.
//!
//! `storage_bytes` is the tenant schema's relations in full (`pg_total_relation_size`: heap,
//! indexes, toast) plus the tenant's rows in the shared tables, measured as the sum of
//! `pg_column_size` of each live row (row data without per-row and index overhead: an
//! estimate, documented in docs/usage.md).

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::events::{insert, UsageEvent};
use super::{floor_hour, UsageError, ACTIVE_USERS, STORAGE_BYTES};
use crate::db::{begin_tenant_tx, tenant_schema_name, PgPool};

/// Shared tables whose rows count towards a tenant's storage.
const SHARED_TABLES: [&str; 6] = [
    "users",
    "projects",
    "project_members",
    "tasks",
    "audit_logs",
    "usage_events",
];

/// Samples `tenant` for the hour of `at`; true when this call stored the samples.
pub async fn sample_tenant(
    pool: &PgPool,
    tenant: Uuid,
    at: DateTime<Utc>,
) -> Result<bool, UsageError> {
    let hour = floor_hour(at);
    let mut conn = pool.get().await.map_err(crate::db::DbError::from)?;
    let tx = begin_tenant_tx(&mut conn, tenant).await?;
    let users: i64 = tx
        .query_one(
            "select count(*) from app.users where tenant_id = $1 and deleted_at is null",
            &[&tenant],
        )
        .await?
        .get(0);
    let schema_bytes: i64 = tx
        .query_one(
            "select coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint \
             from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             where n.nspname = $1 and c.relkind in ('r', 'm', 'p')",
            &[&tenant_schema_name(tenant)],
        )
        .await?
        .get(0);
    let mut row_bytes = 0i64;
    for table in SHARED_TABLES {
        let n: i64 = tx
            .query_one(
                &format!(
                    "select coalesce(sum(pg_column_size(t.*)), 0)::bigint from app.{table} t \
                     where t.tenant_id = $1 and t.deleted_at is null"
                ),
                &[&tenant],
            )
            .await?
            .get(0);
        row_bytes = row_bytes.saturating_add(n);
    }
    let key = |metric: &str| format!("sample:{metric}:{}", hour.to_rfc3339());
    let events = [
        UsageEvent {
            idempotency_key: key(ACTIVE_USERS),
            metric: ACTIVE_USERS.into(),
            quantity: users,
            occurred_at: hour,
        },
        UsageEvent {
            idempotency_key: key(STORAGE_BYTES),
            metric: STORAGE_BYTES.into(),
            quantity: schema_bytes.saturating_add(row_bytes),
            occurred_at: hour,
        },
    ];
    let stored = insert(&*tx, tenant, &events).await?;
    tx.commit().await?;
    Ok(!stored.inserted.is_empty())
}

/// Samples every live tenant for the hour of `at`, then rolls the ones sampled.
pub async fn sample_all(pool: &PgPool, at: DateTime<Utc>) -> Result<usize, UsageError> {
    let mut sampled = 0;
    // Before anything is inserted: the pass after each sample finds it by its received_at.
    let since = Utc::now() - super::rollup::OVERLAP;
    for tenant in super::rollup::live_tenants(pool).await? {
        let outcome = crate::context::scope(tenant, async {
            if sample_tenant(pool, tenant, at).await? {
                super::rollup::roll_tenant(pool, tenant, since).await?;
                return Ok::<_, UsageError>(true);
            }
            Ok(false)
        })
        .await;
        match outcome {
            Ok(true) => sampled += 1,
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(tenant_id = %tenant, error = %crate::error::error_chain(&err),
                    "usage sample failed; tried again next hour")
            }
        }
    }
    Ok(sampled)
}

/// The sampling loop: at start (the current hour, if not sampled yet), then just after each
/// hour begins.
pub async fn run(pool: PgPool, stop: CancellationToken) {
    loop {
        if let Err(err) = sample_all(&pool, Utc::now()).await {
            tracing::warn!(error = %crate::error::error_chain(&err), "usage sampling failed");
        }
        let now = Utc::now();
        let next = floor_hour(now) + chrono::TimeDelta::hours(1) + chrono::TimeDelta::seconds(5);
        let wait = (next - now).to_std().unwrap_or_default();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
