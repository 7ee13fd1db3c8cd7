//! Real-time analytics of a tenant (API.md "Analytics"): ingestion with group commit, rollups
//! kept exact in the same transaction as the events, summary and time series queries, and
//! retention per plan. The tables live in each tenant's own schema (tenant_template/V2 to V5).

pub mod api_calls;
pub mod buckets;
pub mod ingest;
mod metrics;
pub mod model;
pub mod query;
pub mod retention;
pub mod store;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dashmap::DashMap;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db::{DbError, PgPool};
use crate::error::FieldError;

pub use ingest::{CommittedBatch, CommitterConfig, CommitterStats, GroupCommitter};
pub use model::{EventBatch, IngestRules, NewEvent, ValidEvent};
pub use query::{Metric, Series, SeriesRequest, Summary};

/// Tables of a tenant schema that only hold what is derived from `events` (rollups and the
/// activity masks): rebuilt from the events, left out of the GDPR export.
pub const DERIVED_TABLES: &[&str] = &["counters", "user_activity", "type_activity"];

/// Cloned because one failed flush answers every request it held with the same error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AnalyticsError {
    #[error("validation failed: {0:?}")]
    Validation(Vec<FieldError>),
    #[error("too many analytics events pending for the tenant")]
    Overloaded { retry_after: u64 },
    #[error("analytics unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("the flush panicked")]
    FlushPanicked,
    /// A rollup row read under the flush lock was gone when it was updated: committing would
    /// lose its counts, so the flush fails instead.
    /// A user id of the batch got no key from the dictionary statement (`store::user_keys`),
    /// which inserts every id it does not find: a broken invariant, so nothing is committed.
    #[error("a user id of the batch has no dictionary key")]
    UserKeyMissing,
    #[error("{table} changed under the flush lock: {updated} of {expected} rows updated")]
    RollupChanged {
        table: String,
        updated: u64,
        expected: usize,
    },
}

impl From<tokio_postgres::Error> for AnalyticsError {
    fn from(err: tokio_postgres::Error) -> Self {
        AnalyticsError::Db(err.into())
    }
}

/// The group committers of the tenants that ingested since the start, created on first use.
/// The tenant actor takes over ownership of its committer later (DESIGN.md); the committer
/// does not depend on this registry. Cloning shares the registry (the metrics collector
/// holds a clone).
#[derive(Clone)]
pub struct AnalyticsRegistry {
    inner: Arc<Committers>,
}

struct Committers {
    pool: PgPool,
    config: CommitterConfig,
    live: DashMap<Uuid, Arc<GroupCommitter>>,
    /// Counters of the committers evicted so far, so totals never go down; also the lock
    /// that orders `evict_idle` and `totals` (see there).
    retired: Mutex<(CommitterStats, u64)>,
}

/// Ingest totals of this process since it started (`/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestTotals {
    /// Counters summed over every committer, live or evicted; `pending_events` and
    /// `largest_flush` over the live ones only.
    pub stats: CommitterStats,
    pub committers_active: usize,
    pub committers_evicted: u64,
}

/// How often idle committers are dropped (`maintain`).
pub const EVICT_EVERY: Duration = Duration::from_secs(60);

impl AnalyticsRegistry {
    pub fn new(pool: PgPool, config: CommitterConfig) -> AnalyticsRegistry {
        AnalyticsRegistry {
            inner: Arc::new(Committers {
                pool,
                config,
                live: DashMap::new(),
                retired: Mutex::new((CommitterStats::default(), 0)),
            }),
        }
    }

    pub fn committer(&self, tenant: Uuid) -> Arc<GroupCommitter> {
        let inner = &self.inner;
        if let Some(found) = inner.live.get(&tenant) {
            return found.clone();
        }
        inner
            .live
            .entry(tenant)
            .or_insert_with(|| {
                GroupCommitter::new(tenant, inner.pool.clone(), inner.config.clone())
            })
            .clone()
    }

    /// The tenant's committer if it exists (live subscriptions).
    pub fn existing(&self, tenant: Uuid) -> Option<Arc<GroupCommitter>> {
        self.inner.live.get(&tenant).map(|c| c.clone())
    }

    /// Drops committers with nothing pending and no live subscriber, bounding memory when many
    /// tenants ingest once in a while. Returns how many were dropped.
    pub fn evict_idle(&self) -> usize {
        let mut evicted = 0;
        let mut retired = self
            .inner
            .retired
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.inner.live.retain(|_, c| {
            let stats = c.stats();
            // Held elsewhere (a request in submit, a flush running): not idle. `committer()`
            // hands out clones under the map's shard lock, which retain holds, so the count
            // cannot grow while this runs.
            if Arc::strong_count(c) > 1 || stats.pending_events > 0 || c.has_subscribers() {
                return true;
            }
            retired.0.add(&CommitterStats {
                largest_flush: 0,
                ..stats
            });
            evicted += 1;
            false
        });
        retired.1 += evicted as u64;
        evicted
    }

    /// Waits until no committer holds events (queued or being written), for `within` at most,
    /// and returns the events still held then. At shutdown, once the HTTP server has stopped.
    pub async fn settle(&self, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let pending = self.totals().stats.pending_events;
            if pending == 0 || tokio::time::Instant::now() >= deadline {
                return pending;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Ingest totals over every committer this registry had.
    pub fn totals(&self) -> IngestTotals {
        // Held while the live ones are read, so a committer evicted meanwhile is counted
        // exactly once (evict_idle takes the same lock before the map's).
        let retired = self
            .inner
            .retired
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut stats = retired.0;
        let mut active = 0;
        for committer in self.inner.live.iter() {
            stats.add(&committer.stats());
            active += 1;
        }
        IngestTotals {
            stats,
            committers_active: active,
            committers_evicted: retired.1,
        }
    }
}

/// Exports the ingest totals to `/metrics`; once per metrics registry.
pub fn register_metrics(
    registry: &AnalyticsRegistry,
    metrics: &prometheus::Registry,
) -> prometheus::Result<()> {
    metrics::IngestCollector::register(registry.clone(), metrics)
}

/// The registry's upkeep, one loop per server: drops idle committers every `EVICT_EVERY`.
pub async fn maintain(registry: AnalyticsRegistry, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(EVICT_EVERY);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let evicted = registry.evict_idle();
        if evicted > 0 {
            tracing::debug!(evicted, "idle analytics committers dropped");
        }
    }
}
