//! Group commit of a tenant's analytics events. Concurrent `submit`s are coalesced: while one
//! transaction is being written, the next requests queue up and all go into the following
//! transaction. A submit returns only once the transaction holding its events has committed,
//! and every submit of a failed transaction gets the error: nothing is acknowledged that is not
//! committed. The queue is bounded per tenant; past the bound a submit is refused at once
//! (`Overloaded`, answered 503 with Retry-After) instead of waiting.
//!
//! One request cannot fail the others of its group: when a group's transaction is refused by
//! PostgreSQL (nothing of it stored), the requests whose events PostgreSQL cannot store (a NUL
//! character, which validation refuses but events built by hand may hold) are answered with a
//! validation error, and the others are written again without
//! them, then one by one if that fails too, so each gets the answer its own events deserve.
//! Failures that are no request's doing (no connection, a timeout) or whose outcome is unknown
//! (the answer to COMMIT lost, a panic) still fail the whole group: retrying those could store
//! events twice or hold the queue for as many timeouts as there are requests.
//!
//! Self-contained on purpose: the tenant actor owns one per tenant (DESIGN.md); until then the
//! `AnalyticsRegistry` keeps them.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use tokio::sync::{broadcast, oneshot};
use uuid::Uuid;

use super::model::{self, ValidEvent};
use super::store::UserKey;
use super::{store, AnalyticsError};
use crate::db::{begin_tenant_tx, DbError, PgPool};
use crate::error::error_chain;

#[derive(Clone, Debug)]
pub struct CommitterConfig {
    /// Events queued or being written for one tenant; a submit that would go past it is
    /// refused with `Overloaded` (a submit into an empty queue is always taken).
    pub max_pending_events: usize,
    /// Events in one transaction at most; requests are never split across transactions.
    pub max_flush_events: usize,
    /// Seconds a refused client is told to wait.
    pub retry_after_secs: u64,
    /// Committed batches kept for slow live subscribers before they lag.
    pub live_capacity: usize,
    /// Where the queue is written on when the runtime of the task writing it shuts down (an
    /// HTTP worker that has drained its own requests stops before the others at shutdown, and
    /// a flusher it started may be writing other workers' requests): the server's main runtime.
    /// None: the requests still queued then are answered with an error.
    pub rescue_runtime: Option<tokio::runtime::Handle>,
}

impl Default for CommitterConfig {
    fn default() -> Self {
        CommitterConfig {
            max_pending_events: 20_000,
            max_flush_events: 10_000,
            retry_after_secs: 1,
            live_capacity: 64,
            rescue_runtime: None,
        }
    }
}

