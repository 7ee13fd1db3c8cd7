//! Metered quotas (docs/usage.md "Quotas"): admission before the action, answered from memory,
//! with Redis as the shared authority of what each billing period has handed out.
//!
//! Each instance holds, per tenant and metric, a budget of units leased from Redis (the same
//! `ratelimit::Authority` the rate limits lease from: one connection, one back-off). Redis keeps
//! one counter per tenant, metric and period, and its script hands out at most what is left
//! under the limit, atomically, so all instances together admit at most the limit; each lease
//! asks for a fraction of what is left, so near the limit slices shrink to single units and no
//! instance sits on units another one is refused for. A counter that is missing (a new period,
//! or a Redis that lost its keys) is created from what PostgreSQL holds of the period.
//!
//! Redis unreachable: an instance admits its share (1/RATE_LIMIT_INSTANCES) of what
//! PostgreSQL says is left of the period, read again at most once a second once that share is
//! spent. It never admits without a bound, and never more than the limit from PostgreSQL's view.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::{period_anchor, period_containing, period_totals, Period, UsageError};
use crate::actors::{ExecError, TenantOp};
use crate::auth::Caller;
use crate::db::TenantTx;
use crate::ratelimit::Authority;

/// How long a local share lasts before PostgreSQL is read again while Redis does not answer.
const LOCAL_REFRESH: Duration = Duration::from_secs(1);
/// The largest slice one lease asks for.
const MAX_SLICE: i64 = 10_000;

#[derive(Default)]
pub struct Quotas {
    tenants: DashMap<Uuid, Arc<TenantQuota>>,
}

#[derive(Default)]
struct TenantQuota {
    period: Mutex<Option<Period>>,
    budgets: Mutex<HashMap<String, Budget>>,
    /// One lease (or period load) at a time per tenant and instance.
    leasing: tokio::sync::Mutex<()>,
    /// Unix seconds of the last admission, to forget idle tenants.
    last_used: AtomicI64,
}

#[derive(Clone, Debug)]
struct Budget {
    period_start: DateTime<Utc>,
    /// The limit the last lease was for.
    limit: i64,
    tokens: i64,
    /// What the authority had handed out at the last lease (this instance's tokens included).
    used: i64,
    /// The authority has nothing more for this period.
    exhausted: bool,
    /// Tokens of a local share (Redis did not answer), good until then.
    local_until: Option<Instant>,
}

enum Take {
    Admitted,
    Refused { used: i64 },
    Empty,
}

/// Where the quota decisions come from: the Redis authority, and the tenant's actor for what
/// PostgreSQL holds. A trait so the admission logic is tested without a server.
pub trait Backing: Sync {
    fn lease<'a>(
        &'a self,
        key: &'a str,
        limit: i64,
        want: i64,
        ttl: Duration,
        seed: Option<i64>,
    ) -> BoxFuture<'a, Result<Option<(i64, i64)>, ()>>;
    fn anchor<'a>(&'a self, caller: &'a Caller)
        -> BoxFuture<'a, Result<DateTime<Utc>, UsageError>>;
    fn used<'a>(
        &'a self,
        caller: &'a Caller,
        metric: &'a str,
        period: Period,
    ) -> BoxFuture<'a, Result<i64, UsageError>>;
    fn instances(&self) -> i64;
    fn namespace(&self) -> &str;
}

impl TenantQuota {
    fn budgets(&self) -> std::sync::MutexGuard<'_, HashMap<String, Budget>> {
        self.budgets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the tenant used; a store only when the second changed, so the requests of a busy
    /// tenant on several cores do not all write the one cache line.
    fn touch(&self, now: DateTime<Utc>) {
        let second = now.timestamp();
        if self.last_used.load(Ordering::Relaxed) != second {
            self.last_used.store(second, Ordering::Relaxed);
        }
    }

    fn cached_period(&self, now: DateTime<Utc>) -> Option<Period> {
        let period = *self.period.lock().unwrap_or_else(PoisonError::into_inner);
        period.filter(|p| p.contains(now))
    }

    fn take(&self, metric: &str, period: &Period, limit: i64, n: i64, now: Instant) -> Take {
        let mut budgets = self.budgets();
        let Some(budget) = budgets.get_mut(metric) else {
            return Take::Empty;
        };
        if budget.period_start != period.start {
            budgets.remove(metric);
            return Take::Empty;
        }
        if budget.tokens >= n {
            budget.tokens -= n;
            return Take::Admitted;
        }
        let local_over = budget.local_until.is_some_and(|until| now >= until);
        // A plan change to another limit: ask the authority again.
        if budget.exhausted && !local_over && budget.limit == limit {
            return Take::Refused {
                used: budget.used.saturating_sub(budget.tokens),
            };
        }
        Take::Empty
    }

