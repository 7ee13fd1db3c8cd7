//! The dispatcher: sends due messages, records every attempt, schedules the retries.
//!
//! PostgreSQL is the source of truth. The server's fan-out leases what the tenant's limiter
//! admits to this dispatcher in its own transaction ([`Dispatcher::lease`], the same lease and
//! window as step 1 below) and hands it over after its commit ([`Dispatcher::hand_over`]):
//! those messages skip step 1. A fan-out that left messages due names its tenant
//! ([`wake_tenant`]); a pass asks `app.webhook_due_tenants` (the one cross-tenant read, tenant
//! ids only) which tenants have messages due. Each of those tenants is drained by one task at a
//! time, as its queue beside its actor records ([`super::queue`]), one batch after another:
//!
//! 1. claim, in a transaction bound to the tenant: take what the tenant's sliding window of the
//!    last 60 s leaves of its limit (`app.webhook_rate_windows`, a row every instance locks, so
//!    all of them together send no more than the plan's `webhook_deliveries_per_minute` within
//!    any 60 s; the excess stays queued), then lease up to that many due messages with `FOR
//!    UPDATE SKIP LOCKED`: each gets `locked_until` = now + the lease and its attempt counted;
//! 2. send each, signed, through the pinned outbound client ([`crate::net::outbound`]: the
//!    address connected to is the one vetted, 10 s in all, no redirects followed);
//! 3. record, in a second tenant transaction: one `webhook_deliveries` row per attempt and the
//!    message's next state, fenced by the attempt number (a claim that outlived its lease
//!    records nothing over the newer one).
//!
//! The lease is longer than the send timeout, so no two instances send the same attempt at
//! once; a process killed mid-send (or between a hand-over's commit and its send) leaves its
//! messages to be claimed again when the lease ends (delivery is at least once; receivers
//! deduplicate on `webhook-id`).
//!
//! Time comes from a [`Clock`], so tests drive the retry schedule without sleeping.

use crate::supervise::Wakes;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use futures_util::future::BoxFuture;
use futures_util::stream::{self, StreamExt};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};
use rand::Rng;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::queue::TenantQueue;
use super::secret;
use super::signing::signature_header;
use super::{WebhookError, ENDPOINT_DISABLED_EVENT, MAX_PAYLOAD_BYTES};
use crate::db::{
    begin_tenant_tx_without_waiting, DbError, PgPool, TenantTx, COMMIT_WITHOUT_WAITING_SQL,
};
use crate::error::error_chain;
use crate::net::outbound::{body_prefix, Outbound, OutboundError};
use crate::secrets::Keyring;
use deadpool_postgres::Transaction;
use tokio_postgres::Row;

/// Delays before retry 1, 2, ... of a round (API.md): then the message is dead-lettered.
pub const RETRY_SCHEDULE: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(300),
    Duration::from_secs(3600),
];
/// Up to this share of a delay is added at random, so endpoints failing together do not
/// retry in lockstep.
pub const JITTER: f64 = 0.1;
/// A `Retry-After` longer than this is taken as this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// An endpoint failing without a success for this long is disabled.
pub const DISABLE_AFTER: TimeDelta = TimeDelta::days(5);
/// Batches of one tenant being sent at once by one instance.
pub const BATCHES_IN_FLIGHT: usize = 8;
/// Most messages one fan-out leases for this server's dispatcher ([`Dispatcher::lease`]); the
/// rest stay due for its claims.
pub const HAND_OVER_MAX: usize = 500;
/// Time kept between the end of the longest send and the end of its lease.
const SEND_MARGIN: Duration = Duration::from_secs(2);
/// What of a receiver's answer is kept.
pub const RESPONSE_BODY_LIMIT: usize = 4096;

/// The time the dispatcher goes by.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The tenant's deliveries a minute (None: no limit), from its config snapshot.
pub type Limits = Arc<dyn Fn(Uuid) -> BoxFuture<'static, Option<i64>> + Send + Sync>;

/// The tenant's queue held by its actor (None when the actor cannot be had now).
pub type Queues = Arc<dyn Fn(Uuid) -> BoxFuture<'static, Option<Arc<TenantQueue>>> + Send + Sync>;

#[derive(Clone, Debug)]
pub struct DispatcherOptions {
    /// Messages claimed per batch of a tenant.
    pub batch_size: i64,
    /// How long a claimed message is hidden from other claims (longer than the
    /// outbound client's timeout; an attempt that could not start early enough within it is
    /// left for the next claim).
    pub lease: Duration,
    /// How often the queue is looked at when nothing woke the dispatcher.
    pub poll_interval: Duration,
    /// Sends under way at once, over all tenants.
    pub concurrency: usize,
}

impl Default for DispatcherOptions {
    fn default() -> Self {
        DispatcherOptions {
            batch_size: 100,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(250),
            concurrency: 256,
        }
    }
}

/// Something was queued and committed for a tenant no hint names (a test send, a retry, a
/// replay): the server's dispatcher looks at the table now.
pub fn wake(wakes: &Wakes) {
    wakes.deliveries_scan.store(true, Ordering::Release);
    wakes.deliveries.wake();
}

/// Messages of `tenant` were queued and committed: its drain starts (or goes on) at once.
pub fn wake_tenant(wakes: &Wakes, tenant: Uuid) {
    if !wakes.deliveries.hint(tenant) {
        wake(wakes);
    }
}

/// `/metrics`: the webhook queue and the outcomes of attempts.
#[derive(Clone)]
pub struct WebhookMetrics {
    /// Attempts by outcome: succeeded, failed, dead, refused, gone.
    pub attempts: IntCounterVec,
    /// Attempts under way in this process.
    pub in_flight: IntGauge,
    /// Tenants with messages due at the last look.
    pub due_tenants: IntGauge,
    /// Seconds from a message's fan-out to its claim (`stage="claimed"`) and to the receiver's
    /// answer (`stage="answered"`), by whether its tenant has a delivery limit
    /// (`limit="limited"` or `"none"`): where a delivery's lag goes, without a label per tenant.
    pub lag: HistogramVec,
}

impl WebhookMetrics {
    pub fn new() -> Result<WebhookMetrics, prometheus::Error> {
        Ok(WebhookMetrics {
            attempts: IntCounterVec::new(
                Opts::new(
                    "webhook_attempts_total",
                    "Webhook delivery attempts by outcome",
                ),
                &["outcome"],
            )?,
            in_flight: IntGauge::new(
                "webhook_attempts_in_flight",
                "Webhook attempts being sent by this instance",
            )?,
            due_tenants: IntGauge::new(
                "webhook_due_tenants",
                "Tenants with webhook messages due at the dispatcher's last look",
            )?,
            lag: HistogramVec::new(
                HistogramOpts::new(
                    "webhook_lag_seconds",
                    "Seconds from a webhook message's fan-out to its claim and to the answer",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0, 60.0,
                ]),
                &["stage", "limit"],
            )?,
        })
    }

    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.attempts.clone()))?;
        registry.register(Box::new(self.in_flight.clone()))?;
        registry.register(Box::new(self.due_tenants.clone()))?;
        registry.register(Box::new(self.lag.clone()))?;
        Ok(())
    }
}