/// Events of one committed transaction, offered to live subscribers (the WebSocket stream).
#[derive(Debug)]
pub struct CommittedBatch {
    pub tenant_id: Uuid,
    pub committed_at: DateTime<Utc>,
    pub events: Vec<ValidEvent>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitterStats {
    /// Events taken into the queue (each is later committed or failed).
    pub accepted_events: u64,
    /// Transactions committed, those of requests retried alone included.
    pub flushes: u64,
    pub committed_events: u64,
    /// Group transactions that failed; their requests may then have been retried alone.
    pub failed_flushes: u64,
    /// Events of requests answered with an error: nothing of those requests was stored.
    pub failed_events: u64,
    /// Requests refused at once because the queue was full (503).
    pub rejected_overloaded: u64,
    /// Events of those requests.
    pub refused_events: u64,
    pub largest_flush: u64,
    pub pending_events: usize,
}

impl CommitterStats {
    /// Adds `other`'s counters; `largest_flush` keeps the larger.
    pub fn add(&mut self, other: &CommitterStats) {
        self.accepted_events += other.accepted_events;
        self.flushes += other.flushes;
        self.committed_events += other.committed_events;
        self.failed_flushes += other.failed_flushes;
        self.failed_events += other.failed_events;
        self.rejected_overloaded += other.rejected_overloaded;
        self.refused_events += other.refused_events;
        self.largest_flush = self.largest_flush.max(other.largest_flush);
        self.pending_events += other.pending_events;
    }
}

struct Pending {
    events: Vec<ValidEvent>,
    done: oneshot::Sender<Result<u64, AnalyticsError>>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Pending>,
    /// Queued plus being written: the bound applies to both.
    pending_events: usize,
    flushing: bool,
}

#[derive(Default)]
struct Stats {
    accepted_events: AtomicU64,
    flushes: AtomicU64,
    committed_events: AtomicU64,
    failed_flushes: AtomicU64,
    failed_events: AtomicU64,
    rejected_overloaded: AtomicU64,
    refused_events: AtomicU64,
    largest_flush: AtomicU64,
}

/// Activity marks this committer saw committed: (user, hour) and (user, event_type, hour) for
/// the two most recent hours seen. In the steady state nearly every event is by a user already
/// marked for its hour, and for its type in that hour, and skipping those spares the flush its
/// most expensive statements. Bounded in entries; marks of older hours are dropped, which only
/// costs a database read.
#[derive(Default)]
struct ActivityCache {
    by_hour: BTreeMap<i64, HashSet<UserKey>>,
    len: usize,
    by_type_hour: BTreeMap<i64, HashMap<Box<str>, HashSet<UserKey>>>,
    type_len: usize,
}

const ACTIVITY_CACHE_HOURS: usize = 2;
const ACTIVITY_CACHE_ENTRIES: usize = 100_000;
/// 10,000 users of 10 event types in each of the two hours fill it.
const TYPE_CACHE_ENTRIES: usize = 200_000;

impl ActivityCache {
    fn contains(&self, user: UserKey, hour: i64) -> bool {
        self.by_hour.get(&hour).is_some_and(|s| s.contains(&user))
    }

    fn contains_type(&self, user: UserKey, event_type: &str, hour: i64) -> bool {
        self.by_type_hour
            .get(&hour)
            .and_then(|types| types.get(event_type))
            .is_some_and(|users| users.contains(&user))
    }

    /// Keeps the marks of `written` in the two most recent hours seen. Older hours go first,
    /// before the entry bound is checked: a cache filled by the last two hours must still take
    /// the hour that has just begun, or it would keep the old ones and miss from then on.
    fn remember(&mut self, written: store::BatchWritten) {
        let newest = written
            .activity
            .iter()
            .map(|(_, hour)| *hour)
            .chain(written.type_activity.iter().map(|(_, _, hour)| *hour))
            .chain(self.by_hour.keys().next_back().copied())
            .chain(self.by_type_hour.keys().next_back().copied())
            .max();
        let Some(newest) = newest else { return };
        #[allow(clippy::cast_possible_wrap)] // a small constant
        let oldest_kept = newest - (ACTIVITY_CACHE_HOURS as i64 - 1);
        while let Some(entry) = self.by_hour.first_entry() {
            if *entry.key() >= oldest_kept {
                break;
            }
            self.len -= entry.remove().len();
        }
        while let Some(entry) = self.by_type_hour.first_entry() {
            if *entry.key() >= oldest_kept {
                break;
            }
            self.type_len -= entry.remove().values().map(HashSet::len).sum::<usize>();
        }
        for (user, hour) in written.activity {
            if self.len >= ACTIVITY_CACHE_ENTRIES {
                break;
            }
            if hour >= oldest_kept && self.by_hour.entry(hour).or_default().insert(user) {
                self.len += 1;
            }
        }
        for (user, event_type, hour) in written.type_activity {
            if self.type_len >= TYPE_CACHE_ENTRIES {
                break;
            }
            if hour < oldest_kept {
                continue;
            }
            let types = self.by_type_hour.entry(hour).or_default();
            let inserted = match types.get_mut(event_type.as_str()) {
                Some(users) => users.insert(user),
                None => types
                    .entry(event_type.into_boxed_str())
                    .or_default()
                    .insert(user),
            };
            if inserted {
                self.type_len += 1;
            }
        }
    }
}

/// The cache as the store asks it, locked per question (the lock is never held across an
/// await).
struct Known<'a>(&'a Mutex<ActivityCache>);