    /// Whether a lease is still needed for `n` (another request may have brought tokens).
    fn needs_lease(&self, metric: &str, period: &Period, limit: i64, n: i64, now: Instant) -> bool {
        let budgets = self.budgets();
        match budgets.get(metric) {
            Some(b) if b.period_start == period.start => {
                let local_over = b.local_until.is_some_and(|until| now >= until);
                b.tokens < n && (!b.exhausted || local_over || b.limit != limit)
            }
            _ => true,
        }
    }

    fn apply(&self, metric: &str, period: &Period, limit: i64, grant: i64, used: i64) {
        let mut budgets = self.budgets();
        let budget = budgets.entry(metric.to_string()).or_insert(Budget {
            period_start: period.start,
            limit,
            tokens: 0,
            used: 0,
            exhausted: false,
            local_until: None,
        });
        if budget.period_start != period.start || budget.local_until.is_some() {
            budget.period_start = period.start;
            budget.tokens = 0;
            budget.local_until = None;
        }
        budget.tokens += grant;
        budget.used = used;
        budget.limit = limit;
        budget.exhausted = used >= limit;
    }

    fn apply_local(&self, metric: &str, period: &Period, limit: i64, share: i64, used: i64) {
        let mut budgets = self.budgets();
        budgets.insert(
            metric.to_string(),
            Budget {
                period_start: period.start,
                limit,
                tokens: share,
                used: used + share,
                exhausted: true,
                local_until: Some(Instant::now() + LOCAL_REFRESH),
            },
        );
    }

    fn give_back(&self, metric: &str, period_start: DateTime<Utc>, n: i64) {
        let mut budgets = self.budgets();
        if let Some(budget) = budgets.get_mut(metric) {
            if budget.period_start == period_start {
                budget.tokens += n;
            }
        }
    }
}

/// What an admission took: handed back with [`Quotas::give_back`] when the action did not
/// happen (a repeated usage event, a failed insert).
#[derive(Debug, Clone)]
pub struct Admitted {
    pub period: Period,
    pub taken: Vec<(String, i64)>,
}

/// How much of what is left one lease asks for, besides what the request needs.
fn slice(limit: i64, used: i64, instances: i64) -> i64 {
    let left = (limit - used).max(0);
    (left / (instances.max(1) * 8)).clamp(1, MAX_SLICE)
}

impl Quotas {
    fn tenant(&self, tenant: Uuid) -> Arc<TenantQuota> {
        if let Some(entry) = self.tenants.get(&tenant) {
            return entry.clone();
        }
        self.tenants.entry(tenant).or_default().clone()
    }

    /// Forgets tenants not admitted for `idle` (their leased units stay counted in Redis: a
    /// tenant that comes back leases anew).
    pub fn forget_idle(&self, idle: Duration) {
        let cutoff = Utc::now().timestamp() - i64::try_from(idle.as_secs()).unwrap_or(i64::MAX);
        self.tenants
            .retain(|_, q| q.last_used.load(Ordering::Relaxed) >= cutoff);
    }

    /// The caller's current billing period, from memory once loaded.
    pub async fn period(
        &self,
        backing: &dyn Backing,
        caller: &Caller,
        now: DateTime<Utc>,
    ) -> Result<Period, UsageError> {
        let quota = self.tenant(caller.tenant_id);
        self.period_of(&quota, backing, caller, now).await
    }

    async fn period_of(
        &self,
        quota: &TenantQuota,
        backing: &dyn Backing,
        caller: &Caller,
        now: DateTime<Utc>,
    ) -> Result<Period, UsageError> {
        if let Some(period) = quota.cached_period(now) {
            return Ok(period);
        }
        let _turn = quota.leasing.lock().await;
        if let Some(period) = quota.cached_period(now) {
            return Ok(period);
        }
        let anchor = backing.anchor(caller).await?;
        let period = period_containing(anchor, now);
        *quota.period.lock().unwrap_or_else(PoisonError::into_inner) = Some(period);
        Ok(period)
    }

