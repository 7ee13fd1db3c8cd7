//! Hourly and daily rollups of usage events, and `GET /usage`.
//!
//! A pass recomputes, for one tenant, every bucket that holds an event received since a point in
//! time: hour buckets from the events, then day buckets from the hours. Buckets are computed
//! from scratch and upserted, never incremented, so a late event (up to 48 h) only makes its
//! bucket be computed again, and two passes over the same events agree. Additive metrics are
//! summed; the sampled gauges take their maximum.
//!
//! The loop runs every [`EVERY`] over the tenants this instance stored events for since the
//! last pass, looking back [`OVERLAP`] before that pass began (a transaction that began before
//! it and committed after it is still seen); at start it sweeps every live tenant over the
//! grace period. A pass of a tenant holds a transaction-level advisory lock, so two instances
//! do not roll the same tenant at once. A bucket is complete about one pass after its last
//! event: well within the 5 minutes the contract gives.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures_util::future::BoxFuture;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{UsageError, GAUGES, GRACE};
use crate::actors::TenantOp;
use crate::auth::Caller;
use crate::db::{begin_tenant_tx, tenant_schema_name, PgPool, TenantTx};

pub const EVERY: Duration = Duration::from_secs(60);
pub const OVERLAP: TimeDelta = TimeDelta::minutes(5);
/// Quota budgets of a tenant not admitted for this long are dropped.
const IDLE: Duration = Duration::from_secs(3600);

/// Tenants that stored events since the last pass (this instance's).
#[derive(Default)]
pub struct Touched(Mutex<HashSet<Uuid>>);

impl Touched {
    pub fn mark(&self, tenant: Uuid) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tenant);
    }

    fn drain(&self) -> Vec<Uuid> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect()
    }
}

/// Recomputes the buckets of `tenant` touched by events received since `since`. Returns the
/// hour buckets written, or None when another instance holds the tenant's rollup lock.
pub async fn roll_tenant(
    pool: &PgPool,
    tenant: Uuid,
    since: DateTime<Utc>,
) -> Result<Option<u64>, UsageError> {
    let mut conn = pool.get().await.map_err(crate::db::DbError::from)?;
    let tx = begin_tenant_tx(&mut conn, tenant).await?;
    let locked: bool = tx
        .query_one(
            "select pg_try_advisory_xact_lock(hashtext('usage_rollup'), hashtext($1::text))",
            &[&tenant.to_string()],
        )
        .await?
        .get(0);
    if !locked {
        return Ok(None);
    }
    let gauges: Vec<&str> = GAUGES.to_vec();
    let hours = tx
        .execute(
            "with dirty as ( \
               select distinct metric, date_trunc('hour', occurred_at, 'UTC') as hour \
               from app.usage_events \
               where tenant_id = $1 and received_at >= $2 and deleted_at is null), \
             buckets as ( \
               select d.metric, d.hour, \
                 case when d.metric = any($3) then max(e.quantity) else sum(e.quantity) end as q \
               from dirty d join app.usage_events e \
                 on e.tenant_id = $1 and e.metric = d.metric and e.deleted_at is null \
                and e.occurred_at >= d.hour and e.occurred_at < d.hour + interval '1 hour' \
               group by d.metric, d.hour) \
             insert into app.usage_rollups (tenant_id, granularity, period_start, metric, quantity) \
             select $1, 'hour', hour, metric, q::bigint from buckets \
             on conflict (tenant_id, granularity, period_start, metric) do update \
               set quantity = excluded.quantity, updated_at = excluded.updated_at \
               where app.usage_rollups.quantity is distinct from excluded.quantity",
            &[&tenant, &since, &gauges],
        )
        .await?;
    tx.execute(
        "with dirty as ( \
           select distinct metric, date_trunc('day', occurred_at, 'UTC') as day \
           from app.usage_events \
           where tenant_id = $1 and received_at >= $2 and deleted_at is null), \
         buckets as ( \
           select d.metric, d.day, \
             case when d.metric = any($3) then max(r.quantity) else sum(r.quantity) end as q \
           from dirty d join app.usage_rollups r \
             on r.tenant_id = $1 and r.granularity = 'hour' and r.metric = d.metric \
            and r.deleted_at is null \
            and r.period_start >= d.day and r.period_start < d.day + interval '1 day' \
           group by d.metric, d.day) \
         insert into app.usage_rollups (tenant_id, granularity, period_start, metric, quantity) \
         select $1, 'day', day, metric, q::bigint from buckets \
         on conflict (tenant_id, granularity, period_start, metric) do update \
           set quantity = excluded.quantity, updated_at = excluded.updated_at \
           where app.usage_rollups.quantity is distinct from excluded.quantity",
        &[&tenant, &since, &gauges],
    )
    .await?;
    tx.commit().await?;
    Ok(Some(hours))
}