impl Known<'_> {
    fn cache(&self) -> MutexGuard<'_, ActivityCache> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl store::KnownActivity for Known<'_> {
    fn hour(&self, user: UserKey, hour: i64) -> bool {
        self.cache().contains(user, hour)
    }

    fn type_hour(&self, user: UserKey, event_type: &str, hour: i64) -> bool {
        self.cache().contains_type(user, event_type, hour)
    }
}

pub struct GroupCommitter {
    tenant: Uuid,
    pool: PgPool,
    config: CommitterConfig,
    queue: Mutex<Queue>,
    live: broadcast::Sender<Arc<CommittedBatch>>,
    stats: Stats,
    activity: Mutex<ActivityCache>,
}

impl GroupCommitter {
    /// `pool` is the app role's pool: the flush runs under RLS like any tenant request.
    pub fn new(tenant: Uuid, pool: PgPool, config: CommitterConfig) -> Arc<GroupCommitter> {
        let (live, _) = broadcast::channel(config.live_capacity.max(1));
        Arc::new(GroupCommitter {
            tenant,
            pool,
            config,
            queue: Mutex::new(Queue::default()),
            live,
            stats: Stats::default(),
            activity: Mutex::new(ActivityCache::default()),
        })
    }

    pub fn tenant(&self) -> Uuid {
        self.tenant
    }