    /// Admits `n` of one metric (the per-request `api_calls` unit): [`Quotas::admit`] of one
    /// amount without the [`Admitted`] record (two allocations) that nobody gives back.
    pub async fn admit_unit(
        &self,
        backing: &dyn Backing,
        caller: &Caller,
        metric: &str,
        n: i64,
        limit: i64,
    ) -> Result<(), UsageError> {
        let now = Utc::now();
        let quota = self.tenant(caller.tenant_id);
        quota.touch(now);
        let period = self.period_of(&quota, backing, caller, now).await?;
        if n <= 0 {
            return Ok(());
        }
        self.admit_one(&quota, backing, caller, &period, metric, n, limit, now)
            .await
    }

    /// Admits `amounts` (metric, quantity, limit) for the caller's tenant, all or nothing:
    /// refused with `QuotaExceeded` for the first metric over its limit, handing back what the
    /// metrics before it took.
    pub async fn admit(
        &self,
        backing: &dyn Backing,
        caller: &Caller,
        amounts: &[(&str, i64, i64)],
    ) -> Result<Admitted, UsageError> {
        let now = Utc::now();
        let quota = self.tenant(caller.tenant_id);
        quota.touch(now);
        let period = self.period_of(&quota, backing, caller, now).await?;
        let mut admitted = Admitted {
            period,
            taken: Vec::new(),
        };
        for (metric, n, limit) in amounts {
            if *n <= 0 {
                continue;
            }
            match self
                .admit_one(&quota, backing, caller, &period, metric, *n, *limit, now)
                .await
            {
                Ok(()) => admitted.taken.push((metric.to_string(), *n)),
                Err(err) => {
                    self.give_back(caller.tenant_id, &admitted);
                    return Err(err);
                }
            }
        }
        Ok(admitted)
    }

    #[allow(clippy::too_many_arguments)]
    async fn admit_one(
        &self,
        quota: &TenantQuota,
        backing: &dyn Backing,
        caller: &Caller,
        period: &Period,
        metric: &str,
        n: i64,
        limit: i64,
        now: DateTime<Utc>,
    ) -> Result<(), UsageError> {
        let refused = |used: i64| UsageError::QuotaExceeded {
            metric: metric.to_string(),
            limit,
            used: used.min(limit.max(0)),
            retry_after: period.remaining(now),
        };
        if n > limit {
            return Err(refused(limit));
        }
        for _ in 0..4 {
            match quota.take(metric, period, limit, n, Instant::now()) {
                Take::Admitted => return Ok(()),
                Take::Refused { used } => return Err(refused(used)),
                Take::Empty => {}
            }
            let _turn = quota.leasing.lock().await;
            if !quota.needs_lease(metric, period, limit, n, Instant::now()) {
                continue;
            }
            let (have, last_used) = {
                let budgets = quota.budgets();
                budgets
                    .get(metric)
                    .filter(|b| b.period_start == period.start && b.local_until.is_none())
                    .map_or((0, 0), |b| (b.tokens, b.used))
            };
            let want = (n - have).max(0) + slice(limit, last_used, backing.instances());
            let key = format!(
                "{}:quota:{{{}}}:{}:{}",
                backing.namespace(),
                caller.tenant_id,
                metric,
                period.start.timestamp()
            );
            // The counter outlives the period a little: a late lease still finds it exhausted.
            let ttl = period.remaining(now) + Duration::from_secs(3600);
            let outcome = match backing.lease(&key, limit, want, ttl, None).await {
                Ok(None) => {
                    let seed = backing.used(caller, metric, *period).await?;
                    backing.lease(&key, limit, want, ttl, Some(seed)).await
                }
                other => other,
            };
            match outcome {
                Ok(Some((grant, used))) => {
                    quota.apply(metric, period, limit, grant, used);
                }
                Ok(None) | Err(()) => {
                    let used = backing.used(caller, metric, *period).await?;
                    let share = (limit - used).max(0) / backing.instances().max(1);
                    quota.apply_local(metric, period, limit, share, used);
                }
            }
        }
        Err(refused(limit))
    }

    pub fn give_back(&self, tenant: Uuid, admitted: &Admitted) {
        let quota = self.tenant(tenant);
        for (metric, n) in &admitted.taken {
            quota.give_back(metric, admitted.period.start, *n);
        }
    }

    /// Hands back `n` of `metric` only (the repeated events of a batch).
    pub fn give_back_some(&self, tenant: Uuid, admitted: &Admitted, metric: &str, n: i64) {
        if n > 0 {
            self.tenant(tenant)
                .give_back(metric, admitted.period.start, n);
        }
    }
}

