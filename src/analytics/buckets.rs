//! Time buckets. Every bucket is in UTC and aligned on the Unix epoch: hours, days, and the
//! 32-day blocks of `user_activity` (768 hours, one bit each).

use chrono::{DateTime, Duration, Timelike, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub const HOUR_SECS: i64 = 3_600;
pub const DAY_SECS: i64 = 86_400;
/// Hours covered by one row of `user_activity`; must match `bit(768)` in the template.
pub const BLOCK_HOURS: i64 = 768;
pub const BLOCK_BYTES: usize = (BLOCK_HOURS / 8) as usize;
// A block is a whole number of days, so a day never straddles two blocks.
const _: () = assert!(BLOCK_HOURS % 24 == 0);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    Hour,
    Day,
}

impl Interval {
    pub fn secs(self) -> i64 {
        match self {
            Interval::Hour => HOUR_SECS,
            Interval::Day => DAY_SECS,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Hour => "hour",
            Interval::Day => "day",
        }
    }

    /// The argument of `date_bin` for this interval.
    pub fn pg_interval(self) -> &'static str {
        match self {
            Interval::Hour => "1 hour",
            Interval::Day => "1 day",
        }
    }

    pub fn floor(self, t: DateTime<Utc>) -> DateTime<Utc> {
        floor_to(t, self.secs())
    }

    pub fn ceil(self, t: DateTime<Utc>) -> DateTime<Utc> {
        ceil_to(t, self.secs())
    }

    pub fn step(self) -> Duration {
        Duration::seconds(self.secs())
    }

    /// Number of buckets of this interval overlapping [from, to).
    pub fn buckets_between(self, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
        if to <= from {
            return 0;
        }
        (self.ceil(to).timestamp() - self.floor(from).timestamp()) / self.secs()
    }
}

/// PostgreSQL keeps microseconds; truncating on the way in keeps the bucket arithmetic here
/// identical to the comparisons the database makes.
pub fn to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = t.nanosecond();
    t.with_nanosecond(nanos - nanos % 1_000).unwrap_or(t)
}

fn from_secs(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn is_aligned(t: DateTime<Utc>, secs: i64) -> bool {
    t.timestamp().rem_euclid(secs) == 0 && t.nanosecond() == 0
}

pub fn floor_to(t: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
    from_secs(t.timestamp().div_euclid(secs) * secs)
}

pub fn ceil_to(t: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
    if is_aligned(t, secs) {
        t
    } else {
        from_secs((t.timestamp().div_euclid(secs) + 1) * secs)
    }
}

pub fn floor_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    floor_to(t, HOUR_SECS)
}

pub fn ceil_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    ceil_to(t, HOUR_SECS)
}

pub fn floor_day(t: DateTime<Utc>) -> DateTime<Utc> {
    floor_to(t, DAY_SECS)
}

/// Hours since the epoch (floor).
pub fn hour_index(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(HOUR_SECS)
}

pub fn block_of_hour(hour: i64) -> i32 {
    // Blocks of 768 hours fit an i32 for any timestamp chrono accepts.
    hour.div_euclid(BLOCK_HOURS) as i32
}

/// A half-open time range [lo, hi).
pub type Range = (DateTime<Utc>, DateTime<Utc>);

/// How a range [from, to) is read: rollup rows for whole days and whole hours, raw events for
/// the partial hours at its two ends. Every instant of the range is in exactly one part.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub raw: Vec<Range>,
    pub hourly: Vec<Range>,
    pub daily: Option<Range>,
}

impl Plan {
    pub fn new(from: DateTime<Utc>, to: DateTime<Utc>, use_days: bool) -> Plan {
        let mut plan = Plan::default();
        if to <= from {
            return plan;
        }
        let (h1, h2) = (ceil_hour(from), floor_hour(to));
        if h1 >= h2 {
            plan.raw.push((from, to));
            return plan;
        }
        if from < h1 {
            plan.raw.push((from, h1));
        }
        if h2 < to {
            plan.raw.push((h2, to));
        }
        let (d1, d2) = (ceil_to(h1, DAY_SECS), floor_day(h2));
        if use_days && d1 < d2 {
            plan.daily = Some((d1, d2));
            if h1 < d1 {
                plan.hourly.push((h1, d1));
            }
            if d2 < h2 {
                plan.hourly.push((d2, h2));
            }
        } else {
            plan.hourly.push((h1, h2));
        }
        plan
    }
}

