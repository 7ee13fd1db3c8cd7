//! Metering of `api_calls`: the request pipeline counts every request of a resolved tenant in
//! memory (one atomic add on the hot path), and a flusher adds the counts to the tenant's
//! analytics counters every few seconds, a few tenants to a transaction, each tenant's writes
//! under its own context. A graceful shutdown writes the counts left after the last request
//! (`flush_now`); a crash loses at most one flush interval of counts (a crash of PostgreSQL
//! itself, also the flushes of its last fraction of a second: they commit without waiting for
//! the WAL flush); counts that fail to flush are kept for the next try.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use dashmap::DashMap;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::db::{PgPool, COMMIT_WITHOUT_WAITING_SQL};

/// Calls counted in each hour: `(start of the hour, count)`.
type HourlyCalls = Vec<(DateTime<Utc>, i64)>;

#[derive(Default)]
pub struct ApiCallMeter {
    counts: DashMap<(Uuid, DateTime<Utc>), AtomicI64>,
}

fn hour_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::hours(1)).unwrap_or(at)
}

impl ApiCallMeter {
    pub fn record(&self, tenant: Uuid) {
        let key = (tenant, hour_of(Utc::now()));
        if let Some(counter) = self.counts.get(&key) {
            counter.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.counts
            .entry(key)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Takes every count out of the meter, grouped by tenant.
    fn drain(&self) -> Vec<(Uuid, HourlyCalls)> {
        let mut by_tenant: std::collections::HashMap<Uuid, Vec<(DateTime<Utc>, i64)>> =
            Default::default();
        for entry in self.counts.iter() {
            let n = entry.value().swap(0, Ordering::Relaxed);
            if n > 0 {
                by_tenant
                    .entry(entry.key().0)
                    .or_default()
                    .push((entry.key().1, n));
            }
        }
        // Past hours will not be counted again; dropping their zeroed entries bounds the map, and
        // counts that could not be written for two days (a purged tenant) are given up.
        let current = hour_of(Utc::now());
        let give_up = current - TimeDelta::hours(48);
        self.counts.retain(|(_, hour), n| {
            *hour >= current || (n.load(Ordering::Relaxed) != 0 && *hour > give_up)
        });
        by_tenant.into_iter().collect()
    }

    fn give_back(&self, tenant: Uuid, calls: &[(DateTime<Utc>, i64)]) {
        for (hour, n) in calls {
            self.counts
                .entry((tenant, *hour))
                .or_default()
                .fetch_add(*n, Ordering::Relaxed);
        }
    }

    /// Writes the counts gathered so far, `TENANTS_PER_FLUSH_TX` tenants to a transaction,
    /// spread over about `over`: many tenants' transactions back to back would hold PostgreSQL
    /// busy at once and show in every request's latency at that moment, and one transaction per
    /// tenant would cost several round trips and a commit each.
    async fn flush(&self, pool: &PgPool, over: Duration) {
        let pending = self.drain();
        let groups: Vec<&[(Uuid, HourlyCalls)]> = pending.chunks(TENANTS_PER_FLUSH_TX).collect();
        let pause = if groups.is_empty() {
            Duration::ZERO
        } else {
            (over / u32::try_from(groups.len()).unwrap_or(u32::MAX)).min(Duration::from_millis(500))
        };
        for group in groups {
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            if write(pool, group).await.is_ok() {
                continue;
            }
            // One tenant that cannot be written (its schema purged a moment ago) must not hold
            // back the others of its group: each on its own, and only failures are kept.
            for one in group.chunks(1) {
                if let Err(err) = write(pool, one).await {
                    let (tenant, calls) = &one[0];
                    tracing::warn!(tenant_id = %tenant, %err, "api_calls not flushed; kept for the next try");
                    self.give_back(*tenant, calls);
                }
            }
        }
    }

    /// Flushes every `every` until `stop`; a flush under way is finished first (its counts are
    /// out of the meter until written).
    pub async fn run(
        self: std::sync::Arc<Self>,
        pool: PgPool,
        every: Duration,
        stop: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            // Half the interval, so one flush is over well before the next begins.
            self.flush(&pool, every / 2).await;
        }
    }

    /// Writes every count gathered so far, at once (at shutdown, after the last request), and
    /// returns the calls that could not be written. The HTTP workers' runtimes may still be
    /// going away then, and with them the pooled connections they opened: counts whose write
    /// failed on such a connection are tried again, the pool replacing it with a fresh one.
    pub async fn flush_now(&self, pool: &PgPool) -> i64 {
        let mut left = 0;
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            self.flush(pool, Duration::ZERO).await;
            left = self
                .counts
                .iter()
                .map(|entry| entry.value().load(Ordering::Relaxed))
                .sum();
            if left == 0 {
                break;
            }
        }
        left
    }
}

/// Tenants whose counts share one flush transaction.
const TENANTS_PER_FLUSH_TX: usize = 16;

/// Adds `tenants`' counts in one transaction on one connection. The context is set to each
/// tenant in turn (`set_config(.., true)` holds until the next one or the end of the
/// transaction), and each tenant's upsert runs, under that tenant's policies, only after its
/// context is in place. A crash loses at most one flush interval of counts anyway, so the commit
/// need not wait for the WAL flush, which would cost one fsync per transaction every interval.
async fn write(pool: &PgPool, tenants: &[(Uuid, HourlyCalls)]) -> Result<(), String> {
    let mut conn = pool.get().await.map_err(|e| e.to_string())?;
    for (tenant, _) in tenants {
        conn.touch_tenant_schema(*tenant);
    }
    let set_tenant = conn.statements().set_tenant().clone();
    let citus = conn.is_citus();
    let tx = conn.transaction().await.map_err(|e| e.to_string())?;
    tx.batch_execute(COMMIT_WITHOUT_WAITING_SQL)
        .await
        .map_err(|e| e.to_string())?;
    for (tenant, calls) in tenants {
        let span = tracing::info_span!("api_calls_flush", tenant_id = %tenant);
        crate::context::scope(*tenant, async {
            if citus {
                crate::db::tenant_tx::set_tenant_in_tx(&*tx, *tenant)
                    .await
                    .map_err(|e| e.to_string())?;
            } else {
                tx.execute(&set_tenant, &[&tenant.hyphenated().to_string()])
                    .await
                    .map_err(|e| e.to_string())?;
            }
            super::store::record_api_calls(&tx, *tenant, calls)
                .await
                .map_err(|e| e.to_string())
        })
        .instrument(span)
        .await?;
    }
    tx.commit().await.map_err(|e| e.to_string())
}