/// The tenant's period anchor, read in its actor.
pub struct LoadAnchor;

impl TenantOp for LoadAnchor {
    type Output = DateTime<Utc>;
    type Error = UsageError;
    const OPENS_TENANT_SCHEMA: bool = false;

    fn run<'a>(
        self,
        tx: &'a TenantTx<'a>,
        caller: &'a Caller,
    ) -> BoxFuture<'a, Result<DateTime<Utc>, UsageError>> {
        Box::pin(async move { period_anchor(tx.client(), caller.tenant_id).await })
    }
}

/// What PostgreSQL holds of one metric in a period.
pub struct LoadUsed {
    pub metric: String,
    pub period: Period,
}

impl TenantOp for LoadUsed {
    type Output = i64;
    type Error = UsageError;

    fn run<'a>(
        self,
        tx: &'a TenantTx<'a>,
        caller: &'a Caller,
    ) -> BoxFuture<'a, Result<i64, UsageError>> {
        Box::pin(async move {
            let totals =
                period_totals(tx.client(), caller.tenant_id, &self.period, Utc::now()).await?;
            Ok(totals.get(&self.metric).copied().unwrap_or(0))
        })
    }
}

/// The server's backing: Redis through the rate limits' authority, PostgreSQL through the
/// tenant's actor.
pub struct ServerBacking<'a> {
    pub state: &'a crate::state::AppState,
}

fn flatten<T>(result: Result<T, ExecError<UsageError>>) -> Result<T, UsageError> {
    result.map_err(|err| match err {
        ExecError::Op(err) => err,
        ExecError::Actor(err) => UsageError::Actor(err),
    })
}

