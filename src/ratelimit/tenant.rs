//! One tenant's limiter, held in the actor registry's entry beside the tenant's actor.
//!
//! Two checks admit a request, both in memory:
//! - the tenant's leased budget: requests this instance may admit in the current window,
//!   leased from Redis a slice at a time. Redis hands out no more than the limit per window
//!   across all instances, so the instances together admit at most the limit; the window ends
//!   when its Redis key expires (a minute after its first lease), and tokens left over from it
//!   are dropped, never carried into the next window. While Redis does not answer, the budget
//!   is this instance's share of the limit for a minute of its own.
//! - a GCRA (`governor`) at the plan's rate with a burst of the whole limit: a hard ceiling of
//!   each instance that needs nothing outside the process, so even a Redis that lost its keys
//!   mid-window cannot make an instance admit more than the limit's rate.

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota as GcraQuota, RateLimiter};

use super::authority::Lease;
use super::{Quota, RateLimitError, TENANT_METRIC, WINDOW};

type Gcra = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// Created empty at the actor's activation; its budget is built on the first request, and
/// rebuilt when the plan's limit changes.
#[derive(Default)]
pub struct TenantLimiter {
    budget: RwLock<Option<Arc<Budget>>>,
}

impl TenantLimiter {
    /// The budget for `limit`; None for a limit of 0 (every request refused).
    pub(super) fn budget(&self, limit: u32, instances: u32) -> Option<Arc<Budget>> {
        let current = self
            .budget
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(budget) = current.filter(|b| b.limit == limit) {
            return Some(budget);
        }
        let fresh = Arc::new(Budget::new(limit, instances)?);
        let mut slot = self.budget.write().unwrap_or_else(PoisonError::into_inner);
        match slot.as_ref() {
            // Another request built it meanwhile: share that one.
            Some(budget) if budget.limit == limit => Some(budget.clone()),
            _ => {
                *slot = Some(fresh.clone());
                Some(fresh)
            }
        }
    }
}

pub(super) struct Budget {
    limit: u32,
    slice: u32,
    gcra: Gcra,
    window: Mutex<Window>,
    /// Held while a lease is under way: one lease at a time per tenant and instance.
    leasing: tokio::sync::Mutex<()>,
}

/// The current window as this instance knows it. `deadline` None: no window yet, or it ended.
#[derive(Default, Debug)]
struct Window {
    tokens: u32,
    deadline: Option<Instant>,
    /// The authority hands out nothing more in this window.
    exhausted: bool,
    /// What the authority had not handed out to anyone at the last lease.
    unleased: u32,
    /// Tokens of this instance's own share (Redis did not answer), not of a Redis window.
    local: bool,
}

/// What a lease brought.
#[derive(Debug)]
pub(super) struct Grant {
    tokens: u32,
    window_left: Duration,
    exhausted: bool,
    unleased: u32,
    local: bool,
}

impl Grant {
    pub(super) fn leased(lease: Lease, limit: u32) -> Grant {
        let used = u32::try_from(lease.used).unwrap_or(u32::MAX);
        Grant {
            tokens: lease.granted,
            window_left: lease.remaining_window,
            exhausted: used >= limit,
            unleased: limit.saturating_sub(used),
            local: false,
        }
    }

    /// This instance's share for a minute of its own, all at once.
    pub(super) fn local_share(share: u32) -> Grant {
        Grant {
            tokens: share,
            window_left: WINDOW,
            exhausted: true,
            unleased: 0,
            local: true,
        }
    }
}

pub(super) enum Take {
    Admitted(Quota),
    Refused(RateLimitError),
    /// No token here and the window may have more: lease.
    Empty,
}

impl Budget {
    fn new(limit: u32, instances: u32) -> Option<Budget> {
        let burst = std::num::NonZeroU32::new(limit)?;
        Some(Budget {
            limit,
            slice: super::slice(limit, instances),
            gcra: RateLimiter::direct(GcraQuota::per_minute(burst))
                .with_middleware::<StateInformationMiddleware>(),
            window: Mutex::new(Window::default()),
            leasing: tokio::sync::Mutex::new(()),
        })
    }

