//! The config snapshot a tenant's actor owns (DESIGN.md "The tenant actor's state").
//!
//! The actor is the only writer: it loads the snapshot when first asked (Redis first, then
//! PostgreSQL), reloads it from PostgreSQL when a change is announced (`cache::Invalidation`),
//! and refreshes it once it is older than the TTL. Requests read it through the registry entry's
//! [`ConfigCell`] without messaging the actor: one atomic load of an `Arc`.
//!
//! A request that finds the snapshot older than the TTL still uses it, and asks the actor for a
//! refresh: with Redis or PostgreSQL down, the last snapshot keeps serving, and PostgreSQL is
//! asked again (at most once a second) until it answers. Only the first requests of a freshly
//! activated tenant wait, for the first load.
//!
//! Loads may overlap (a refresh under way when a change is announced); each carries a sequence
//! number, and a load started before the last announced change never replaces the snapshot.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::db::{PgPool, SharedConn, TenantTx};
use crate::tenant_config::load::{self, LoadError, SnapshotStore};
use crate::tenant_config::TenantSnapshot;

/// After a failed load, requests do not ask for another one sooner than this.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// An ask the actor has not answered in this long (lost to a restart) may be repeated.
const ASK_EXPIRES: Duration = Duration::from_secs(5);

/// One tenant's current snapshot and what requests need to wait for the first one.
pub struct ConfigCell {
    current: ArcSwapOption<TenantSnapshot>,
    /// Woken each time a load ends, whatever its outcome.
    finished: Notify,
    /// Loads ended so far.
    loads: AtomicU64,
    /// Milliseconds since `origin` when a load was last asked for by a request; 0 when none
    /// is pending. Requests ask at most once per load.
    asked_at: AtomicU64,
    /// Set by an announced change (or a reconnect to Redis pub/sub): the next request asks
    /// for a refresh even if the snapshot is younger than the TTL. [`NOT_EXPIRED`], or the
    /// [`Source`] the refresh must read.
    expired: AtomicU8,
    failure: Mutex<Option<Failure>>,
    origin: Instant,
}

struct Failure {
    at: Instant,
    error: Arc<LoadError>,
    /// The number of the load that failed (`loads` once it ended).
    load: u64,
}

impl Default for ConfigCell {
    fn default() -> Self {
        ConfigCell {
            current: ArcSwapOption::empty(),
            finished: Notify::new(),
            loads: AtomicU64::new(0),
            asked_at: AtomicU64::new(0),
            expired: AtomicU8::new(NOT_EXPIRED),
            failure: Mutex::new(None),
            origin: Instant::now(),
        }
    }
}

/// What a request does about the snapshot.
pub enum Need {
    /// Use this one.
    Ready(Arc<TenantSnapshot>),
    /// Use this one, and ask the actor to refresh it from that source.
    Stale(Arc<TenantSnapshot>, Source),
    /// There is none yet.
    Missing,
}

impl ConfigCell {
    pub fn current(&self) -> Option<Arc<TenantSnapshot>> {
        self.current.load_full()
    }

