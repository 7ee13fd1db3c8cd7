//! Which tenants' outbox batches the worker starts next, and with whom (the worker's loop,
//! [`super::Worker::run`], owns one and does the I/O).
//!
//! Two kinds of tenant share the worker's slots:
//! - *light* ones (their last batch had at most [`SHARED_BATCH_EVENTS`] events: most tenants,
//!   most of the time) run up to [`TENANTS_PER_TX`] to a transaction, and go first when a slot
//!   frees: their events are the ones a receiver expects within a moment. One light group runs
//!   at a time unless a full one waits: the tenants woken while it runs share the next
//!   transaction, instead of each taking a free slot with a transaction of its own (at a steady
//!   thousand writes a second over a hundred tenants, most groups would otherwise be of one);
//! - *heavy* ones run alone, and one whose last batch was full (a backlog) runs up to
//!   [`BATCHES_AT_ONCE`] batches at once (their rows are disjoint: each batch locks its own
//!   with `SKIP LOCKED`), so a tenant writing faster than one batch at a time can settle is
//!   not held to that pace. Heavy batches never take the last slot (when there are two or
//!   more), so a light tenant never waits behind a backlog.
//!
//! A *busy* tenant (its last batch had [`GATHER_MIN_EVENTS`] events or more, but not a full
//! batch) starts its next batch no sooner than [`GATHER`] after the last one started: its
//! events gather meanwhile, so a tenant writing a steady stream settles it in batches of tens
//! rather than of a few (each batch costs a transaction here, and a hand-over and a record
//! in the webhook dispatcher). A tenant with an event or two (every tenant within a
//! delivery limit) never waits for this, and a backlog (a full batch) goes again at once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

/// Tenants, each with less than a full batch due, whose batches share one transaction.
pub const TENANTS_PER_TX: usize = 4;
/// A tenant whose last batch had more events than this runs alone: a shared transaction is
/// bounded by events as well as by tenants, so one tenant's large batch does not hold the
/// commit (and the deliveries) of the small ones.
pub const SHARED_BATCH_EVENTS: usize = 16;
/// Batches of one tenant with a backlog under way at once.
pub const BATCHES_AT_ONCE: usize = 3;
/// A busy tenant's batches start at least this far apart.
pub const GATHER: Duration = Duration::from_millis(10);
/// Events in a batch that make its tenant busy.
pub const GATHER_MIN_EVENTS: usize = 4;

/// What one tenant's batch came to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Rows taken (processed, retried or dead-lettered).
    pub rows: usize,
    /// As many rows as a batch takes: the tenant may have more due.
    pub full: bool,
}

#[derive(Debug)]
pub struct Schedule {
    slots: usize,
    light: VecDeque<Uuid>,
    heavy_line: VecDeque<Uuid>,
    /// Batches under way, per tenant.
    running: HashMap<Uuid, usize>,
    /// Woken while a batch of theirs ran: they go again after it.
    again: HashSet<Uuid>,
    /// Last batch larger than SHARED_BATCH_EVENTS: runs alone.
    heavy: HashSet<Uuid>,
    /// Last batch full: may run several batches at once.
    backlog: HashSet<Uuid>,
    /// Heavy batches under way, per tenant (a tenant's batches under way are either all heavy
    /// or one light one).
    heavy_running: HashMap<Uuid, usize>,
    groups_under_way: usize,
    /// When each tenant's last batch started.
    started: HashMap<Uuid, Instant>,
    /// Busy tenants: no batch of theirs starts before this.
    gather_until: HashMap<Uuid, Instant>,
    /// Tenants wanting a batch, waiting for their gather time.
    delayed: HashMap<Uuid, Instant>,
}

impl Schedule {
    pub fn new(slots: usize) -> Schedule {
        Schedule {
            slots: slots.max(1),
            light: VecDeque::new(),
            heavy_line: VecDeque::new(),
            running: HashMap::new(),
            again: HashSet::new(),
            heavy: HashSet::new(),
            backlog: HashSet::new(),
            heavy_running: HashMap::new(),
            groups_under_way: 0,
            started: HashMap::new(),
            gather_until: HashMap::new(),
            delayed: HashMap::new(),
        }
    }