    /// Every batch committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<CommittedBatch>> {
        self.live.subscribe()
    }

    pub fn has_subscribers(&self) -> bool {
        self.live.receiver_count() > 0
    }

    pub fn stats(&self) -> CommitterStats {
        CommitterStats {
            accepted_events: self.stats.accepted_events.load(Ordering::Relaxed),
            flushes: self.stats.flushes.load(Ordering::Relaxed),
            committed_events: self.stats.committed_events.load(Ordering::Relaxed),
            failed_flushes: self.stats.failed_flushes.load(Ordering::Relaxed),
            failed_events: self.stats.failed_events.load(Ordering::Relaxed),
            rejected_overloaded: self.stats.rejected_overloaded.load(Ordering::Relaxed),
            refused_events: self.stats.refused_events.load(Ordering::Relaxed),
            largest_flush: self.stats.largest_flush.load(Ordering::Relaxed),
            pending_events: self.lock().pending_events,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue stays consistent across a panic (every change is a single step), so a
        // poisoned lock is still usable.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores `events` and returns their number once they are committed.
    pub async fn submit(self: &Arc<Self>, events: Vec<ValidEvent>) -> Result<u64, AnalyticsError> {
        if events.is_empty() {
            return Ok(0);
        }
        let count = events.len();
        let (done, answer) = oneshot::channel();
        let start_flusher = {
            let mut queue = self.lock();
            if queue.pending_events > 0
                && queue.pending_events + count > self.config.max_pending_events
            {
                self.stats
                    .rejected_overloaded
                    .fetch_add(1, Ordering::Relaxed);
                self.stats
                    .refused_events
                    .fetch_add(count as u64, Ordering::Relaxed);
                return Err(AnalyticsError::Overloaded {
                    retry_after: self.config.retry_after_secs,
                });
            }
            queue.pending_events += count;
            self.stats
                .accepted_events
                .fetch_add(count as u64, Ordering::Relaxed);
            queue.waiting.push_back(Pending { events, done });
            !std::mem::replace(&mut queue.flushing, true)
        };
        if start_flusher {
            tokio::spawn(self.clone().flush_loop(false));
        }
        answer.await.unwrap_or_else(|_| {
            Err(AnalyticsError::Unavailable(
                "the analytics writer stopped before the events were committed".into(),
            ))
        })
    }

    /// Runs while requests are waiting: takes everything queued (up to max_flush_events),
    /// writes it in one transaction, answers, and starts over. `rescued`: this one took over
    /// from a flusher whose runtime shut down (see `CommitterConfig::rescue_runtime`).
    async fn flush_loop(self: Arc<Self>, rescued: bool) {
        let mut guard = FlusherGuard {
            committer: &self,
            finished: false,
            in_flight: 0,
            rescued,
        };
        loop {
            let batch: Vec<Pending> = {
                let mut queue = self.lock();
                if queue.waiting.is_empty() {
                    queue.flushing = false;
                    guard.finished = true;
                    return;
                }
                let mut taken = Vec::new();
                let mut size = 0;
                while let Some(next) = queue.waiting.front() {
                    if !taken.is_empty() && size + next.events.len() > self.config.max_flush_events
                    {
                        break;
                    }
                    size += next.events.len();
                    if let Some(p) = queue.waiting.pop_front() {
                        taken.push(p);
                    }
                }
                taken
            };
            let mut answers = Vec::with_capacity(batch.len());
            let mut events = Vec::with_capacity(batch.iter().map(|p| p.events.len()).sum());
            for pending in batch {
                answers.push((pending.done, pending.events.len()));
                events.extend(pending.events);
            }
            let size = events.len();
            guard.in_flight = size;
            let outcome = match self.flush_caught(&events).await {
                Ok(()) => {
                    self.count_flush(size);
                    None
                }
                Err(failure) => {
                    self.stats.failed_flushes.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(tenant_id = %self.tenant, requests = answers.len(), events = size,
                        error = %error_chain(&failure.error), retry_alone = failure.retry_alone, "analytics flush failed");
                    Some(self.isolate(&events, &answers, failure).await)
                }
            };
            self.lock().pending_events -= size;
            guard.in_flight = 0;
            let committed = match outcome {
                None => {
                    self.stats
                        .committed_events
                        .fetch_add(size as u64, Ordering::Relaxed);
                    for (done, n) in answers {
                        let _ = done.send(Ok(n as u64));
                    }
                    events
                }
                Some(results) => {
                    let mut committed = Vec::new();
                    let mut events = events.into_iter();
                    for ((done, n), result) in answers.into_iter().zip(results) {
                        let mine = events.by_ref().take(n);
                        let counter = match result {
                            Ok(()) => {
                                committed.extend(mine);
                                &self.stats.committed_events
                            }
                            Err(_) => &self.stats.failed_events,
                        };
                        counter.fetch_add(n as u64, Ordering::Relaxed);
                        let _ = done.send(result.map(|()| n as u64));
                    }
                    committed
                }
            };
            if !committed.is_empty() {
                // No subscriber is the normal case; the error only says so.
                let _ = self.live.send(Arc::new(CommittedBatch {
                    tenant_id: self.tenant,
                    committed_at: Utc::now(),
                    events: committed,
                }));
            }
        }
    }

    fn count_flush(&self, size: usize) {
        self.stats.flushes.fetch_add(1, Ordering::Relaxed);
        self.stats
            .largest_flush
            .fetch_max(size as u64, Ordering::Relaxed);
    }

    /// The answer of each request of a group whose transaction failed (`answers` gives their
    /// sizes, in the order of `events`). See the module documentation.
    async fn isolate(
        &self,
        events: &[ValidEvent],
        answers: &[(oneshot::Sender<Result<u64, AnalyticsError>>, usize)],
        failure: FlushFailure,
    ) -> Vec<Result<(), AnalyticsError>> {
        if !failure.retry_alone {
            return vec![Err(failure.error); answers.len()];
        }
        let mut members = Vec::with_capacity(answers.len());
        let mut start = 0;
        for (_, n) in answers {
            members.push(&events[start..start + n]);
            start += n;
        }
        let mut results: Vec<Option<Result<(), AnalyticsError>>> = members
            .iter()
            .map(|m| {
                let refused = model::unstorable_fields(m);
                (!refused.is_empty()).then_some(Err(AnalyticsError::Validation(refused)))
            })
            .collect();
        let rest: Vec<usize> = (0..members.len())
            .filter(|i| results[*i].is_none())
            .collect();
        if members.len() == 1 {
            // Alone in its transaction: the failure was its own.
            return vec![results[0].take().unwrap_or(Err(failure.error))];
        }
        // The refused requests may have been the only cause: the others together first.
        if rest.len() > 1 && rest.len() < members.len() {
            let together: Vec<ValidEvent> = rest
                .iter()
                .flat_map(|i| members[*i].iter().cloned())
                .collect();
            match self.flush_caught(&together).await {
                Ok(()) => {
                    self.count_flush(together.len());
                    return settled(results, Ok(()));
                }
                Err(f) if !f.retry_alone => return settled(results, Err(f.error)),
                Err(_) => {}
            }
        }
        for i in rest {
            let result = match self.flush_caught(members[i]).await {
                Ok(()) => {
                    self.count_flush(members[i].len());
                    Ok(())
                }
                // Not this request's doing: the ones after it would fail the same way.
                Err(f) if !f.retry_alone => return settled(results, Err(f.error)),
                Err(f) => Err(f.error),
            };
            results[i] = Some(result);
        }
        settled(results, Err(failure.error))
    }

    async fn flush_caught(&self, events: &[ValidEvent]) -> Result<(), FlushFailure> {
        AssertUnwindSafe(self.flush(events))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                // Possibly after the commit: its requests cannot be written again.
                Err(FlushFailure::whole_group(AnalyticsError::FlushPanicked))
            })
    }

    /// Writes `events` in one transaction. A pooled connection found closed before COMMIT went
    /// out (PostgreSQL restarted, or the runtime that opened it is shutting down) stored
    /// nothing: the transaction is tried again, on a connection the pool checks first.
    async fn flush(&self, events: &[ValidEvent]) -> Result<(), FlushFailure> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.flush_once(events).await {
                Err(failure) if failure.connection_lost && tries < 3 => {
                    tracing::debug!(tenant_id = %self.tenant, error = %error_chain(&failure.error),
                        "analytics flush lost its connection before COMMIT; trying again");
                }
                result => return result,
            }
        }
    }

    async fn flush_once(&self, events: &[ValidEvent]) -> Result<(), FlushFailure> {
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| FlushFailure::whole_group(DbError::from(e).into()))?;
        conn.touch_tenant_schema(self.tenant);
        match self.write(&mut conn, events).await {
            Ok(written) => {
                self.activity
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remember(written);
                Ok(())
            }
            Err(mut failure) => {
                failure.connection_lost = failure.before_commit && conn.is_closed();
                Err(failure)
            }
        }
    }

    async fn write(
        &self,
        conn: &mut crate::db::PooledConn,
        events: &[ValidEvent],
    ) -> Result<store::BatchWritten, FlushFailure> {
        let tx = begin_tenant_tx(conn, self.tenant)
            .await
            .map_err(|e| FlushFailure {
                before_commit: true,
                ..FlushFailure::whole_group(e.into())
            })?;
        let written =
            store::insert_batch_skipping(&tx, self.tenant, events, &Known(&self.activity))
                .await
                .map_err(FlushFailure::before_commit)?;
        // A commit that fails, or whose answer is lost, is reported as a failure: the events
        // may or may not be stored, but none is acknowledged without a confirmed commit.
        tx.commit().await.map_err(FlushFailure::at_commit)?;
        Ok(written)
    }
}