/// The live tenants (through the owner's routing function: no tenant context is needed).
pub async fn live_tenants(pool: &PgPool) -> Result<Vec<Uuid>, UsageError> {
    let conn = pool.get().await.map_err(crate::db::DbError::from)?;
    let rows = conn
        .query("select t.id from app.live_tenant_plans() t", &[])
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Rolls `tenants` since `since`; a tenant that failed is handed back for the next pass.
async fn roll_some(pool: &PgPool, touched: &Touched, tenants: Vec<Uuid>, since: DateTime<Utc>) {
    for tenant in tenants {
        let outcome = crate::context::scope(tenant, roll_tenant(pool, tenant, since)).await;
        match outcome {
            Ok(Some(_)) => {}
            // Another instance is rolling it; events it has not seen come again next pass.
            Ok(None) => touched.mark(tenant),
            Err(err) => {
                tracing::warn!(tenant_id = %tenant, error = %crate::error::error_chain(&err),
                    "usage rollup failed; tried again next pass");
                touched.mark(tenant);
            }
        }
    }
}

/// The rollup loop (registered under the supervisor).
pub async fn run(
    pool: PgPool,
    touched: std::sync::Arc<Touched>,
    quotas: std::sync::Arc<super::quota::Quotas>,
    stop: CancellationToken,
) {
    let start = Utc::now();
    match live_tenants(&pool).await {
        Ok(all) => roll_some(&pool, &touched, all, start - GRACE - OVERLAP).await,
        Err(err) => {
            tracing::warn!(error = %crate::error::error_chain(&err), "usage rollup sweep failed")
        }
    }
    let mut last = start;
    let mut ticker = tokio::time::interval(EVERY);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let begun = Utc::now();
        roll_some(&pool, &touched, touched.drain(), last - OVERLAP).await;
        last = begun;
        // Budgets of tenants gone quiet: memory stays bounded however many tenants exist.
        quotas.forget_idle(IDLE);
    }
}

/// One bucket of `GET /usage`.
#[derive(Debug, Serialize, ToSchema, PartialEq, Eq)]
pub struct UsageItem {
    pub metric: String,
    /// Start of the hour or day (UTC).
    pub period_start: DateTime<Utc>,
    pub quantity: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Granularity {
    Hour,
    Day,
}

impl Granularity {
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Hour => "hour",
            Granularity::Day => "day",
        }
    }

    /// The analytics counters' kind of `api_calls` at this granularity.
    fn api_calls_kind(self) -> &'static str {
        match self {
            Granularity::Hour => "a",
            Granularity::Day => "A",
        }
    }
}

/// `GET /usage`: the buckets starting in `[from, to)`, by start then metric.
pub struct ReadUsage {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub granularity: Granularity,
}

impl TenantOp for ReadUsage {
    type Output = Vec<UsageItem>;
    type Error = UsageError;

    fn run<'a>(
        self,
        tx: &'a TenantTx<'a>,
        caller: &'a Caller,
    ) -> BoxFuture<'a, Result<Vec<UsageItem>, UsageError>> {
        Box::pin(async move {
            caller.user()?;
            let tenant = caller.tenant_id;
            let rows = tx
                .client()
                .query(
                    &format!(
                        "select metric, period_start, quantity from app.usage_rollups \
                         where tenant_id = $1 and granularity = $2 and deleted_at is null \
                           and period_start >= $3 and period_start < $4 \
                         union all \
                         select 'api_calls', bucket, n from {}.counters \
                         where tenant_id = $1 and kind = $5::text::\"char\" and key = '' \
                           and bucket >= $3 and bucket < $4 \
                         order by 2, 1",
                        tenant_schema_name(tenant)
                    ),
                    &[
                        &tenant,
                        &self.granularity.as_str(),
                        &self.from,
                        &self.to,
                        &self.granularity.api_calls_kind(),
                    ],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| UsageItem {
                    metric: r.get(0),
                    period_start: r.get(1),
                    quantity: r.get(2),
                })
                .collect())
        })
    }
}