    fn queued(&self, tenant: Uuid) -> bool {
        self.light.contains(&tenant) || self.heavy_line.contains(&tenant)
    }

    /// `tenant` has events due (a wake, the table, or its last batch was full).
    pub fn want(&mut self, tenant: Uuid, now: Instant) {
        if self.queued(tenant) || self.delayed.contains_key(&tenant) {
            return;
        }
        let running = self.running.get(&tenant).copied().unwrap_or(0);
        if running == 0 {
            match self.gather_until.get(&tenant) {
                Some(&until) if now < until => {
                    self.delayed.insert(tenant, until);
                }
                Some(_) => {
                    self.gather_until.remove(&tenant);
                    self.line_up(tenant);
                }
                None => self.line_up(tenant),
            }
        } else if self.backlog.contains(&tenant) && running < BATCHES_AT_ONCE {
            self.heavy_line.push_back(tenant);
        } else {
            self.again.insert(tenant);
        }
    }

    fn line_up(&mut self, tenant: Uuid) {
        if self.heavy.contains(&tenant) {
            self.heavy_line.push_back(tenant);
        } else {
            self.light.push_back(tenant);
        }
    }

    /// When the first delayed tenant's gather time ends (the worker looks again then).
    pub fn next_release(&self) -> Option<Instant> {
        self.delayed.values().min().copied()
    }

    /// Light groups under way: every group that is not a heavy batch.
    fn light_under_way(&self) -> usize {
        self.groups_under_way
            .saturating_sub(self.heavy_running.values().sum::<usize>())
    }

    /// Heavy batches under way at most: all but one slot, so a light tenant finds one.
    fn heavy_slots(&self) -> usize {
        (self.slots - 1).max(1)
    }

    /// The next group to start, if a slot is free and someone waits: light tenants first.
    pub fn next(&mut self, now: Instant) -> Option<Vec<Uuid>> {
        if !self.delayed.is_empty() {
            let mut released: Vec<(Instant, Uuid)> = self
                .delayed
                .iter()
                .filter(|(_, &until)| until <= now)
                .map(|(&tenant, &until)| (until, tenant))
                .collect();
            released.sort_unstable();
            for (_, tenant) in released {
                self.delayed.remove(&tenant);
                self.line_up(tenant);
            }
        }
        if self.gather_until.len() > 4096 {
            // Tenants busy once and not woken since.
            self.gather_until.retain(|_, until| *until > now);
        }
        if self.groups_under_way >= self.slots {
            return None;
        }
        // While a light group runs, the next one waits for it to end or to be full: the
        // tenants woken meanwhile then share one transaction instead of each starting their
        // own in the free slot.
        let light_may_start = !self.light.is_empty()
            && (self.light_under_way() == 0 || self.light.len() >= TENANTS_PER_TX);
        let group = if light_may_start {
            let mut group = Vec::with_capacity(TENANTS_PER_TX);
            while group.len() < TENANTS_PER_TX {
                match self.light.pop_front() {
                    Some(next) => group.push(next),
                    None => break,
                }
            }
            group
        } else if self.heavy_running.values().sum::<usize>() < self.heavy_slots() {
            let tenant = self.heavy_line.pop_front()?;
            *self.heavy_running.entry(tenant).or_default() += 1;
            vec![tenant]
        } else {
            return None;
        };
        self.groups_under_way += 1;
        for tenant in &group {
            *self.running.entry(*tenant).or_default() += 1;
            self.started.insert(*tenant, now);
        }
        if let [tenant] = group[..] {
            // A backlog: its next batch may start beside this one.
            if self.backlog.contains(&tenant) {
                self.want(tenant, now);
            }
        }
        Some(group)
    }