#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    outbound: Outbound,
    /// Opens the endpoints' sealed signing secrets.
    secrets: Keyring,
    clock: Arc<dyn Clock>,
    limits: Limits,
    options: DispatcherOptions,
    metrics: WebhookMetrics,
    /// Where each tenant's queue lives: its actor's registry entry (the server), else
    /// `local` (tests, or a tenant whose actor cannot be had now).
    queues: Option<Queues>,
    local: Mutex<HashMap<Uuid, Arc<TenantQueue>>>,
    sends: tokio::sync::Semaphore,
}

/// One leased message.
struct Claimed {
    id: Uuid,
    webhook_id: Uuid,
    attempt: i32,
    round_attempts: i32,
    body: String,
    /// When the fan-out wrote it (the database's clock), for the lag metric.
    created_at: DateTime<Utc>,
}

/// One claim of a tenant: the leased messages and their endpoints.
struct Claim {
    messages: Vec<Claimed>,
    targets: HashMap<Uuid, Target>,
    /// The tenant has a delivery limit (the lag metric's `limit` label).
    limited: bool,
    /// When the lease was taken (its `locked_until` counts from then): an attempt that could
    /// not start early enough within it is not made.
    claimed_at: Instant,
}

impl Default for Claim {
    fn default() -> Self {
        Claim {
            messages: Vec::new(),
            targets: HashMap::new(),
            limited: false,
            claimed_at: Instant::now(),
        }
    }
}

/// What a fan-out may lease for this server's dispatcher in its own transaction
/// ([`Dispatcher::lease`]): the tenant's delivery limiter has admitted `take` messages, and
/// its window row stays locked until that transaction ends.
pub struct Lease {
    tenant: Uuid,
    /// Messages the fan-out may write already leased.
    pub take: usize,
    /// Their `locked_until`.
    pub until: DateTime<Utc>,
    now: DateTime<Utc>,
    claimed_at: Instant,
    limit: Option<i64>,
    window: Option<SlidingWindow>,
    queue: Arc<TenantQueue>,
}

/// What [`Dispatcher::read_window`] found.
pub enum WindowRead {
    /// The row, locked by this transaction, with what is charged within the window.
    Held(SlidingWindow),
    /// No row yet (or no limit).
    Missing,
    /// Another transaction holds the row.
    Busy,
}

/// What [`Dispatcher::lease`] starts from.
pub struct LeaseStart {
    tenant: Uuid,
    limit: Option<i64>,
    queue: Arc<TenantQueue>,
    now: DateTime<Utc>,
    claimed_at: Instant,
}

/// A message the fan-out wrote leased to this server.
pub struct Leased {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub body: String,
    pub created_at: DateTime<Utc>,
}

/// Messages leased in a fan-out's transaction, to send once it has committed
/// ([`Dispatcher::hand_over`]).
pub struct HandOff {
    tenant: Uuid,
    queue: Arc<TenantQueue>,
    claim: Claim,
    /// Messages it wrote were left unleased (the limit, [`HAND_OVER_MAX`]): the tenant's drain
    /// claims them.
    rest: bool,
}

/// An endpoint as the sender needs it.
pub struct Target {
    url: String,
    status: String,
    secrets: Vec<String>,
}

/// What one attempt gave.
#[derive(Debug)]
pub struct Attempt {
    pub status: Option<u16>,
    pub body: Option<String>,
    pub retry_after: Option<Duration>,
    pub error: Option<String>,
    pub duration: Duration,
}

impl Attempt {
    fn failed(error: String, started: Instant) -> Attempt {
        Attempt {
            status: None,
            body: None,
            retry_after: None,
            error: Some(error),
            duration: started.elapsed(),
        }
    }

    fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// The tenant's deliveries charged within the last [`RATE_WINDOW`], as the rate-window row
/// stores them: a claim may take what their sum leaves of the limit, so any 60 s (whatever its
/// start) holds at most the limit, all instances together. Claims less than
/// [`RATE_MERGE`] apart share one entry stamped with the later time: the row stays small (about
/// 60 entries) and an entry expires no earlier than its oldest claim would (never more sent).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlidingWindow {
    pub at: Vec<DateTime<Utc>>,
    pub counts: Vec<i32>,
}

/// What a delivery limit "a minute" counts over.
pub const RATE_WINDOW: TimeDelta = TimeDelta::seconds(60);
const RATE_MERGE: TimeDelta = TimeDelta::seconds(1);

impl SlidingWindow {
    pub fn new(at: Vec<DateTime<Utc>>, counts: Vec<i32>) -> SlidingWindow {
        let mut window = SlidingWindow { at, counts };
        // Arrays of unequal length would be a corrupt row: keep what pairs up.
        let n = window.at.len().min(window.counts.len());
        window.at.truncate(n);
        window.counts.truncate(n);
        window
    }

    /// Drops the charges that are [`RATE_WINDOW`] old or older at `now`.
    pub fn expire(&mut self, now: DateTime<Utc>) {
        let cutoff = now - RATE_WINDOW;
        (self.at, self.counts) = self
            .at
            .iter()
            .zip(&self.counts)
            .filter(|(at, _)| **at > cutoff)
            .map(|(at, n)| (*at, *n))
            .unzip();
    }

    /// When the oldest charge leaves the window.
    pub fn frees_at(&self) -> Option<DateTime<Utc>> {
        self.at.iter().min().map(|at| *at + RATE_WINDOW)
    }

    pub fn used(&self) -> i64 {
        self.counts.iter().map(|n| i64::from(*n)).sum()
    }

    pub fn charge(&mut self, now: DateTime<Utc>, n: i32) {
        if let (Some(last_at), Some(last_n)) = (self.at.last_mut(), self.counts.last_mut()) {
            if *last_at <= now && now - *last_at < RATE_MERGE {
                *last_at = now;
                *last_n = last_n.saturating_add(n);
                return;
            }
        }
        self.at.push(now);
        self.counts.push(n);
    }
}

/// The delay before the next attempt after attempt `round` (1-based) of a round failed, or
/// None when that was the last one; `jitter` in [0, 1) scales [`JITTER`].
pub fn next_delay(round: i32, retry_after: Option<Duration>, jitter: f64) -> Option<Duration> {
    let index = usize::try_from(round.max(1) - 1).ok()?;
    let base = *RETRY_SCHEDULE.get(index)?;
    let delay = base.mul_f64(1.0 + JITTER * jitter.clamp(0.0, 1.0));
    Some(match retry_after {
        Some(asked) => delay.max(asked.min(MAX_RETRY_AFTER)),
        None => delay,
    })
}