    pub(super) fn slice(&self) -> u32 {
        self.slice
    }

    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        // Every critical section leaves the window valid: a panic cannot leave it torn.
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) async fn lease_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.leasing.lock().await
    }

    fn refused(&self, retry_after: Duration) -> Take {
        Take::Refused(RateLimitError::Limited {
            metric: TENANT_METRIC,
            limit: u64::from(self.limit),
            used: u64::from(self.limit),
            retry_after: retry_after.max(Duration::from_millis(1)),
        })
    }

    /// Admits one request from memory, refuses it, or says a lease is needed.
    pub(super) fn take(&self, now: Instant) -> Take {
        let mut window = self.window();
        let Some(deadline) = window.deadline.filter(|d| now < *d) else {
            *window = Window::default();
            return Take::Empty;
        };
        if window.tokens == 0 {
            return if window.exhausted {
                self.refused(deadline - now)
            } else {
                Take::Empty
            };
        }
        self.spend(&mut window, deadline - now)
    }

    /// Admits the request that just leased from the tokens its lease brought, even when the
    /// window ended meanwhile: Redis counted those tokens in the window they were leased from,
    /// so the limit holds, while a grant from a window about to end would otherwise be gone
    /// before the next `take` and the request refused far below the limit.
    pub(super) fn take_own(&self, now: Instant) -> Take {
        let mut window = self.window();
        if window.tokens == 0 {
            return Take::Empty;
        }
        let reset = window
            .deadline
            .map_or(Duration::ZERO, |d| d.saturating_duration_since(now));
        self.spend(&mut window, reset)
    }

    /// One token of `window`, if the instance's GCRA ceiling allows it now.
    fn spend(&self, window: &mut Window, reset: Duration) -> Take {
        match self.gcra.check() {
            Err(not_until) => self.refused(not_until.wait_time_from(self.gcra.clock().now())),
            Ok(state) => {
                window.tokens -= 1;
                let budget = window.tokens.saturating_add(window.unleased);
                Take::Admitted(Quota {
                    limit: u64::from(self.limit),
                    remaining: u64::from(state.remaining_burst_capacity().min(budget)),
                    reset,
                })
            }
        }
    }

    /// Whether a lease is still needed (another request may have brought tokens meanwhile).
    pub(super) fn needs_lease(&self, now: Instant) -> bool {
        let window = self.window();
        match window.deadline {
            Some(deadline) if now < deadline => window.tokens == 0 && !window.exhausted,
            _ => true,
        }
    }

    /// Adds what a lease sent at `sent` brought. The window's end is counted from `sent`, which
    /// is before Redis measured the time left: this instance's window never outlasts Redis's.
    /// Returns whether the lease brought tokens.
    pub(super) fn apply(&self, grant: Grant, sent: Instant) -> bool {
        let now = Instant::now();
        let deadline = sent + grant.window_left;
        let mut window = self.window();
        let same_window = window.local == grant.local && window.deadline.is_some_and(|d| now < d);
        if same_window {
            window.tokens = window.tokens.saturating_add(grant.tokens);
            window.deadline = window.deadline.map(|d| d.min(deadline));
        } else {
            window.tokens = grant.tokens;
            window.deadline = Some(deadline);
        }
        window.exhausted = grant.exhausted;
        window.unleased = grant.unleased;
        window.local = grant.local;
        grant.tokens > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(granted: u32, used: u64) -> Lease {
        Lease {
            granted,
            used,
            remaining_window: Duration::from_secs(50),
        }
    }

    fn admitted(take: Take) -> Quota {
        match take {
            Take::Admitted(quota) => quota,
            Take::Refused(err) => panic!("refused: {err}"),
            Take::Empty => panic!("empty"),
        }
    }

    #[test]
    fn leased_tokens_admit_then_the_window_refuses() {
        let limiter = TenantLimiter::default();
        let budget = limiter.budget(5, 1).unwrap();
        let now = Instant::now();
        assert!(matches!(budget.take(now), Take::Empty));
        assert!(budget.needs_lease(now));
        budget.apply(Grant::leased(lease(3, 3), 5), now);
        assert!(!budget.needs_lease(now));
        let first = admitted(budget.take(now));
        assert_eq!((first.limit, first.remaining), (5, 4));
        assert!(first.reset <= Duration::from_secs(50));
        admitted(budget.take(now));
        admitted(budget.take(now));
        assert!(matches!(budget.take(now), Take::Empty));
        // The last two of the window.
        budget.apply(Grant::leased(lease(2, 5), 5), now);
        assert_eq!(admitted(budget.take(now)).remaining, 1);
        assert_eq!(admitted(budget.take(now)).remaining, 0);
        match budget.take(now) {
            Take::Refused(RateLimitError::Limited {
                limit, retry_after, ..
            }) => {
                assert_eq!(limit, 5);
                assert!(retry_after <= Duration::from_secs(50));
            }
            _ => panic!("the window is exhausted"),
        }
        assert!(!budget.needs_lease(now));
    }

    #[test]
    fn a_grant_from_an_ending_window_admits_the_request_that_leased_it() {
        let limiter = TenantLimiter::default();
        let budget = limiter.budget(10, 1).unwrap();
        let now = Instant::now();
        // Redis answered with the window all but over: it has ended by the time of the take.
        let ending = Lease {
            granted: 1,
            used: 1,
            remaining_window: Duration::ZERO,
        };
        assert!(budget.apply(Grant::leased(ending, 10), now));
        let later = now + Duration::from_millis(1);
        assert!(budget.needs_lease(later));
        assert_eq!(admitted(budget.take_own(later)).limit, 10);
        // The token was spent once: nothing more from that grant.
        assert!(matches!(budget.take_own(later), Take::Empty));
    }

    #[test]
    fn tokens_die_with_their_window() {
        let limiter = TenantLimiter::default();
        let budget = limiter.budget(10, 1).unwrap();
        let now = Instant::now();
        budget.apply(Grant::leased(lease(1, 10), 10), now);
        // After the window: neither its tokens nor its exhaustion count.
        let later = now + Duration::from_secs(51);
        assert!(budget.needs_lease(later));
        assert!(matches!(budget.take(later), Take::Empty));
    }

    #[test]
    fn a_local_share_replaces_a_redis_window() {
        let limiter = TenantLimiter::default();
        let budget = limiter.budget(30, 2).unwrap();
        let now = Instant::now();
        budget.apply(Grant::leased(lease(2, 2), 30), now);
        admitted(budget.take(now));
        admitted(budget.take(now));
        budget.apply(Grant::local_share(super::super::share(30, 2)), now);
        for _ in 0..15 {
            admitted(budget.take(now));
        }
        assert!(matches!(budget.take(now), Take::Refused(_)));
        assert!(!budget.needs_lease(now));
    }

    #[test]
    fn the_gcra_caps_an_instance_whatever_redis_says() {
        let limiter = TenantLimiter::default();
        let budget = limiter.budget(3, 1).unwrap();
        let now = Instant::now();
        // A Redis that lost its keys keeps granting.
        for _ in 0..3 {
            budget.apply(Grant::leased(lease(1, 1), 3), now);
            admitted(budget.take(now));
        }
        budget.apply(Grant::leased(lease(1, 1), 3), now);
        assert!(matches!(budget.take(now), Take::Refused(_)));
    }

    #[test]
    fn a_new_limit_is_a_new_budget() {
        let limiter = TenantLimiter::default();
        let first = limiter.budget(10, 1).unwrap();
        assert!(Arc::ptr_eq(&first, &limiter.budget(10, 1).unwrap()));
        let second = limiter.budget(20, 1).unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(second.slice(), 2);
        assert!(limiter.budget(0, 1).is_none());
    }
}