    /// A group started by [`Schedule::next`] ended with `ran` (tenants missing from it took
    /// nothing: a failed or panicked transaction).
    pub fn ended(&mut self, group: &[Uuid], ran: &HashMap<Uuid, Batch>, now: Instant) {
        self.groups_under_way = self.groups_under_way.saturating_sub(1);
        if let [tenant] = group {
            if let Some(n) = self.heavy_running.get_mut(tenant) {
                *n -= 1;
                if *n == 0 {
                    self.heavy_running.remove(tenant);
                }
            }
        }
        for tenant in group {
            let left = match self.running.get_mut(tenant) {
                Some(n) => {
                    *n = n.saturating_sub(1);
                    *n
                }
                None => 0,
            };
            if left == 0 {
                self.running.remove(tenant);
            }
            let batch = ran.get(tenant).copied().unwrap_or_default();
            if batch.full || batch.rows > SHARED_BATCH_EVENTS {
                self.heavy.insert(*tenant);
            } else if left == 0 {
                self.heavy.remove(tenant);
                // Queued as a backlog's next batch: it now shares a group like the others.
                if let Some(at) = self.heavy_line.iter().position(|t| t == tenant) {
                    self.heavy_line.remove(at);
                    self.light.push_back(*tenant);
                }
            }
            if batch.full {
                self.backlog.insert(*tenant);
            } else {
                self.backlog.remove(tenant);
            }
            match self.started.get(tenant) {
                Some(&started) if !batch.full && batch.rows >= GATHER_MIN_EVENTS => {
                    self.gather_until.insert(*tenant, started + GATHER);
                }
                _ => {
                    self.gather_until.remove(tenant);
                }
            }
            if left == 0 {
                self.started.remove(tenant);
            }
            let again = left == 0 && self.again.remove(tenant);
            if again || batch.full {
                self.want(*tenant, now);
            }
        }
    }

