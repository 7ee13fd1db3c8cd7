//! Retention: analytics older than the plan allows (`app.plans.limits ->
//! analytics_retention_days`) is deleted in small batches, each its own short transaction, so
//! ingestion and queries of the tenant go on meanwhile (no lock is held for longer than one
//! batch, and ingestion only ever writes rows newer than the cutoff).
//!
//! Steps that change `user_activity` or `type_activity` take the tenant's flush lock for
//! their (short) transaction, like every flush: see `store::update_activity`.
//!
//! The cutoff is a day boundary, `floor_day(now - days)`, so raw events, hourly and daily
//! rollups and activity bits are cut at the same instant and stay consistent with each other.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::types::Type;
use tokio_postgres::Transaction;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::buckets::{block_of_hour, day_column, hour_index, BLOCK_HOURS};
use super::store::{flush_lock_key, kind, retention_cutoff, FLUSH_LOCK_SQL};
use super::AnalyticsError;
use crate::db::{begin_tenant_tx, tenant_schema_name, DbError, PgPool};

#[derive(Clone, Debug)]
pub struct RetentionConfig {
    /// Rows deleted (or trimmed) per transaction.
    pub batch_rows: i64,
    /// Pause between two batches, leaving room to other work of the database.
    pub pause: Duration,
    /// Spreads a pass over every tenant across about this long (at most 50 ms between two
    /// tenants). Even with nothing to delete a tenant costs several short transactions, and
    /// many tenants back to back would load PostgreSQL, in every request's latency.
    pub spread_over: Option<Duration>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            batch_rows: 5_000,
            pause: Duration::from_millis(5),
            spread_over: None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanupReport {
    pub tenant_id: Uuid,
    /// None when the plan keeps analytics forever.
    pub cutoff: Option<DateTime<Utc>>,
    pub events_deleted: u64,
    pub counters_deleted: u64,
    pub activity_deleted: u64,
    pub activity_trimmed: u64,
    pub type_activity_deleted: u64,
    pub type_activity_trimmed: u64,
}

/// A plan's analytics retention in days (`p`: app.plans), NULL for no limit.
const RETENTION_DAYS: &str =
    "case when jsonb_typeof(p.limits -> 'analytics_retention_days') = 'number' \
     then greatest((p.limits ->> 'analytics_retention_days')::numeric, 0)::int4 end";

/// The plan's analytics retention in days, None for no limit. `tx` is bound to `tenant`.
pub async fn retention_days(
    tx: &Transaction<'_>,
    tenant: Uuid,
) -> Result<Option<u32>, AnalyticsError> {
    let row = tx
        .query_typed_opt(
            &format!(
                "select {RETENTION_DAYS} \
                 from app.tenants t join app.plans p on p.name = t.plan where t.id = $1"
            ),
            &[(&tenant, Type::UUID)],
        )
        .await?;
    Ok(match row {
        Some(row) => row
            .try_get::<_, Option<i32>>(0)?
            .map(|d| d.max(0).unsigned_abs()),
        None => None,
    })
}

/// Deletes the tenant's analytics older than its plan's retention, as of `now`.
pub async fn cleanup_tenant(
    pool: &PgPool,
    tenant: Uuid,
    now: DateTime<Utc>,
    config: &RetentionConfig,
) -> Result<CleanupReport, AnalyticsError> {
    let days = {
        let mut conn = pool.get().await.map_err(DbError::from)?;
        let tx = begin_tenant_tx(&mut conn, tenant).await?;
        let days = retention_days(&tx, tenant).await?;
        tx.commit().await?;
        days
    };
    let Some(days) = days else {
        return Ok(CleanupReport {
            tenant_id: tenant,
            ..Default::default()
        });
    };
    cleanup_tenant_before(pool, tenant, retention_cutoff(now, days), config).await
}

/// Deletes the tenant's analytics older than `cutoff` (a day boundary).
async fn cleanup_tenant_before(
    pool: &PgPool,
    tenant: Uuid,
    cutoff: DateTime<Utc>,
    config: &RetentionConfig,
) -> Result<CleanupReport, AnalyticsError> {
    let mut report = CleanupReport {
        tenant_id: tenant,
        cutoff: Some(cutoff),
        ..Default::default()
    };
    let schema = tenant_schema_name(tenant);
    let batch = config.batch_rows.max(1);
    let cutoff_hour = hour_index(cutoff);
    let first_kept_block = block_of_hour(cutoff_hour);
    // The cutoff is a day boundary: days [0, first_kept_day) of the block are forgotten.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // clamped to 0..=31
    let first_kept_day =
        ((cutoff_hour - i64::from(first_kept_block) * BLOCK_HOURS) / 24).clamp(0, 31) as usize;
    let keep_days: i32 = (!0u32 << first_kept_day).cast_signed();
    let cleared: String = (0..first_kept_day)
        .map(|d| format!(", {} = 0", day_column(d)))
        .collect();
    let kinds: Vec<i8> = kind::ALL.iter().map(|k| k.cast_signed()).collect();

    // Each statement picks at most `batch` rows by ctid and works on those only.
    let steps: [(&str, String); 6] = [
        (
            "events",
            format!(
                "with d as (delete from {schema}.events where tenant_id = $1 and ctid = any(array( \
                   select ctid from {schema}.events where tenant_id = $1 and occurred_at < $2 limit $3)) \
                 returning 1) select count(*) from d"
            ),
        ),
        (
            "counters",
            format!(
                "with d as (delete from {schema}.counters where tenant_id = $1 and ctid = any(array( \
                   select ctid from {schema}.counters where tenant_id = $1 and kind = any($4) \
                   and bucket < $2 limit $3)) returning 1) select count(*) from d"
            ),
        ),
        (
            "activity",
            format!(
                "with d as (delete from {schema}.user_activity where tenant_id = $1 and ctid = any(array( \
                   select ctid from {schema}.user_activity where tenant_id = $1 and block < $5 limit $3)) \
                 returning 1) select count(*) from d"
            ),
        ),
        (
            "trim",
            format!(
                "with u as (update {schema}.user_activity set days = days & $6{cleared} \
                 where tenant_id = $1 and ctid = any(array( \
                   select ctid from {schema}.user_activity where tenant_id = $1 and block = $5 \
                   and (days & ~$6) <> 0 limit $3)) \
                 returning 1) select count(*) from u"
            ),
        ),
        // Per-type masks are only read by flushes, to tell new (user, type, hour) triples; a
        // bit left on a day whose events are gone would hide that day's users from its `p`
        // and `P` counters if the plan's retention were lengthened later.
        (
            "type_activity",
            format!(
                "with d as (delete from {schema}.type_activity where tenant_id = $1 and ctid = any(array( \
                   select ctid from {schema}.type_activity where tenant_id = $1 and block < $5 limit $3)) \
                 returning 1) select count(*) from d"
            ),
        ),
        (
            "type_trim",
            format!(
                "with u as (update {schema}.type_activity set days = days & $6{cleared} \
                 where tenant_id = $1 and ctid = any(array( \
                   select ctid from {schema}.type_activity where tenant_id = $1 and block = $5 \
                   and (days & ~$6) <> 0 limit $3)) \
                 returning 1) select count(*) from u"
            ),
        ),
    ];
    for (step, sql) in &steps {
        loop {
            let mut conn = pool.get().await.map_err(DbError::from)?;
            conn.touch_tenant_schema(tenant);
            let tx = begin_tenant_tx(&mut conn, tenant).await?;
            if matches!(*step, "activity" | "trim" | "type_activity" | "type_trim") {
                // Flushes rewrite user_activity rows by the ctid they read under this lock;
                // a row changed or removed in between would lose that flush its marks.
                tx.query_typed(FLUSH_LOCK_SQL, &[(&flush_lock_key(tenant), Type::TEXT)])
                    .await?;
            }
            let row = tx
                .query_typed_one(
                    sql,
                    &[
                        (&tenant, Type::UUID),
                        (&cutoff, Type::TIMESTAMPTZ),
                        (&batch, Type::INT8),
                        (&kinds, Type::CHAR_ARRAY),
                        (&first_kept_block, Type::INT4),
                        (&keep_days, Type::INT4),
                    ],
                )
                .await?;
            tx.commit().await?;
            let n = row.try_get::<_, i64>(0)?.max(0).unsigned_abs();
            match *step {
                "events" => report.events_deleted += n,
                "counters" => report.counters_deleted += n,
                "activity" => report.activity_deleted += n,
                "trim" => report.activity_trimmed += n,
                "type_activity" => report.type_activity_deleted += n,
                _ => report.type_activity_trimmed += n,
            }
            // A short batch means nothing is left; a batch whose rows were all changed by a
            // concurrent flush comes back short too and the rest waits for the next run.
            if i64::try_from(n).unwrap_or(i64::MAX) < batch {
                break;
            }
            tokio::time::sleep(config.pause).await;
        }
    }
    Ok(report)
}

/// The cutoff each tenant was last cleaned up to by this process. Ingestion never writes
/// below the cutoff (late events are accepted back to `now - days` only, and the cutoff is the
/// day boundary at or before that), so a tenant cleaned up to a cutoff has nothing to delete
/// until the cutoff moves: once a day, or when its plan changes. Passes run hourly, so 23 of
/// 24 would otherwise open every tenant's schema (seven short transactions each) for nothing.
#[derive(Debug, Default)]
pub struct CleanedUpTo(HashMap<Uuid, DateTime<Utc>>);

impl CleanedUpTo {
    pub fn get(&self, tenant: Uuid) -> Option<DateTime<Utc>> {
        self.0.get(&tenant).copied()
    }
}

/// Cleans every live tenant whose cutoff moved since `cleaned` last saw it, one after the other;
/// a failure is logged and the next tenant goes on (and is retried by the next pass).
pub async fn cleanup_all(
    pool: &PgPool,
    now: DateTime<Utc>,
    config: &RetentionConfig,
    cleaned: &mut CleanedUpTo,
) -> Result<Vec<CleanupReport>, AnalyticsError> {
    // Every live tenant, through the function that lists them for the app role (which reads no
    // tenant row outside its context); plans without a limit keep everything, and those tenants
    // are never opened.
    let tenants: Vec<(Uuid, DateTime<Utc>)> = {
        let conn = pool.get().await.map_err(DbError::from)?;
        let rows = conn
            .query_typed(
                &format!(
                    "select t.id, {RETENTION_DAYS} from app.live_tenant_plans() t \
                     join app.plans p on p.name = t.plan order by t.id"
                ),
                &[],
            )
            .await?;
        let mut tenants = Vec::with_capacity(rows.len());
        for row in rows {
            let days: Option<i32> = row.try_get(1)?;
            if let Some(days) = days {
                tenants.push((
                    row.try_get(0)?,
                    retention_cutoff(now, days.max(0).unsigned_abs()),
                ));
            }
        }
        tenants
    };
    cleaned
        .0
        .retain(|tenant, _| tenants.binary_search_by_key(tenant, |(t, _)| *t).is_ok());
    let due: Vec<(Uuid, DateTime<Utc>)> = tenants
        .into_iter()
        .filter(|(tenant, cutoff)| cleaned.get(*tenant) != Some(*cutoff))
        .collect();
    let mut reports = Vec::with_capacity(due.len());
    let between_tenants = pause_between_tenants(config.spread_over, due.len());
    for (i, (tenant, cutoff)) in due.into_iter().enumerate() {
        if i > 0 && !between_tenants.is_zero() {
            tokio::time::sleep(between_tenants).await;
        }
        let span = tracing::info_span!("analytics_retention", tenant_id = %tenant);
        match cleanup_tenant_before(pool, tenant, cutoff, config)
            .instrument(span)
            .await
        {
            Ok(report) => {
                cleaned.0.insert(tenant, cutoff);
                reports.push(report);
            }
            Err(err) => tracing::warn!(%err, "analytics retention failed; next run retries"),
        }
    }
    Ok(reports)
}

fn pause_between_tenants(spread_over: Option<Duration>, tenants: usize) -> Duration {
    match (spread_over, u32::try_from(tenants)) {
        (Some(over), Ok(n)) if n > 0 => (over / n).min(Duration::from_millis(50)),
        _ => Duration::ZERO,
    }
}

/// The retention job: a pass over every tenant each `every`, until `stop`. A pass under way
/// is dropped then: each tenant's cleanup is its own transaction, and the next pass redoes
/// what was left.
pub async fn run(pool: PgPool, every: Duration, stop: CancellationToken) {
    let config = RetentionConfig {
        spread_over: Some(every / 2),
        ..RetentionConfig::default()
    };
    let mut ticker = tokio::time::interval(every);
    let mut cleaned = CleanedUpTo::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let pass = cleanup_all(&pool, Utc::now(), &config, &mut cleaned);
        let Some(result) = stop.run_until_cancelled(pass).await else {
            return;
        };
        match result {
            Ok(reports) => {
                let deleted: u64 = reports.iter().map(|r| r.events_deleted).sum();
                if deleted > 0 {
                    tracing::info!(events = deleted, "analytics retention pass");
                }
            }
            Err(err) => tracing::warn!(%err, "analytics retention pass failed; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_is_spread_over_its_time_with_at_most_50_ms_between_tenants() {
        let hour = Duration::from_secs(3_600);
        assert_eq!(pause_between_tenants(None, 1_000), Duration::ZERO);
        assert_eq!(pause_between_tenants(Some(hour), 0), Duration::ZERO);
        assert_eq!(
            pause_between_tenants(Some(Duration::from_secs(1)), 100),
            Duration::from_millis(10)
        );
        assert_eq!(
            pause_between_tenants(Some(hour), 1_000),
            Duration::from_millis(50)
        );
    }
}