    fn now_ms(&self) -> u64 {
        // +1: 0 means "not asked".
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// What a request should do, given the TTL.
    pub fn need(&self, ttl: Duration) -> Need {
        let Some(current) = self.current() else {
            return Need::Missing;
        };
        let source = match self.expired.load(Ordering::Relaxed) {
            FROM_DATABASE => Some(Source::Database),
            FROM_CACHE => Some(Source::Cache),
            _ => current
                .is_older_than(ttl, chrono::Utc::now())
                .then_some(Source::Cache),
        };
        match source {
            Some(source) if !self.failed_recently() => Need::Stale(current, source),
            _ => Need::Ready(current),
        }
    }

    fn failed_recently(&self) -> bool {
        self.failure_slot()
            .as_ref()
            .is_some_and(|f| f.at.elapsed() < RETRY_AFTER)
    }

    fn failure_slot(&self) -> std::sync::MutexGuard<'_, Option<Failure>> {
        // Only assignments happen under the lock.
        self.failure.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A request asked for a load the actor has not ended yet.
    pub fn ask_pending(&self) -> bool {
        let asked = self.asked_at.load(Ordering::Acquire);
        let expires = u64::try_from(ASK_EXPIRES.as_millis()).unwrap_or(u64::MAX);
        asked != 0 && self.now_ms().saturating_sub(asked) <= expires
    }

    /// True for the one caller that should send the actor a load request now.
    pub fn claim_ask(&self) -> bool {
        let now = self.now_ms();
        let asked = self.asked_at.load(Ordering::Acquire);
        let expires = u64::try_from(ASK_EXPIRES.as_millis()).unwrap_or(u64::MAX);
        let free = asked == 0 || now.saturating_sub(asked) > expires;
        free && self
            .asked_at
            .compare_exchange(asked, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Marks the snapshot for a refresh from `source` at the next request (a refresh from
    /// PostgreSQL is never downgraded to one from Redis).
    pub fn expire(&self, source: Source) {
        let mark = match source {
            Source::Cache => FROM_CACHE,
            Source::Database => FROM_DATABASE,
        };
        self.expired.fetch_max(mark, Ordering::Relaxed);
    }

    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Acquire)
    }

    /// Waits until a load ends after `seen` loads, or until `deadline`; false on the deadline.
    pub async fn wait_for_load(&self, seen: u64, deadline: tokio::time::Instant) -> bool {
        loop {
            let finished = self.finished.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            if self.loads() != seen {
                return true;
            }
            if tokio::time::timeout_at(deadline, finished).await.is_err() {
                return false;
            }
        }
    }

    /// Why the last load failed, if it ended after the first `seen` loads.
    pub fn failure_since(&self, seen: u64) -> Option<Arc<LoadError>> {
        self.failure_slot()
            .as_ref()
            .filter(|f| f.load > seen)
            .map(|f| f.error.clone())
    }

    /// The actor's side: a load ended. `snapshot` is stored unless None (failed, or superseded).
    pub(super) fn finish(&self, snapshot: Option<TenantSnapshot>, error: Option<LoadError>) {
        if let Some(snapshot) = snapshot {
            self.current.store(Some(Arc::new(snapshot)));
            self.expired.store(NOT_EXPIRED, Ordering::Relaxed);
            *self.failure_slot() = None;
        }
        if let Some(error) = error {
            *self.failure_slot() = Some(Failure {
                at: Instant::now(),
                error: Arc::new(error),
                // Loads end on the actor's thread only: none can end in between.
                load: self.loads() + 1,
            });
        }
        self.end_load();
    }

    /// Lets requests ask again and wakes those waiting (also when a restart dropped a load).
    pub(super) fn end_load(&self) {
        self.asked_at.store(0, Ordering::Release);
        self.loads.fetch_add(1, Ordering::AcqRel);
        self.finished.notify_waiters();
    }
}

const NOT_EXPIRED: u8 = 0;
const FROM_CACHE: u8 = 1;
const FROM_DATABASE: u8 = 2;

/// Where a load reads first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The Redis copy if it is younger than the TTL (and than the snapshot held), else
    /// PostgreSQL.
    Cache,
    /// PostgreSQL: a change was announced, so the Redis copy may be older than it.
    Database,
}

/// What a load needs, cloned out of the actor so the load runs beside it.
#[derive(Clone)]
pub struct Loader {
    pub tenant: Uuid,
    pub pool: PgPool,
    pub single_statements: Option<Arc<SharedConn>>,
    pub store: Arc<SnapshotStore>,
}

impl Loader {
    /// Reads the snapshot from `source`, and writes what PostgreSQL gave back to Redis.
    /// `held`: the snapshot the actor has, which a Redis copy must be younger than.
    pub async fn load(
        self,
        source: Source,
        held: Option<Arc<TenantSnapshot>>,
    ) -> Result<(TenantSnapshot, &'static str), LoadError> {
        if source == Source::Cache {
            match self.store.get(self.tenant).await {
                Ok(Some(copy))
                    if !copy.is_older_than(self.store.ttl(), chrono::Utc::now())
                        && held.as_ref().is_none_or(|h| copy.loaded_at > h.loaded_at) =>
                {
                    return Ok((copy, "redis"));
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::debug!(tenant_id = %self.tenant, %err, "config snapshot not read from Redis")
                }
            }
        }
        let snapshot = self.read_database().await?;
        if let Err(err) = self.store.put(&snapshot).await {
            tracing::debug!(tenant_id = %self.tenant, %err, "config snapshot not copied to Redis");
        }
        Ok((snapshot, "database"))
    }

    async fn read_database(&self) -> Result<TenantSnapshot, LoadError> {
        // A single statement: it shares the host's pipelined connection when there is one,
        // like reads by id (`actors::tenant::run_in_tenant_tx`).
        if let Some(shared) = &self.single_statements {
            let conn = shared.get().await?;
            return load::read(&TenantTx::single_statement(&conn, self.tenant), self.tenant).await;
        }
        let conn = self.pool.get().await.map_err(crate::db::DbError::from)?;
        load::read(&TenantTx::single_statement(&conn, self.tenant), self.tenant).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_ask_per_load() {
        let cell = ConfigCell::default();
        assert!(matches!(cell.need(Duration::from_secs(30)), Need::Missing));
        assert!(cell.claim_ask());
        assert!(!cell.claim_ask());
        cell.end_load();
        assert_eq!(cell.loads(), 1);
        assert!(cell.claim_ask());
    }

    #[test]
    fn stale_and_expired_snapshots_ask_for_a_refresh() {
        let cell = ConfigCell::default();
        let snapshot = TenantSnapshot::bare(Uuid::nil(), "t", "free");
        cell.finish(Some(snapshot), None);
        let ttl = Duration::from_secs(30);
        assert!(matches!(cell.need(ttl), Need::Ready(_)));
        assert!(matches!(
            cell.need(Duration::ZERO),
            Need::Stale(_, Source::Cache)
        ));
        cell.expire(Source::Database);
        cell.expire(Source::Cache);
        assert!(matches!(cell.need(ttl), Need::Stale(_, Source::Database)));
        // A failed refresh keeps the snapshot and holds the next ask back for a moment.
        cell.finish(None, Some(LoadError::Missing(Uuid::nil())));
        assert!(matches!(cell.need(ttl), Need::Ready(_)));
        assert!(cell.failure_since(1).is_some());
        assert!(cell.failure_since(2).is_none());
    }

    #[tokio::test]
    async fn waiters_wake_when_a_load_ends() {
        let cell = Arc::new(ConfigCell::default());
        let seen = cell.loads();
        let waiter = {
            let cell = cell.clone();
            tokio::spawn(async move {
                cell.wait_for_load(seen, tokio::time::Instant::now() + Duration::from_secs(5))
                    .await
            })
        };
        tokio::task::yield_now().await;
        cell.finish(Some(TenantSnapshot::bare(Uuid::nil(), "t", "free")), None);
        assert!(waiter.await.unwrap());
        assert!(
            !cell
                .wait_for_load(
                    cell.loads(),
                    tokio::time::Instant::now() + Duration::from_millis(10)
                )
                .await
        );
    }
}