/// `Retry-After` in seconds (an HTTP date is read as no hint).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// At most [`RESPONSE_BODY_LIMIT`] bytes of text PostgreSQL can store.
fn keep_body(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(RESPONSE_BODY_LIMIT)];
    String::from_utf8_lossy(cut).replace('\0', "")
}

impl Dispatcher {
    pub fn new(
        pool: PgPool,
        outbound: Outbound,
        secrets: Keyring,
        clock: Arc<dyn Clock>,
        limits: Limits,
        options: DispatcherOptions,
        metrics: WebhookMetrics,
    ) -> Dispatcher {
        Dispatcher::with_queues(
            pool, outbound, secrets, clock, limits, None, options, metrics,
        )
    }

    /// [`Dispatcher::new`] with the tenants' queues held by their actors.
    #[allow(clippy::too_many_arguments)] // each is a distinct dependency, named at the one call
    pub fn with_queues(
        pool: PgPool,
        outbound: Outbound,
        secrets: Keyring,
        clock: Arc<dyn Clock>,
        limits: Limits,
        queues: Option<Queues>,
        options: DispatcherOptions,
        metrics: WebhookMetrics,
    ) -> Dispatcher {
        let sends = tokio::sync::Semaphore::new(options.concurrency.max(1));
        Dispatcher {
            inner: Arc::new(Inner {
                pool,
                outbound,
                secrets,
                clock,
                limits,
                options,
                metrics,
                queues,
                local: Mutex::new(HashMap::new()),
                sends,
            }),
        }
    }

    /// Tenants with messages due now.
    pub async fn due_tenants(&self) -> Result<Vec<Uuid>, WebhookError> {
        let conn = self.inner.pool.get().await?;
        let stmt = conn
            .prepare_cached("select tenant_id from app.webhook_due_tenants($1, $2)")
            .await?;
        let rows = conn
            .query(&stmt, &[&self.inner.clock.now(), &10_000i32])
            .await?;
        let tenants: Vec<Uuid> = rows.iter().map(|r| r.get(0)).collect();
        let due = i64::try_from(tenants.len()).unwrap_or(i64::MAX);
        self.inner.metrics.due_tenants.set(due);
        Ok(tenants)
    }

    /// One pass, in order: every tenant with messages due gets one batch. Returns the attempts
    /// made. Tests call this with a hand-driven clock.
    pub async fn run_once(&self) -> Result<usize, WebhookError> {
        let mut attempts = 0;
        for tenant in self.due_tenants().await? {
            attempts += self.tenant_batch(tenant).await?;
        }
        Ok(attempts)
    }

    /// The endpoint columns [`Dispatcher::target`] reads, from its first column on.
    pub const TARGET_COLUMNS: &'static str = "url, status, secret_ciphertext, secret_key_id, \
         previous_secret_ciphertext, previous_secret_key_id, previous_secret_expires_at";

    /// An endpoint as the sender needs it, from a row holding [`Dispatcher::TARGET_COLUMNS`]
    /// from column `first` on: its signing secrets opened, the previous one while it still
    /// signs at `now`.
    pub fn target(
        &self,
        row: &Row,
        first: usize,
        now: DateTime<Utc>,
    ) -> Result<Target, WebhookError> {
        let mut secrets = vec![secret::open(
            &self.inner.secrets,
            row.get(first + 2),
            row.get(first + 3),
        )?];
        let previous: Option<Vec<u8>> = row.get(first + 4);
        let previous_key: Option<String> = row.get(first + 5);
        let expires: Option<DateTime<Utc>> = row.get(first + 6);
        if let (Some(previous), Some(key), Some(expires)) = (previous, previous_key, expires) {
            if expires > now {
                secrets.push(secret::open(&self.inner.secrets, &previous, &key)?);
            }
        }
        Ok(Target {
            url: row.get(first),
            status: row.get(first + 1),
            secrets,
        })
    }

    /// The first step of a fan-out's [`Dispatcher::lease`], before any query: the tenant's
    /// limit and queue. None when its budget is known to be spent.
    pub async fn lease_start(&self, tenant: Uuid) -> Option<LeaseStart> {
        let limit = (self.inner.limits)(tenant).await;
        let queue = self.queue(tenant).await;
        let now = self.inner.clock.now();
        let claimed_at = Instant::now();
        if queue.budget_spent(now, limit) {
            return None;
        }
        Some(LeaseStart {
            tenant,
            limit,
            queue,
            now,
            claimed_at,
        })
    }

    /// For a tenant with a delivery limit, its rate-window row, locked until the transaction
    /// ends: sent beside the fan-out's read of the endpoints, and never waiting. A row another
    /// transaction holds (a claim, or another instance's fan-out) is left to it: the fan-out
    /// then leases nothing and its messages go to the claims. So a worker transaction that
    /// runs several tenants never waits on a window lock while it holds others (two instances'
    /// shared transactions could otherwise wait on each other's). [`Dispatcher::lease`] makes
    /// the row when it is missing.
    pub async fn read_window(
        &self,
        tx: &Transaction<'_>,
        start: &LeaseStart,
    ) -> Result<WindowRead, WebhookError> {
        if start.limit.is_none() {
            return Ok(WindowRead::Missing);
        }
        let stmt = tx
            .prepare_cached(
                "select charged_at, charged from app.webhook_rate_windows \
                 where tenant_id = $1 for update skip locked",
            )
            .await?;
        if let Some(row) = tx.query_opt(&stmt, &[&start.tenant]).await? {
            let mut sliding = SlidingWindow::new(row.get(0), row.get(1));
            sliding.expire(start.now);
            return Ok(WindowRead::Held(sliding));
        }
        // Skipped or missing: which, asked without a lock (rare: a claim or another fan-out of
        // this tenant at this very moment, or the tenant's first delivery).
        let stmt = tx
            .prepare_cached(
                "select exists (select 1 from app.webhook_rate_windows where tenant_id = $1)",
            )
            .await?;
        let exists: bool = tx.query_one(&stmt, &[&start.tenant]).await?.get(0);
        Ok(if exists {
            WindowRead::Busy
        } else {
            WindowRead::Missing
        })
    }