/// One bit per hour of a block, most significant bit first (the layout of `bit(768)`).
#[derive(Clone, PartialEq, Eq)]
pub struct HourBits(pub [u8; BLOCK_BYTES]);

impl Default for HourBits {
    fn default() -> Self {
        HourBits([0; BLOCK_BYTES])
    }
}

impl std::fmt::Debug for HourBits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HourBits({})", hex::encode(self.0))
    }
}

impl HourBits {
    pub fn set(&mut self, offset: usize) {
        self.0[offset / 8] |= 0x80 >> (offset % 8);
    }

    pub fn get(&self, offset: usize) -> bool {
        self.0[offset / 8] & (0x80 >> (offset % 8)) != 0
    }

    pub fn any_in(&self, lo: usize, hi: usize) -> bool {
        (lo..hi.min(BLOCK_HOURS as usize)).any(|i| self.get(i))
    }

    /// Bits set in `self` and not in `old`.
    pub fn minus(&self, old: &HourBits) -> HourBits {
        let mut out = HourBits::default();
        for (o, (a, b)) in out.0.iter_mut().zip(self.0.iter().zip(old.0.iter())) {
            *o = a & !b;
        }
        out
    }

    pub fn or(&mut self, other: &HourBits) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a |= b;
        }
    }

    pub fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        (0..BLOCK_HOURS as usize).filter(|i| self.get(*i))
    }

    /// Bits [0, keep_from) cleared, the rest set: ANDed with a block it forgets the hours
    /// before `keep_from` (retention).
    pub fn keep_from(keep_from: usize) -> HourBits {
        let mut out = HourBits::default();
        for i in keep_from..BLOCK_HOURS as usize {
            out.set(i);
        }
        out
    }

    /// From `varbit_send`: a 4-byte bit count, then the bits.
    pub fn from_varbit_send(raw: &[u8]) -> Option<HourBits> {
        let bits = raw.get(..4)?;
        if i32::from_be_bytes([bits[0], bits[1], bits[2], bits[3]]) != BLOCK_HOURS as i32 {
            return None;
        }
        let bytes: [u8; BLOCK_BYTES] = raw.get(4..)?.try_into().ok()?;
        Some(HourBits(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn plan_splits_a_range_into_disjoint_parts() {
        let p = Plan::new(t("2024-01-01T10:30:00Z"), t("2024-01-04T05:15:00Z"), true);
        assert_eq!(
            p.raw,
            vec![
                (t("2024-01-01T10:30:00Z"), t("2024-01-01T11:00:00Z")),
                (t("2024-01-04T05:00:00Z"), t("2024-01-04T05:15:00Z"))
            ]
        );
        assert_eq!(
            p.hourly,
            vec![
                (t("2024-01-01T11:00:00Z"), t("2024-01-02T00:00:00Z")),
                (t("2024-01-04T00:00:00Z"), t("2024-01-04T05:00:00Z"))
            ]
        );
        assert_eq!(
            p.daily,
            Some((t("2024-01-02T00:00:00Z"), t("2024-01-04T00:00:00Z")))
        );
        let p = Plan::new(t("2024-01-01T10:30:00Z"), t("2024-01-01T10:45:00Z"), true);
        assert_eq!(p.raw.len(), 1);
        assert!(p.hourly.is_empty() && p.daily.is_none());
        let p = Plan::new(t("2024-01-01T00:00:00Z"), t("2024-01-02T00:00:00Z"), false);
        assert!(p.raw.is_empty());
        assert_eq!(p.hourly.len(), 1);
    }

    #[test]
    fn buckets_count_partial_ends() {
        assert_eq!(
            Interval::Hour.buckets_between(t("2024-01-01T10:30:00Z"), t("2024-01-01T12:00:00Z")),
            2
        );
        assert_eq!(
            Interval::Day.buckets_between(t("2024-01-01T10:30:00Z"), t("2024-01-02T00:00:01Z")),
            2
        );
    }

    #[test]
    fn bits_round_trip() {
        let mut b = HourBits::default();
        b.set(0);
        b.set(767);
        assert!(b.get(0) && b.get(767) && !b.get(1));
        assert_eq!(b.ones().collect::<Vec<_>>(), vec![0, 767]);
        let mut raw = 768i32.to_be_bytes().to_vec();
        raw.extend_from_slice(&b.0);
        assert_eq!(HourBits::from_varbit_send(&raw), Some(b));
        assert!(HourBits::keep_from(3).get(3) && !HourBits::keep_from(3).get(2));
    }
}