/// The answers of `isolate`, with `rest` for the requests not answered yet.
fn settled(
    results: Vec<Option<Result<(), AnalyticsError>>>,
    rest: Result<(), AnalyticsError>,
) -> Vec<Result<(), AnalyticsError>> {
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| rest.clone()))
        .collect()
}

/// Why a transaction failed, and whether its requests may be written again.
struct FlushFailure {
    error: AnalyticsError,
    /// Nothing of the transaction was stored, and the cause may lie in one request's events:
    /// they may be written apart.
    retry_alone: bool,
    /// COMMIT was not sent: nothing of the transaction was stored.
    before_commit: bool,
    /// Before COMMIT, on a connection found closed: the same transaction may be tried again.
    connection_lost: bool,
}

impl FlushFailure {
    fn whole_group(error: AnalyticsError) -> FlushFailure {
        FlushFailure {
            error,
            retry_alone: false,
            before_commit: false,
            connection_lost: false,
        }
    }

    /// A statement failed before COMMIT was sent: the transaction is rolled back.
    fn before_commit(error: AnalyticsError) -> FlushFailure {
        FlushFailure {
            retry_alone: may_be_a_requests_doing(&error),
            before_commit: true,
            ..FlushFailure::whole_group(error)
        }
    }

    /// Only an error PostgreSQL answered (a deferred constraint, say) says the commit did not
    /// happen; a lost connection leaves it unknown.
    fn at_commit(error: tokio_postgres::Error) -> FlushFailure {
        let answered = error.as_db_error().is_some();
        let error = AnalyticsError::from(error);
        FlushFailure {
            retry_alone: answered && may_be_a_requests_doing(&error),
            ..FlushFailure::whole_group(error)
        }
    }
}