    /// In a fan-out's transaction bound to the tenant, before it writes `pending` messages to
    /// send: how many of them it may write already leased to this server, as a claim would
    /// lease them (the same lease, the attempt counted, the tenant's delivery limiter charged
    /// through [`Dispatcher::charge`]). None when its limit is spent: they are written due,
    /// for a later claim. `window` is what [`Dispatcher::read_window`] found. The tenant's
    /// rate-window row stays locked until the transaction ends, so every instance's claims
    /// still take their share one after the other.
    pub async fn lease(
        &self,
        tx: &Transaction<'_>,
        start: LeaseStart,
        window: WindowRead,
        pending: usize,
    ) -> Result<Option<Lease>, WebhookError> {
        let LeaseStart {
            tenant,
            limit,
            queue,
            now,
            claimed_at,
        } = start;
        if pending == 0 {
            return Ok(None);
        }
        let mut take = pending.min(HAND_OVER_MAX);
        let mut held = None;
        if let Some(limit) = limit {
            let sliding = match window {
                WindowRead::Held(window) => window,
                WindowRead::Missing => lock_window(tx, tenant, now).await?,
                WindowRead::Busy => return Ok(None),
            };
            let left = usize::try_from(limit - sliding.used()).unwrap_or(0);
            if left == 0 {
                if let Some(until) = sliding.frees_at() {
                    queue.spent_until(until, limit);
                }
                return Ok(None);
            }
            queue.budget_left();
            take = take.min(left);
            held = Some(sliding);
        }
        let lease = TimeDelta::from_std(self.inner.options.lease).unwrap_or(TimeDelta::seconds(30));
        Ok(Some(Lease {
            tenant,
            take,
            until: now + lease,
            now,
            claimed_at,
            limit,
            window: held,
            queue,
        }))
    }

    /// Charges the tenant's window with what the fan-out leased (the lease's `take`, whether
    /// every one of them was written or not: a second run of an event writes nothing, and the
    /// window then errs towards sending less), in the same transaction. Meant to be sent
    /// together with the fan-out's insert.
    pub async fn charge(&self, tx: &Transaction<'_>, lease: &Lease) -> Result<(), WebhookError> {
        let Some(mut window) = lease.window.clone() else {
            return Ok(());
        };
        let n = i32::try_from(lease.take).unwrap_or(i32::MAX);
        window.charge(lease.now, n);
        store_window(tx, lease.tenant, &window, lease.now).await
    }

    /// What the fan-out wrote leased, for [`Dispatcher::hand_over`] once its transaction has
    /// committed; `rest`: it wrote messages to send that it did not lease.
    pub fn handed(
        &self,
        lease: Lease,
        leased: Vec<Leased>,
        targets: HashMap<Uuid, Target>,
        rest: bool,
    ) -> HandOff {
        let messages = leased
            .into_iter()
            .map(|m| Claimed {
                id: m.id,
                webhook_id: m.webhook_id,
                attempt: 1,
                round_attempts: 0,
                body: m.body,
                created_at: m.created_at,
            })
            .collect();
        HandOff {
            tenant: lease.tenant,
            queue: lease.queue,
            claim: Claim {
                messages,
                targets,
                limited: lease.limit.is_some(),
                claimed_at: lease.claimed_at,
            },
            rest,
        }
    }

    /// After the fan-out's commit: sends what it leased to this server at once (no claim),
    /// and records it as a claimed batch is recorded; wakes the tenant's drain for what it
    /// left due.
    pub fn hand_over(&self, handed: HandOff, wakes: &Wakes) {
        let HandOff {
            tenant,
            queue,
            claim,
            rest,
        } = handed;
        if rest {
            wake_tenant(wakes, tenant);
        }
        if claim.messages.is_empty() {
            return;
        }
        let this = self.clone();
        tokio::spawn(crate::context::scope(tenant, async move {
            if let Err(err) = this.process(tenant, &queue, claim).await {
                tracing::warn!(tenant_id = %tenant, error = %error_chain(&err),
                    "handed-over webhook batch not recorded; its leases run out and it is sent again");
            }
        }));
    }