    /// Groups under way.
    #[cfg(test)]
    pub fn under_way(&self) -> usize {
        self.groups_under_way
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<Uuid> {
        (0..n).map(|_| Uuid::new_v4()).collect()
    }

    fn ran(tenant: Uuid, rows: usize, full: bool) -> HashMap<Uuid, Batch> {
        HashMap::from([(tenant, Batch { rows, full })])
    }

    #[test]
    fn light_tenants_share_a_group() {
        let now = Instant::now();
        let mut s = Schedule::new(4);
        let t = ids(TENANTS_PER_TX + 1);
        for &tenant in &t {
            s.want(tenant, now);
        }
        let first = s.next(now).unwrap();
        assert_eq!(first, t[..TENANTS_PER_TX].to_vec());
        // Less than a full group waits for the first to end (more may join it meanwhile).
        assert_eq!(s.next(now), None);
        let late = Uuid::new_v4();
        s.want(late, now);
        let ran: HashMap<Uuid, Batch> = first.iter().map(|t| (*t, Batch::default())).collect();
        s.ended(&first, &ran, now);
        assert_eq!(s.next(now).unwrap(), vec![t[TENANTS_PER_TX], late]);
        assert_eq!(s.next(now), None);
    }

    #[test]
    fn a_full_group_of_light_tenants_starts_beside_a_running_one() {
        let now = Instant::now();
        let mut s = Schedule::new(2);
        let t = ids(2 * TENANTS_PER_TX);
        s.want(t[0], now);
        assert_eq!(s.next(now).unwrap(), vec![t[0]]);
        for &tenant in &t[1..] {
            s.want(tenant, now);
        }
        assert_eq!(s.next(now).unwrap(), t[1..=TENANTS_PER_TX].to_vec());
        assert_eq!(s.next(now), None, "both slots taken");
    }

    #[test]
    fn a_backlog_runs_several_batches_at_once_but_leaves_a_slot_to_light_tenants() {
        let now = Instant::now();
        let mut s = Schedule::new(4);
        let big = Uuid::new_v4();
        s.want(big, now);
        let first = s.next(now).unwrap();
        assert_eq!(first, vec![big]);
        s.ended(&first, &ran(big, 200, true), now);
        // Full: it runs alone, up to BATCHES_AT_ONCE at once, within all but one slot.
        let mut under_way = Vec::new();
        while let Some(group) = s.next(now) {
            assert_eq!(group, vec![big]);
            under_way.push(group);
        }
        assert_eq!(under_way.len(), BATCHES_AT_ONCE.min(3));
        // The last slot is a light tenant's, and a light tenant goes first.
        let small = Uuid::new_v4();
        s.want(small, now);
        assert_eq!(s.next(now).unwrap(), vec![small]);
        assert_eq!(s.next(now), None);
        // One of the backlog's batches ends full: another starts in its slot, at once.
        s.ended(&under_way.pop().unwrap(), &ran(big, 200, true), now);
        assert_eq!(s.next(now).unwrap(), vec![big]);
    }

    #[test]
    fn a_woken_tenant_goes_again_once_its_batches_end() {
        let now = Instant::now();
        let mut s = Schedule::new(2);
        let t = Uuid::new_v4();
        s.want(t, now);
        let group = s.next(now).unwrap();
        s.want(t, now);
        assert_eq!(s.next(now), None, "not twice at once without a backlog");
        s.ended(&group, &ran(t, 1, false), now);
        assert_eq!(s.next(now).unwrap(), vec![t]);
    }

    #[test]
    fn a_backlog_that_empties_runs_light_again() {
        let now = Instant::now();
        let mut s = Schedule::new(2);
        let t = Uuid::new_v4();
        s.want(t, now);
        let group = s.next(now).unwrap();
        s.ended(&group, &ran(t, 200, true), now);
        let group = s.next(now).unwrap();
        assert_eq!(s.under_way(), 1, "one slot stays light's");
        s.ended(&group, &ran(t, 3, false), now);
        let other = Uuid::new_v4();
        s.want(t, now);
        s.want(other, now);
        assert_eq!(s.next(now).unwrap(), vec![t, other]);
    }

    #[test]
    fn one_slot_still_runs_a_backlog() {
        let now = Instant::now();
        let mut s = Schedule::new(1);
        let t = Uuid::new_v4();
        s.want(t, now);
        let group = s.next(now).unwrap();
        s.ended(&group, &ran(t, 200, true), now);
        assert_eq!(s.next(now).unwrap(), vec![t]);
        assert_eq!(s.next(now), None);
    }

    #[test]
    fn a_busy_tenant_gathers_its_events_and_a_quiet_one_does_not() {
        let start = Instant::now();
        let mut s = Schedule::new(4);
        let (busy, quiet) = (Uuid::new_v4(), Uuid::new_v4());
        s.want(busy, start);
        s.want(quiet, start);
        let group = s.next(start).unwrap();
        assert_eq!(group, vec![busy, quiet]);
        let later = start + Duration::from_millis(2);
        let ran = HashMap::from([
            (
                busy,
                Batch {
                    rows: GATHER_MIN_EVENTS,
                    full: false,
                },
            ),
            (
                quiet,
                Batch {
                    rows: 1,
                    full: false,
                },
            ),
        ]);
        s.ended(&group, &ran, later);
        s.want(busy, later);
        s.want(quiet, later);
        // The quiet tenant goes at once; the busy one waits until GATHER after its batch began.
        let group = s.next(later).unwrap();
        assert_eq!(group, vec![quiet]);
        s.ended(&group, &HashMap::from([(quiet, Batch::default())]), later);
        assert_eq!(s.next(later), None);
        assert_eq!(s.next_release(), Some(start + GATHER));
        assert_eq!(s.next(start + GATHER).unwrap(), vec![busy]);
        assert_eq!(s.next_release(), None);
    }

    #[test]
    fn a_busy_tenant_woken_after_its_gather_time_goes_at_once() {
        let start = Instant::now();
        let mut s = Schedule::new(4);
        let t = Uuid::new_v4();
        s.want(t, start);
        let group = s.next(start).unwrap();
        s.ended(&group, &ran(t, 10, false), start);
        let after = start + GATHER;
        s.want(t, after);
        assert_eq!(s.next(after).unwrap(), vec![t]);
    }
}
