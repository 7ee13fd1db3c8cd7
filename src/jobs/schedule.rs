//! Which tenants' outbox batches the worker starts next, and with whom (the worker's loop,
//! [`super::Worker::run`], owns one and does the I/O).
//!
//! Two kinds of tenant share the worker's slots:
//! - *light* ones (their last batch had at most [`SHARED_BATCH_EVENTS`] events: most tenants,
//!   most of the time) run up to [`TENANTS_PER_TX`] to a transaction, and go first when a slot
//!   frees: their events are the ones a receiver expects within a moment;
//! - *heavy* ones run alone, and one whose last batch was full (a backlog) runs up to
//!   [`BATCHES_AT_ONCE`] batches at once (their rows are disjoint: each batch locks its own
//!   with `SKIP LOCKED`), so a tenant writing faster than one batch at a time can settle is
//!   not held to that pace. Heavy batches never take the last slot (when there are two or
//!   more), so a light tenant never waits behind a backlog.

use std::collections::{HashMap, HashSet, VecDeque};

use uuid::Uuid;

/// Tenants, each with less than a full batch due, whose batches share one transaction.
pub const TENANTS_PER_TX: usize = 16;
/// A tenant whose last batch had more events than this runs alone: a shared transaction is
/// bounded by events as well as by tenants, so one tenant's large batch does not hold the
/// commit (and the deliveries) of the small ones.
pub const SHARED_BATCH_EVENTS: usize = 16;
/// Batches of one tenant with a backlog under way at once.
pub const BATCHES_AT_ONCE: usize = 3;

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
    heavy_under_way: usize,
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
            heavy_under_way: 0,
        }
    }

    fn queued(&self, tenant: Uuid) -> bool {
        self.light.contains(&tenant) || self.heavy_line.contains(&tenant)
    }

    /// `tenant` has events due (a wake, the table, or its last batch was full).
    pub fn want(&mut self, tenant: Uuid) {
        if self.queued(tenant) {
            return;
        }
        let running = self.running.get(&tenant).copied().unwrap_or(0);
        if running == 0 {
            if self.heavy.contains(&tenant) {
                self.heavy_line.push_back(tenant);
            } else {
                self.light.push_back(tenant);
            }
        } else if self.backlog.contains(&tenant) && running < BATCHES_AT_ONCE {
            self.heavy_line.push_back(tenant);
        } else {
            self.again.insert(tenant);
        }
    }

    /// Heavy batches under way at most: all but one slot, so a light tenant finds one.
    fn heavy_slots(&self) -> usize {
        (self.slots - 1).max(1)
    }

    /// The next group to start, if a slot is free and someone waits: light tenants first.
    pub fn next(&mut self) -> Option<Vec<Uuid>> {
        if self.groups_under_way >= self.slots {
            return None;
        }
        let group = if let Some(first) = self.light.pop_front() {
            let mut group = vec![first];
            while group.len() < TENANTS_PER_TX {
                match self.light.pop_front() {
                    Some(next) => group.push(next),
                    None => break,
                }
            }
            group
        } else if self.heavy_under_way < self.heavy_slots() {
            let tenant = self.heavy_line.pop_front()?;
            self.heavy_under_way += 1;
            *self.heavy_running.entry(tenant).or_default() += 1;
            vec![tenant]
        } else {
            return None;
        };
        self.groups_under_way += 1;
        for tenant in &group {
            *self.running.entry(*tenant).or_default() += 1;
        }
        if let [tenant] = group[..] {
            // A backlog: its next batch may start beside this one.
            if self.backlog.contains(&tenant) {
                self.want(tenant);
            }
        }
        Some(group)
    }

    /// A group started by [`Schedule::next`] ended with `ran` (tenants missing from it took
    /// nothing: a failed or panicked transaction).
    pub fn ended(&mut self, group: &[Uuid], ran: &HashMap<Uuid, Batch>) {
        self.groups_under_way = self.groups_under_way.saturating_sub(1);
        if let [tenant] = group {
            if let Some(n) = self.heavy_running.get_mut(tenant) {
                *n -= 1;
                if *n == 0 {
                    self.heavy_running.remove(tenant);
                }
                self.heavy_under_way = self.heavy_under_way.saturating_sub(1);
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
            let again = left == 0 && self.again.remove(tenant);
            if again || batch.full {
                self.want(*tenant);
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
        let mut s = Schedule::new(4);
        let t = ids(20);
        for &tenant in &t {
            s.want(tenant);
        }
        assert_eq!(s.next().unwrap(), t[..TENANTS_PER_TX].to_vec());
        assert_eq!(s.next().unwrap(), t[TENANTS_PER_TX..].to_vec());
        assert_eq!(s.next(), None);
    }

    #[test]
    fn a_backlog_runs_several_batches_at_once_but_leaves_a_slot_to_light_tenants() {
        let mut s = Schedule::new(4);
        let big = Uuid::new_v4();
        s.want(big);
        let first = s.next().unwrap();
        assert_eq!(first, vec![big]);
        s.ended(&first, &ran(big, 200, true));
        // Full: it runs alone, up to BATCHES_AT_ONCE at once, within all but one slot.
        let mut under_way = Vec::new();
        while let Some(group) = s.next() {
            assert_eq!(group, vec![big]);
            under_way.push(group);
        }
        assert_eq!(under_way.len(), BATCHES_AT_ONCE.min(3));
        // The last slot is a light tenant's, and a light tenant goes first.
        let small = Uuid::new_v4();
        s.want(small);
        assert_eq!(s.next().unwrap(), vec![small]);
        assert_eq!(s.next(), None);
        // One of the backlog's batches ends full: another starts in its slot.
        s.ended(&under_way.pop().unwrap(), &ran(big, 200, true));
        assert_eq!(s.next().unwrap(), vec![big]);
    }

    #[test]
    fn a_woken_tenant_goes_again_once_its_batches_end() {
        let mut s = Schedule::new(2);
        let t = Uuid::new_v4();
        s.want(t);
        let group = s.next().unwrap();
        s.want(t);
        assert_eq!(s.next(), None, "not twice at once without a backlog");
        s.ended(&group, &ran(t, 1, false));
        assert_eq!(s.next().unwrap(), vec![t]);
    }

    #[test]
    fn a_backlog_that_empties_runs_light_again() {
        let mut s = Schedule::new(2);
        let t = Uuid::new_v4();
        s.want(t);
        let group = s.next().unwrap();
        s.ended(&group, &ran(t, 200, true));
        let group = s.next().unwrap();
        assert_eq!(s.under_way(), 1, "one slot stays light's");
        s.ended(&group, &ran(t, 3, false));
        let other = Uuid::new_v4();
        s.want(t);
        s.want(other);
        assert_eq!(s.next().unwrap(), vec![t, other]);
    }

    #[test]
    fn one_slot_still_runs_a_backlog() {
        let mut s = Schedule::new(1);
        let t = Uuid::new_v4();
        s.want(t);
        let group = s.next().unwrap();
        s.ended(&group, &ran(t, 200, true));
        assert_eq!(s.next().unwrap(), vec![t]);
        assert_eq!(s.next(), None);
    }
}