    /// Until `stop`: drains each tenant with messages due in a task of its own. A tenant whose
    /// fan-out committed in this process is drained at once ([`wake_tenant`]); the table is
    /// read every `poll_interval` (other instances' messages, retries coming due) and when
    /// [`wake`] asks.
    pub async fn run(self, stop: CancellationToken) {
        let mut next_scan = tokio::time::Instant::now();
        let wakes = self.inner.pool.manager().wakes().clone();
        while !stop.is_cancelled() {
            let woken = wakes.deliveries.notified();
            for tenant in wakes.deliveries.take() {
                self.spawn_drain(tenant, stop.clone());
            }
            if wakes.deliveries_scan.swap(false, Ordering::AcqRel)
                || tokio::time::Instant::now() >= next_scan
            {
                next_scan = tokio::time::Instant::now() + self.inner.options.poll_interval;
                match self.due_tenants().await {
                    Ok(tenants) => {
                        for tenant in tenants {
                            self.spawn_drain(tenant, stop.clone());
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %error_chain(&err), "webhook queue not read; will retry")
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = woken => {}
                _ = tokio::time::sleep_until(next_scan) => {}
            }
        }
    }

    /// The tenant's queue: the one its actor holds, or this dispatcher's own.
    async fn queue(&self, tenant: Uuid) -> Arc<TenantQueue> {
        if let Some(queues) = &self.inner.queues {
            if let Some(queue) = queues(tenant).await {
                return queue;
            }
        }
        self.inner
            .local
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(tenant)
            .or_default()
            .clone()
    }

    /// Starts draining `tenant` unless its queue is being drained already (that drain then
    /// looks once more before it ends).
    fn spawn_drain(&self, tenant: Uuid, stop: CancellationToken) {
        let this = self.clone();
        tokio::spawn(crate::context::scope(tenant, async move {
            let queue = this.queue(tenant).await;
            if !queue.start_drain() {
                return;
            }
            loop {
                this.drain(tenant, &queue, stop.clone()).await;
                if !queue.end_drain() || stop.is_cancelled() {
                    return;
                }
            }
        }));
    }

    /// Claims batches of `tenant` while it has messages due, with up to
    /// [`BATCHES_IN_FLIGHT`] being sent at once: a receiver that takes its 10 s holds up only
    /// its own batch, not the tenant's other endpoints.
    async fn drain(&self, tenant: Uuid, queue: &Arc<TenantQueue>, stop: CancellationToken) {
        let mut in_flight = tokio::task::JoinSet::new();
        while !stop.is_cancelled() {
            if in_flight.len() < BATCHES_IN_FLIGHT {
                match self.claim(tenant, queue).await {
                    Ok(claim) if !claim.messages.is_empty() => {
                        let (this, queue) = (self.clone(), queue.clone());
                        in_flight.spawn(crate::context::scope(tenant, async move {
                            this.process(tenant, &queue, claim).await
                        }));
                        continue;
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!(tenant_id = %tenant, error = %error_chain(&err),
                        "webhook claim failed; will retry"),
                }
            }
            // Nothing more to claim now (or enough under way): wait for a batch to end or for
            // new messages (claimed at once, not after the batches under way are recorded),
            // then look again.
            let room = in_flight.len() < BATCHES_IN_FLIGHT;
            let ended = tokio::select! {
                ended = in_flight.join_next() => ended,
                () = queue.more_work(), if room => continue,
            };
            match ended {
                None => break,
                Some(Ok(Ok(_))) => {}
                Some(Ok(Err(err))) => {
                    tracing::warn!(tenant_id = %tenant, error = %error_chain(&err),
                    "webhook batch not recorded; its leases run out and it is sent again")
                }
                Some(Err(err)) => {
                    tracing::error!(tenant_id = %tenant, %err, "webhook batch panicked")
                }
            }
        }
        while in_flight.join_next().await.is_some() {}
    }

    /// Claims, sends and records one batch of `tenant`; the number of attempts made.
    pub async fn tenant_batch(&self, tenant: Uuid) -> Result<usize, WebhookError> {
        let queue = self.queue(tenant).await;
        let claim = self.claim(tenant, &queue).await?;
        self.process(tenant, &queue, claim).await
    }

    async fn process(
        &self,
        tenant: Uuid,
        queue: &TenantQueue,
        claim: Claim,
    ) -> Result<usize, WebhookError> {
        let Claim {
            messages,
            targets,
            limited,
            claimed_at,
        } = claim;
        if messages.is_empty() {
            return Ok(0);
        }
        let limit = if limited { "limited" } else { "none" };
        for message in &messages {
            self.observe_lag("claimed", limit, message.created_at);
        }
        let now = self.inner.clock.now();
        let attempts: Vec<(Claimed, Attempt)> = stream::iter(messages)
            .map(|message| async {
                let attempt = match targets.get(&message.webhook_id) {
                    Some(target) => self.send(queue, target, &message, now, claimed_at).await,
                    None => Some(Attempt::failed(
                        "the endpoint is gone".into(),
                        Instant::now(),
                    )),
                };
                if attempt.is_some() {
                    self.observe_lag("answered", limit, message.created_at);
                }
                attempt.map(|attempt| (message, attempt))
            })
            .buffer_unordered(self.inner.options.concurrency.max(1))
            .filter_map(|sent| async move { sent })
            .collect()
            .await;
        let made = attempts.len();
        self.record(tenant, attempts).await?;
        Ok(made)
    }

    /// The lag metric goes by the wall clock, not the dispatcher's [`Clock`]: it is about
    /// real time, and `since` is the database's.
    fn observe_lag(&self, stage: &str, limit: &str, since: DateTime<Utc>) {
        let secs = (Utc::now() - since)
            .to_std()
            .map_or(0.0, |lag| lag.as_secs_f64());
        self.inner
            .metrics
            .lag
            .with_label_values(&[stage, limit])
            .observe(secs);
    }

    async fn claim(&self, tenant: Uuid, queue: &TenantQueue) -> Result<Claim, WebhookError> {
        let limit = (self.inner.limits)(tenant).await;
        let now = self.inner.clock.now();
        if queue.budget_spent(now, limit) {
            // Known from the last claim: the window frees nothing before then.
            return Ok(Claim::default());
        }
        let claimed_at = Instant::now();
        let mut conn = self.inner.pool.get().await?;
        // A claim a PostgreSQL crash loses leaves its messages pending, sent again (at least
        // once): its commit need not wait for the WAL flush.
        let tx = begin_tenant_tx_without_waiting(&mut conn, tenant).await?;
        match self
            .claim_in(&tx, tenant, queue, limit, now, claimed_at)
            .await
        {
            Ok(claimed) => {
                tx.commit().await?;
                Ok(claimed)
            }
            Err(err) => {
                // Dropping the transaction rolls it back too; this says when it failed.
                if let Err(rollback) = tx.rollback().await {
                    tracing::debug!(%rollback, "webhook claim not rolled back");
                }
                Err(err)
            }
        }
    }

    async fn claim_in(
        &self,
        tx: &Transaction<'_>,
        tenant: Uuid,
        queue: &TenantQueue,
        limit: Option<i64>,
        now: DateTime<Utc>,
        claimed_at: Instant,
    ) -> Result<Claim, WebhookError> {
        let mut take = self.inner.options.batch_size.max(1);
        let mut window = None;
        if let Some(limit) = limit {
            let sliding = lock_window(tx, tenant, now).await?;
            take = take.min(limit - sliding.used());
            if take <= 0 {
                if let Some(until) = sliding.frees_at() {
                    queue.spent_until(until, limit);
                }
                return Ok(Claim::default());
            }
            queue.budget_left();
            window = Some(sliding);
        }
        let stmt = tx
            .prepare_cached(
                "with due as ( \
                   select m.id from app.webhook_messages m \
                   join app.webhooks w on w.tenant_id = m.tenant_id and w.id = m.webhook_id \
                   where m.tenant_id = $1 and m.status = 'pending' and m.deleted_at is null \
                     and m.next_attempt_at <= $2 and (m.locked_until is null or m.locked_until <= $2) \
                     and w.status = 'enabled' and w.deleted_at is null \
                   order by m.next_attempt_at, m.id limit $3 \
                   for update of m skip locked) \
                 update app.webhook_messages m \
                 set locked_until = $2 + make_interval(secs => $4), attempts = m.attempts + 1, \
                     updated_at = $2 \
                 from due where m.tenant_id = $1 and m.id = due.id \
                 returning m.id, m.webhook_id, m.attempts, m.round_attempts, m.body, m.created_at",
            )
            .await?;
        let lease = self.inner.options.lease.as_secs_f64();
        let rows = tx.query(&stmt, &[&tenant, &now, &take, &lease]).await?;
        let claimed: Vec<Claimed> = rows
            .iter()
            .map(|r| Claimed {
                id: r.get(0),
                webhook_id: r.get(1),
                attempt: r.get(2),
                round_attempts: r.get(3),
                body: r.get(4),
                created_at: r.get(5),
            })
            .collect();
        if claimed.is_empty() {
            return Ok(Claim::default());
        }
        if let Some(mut window) = window {
            window.charge(now, i32::try_from(claimed.len()).unwrap_or(i32::MAX));
            store_window(tx, tenant, &window, now).await?;
        }
        let mut ids: Vec<Uuid> = claimed.iter().map(|c| c.webhook_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let stmt = tx
            .prepare_cached(&format!(
                "select id, {} from app.webhooks where tenant_id = $1 and id = any($2)",
                Self::TARGET_COLUMNS
            ))
            .await?;
        let mut targets = HashMap::new();
        for row in tx.query(&stmt, &[&tenant, &ids]).await? {
            targets.insert(row.get::<_, Uuid>(0), self.target(&row, 1, now)?);
        }
        Ok(Claim {
            messages: claimed,
            targets,
            limited: limit.is_some(),
            claimed_at,
        })
    }

    /// None when the attempt was not made: waiting for a sending slot took so long that the
    /// lease could run out before the send ends, and another instance may claim the message.
    async fn send(
        &self,
        queue: &TenantQueue,
        target: &Target,
        message: &Claimed,
        now: DateTime<Utc>,
        claimed_at: Instant,
    ) -> Option<Attempt> {
        // The tenant's share first, then a slot of the instance: one tenant's backlog holds
        // at most its share of the slots and of the line for them, so a tenant with one
        // message due waits behind that share at most, not behind the whole backlog.
        let _share = queue.send_share().await?;
        let _permit = self.inner.sends.acquire().await.ok()?;
        let deadline = self
            .inner
            .options
            .lease
            .saturating_sub(crate::net::outbound::TIMEOUT + SEND_MARGIN);
        if claimed_at.elapsed() > deadline {
            return None;
        }
        let started = Instant::now();
        self.inner.metrics.in_flight.inc();
        queue.attempt_started();
        let attempt = self.send_now(target, message, now, started).await;
        queue.attempt_ended();
        self.inner.metrics.in_flight.dec();
        Some(attempt)
    }

    async fn send_now(
        &self,
        target: &Target,
        message: &Claimed,
        now: DateTime<Utc>,
        started: Instant,
    ) -> Attempt {
        if target.status != "enabled" {
            return Attempt::failed("the endpoint is disabled".into(), started);
        }
        if message.body.len() > MAX_PAYLOAD_BYTES {
            return Attempt::failed("the payload is over 1 MiB".into(), started);
        }
        let url = match url::Url::parse(&target.url) {
            Ok(url) => url,
            Err(_) => return Attempt::failed("the stored URL does not parse".into(), started),
        };
        let msg_id = format!("msg_{}", message.id.simple());
        let timestamp = now.timestamp();
        let signature = match signature_header(
            target.secrets.iter().map(String::as_str),
            &msg_id,
            timestamp,
            message.body.as_bytes(),
        ) {
            Ok(signature) => signature,
            Err(err) => return Attempt::failed(format!("cannot sign: {err}"), started),
        };
        let request = self
            .inner
            .outbound
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(message.body.clone());
        let response = match self.inner.outbound.send(request).await {
            Ok(response) => response,
            Err(err) => return Attempt::failed(describe(&err), started),
        };
        let status = response.status().as_u16();
        let hint = retry_after(response.headers());
        // Only the first 4 KiB are read; the rest of a large answer is left unread.
        let (body, error) = match body_prefix(response, RESPONSE_BODY_LIMIT).await {
            Ok(body) => (keep_body(&body), None),
            Err(err) => (String::new(), Some(describe(&err))),
        };
        Attempt {
            status: Some(status),
            body: Some(body),
            retry_after: hint,
            error,
            duration: started.elapsed(),
        }
    }

    async fn record(
        &self,
        tenant: Uuid,
        attempts: Vec<(Claimed, Attempt)>,
    ) -> Result<(), WebhookError> {
        let conn = self.inner.pool.get().await?;
        // BEGIN, the tenant context, the commit setting and the record's first statements
        // leave in one write (`join` polls them in this order). The commit need not wait for
        // the WAL flush: a record a PostgreSQL crash loses leaves its messages leased, and they
        // are sent again when the lease runs out (at least once, as every delivery is).
        let (tx, opened) = TenantTx::open(&conn, tenant);
        let (opened, sync, result) = futures_util::join!(
            opened,
            tx.client().batch_execute(COMMIT_WITHOUT_WAITING_SQL),
            self.record_in(&tx, tenant, attempts)
        );
        let result = match (opened, sync) {
            (Err(not_opened), _) => Err(not_opened.into()),
            (Ok(()), Err(sync)) => Err(DbError::from(sync).into()),
            (Ok(()), Ok(())) => result,
        };
        match result {
            Ok(()) => Ok(tx.commit().await?),
            Err(err) => {
                tx.rollback().await;
                Err(err)
            }
        }
    }

    async fn record_in(
        &self,
        tx: &TenantTx<'_>,
        tenant: Uuid,
        attempts: Vec<(Claimed, Attempt)>,
    ) -> Result<(), WebhookError> {
        let now = self.inner.clock.now();
        // Each attempt's outcome, as parallel arrays: the messages are updated by one
        // statement and the delivery rows written by another, whatever the batch's size.
        let n = attempts.len();
        let mut ids = Vec::with_capacity(n);
        let mut numbers = Vec::with_capacity(n);
        let mut message_statuses: Vec<&str> = Vec::with_capacity(n);
        let mut rounds = Vec::with_capacity(n);
        let mut nexts: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
        for (message, attempt) in &attempts {
            let round = message.round_attempts + 1;
            let (status, next) = if attempt.succeeded() {
                ("succeeded", None)
            } else if attempt.status == Some(410) {
                ("dead", None)
            } else {
                let jitter: f64 = rand::rng().random();
                match next_delay(round, attempt.retry_after, jitter) {
                    Some(delay) => (
                        "pending",
                        Some(now + TimeDelta::from_std(delay).unwrap_or(TimeDelta::hours(1))),
                    ),
                    None => ("dead", None),
                }
            };
            ids.push(message.id);
            numbers.push(message.attempt);
            message_statuses.push(status);
            rounds.push(round);
            nexts.push(next);
        }
        // A success clears its endpoint's failure clock whether or not the attempt is recorded
        // (a receiver that answered 2xx is up); sent beside the messages' update.
        let mut succeeded_endpoints: Vec<Uuid> = attempts
            .iter()
            .filter(|(_, attempt)| attempt.succeeded())
            .map(|(message, _)| message.webhook_id)
            .collect();
        succeeded_endpoints.sort_unstable();
        succeeded_endpoints.dedup();
        let clear = tx
            .prepare_cached(
                "update app.webhooks set failing_since = null \
                 where tenant_id = $1 and id = any($2) and failing_since is not null",
            )
            .await?;
        // One statement a message, all sent at once (one round trip): each finds its row by
        // the full primary key, a plan no statistics can change (a join of the batch's ids
        // with the table was planned, on a young table, as a scan of the tenant's messages).
        // Fenced by the attempt number: a claim that outlived its lease matches nothing.
        let stmt = tx
            .prepare_cached(
                "update app.webhook_messages set status = $3, round_attempts = $4, \
                 next_attempt_at = coalesce($5, next_attempt_at), locked_until = null, \
                 updated_at = $6 \
                 where tenant_id = $1 and id = $2 and attempts = $7 and status = 'pending'",
            )
            .await?;
        let updates = futures_util::future::join_all((0..n).map(|i| {
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
                &tenant,
                &ids[i],
                &message_statuses[i],
                &rounds[i],
                &nexts[i],
                &now,
                &numbers[i],
            ];
            let stmt = &stmt;
            async move { tx.execute(stmt, &params).await }
        }));
        let (updated, cleared) = futures_util::join!(updates, async {
            if succeeded_endpoints.is_empty() {
                return Ok(0);
            }
            tx.execute(&clear, &[&tenant, &succeeded_endpoints]).await
        });
        cleared?;
        let mut recorded: HashSet<Uuid> = HashSet::with_capacity(n);
        for (id, updated) in ids.iter().zip(updated) {
            if updated? == 1 {
                recorded.insert(*id);
            }
        }
        let mut delivery_ids = Vec::with_capacity(recorded.len());
        let mut message_ids = Vec::with_capacity(recorded.len());
        let mut webhook_ids = Vec::with_capacity(recorded.len());
        let mut attempt_numbers = Vec::with_capacity(recorded.len());
        let mut delivery_statuses: Vec<&str> = Vec::with_capacity(recorded.len());
        let mut codes: Vec<Option<i32>> = Vec::with_capacity(recorded.len());
        let mut bodies: Vec<Option<String>> = Vec::with_capacity(recorded.len());
        let mut durations = Vec::with_capacity(recorded.len());
        let mut errors: Vec<Option<String>> = Vec::with_capacity(recorded.len());
        let mut retries: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(recorded.len());
        let mut failed_endpoints = Vec::new();
        let mut gone_endpoints = Vec::new();
        for ((message, attempt), (status, next)) in
            attempts.into_iter().zip(message_statuses.iter().zip(nexts))
        {
            if !recorded.contains(&message.id) {
                // Re-claimed after our lease ran out, or deleted meanwhile: the newer claim's
                // record stands. The receiver may have it twice (at least once).
                tracing::warn!(tenant_id = %tenant, message_id = %message.id,
                    "webhook attempt finished after its lease; not recorded");
                continue;
            }
            let gone = attempt.status == Some(410);
            let delivery_status = if *status == "pending" {
                "failed"
            } else {
                status
            };
            let outcome = if gone { "gone" } else { delivery_status };
            self.inner
                .metrics
                .attempts
                .with_label_values(&[outcome])
                .inc();
            let error = match (&attempt.error, attempt.status) {
                (Some(e), _) => Some(e.clone()),
                (None, Some(410)) => Some("410 Gone: the endpoint is disabled".to_string()),
                (None, Some(s)) if !(200..300).contains(&s) => {
                    Some(format!("the receiver answered {s}"))
                }
                _ => None,
            };
            if gone {
                gone_endpoints.push(message.webhook_id);
            } else if !attempt.succeeded() {
                failed_endpoints.push(message.webhook_id);
            }
            delivery_ids.push(Uuid::now_v7());
            message_ids.push(message.id);
            webhook_ids.push(message.webhook_id);
            attempt_numbers.push(message.attempt);
            delivery_statuses.push(delivery_status);
            codes.push(attempt.status.map(i32::from));
            bodies.push(attempt.body);
            durations.push(i32::try_from(attempt.duration.as_millis()).unwrap_or(i32::MAX));
            errors.push(error);
            retries.push(next);
        }
        if !delivery_ids.is_empty() {
            // Inside a CTE with `returning`: Citus would otherwise write the rows of an
            // `insert ... select` with COPY, which row-level security refuses.
            let stmt = tx
                .prepare_cached(
                    "with i as (insert into app.webhook_deliveries (tenant_id, id, message_id, \
                     webhook_id, attempt, status, response_code, response_body, duration_ms, \
                     error, next_retry_at, created_at) \
                     select $1, d.id, d.message_id, d.webhook_id, d.attempt, d.status, d.code, \
                       d.body, d.duration, d.error, d.next, $2 \
                     from unnest($3::uuid[], $4::uuid[], $5::uuid[], $6::int4[], $7::text[], \
                       $8::int4[], $9::text[], $10::int4[], $11::text[], $12::timestamptz[]) \
                       as d (id, message_id, webhook_id, attempt, status, code, body, duration, \
                         error, next) \
                     returning 1) \
                     select count(*) from i",
                )
                .await?;
            tx.execute(
                &stmt,
                &[
                    &tenant,
                    &now,
                    &delivery_ids,
                    &message_ids,
                    &webhook_ids,
                    &attempt_numbers,
                    &delivery_statuses,
                    &codes,
                    &bodies,
                    &durations,
                    &errors,
                    &retries,
                ],
            )
            .await?;
        }
        failed_endpoints.sort_unstable();
        failed_endpoints.dedup();
        if !failed_endpoints.is_empty() {
            // An endpoint that also succeeded in this batch is not failing.
            failed_endpoints.retain(|e| !succeeded_endpoints.contains(e));
            let stmt = tx
                .prepare_cached(
                    "update app.webhooks set failing_since = coalesce(failing_since, $3) \
                     where tenant_id = $1 and id = any($2) and deleted_at is null \
                     returning id, failing_since, status",
                )
                .await?;
            for row in tx.query(&stmt, &[&tenant, &failed_endpoints, &now]).await? {
                let since: DateTime<Utc> = row.get(1);
                let status: &str = row.get(2);
                if status == "enabled" && now - since >= DISABLE_AFTER {
                    self.disable(tx, tenant, row.get(0), "failing for 5 days", now)
                        .await?;
                }
            }
        }
        gone_endpoints.sort_unstable();
        gone_endpoints.dedup();
        for endpoint in gone_endpoints {
            self.disable(tx, tenant, endpoint, "the receiver answered 410 Gone", now)
                .await?;
        }
        Ok(())
    }

    /// Disables an endpoint still enabled, and records `webhook.endpoint_disabled`.
    async fn disable(
        &self,
        tx: &TenantTx<'_>,
        tenant: Uuid,
        endpoint: Uuid,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), WebhookError> {
        let stmt = tx
            .prepare_cached(
                "update app.webhooks set status = 'disabled', disabled_reason = $3, updated_at = $4 \
                 where tenant_id = $1 and id = $2 and status = 'enabled' and deleted_at is null \
                 returning url",
            )
            .await?;
        let Some(row) = tx
            .query_opt(&stmt, &[&tenant, &endpoint, &reason, &now])
            .await?
        else {
            return Ok(());
        };
        let url: String = row.get(0);
        tracing::warn!(tenant_id = %tenant, webhook_id = %endpoint, reason, "webhook endpoint disabled");
        crate::jobs::enqueue(
            tx,
            tenant,
            ENDPOINT_DISABLED_EVENT,
            &json!({"id": endpoint, "url": url, "reason": reason, "disabled_at": now}),
        )
        .await?;
        Ok(())
    }
}

/// The dispatcher of this instance, unless JOB_WORKER=false (the outbox worker that fans
/// events out is off then too). Several instances may each run one: leases keep them apart.
pub fn for_server(state: &crate::state::AppState) -> Option<Dispatcher> {
    if !state.config.job_worker {
        return None;
    }
    let options = DispatcherOptions::default();
    let metrics = match WebhookMetrics::new() {
        Ok(metrics) => metrics,
        Err(err) => {
            tracing::error!(%err, "webhook metrics not defined; webhooks are not sent");
            return None;
        }
    };
    if let Err(err) = metrics.register(state.metrics.registry()) {
        tracing::warn!(%err, "webhook metrics not registered");
    }
    let outbound = match Outbound::from_config(&state.config) {
        Ok(outbound) => outbound,
        Err(err) => {
            tracing::error!(error = %error_chain(&err), "no HTTP client; webhooks are not sent");
            return None;
        }
    };
    let actors = state.actors.clone();
    // The limit from the tenant's config snapshot, which its actor holds; a tenant whose
    // snapshot cannot be had now waits (a limit of 0) rather than exceed its plan.
    let limits: Limits = Arc::new(move |tenant| {
        let actors = actors.clone();
        Box::pin(async move {
            match actors.config(tenant).await {
                Ok(snapshot) => snapshot
                    .plan
                    .limit(crate::tenant_config::snapshot::Limit::WebhookDeliveriesPerMinute),
                Err(err) => {
                    tracing::warn!(tenant_id = %tenant, error = %error_chain(&err),
                        "no config snapshot for the webhook limit; the queue waits");
                    Some(0)
                }
            }
        })
    });
    // The queue of each tenant lives beside its actor (DESIGN.md "The tenant actor's state").
    let registry = state.actors.clone();
    let queues: Queues = Arc::new(move |tenant| {
        let registry = registry.clone();
        Box::pin(async move {
            registry
                .actor(tenant)
                .await
                .ok()
                .map(|entry| entry.webhooks.clone())
        })
    });
    // A pool of its own: its claims and records do not wait behind the outbox worker's
    // transactions (which hold half of the shared pool), nor hold connections the worker needs.
    let size = (state.config.app_shared_pool_size / 2).max(1);
    let pool = match crate::db::pool::app_pool(&state.config, size) {
        Ok(pool) => pool,
        Err(err) => {
            tracing::error!(error = %error_chain(&err), "no database pool; webhooks are not sent");
            return None;
        }
    };
    Some(Dispatcher::with_queues(
        pool,
        outbound,
        state.secrets.clone(),
        Arc::new(SystemClock),
        limits,
        Some(queues),
        options,
        metrics,
    ))
}

/// Locks the tenant's rate-window row until the transaction ends (concurrent claims of any
/// instance take their share one after the other) and reads what is charged within the last
/// [`RATE_WINDOW`] at `now`.
async fn lock_window(
    tx: &Transaction<'_>,
    tenant: Uuid,
    now: DateTime<Utc>,
) -> Result<SlidingWindow, WebhookError> {
    let stmt = tx
        .prepare_cached(
            "insert into app.webhook_rate_windows as w (tenant_id, window_start, used) \
             values ($1, $2, 0) on conflict (tenant_id) do update set \
             window_start = w.window_start \
             returning charged_at, charged",
        )
        .await?;
    let row = tx.query_one(&stmt, &[&tenant, &now]).await?;
    let mut sliding = SlidingWindow::new(row.get(0), row.get(1));
    sliding.expire(now);
    Ok(sliding)
}

/// Writes the window back, with the last charge's time and the window's sum for operators.
async fn store_window(
    tx: &Transaction<'_>,
    tenant: Uuid,
    window: &SlidingWindow,
    now: DateTime<Utc>,
) -> Result<(), WebhookError> {
    let stmt = tx
        .prepare_cached(
            "update app.webhook_rate_windows set charged_at = $2, charged = $3, \
             window_start = $4, used = $5 where tenant_id = $1",
        )
        .await?;
    let used = i32::try_from(window.used()).unwrap_or(i32::MAX);
    tx.execute(&stmt, &[&tenant, &window.at, &window.counts, &now, &used])
        .await?;
    Ok(())
}

/// A send error for the delivery log: its stable reason, then the causes in words.
fn describe(err: &OutboundError) -> String {
    format!("{}: {}", err.reason(), error_chain(err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_schedule() {
        let secs: Vec<u64> = (1..=5)
            .map(|round| next_delay(round, None, 0.0).unwrap().as_secs())
            .collect();
        assert_eq!(secs, [1, 5, 30, 300, 3600]);
        assert_eq!(next_delay(6, None, 0.0), None);
        // Jitter adds at most a tenth.
        let jittered = next_delay(3, None, 0.999).unwrap();
        assert!(jittered > Duration::from_secs(30) && jittered < Duration::from_secs(33));
        // Retry-After wins when longer, and is capped.
        assert_eq!(
            next_delay(1, Some(Duration::from_secs(120)), 0.0),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            next_delay(1, Some(Duration::from_secs(10 * 24 * 3600)), 0.0),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            next_delay(4, Some(Duration::from_secs(2)), 0.0),
            Some(Duration::from_secs(300))
        );
    }

    #[test]
    fn the_rate_window_slides() {
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:50Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut w = SlidingWindow::default();
        w.charge(t0, 5);
        // Across the calendar minute's end the charge still counts...
        w.expire(t0 + TimeDelta::seconds(20));
        assert_eq!(w.used(), 5);
        // ...until 60 s after it.
        let mut later = w.clone();
        later.expire(t0 + TimeDelta::seconds(60));
        assert_eq!(later.used(), 0);
        // Charges less than a second apart merge, stamped with the later time.
        w.charge(t0 + TimeDelta::milliseconds(500), 2);
        assert_eq!(w.at.len(), 1);
        assert_eq!(w.used(), 7);
        w.expire(t0 + TimeDelta::milliseconds(60_400));
        assert_eq!(w.used(), 7);
        w.charge(t0 + TimeDelta::seconds(61), 1);
        w.expire(t0 + TimeDelta::seconds(61));
        assert_eq!(w.used(), 1);
        assert_eq!(SlidingWindow::new(vec![t0, t0], vec![1]).at.len(), 1);
    }

    #[test]
    fn kept_bodies_are_bounded_and_storable() {
        let big = vec![b'a'; 10_000];
        assert_eq!(keep_body(&big).len(), RESPONSE_BODY_LIMIT);
        assert_eq!(keep_body(b"a\0b"), "ab");
    }
}
