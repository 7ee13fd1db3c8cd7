//! Time buckets. Every bucket is in UTC and aligned on the Unix epoch: hours, days, and the
//! 32-day blocks of `user_activity` (768 hours, one bit each).

use chrono::{DateTime, Duration, Timelike, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub const HOUR_SECS: i64 = 3_600;
pub const DAY_SECS: i64 = 86_400;
/// Hours covered by one row of `user_activity`; must match `bit(768)` in the template.
pub const BLOCK_HOURS: i64 = 768;
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

#[allow(clippy::cast_possible_truncation)] // see below
pub fn block_of_hour(hour: i64) -> i32 {
    // Blocks of 768 hours fit an i32 for any timestamp chrono accepts.
    hour.div_euclid(BLOCK_HOURS) as i32
}

/// Days since the epoch (floor).
pub fn day_index(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(DAY_SECS)
}

/// The block holding day `day` (days since the epoch) and the day's bit in that block's
/// `days` masks (`user_activity`, `type_activity`).
pub fn block_day_bit(day: i64) -> (i32, u32) {
    let block = day.div_euclid(BLOCK_HOURS / 24);
    // Blocks of 32 days fit an i32 for any date chrono accepts.
    #[allow(clippy::cast_possible_truncation)]
    let narrow = block as i32;
    (narrow, 1u32 << (day - block * (BLOCK_HOURS / 24)))
}

/// The start of day `day` (days since the epoch).
pub fn day_start(day: i64) -> DateTime<Utc> {
    from_secs(day * DAY_SECS)
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

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // 32, asserted below
pub const BLOCK_DAYS: usize = (BLOCK_HOURS / 24) as usize;
// The `days` column is a 32-bit mask, one bit per day of the block.
const _: () = assert!(BLOCK_DAYS == 32);

/// The column of `user_activity` holding day `d` of a block; a constant name, never input.
pub fn day_column(d: usize) -> String {
    format!("d{d:02}")
}

/// One user's hours in one block, as `user_activity` stores them: `self.0[d]` has bit `h` set
/// when the user was active in hour `h` of day `d` of the block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockActivity(pub [u32; BLOCK_DAYS]);

impl BlockActivity {
    /// `offset`: hours since the start of the block.
    pub fn set(&mut self, offset: usize) {
        self.0[offset / 24] |= 1 << (offset % 24);
    }

    pub fn get(&self, offset: usize) -> bool {
        self.0[offset / 24] & (1 << (offset % 24)) != 0
    }

    /// Bit `d` set when day `d` has any active hour (the `days` column).
    pub fn days(&self) -> u32 {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, h)| **h != 0)
            .fold(0, |acc, (d, _)| acc | 1 << d)
    }

    /// Hours set in `self` and not in `old`.
    pub fn minus(&self, old: &BlockActivity) -> BlockActivity {
        let mut out = *self;
        for (o, b) in out.0.iter_mut().zip(old.0.iter()) {
            *o &= !b;
        }
        out
    }

    /// Offsets (hours since the start of the block) that are set.
    pub fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        (0..BLOCK_DAYS * 24).filter(|i| self.get(*i))
    }

    /// The columns as PostgreSQL integers (the same 32 bits).
    pub fn to_columns(&self) -> [i32; BLOCK_DAYS] {
        self.0.map(u32::cast_signed)
    }

    pub fn from_columns(columns: [i32; BLOCK_DAYS]) -> BlockActivity {
        BlockActivity(columns.map(i32::cast_unsigned))
    }
}

/// What a window of whole hours [lo, hi) covers in one block: whole days (a `days` mask) and
/// the hours of the days it covers in part.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BlockWindow {
    pub block: i32,
    pub days: u32,
    pub partial: Vec<(usize, u32)>,
}

/// Splits hours [lo, hi) (indexes since the epoch) by block.
pub fn block_windows(lo: i64, hi: i64) -> Vec<BlockWindow> {
    let mut out: Vec<BlockWindow> = Vec::new();
    let mut h = lo;
    while h < hi {
        let block = block_of_hour(h);
        if out.last().map(|w| w.block) != Some(block) {
            out.push(BlockWindow {
                block,
                ..Default::default()
            });
        }
        let day_start = h.div_euclid(24) * 24;
        // The day of `h` in its block: 0..32.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let day = ((day_start - i64::from(block) * BLOCK_HOURS) / 24) as usize;
        let end = hi.min(day_start + 24);
        #[allow(clippy::expect_used)] // `out` ends with this block's window, pushed above.
        let w = out.last_mut().expect("pushed above");
        if h == day_start && end == day_start + 24 {
            w.days |= 1 << day;
        } else {
            let mask = (h..end).fold(0u32, |m, x| m | 1 << (x - day_start));
            w.partial.push((day, mask));
        }
        h = end;
    }
    out
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
    fn activity_bits_and_windows() {
        let mut a = BlockActivity::default();
        a.set(0);
        a.set(767);
        a.set(30);
        assert!(a.get(0) && a.get(767) && !a.get(1));
        assert_eq!(a.ones().collect::<Vec<_>>(), vec![0, 30, 767]);
        assert_eq!(a.days(), 1 | 1 << 1 | 1 << 31);
        assert_eq!(BlockActivity::from_columns(a.to_columns()), a);
        assert_eq!(a.to_columns()[31], (1u32 << 23).cast_signed());

        // Block 1 starts at hour 768: from hour 770 of block 1 to hour 10 of block 2.
        let w = block_windows(770, 2 * 768 + 10);
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].block, 1);
        assert_eq!(w[0].partial, vec![(0, 0xff_fffc)]);
        assert_eq!(w[0].days, !1u32);
        assert_eq!(w[1].block, 2);
        assert_eq!(w[1].days, 0);
        assert_eq!(w[1].partial, vec![(0, 0x3ff)]);
        assert_eq!(block_windows(5, 5), vec![]);
    }

    #[test]
    fn days_map_to_the_blocks_of_their_hours() {
        for t in [
            t("1970-01-01T00:00:00Z"),
            t("1969-12-31T23:59:59Z"),
            t("2024-03-05T23:59:59Z"),
            t("2024-03-06T00:00:00Z"),
        ] {
            let day = day_index(t);
            let (block, bit) = block_day_bit(day);
            assert_eq!(block, block_of_hour(hour_index(t)), "{t}");
            let first_day_of_block = i64::from(block) * (BLOCK_HOURS / 24);
            assert_eq!(bit, 1 << (day - first_day_of_block), "{t}");
            assert_eq!(day_start(day), floor_day(t));
        }
        assert_eq!(block_day_bit(31), (0, 1 << 31));
        assert_eq!(block_day_bit(32), (1, 1));
        assert_eq!(block_day_bit(-1), (-1, 1 << 31));
    }
}