/// Not a missing connection, a timeout or back-pressure, which writing the requests apart
/// would only meet again, once per request.
fn may_be_a_requests_doing(error: &AnalyticsError) -> bool {
    !matches!(
        error,
        AnalyticsError::Db(DbError::Unavailable(_) | DbError::Timeout)
            | AnalyticsError::Unavailable(_)
            | AnalyticsError::Overloaded { .. }
    )
}

/// If the flush task is dropped (its runtime shuts down), the queue must not stay marked as
/// being flushed forever: the rescue runtime takes the waiting requests over, or they are
/// failed, and the next submit starts a new flusher.
struct FlusherGuard<'a> {
    committer: &'a Arc<GroupCommitter>,
    finished: bool,
    /// Events of the batch being written.
    in_flight: usize,
    rescued: bool,
}

impl Drop for FlusherGuard<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let committer = self.committer;
        let mut queue = committer.lock();
        // The batch being written died with the task; its requests were answered with an
        // error when their answer channels were dropped.
        queue.pending_events -= self.in_flight;
        committer
            .stats
            .failed_events
            .fetch_add(self.in_flight as u64, Ordering::Relaxed);
        let rescue = committer.config.rescue_runtime.as_ref();
        if let Some(runtime) = rescue.filter(|_| !self.rescued && !queue.waiting.is_empty()) {
            // Still marked as flushing: the new flusher owns the queue.
            drop(queue);
            runtime.spawn(committer.clone().flush_loop(true));
            return;
        }
        queue.flushing = false;
        while let Some(pending) = queue.waiting.pop_front() {
            let n = pending.events.len();
            queue.pending_events -= n;
            committer
                .stats
                .failed_events
                .fetch_add(n as u64, Ordering::Relaxed);
            let _ = pending.done.send(Err(AnalyticsError::Unavailable(
                "the analytics writer stopped".into(),
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(hour: i64, users: usize) -> store::BatchWritten {
        let mut w = store::BatchWritten::default();
        for i in 0..users {
            let user = UserKey::try_from(i).unwrap() + 1;
            w.activity.push((user, hour));
            w.type_activity.push((user, "click".into(), hour));
        }
        w
    }

    #[test]
    fn a_full_cache_still_takes_the_hour_that_begins() {
        let mut cache = ActivityCache::default();
        cache.remember(written(10, TYPE_CACHE_ENTRIES / 2));
        cache.remember(written(11, TYPE_CACHE_ENTRIES / 2));
        assert_eq!(cache.type_len, TYPE_CACHE_ENTRIES);
        let user = 1;
        assert!(cache.contains_type(user, "click", 10) && cache.contains(user, 10));

        cache.remember(written(12, 3));
        assert!(cache.contains_type(user, "click", 12) && cache.contains(user, 12));
        assert!(cache.contains_type(user, "click", 11));
        assert!(!cache.contains_type(user, "click", 10) && !cache.contains(user, 10));
        assert_eq!(cache.type_len, TYPE_CACHE_ENTRIES / 2 + 3);
        assert!(cache.len <= ACTIVITY_CACHE_ENTRIES);

        // A late batch marks hours older than the two kept: nothing of it is cached.
        cache.remember(written(3, 5));
        assert!(!cache.contains_type(user, "click", 3));
        assert!(cache.contains_type(user, "click", 12));
    }
}