impl Backing for ServerBacking<'_> {
    fn lease<'a>(
        &'a self,
        key: &'a str,
        limit: i64,
        want: i64,
        ttl: Duration,
        seed: Option<i64>,
    ) -> BoxFuture<'a, Result<Option<(i64, i64)>, ()>> {
        Box::pin(async move {
            let authority: &Authority = self.state.ratelimit.authority();
            let to_u = |n: i64| u64::try_from(n.max(0)).unwrap_or(0);
            let to_i = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            authority
                .quota_lease(key, to_u(limit), to_u(want), ttl, seed.map(to_u))
                .await
                .map(|lease| lease.map(|(g, u)| (to_i(g), to_i(u))))
                .map_err(|_| ())
        })
    }

    fn anchor<'a>(
        &'a self,
        caller: &'a Caller,
    ) -> BoxFuture<'a, Result<DateTime<Utc>, UsageError>> {
        Box::pin(async move { flatten(self.state.execute(caller.clone(), LoadAnchor).await) })
    }

    fn used<'a>(
        &'a self,
        caller: &'a Caller,
        metric: &'a str,
        period: Period,
    ) -> BoxFuture<'a, Result<i64, UsageError>> {
        Box::pin(async move {
            let op = LoadUsed {
                metric: metric.to_string(),
                period,
            };
            flatten(self.state.execute(caller.clone(), op).await)
        })
    }

    fn instances(&self) -> i64 {
        i64::from(self.state.ratelimit.settings().instances.max(1))
    }

    fn namespace(&self) -> &str {
        self.state.ratelimit.namespace()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant_config::snapshot::TenantSnapshot;

    /// A Redis in memory: one counter per key, the script's arithmetic.
    struct Fake {
        counters: Mutex<HashMap<String, i64>>,
        down: std::sync::atomic::AtomicBool,
        stored: i64,
        instances: i64,
    }

    impl Fake {
        fn new(stored: i64, instances: i64) -> Fake {
            Fake {
                counters: Mutex::default(),
                down: Default::default(),
                stored,
                instances,
            }
        }
    }

    impl Backing for Fake {
        fn lease<'a>(
            &'a self,
            key: &'a str,
            limit: i64,
            want: i64,
            _ttl: Duration,
            seed: Option<i64>,
        ) -> BoxFuture<'a, Result<Option<(i64, i64)>, ()>> {
            Box::pin(async move {
                if self.down.load(Ordering::Relaxed) {
                    return Err(());
                }
                let mut counters = self.counters.lock().unwrap();
                let used = match (counters.get(key), seed) {
                    (Some(u), _) => *u,
                    (None, Some(seed)) => seed,
                    (None, None) => return Ok(None),
                };
                let grant = want.min(limit - used).max(0);
                counters.insert(key.to_string(), used + grant);
                Ok(Some((grant, used + grant)))
            })
        }
        fn anchor<'a>(&'a self, _: &'a Caller) -> BoxFuture<'a, Result<DateTime<Utc>, UsageError>> {
            Box::pin(async { Ok(Utc::now() - chrono::Duration::days(3)) })
        }
        fn used<'a>(
            &'a self,
            _: &'a Caller,
            _: &'a str,
            _: Period,
        ) -> BoxFuture<'a, Result<i64, UsageError>> {
            Box::pin(async move { Ok(self.stored) })
        }
        fn instances(&self) -> i64 {
            self.instances
        }
        fn namespace(&self) -> &str {
            "test"
        }
    }

    fn caller() -> Caller {
        let tenant = Uuid::now_v7();
        Caller {
            tenant_id: tenant,
            tenant_slug: "t".into(),
            config: Arc::new(TenantSnapshot::bare(tenant, "t", "free")),
            user_id: Some(Uuid::now_v7()),
            role: None,
            request_id: "r".into(),
        }
    }

    async fn count_admitted(
        quotas: &Quotas,
        backing: &Fake,
        caller: &Caller,
        tries: usize,
    ) -> usize {
        let mut admitted = 0;
        for _ in 0..tries {
            if quotas
                .admit(backing, caller, &[("x", 1, 100)])
                .await
                .is_ok()
            {
                admitted += 1;
            }
        }
        admitted
    }

    #[tokio::test]
    async fn two_instances_admit_exactly_the_limit() {
        let backing = Fake::new(10, 2);
        let (a, b) = (Quotas::default(), Quotas::default());
        let caller = caller();
        let mut total = 0;
        // Interleaved: each instance leases slices from the one counter.
        for _ in 0..100 {
            total += count_admitted(&a, &backing, &caller, 1).await;
            total += count_admitted(&b, &backing, &caller, 1).await;
        }
        // 10 were already stored in the period.
        assert_eq!(total, 90);
        let err = a
            .admit(&backing, &caller, &[("x", 1, 100)])
            .await
            .unwrap_err();
        match err {
            UsageError::QuotaExceeded {
                limit,
                used,
                retry_after,
                ..
            } => {
                assert_eq!((limit, used), (100, 100));
                assert!(retry_after > Duration::from_secs(20 * 86400));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn all_or_nothing_and_give_back() {
        let backing = Fake::new(0, 1);
        let quotas = Quotas::default();
        let caller = caller();
        let admitted = quotas
            .admit(&backing, &caller, &[("x", 60, 100), ("y", 5, 10)])
            .await
            .unwrap();
        // y over its limit: x's 60 are handed back.
        assert!(quotas
            .admit(&backing, &caller, &[("x", 40, 100), ("y", 6, 10)])
            .await
            .is_err());
        assert!(quotas
            .admit(&backing, &caller, &[("x", 40, 100)])
            .await
            .is_ok());
        assert!(quotas
            .admit(&backing, &caller, &[("x", 1, 100)])
            .await
            .is_err());
        quotas.give_back_some(caller.tenant_id, &admitted, "x", 2);
        assert!(quotas
            .admit(&backing, &caller, &[("x", 2, 100)])
            .await
            .is_ok());
        assert!(quotas
            .admit(&backing, &caller, &[("x", 1, 100)])
            .await
            .is_err());
        // A single amount over the limit never passes; zero always does.
        assert!(quotas
            .admit(&backing, &caller, &[("z", 11, 10)])
            .await
            .is_err());
        assert!(quotas
            .admit(&backing, &caller, &[("x", 0, 100)])
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn redis_down_admits_a_share_of_what_is_left() {
        let backing = Fake::new(20, 2);
        backing.down.store(true, Ordering::Relaxed);
        let quotas = Quotas::default();
        let caller = caller();
        // (100 - 20) / 2 instances, then nothing until the share is refreshed.
        assert_eq!(count_admitted(&quotas, &backing, &caller, 100).await, 40);
    }

    #[test]
    fn slices_shrink_near_the_limit() {
        assert_eq!(slice(1_000_000, 0, 1), 10_000);
        assert_eq!(slice(1000, 0, 2), 62);
        assert_eq!(slice(1000, 990, 2), 1);
        assert_eq!(slice(10, 10, 1), 1);
    }
}
