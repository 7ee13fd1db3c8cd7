//! A tenant's webhook queue as its actor holds it (DESIGN.md "The tenant actor's state"): the
//! in-memory view of its queue (whether it is being drained, and whether more work came in
//! meanwhile), its attempts in flight, and its delivery rate limiter's view of the shared
//! sliding window (when the budget is spent, until when), and its share of the instance's
//! sending slots ([`TENANT_SEND_SHARE`]). It hangs off the actor's registry
//! entry beside the request rate limiter (`actors::supervisor::ActorEntry`), lives and dies
//! with the actor, and is read without messaging it: the dispatcher's sends must not run
//! inside the actor's mailbox or a tenant transaction.
//!
//! Nothing here must survive: the messages, leases, attempts and the rate window are rows in
//! PostgreSQL, and a fresh actor starts from an empty view (the dispatcher's look at the table
//! finds the tenant's due messages again).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, Utc};

/// Attempts of one tenant sent, or waiting for one of the instance's sending slots, at once
/// (a quarter of the dispatcher's 256 slots): a tenant with a backlog cannot fill the line for
/// the slots, so another tenant's message waits behind at most this many of its sends.
pub const TENANT_SEND_SHARE: usize = 64;

pub struct TenantQueue {
    state: Mutex<State>,
    in_flight: AtomicUsize,
    share: tokio::sync::Semaphore,
    /// Work came in during a drain: the drain claims it without waiting for its batches
    /// under way to end.
    more: tokio::sync::Notify,
}

impl Default for TenantQueue {
    fn default() -> Self {
        TenantQueue {
            state: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            share: tokio::sync::Semaphore::new(TENANT_SEND_SHARE),
            more: tokio::sync::Notify::new(),
        }
    }
}

#[derive(Default)]
struct State {
    /// A task of this instance is draining the tenant.
    draining: bool,
    /// Work came in while it drained: it looks once more before it stops.
    again: bool,
    /// The shared window was spent at the last claim: no claim before this time while the
    /// limit is the one it was spent under (a plan change lifts it at once).
    spent: Option<(DateTime<Utc>, i64)>,
}

impl TenantQueue {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// True when the caller is to drain the tenant; false when a drain is already under way
    /// (which is told to look again before it ends, so this wake is not lost).
    pub fn start_drain(&self) -> bool {
        let mut state = self.state();
        if state.draining {
            state.again = true;
            // Kept for the drain if it is not waiting now.
            self.more.notify_one();
            return false;
        }
        state.draining = true;
        state.again = false;
        true
    }

    /// At the end of a drain: true when work came in meanwhile and the drain goes on.
    pub fn end_drain(&self) -> bool {
        let mut state = self.state();
        if state.again {
            state.again = false;
            return true;
        }
        state.draining = false;
        false
    }

    /// Resolves when work came in during the drain ([`TenantQueue::start_drain`] was refused).
    pub async fn more_work(&self) {
        self.more.notified().await;
    }

    pub fn draining(&self) -> bool {
        self.state().draining
    }

    /// Whether the tenant's delivery budget is known to be spent at `now` under `limit`, so
    /// a claim would take nothing: the claim (a transaction) is not even tried.
    pub fn budget_spent(&self, now: DateTime<Utc>, limit: Option<i64>) -> bool {
        match (self.state().spent, limit) {
            (Some((until, spent_under)), Some(limit)) => now < until && limit == spent_under,
            _ => false,
        }
    }

    /// The claim found the window spent: nothing frees up before `until`.
    pub fn spent_until(&self, until: DateTime<Utc>, limit: i64) {
        self.state().spent = Some((until, limit));
    }

    /// The claim found budget left.
    pub fn budget_left(&self) {
        self.state().spent = None;
    }

    /// One of the tenant's [`TENANT_SEND_SHARE`] places, held while its attempt waits for a
    /// sending slot and is sent.
    pub async fn send_share(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.share.acquire().await.ok()
    }

    pub fn attempt_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn attempt_ended(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Attempts of this tenant being sent by this instance.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn one_drain_at_a_time_and_no_wake_lost() {
        let q = TenantQueue::default();
        assert!(q.start_drain());
        assert!(!q.start_drain(), "a second drain is not started");
        assert!(q.end_drain(), "the wake that came in keeps the drain going");
        assert!(!q.end_drain());
        assert!(!q.draining());
        assert!(q.start_drain());
    }

    #[test]
    fn a_wake_during_a_drain_is_kept_for_it() {
        use futures_util::FutureExt;
        let q = TenantQueue::default();
        assert!(q.start_drain());
        assert!(q.more_work().now_or_never().is_none(), "no work came in");
        assert!(!q.start_drain());
        assert!(
            q.more_work().now_or_never().is_some(),
            "the drain learns of it even when it was not waiting then"
        );
    }

    #[test]
    fn a_spent_budget_waits_until_it_frees_up_or_the_limit_changes() {
        let q = TenantQueue::default();
        let now = Utc::now();
        assert!(!q.budget_spent(now, Some(5)));
        q.spent_until(now + TimeDelta::seconds(30), 5);
        assert!(q.budget_spent(now, Some(5)));
        assert!(
            !q.budget_spent(now, Some(10)),
            "a new limit is tried at once"
        );
        assert!(!q.budget_spent(now, None));
        assert!(!q.budget_spent(now + TimeDelta::seconds(30), Some(5)));
        q.budget_left();
        assert!(!q.budget_spent(now, Some(5)));
    }
}
