//! Billing periods: monthly, half-open UTC intervals `[start, end)` anchored on the
//! subscription's start (or the tenant's creation when it has no subscription).
//!
//! The n-th period starts n months after the anchor, on the anchor's day of the month clamped to
//! the month's length, at the anchor's time of day: an anchor of Jan 31 gives Feb 28 (29 in a
//! leap year), then Mar 31, never Mar 28. Each boundary is computed from the anchor, not from
//! the previous boundary, so a clamped month does not shift the periods after it.

use chrono::{DateTime, Datelike, Months, NaiveDate, TimeZone, Utc};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Period {
    /// Inclusive.
    pub start: DateTime<Utc>,
    /// Exclusive.
    pub end: DateTime<Utc>,
}

impl Period {
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.start <= at && at < self.end
    }

    /// Time left until the period ends (zero once it has).
    pub fn remaining(&self, now: DateTime<Utc>) -> std::time::Duration {
        (self.end - now).to_std().unwrap_or_default()
    }
}

/// The anchor moved `months` months later, its day clamped to the target month's length.
/// `None` only past chrono's last representable date.
fn boundary(anchor: DateTime<Utc>, months: i64) -> Option<DateTime<Utc>> {
    let date = anchor.date_naive();
    let first = NaiveDate::from_ymd_opt(date.year(), date.month(), 1)?;
    let month_start = if months >= 0 {
        first.checked_add_months(Months::new(u32::try_from(months).ok()?))?
    } else {
        first.checked_sub_months(Months::new(u32::try_from(-months).ok()?))?
    };
    let last_day = month_start
        .checked_add_months(Months::new(1))?
        .pred_opt()?
        .day();
    let day = date.day().min(last_day);
    let naive = month_start.with_day(day)?.and_time(anchor.time());
    Some(Utc.from_utc_datetime(&naive))
}

/// Whole months from the anchor's month to `at`'s month (a first guess, corrected by the caller).
fn months_between(anchor: DateTime<Utc>, at: DateTime<Utc>) -> i64 {
    (i64::from(at.year()) - i64::from(anchor.year())) * 12 + i64::from(at.month())
        - i64::from(anchor.month())
}

/// The period that contains `at`. Instants before the anchor fall in the periods before it,
/// counted back the same way.
pub fn period_containing(anchor: DateTime<Utc>, at: DateTime<Utc>) -> Period {
    let mut n = months_between(anchor, at);
    // The guess is off by at most one in either direction (the day and time of day within the
    // month decide); a few steps settle it.
    for _ in 0..4 {
        let (Some(start), Some(end)) = (boundary(anchor, n), boundary(anchor, n + 1)) else {
            break;
        };
        if at < start {
            n -= 1;
        } else if at >= end {
            n += 1;
        } else {
            return Period { start, end };
        }
    }
    // Only at the edges of chrono's calendar: a period of the anchor itself, never a panic.
    Period {
        start: anchor,
        end: anchor + chrono::Duration::days(30),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn p(anchor: &str, at: &str) -> (String, String) {
        let period = period_containing(t(anchor), t(at));
        assert!(period.contains(t(at)));
        (period.start.to_rfc3339(), period.end.to_rfc3339())
    }

    fn pair(a: &str, b: &str) -> (String, String) {
        (t(a).to_rfc3339(), t(b).to_rfc3339())
    }

    #[test]
    fn mid_month_anchor() {
        assert_eq!(
            p("2026-01-15T10:00:00Z", "2026-03-20T00:00:00Z"),
            pair("2026-03-15T10:00:00Z", "2026-04-15T10:00:00Z")
        );
        // Half-open: the end belongs to the next period, the start to this one.
        assert_eq!(
            p("2026-01-15T10:00:00Z", "2026-04-15T10:00:00Z"),
            pair("2026-04-15T10:00:00Z", "2026-05-15T10:00:00Z")
        );
        assert_eq!(
            p("2026-01-15T10:00:00Z", "2026-04-15T09:59:59.999Z"),
            pair("2026-03-15T10:00:00Z", "2026-04-15T10:00:00Z")
        );
    }

    #[test]
    fn the_31st_clamps_to_short_months_and_comes_back() {
        let anchor = "2026-01-31T12:00:00Z";
        // 28-day February (2026 is not a leap year).
        assert_eq!(
            p(anchor, "2026-02-15T00:00:00Z"),
            pair("2026-01-31T12:00:00Z", "2026-02-28T12:00:00Z")
        );
        assert_eq!(
            p(anchor, "2026-03-01T00:00:00Z"),
            pair("2026-02-28T12:00:00Z", "2026-03-31T12:00:00Z")
        );
        // 30-day April, 31-day May.
        assert_eq!(
            p(anchor, "2026-04-30T12:00:00Z"),
            pair("2026-04-30T12:00:00Z", "2026-05-31T12:00:00Z")
        );
        assert_eq!(
            p(anchor, "2026-04-30T11:59:59Z"),
            pair("2026-03-31T12:00:00Z", "2026-04-30T12:00:00Z")
        );
        // Across the year end.
        assert_eq!(
            p(anchor, "2027-01-05T00:00:00Z"),
            pair("2026-12-31T12:00:00Z", "2027-01-31T12:00:00Z")
        );
    }

    #[test]
    fn leap_years() {
        // Jan 30 anchor: Feb 29 in 2028, Feb 28 in 2027.
        assert_eq!(
            p("2027-12-30T00:00:00Z", "2028-03-01T00:00:00Z"),
            pair("2028-02-29T00:00:00Z", "2028-03-30T00:00:00Z")
        );
        assert_eq!(
            p("2026-12-30T00:00:00Z", "2027-03-01T00:00:00Z"),
            pair("2027-02-28T00:00:00Z", "2027-03-30T00:00:00Z")
        );
        // A leap-day anchor: the 29th where it exists, Feb 28 in common years.
        let anchor = "2028-02-29T08:30:00Z";
        assert_eq!(
            p(anchor, "2028-03-10T00:00:00Z"),
            pair("2028-02-29T08:30:00Z", "2028-03-29T08:30:00Z")
        );
        assert_eq!(
            p(anchor, "2029-02-28T08:30:00Z"),
            pair("2029-02-28T08:30:00Z", "2029-03-29T08:30:00Z")
        );
        assert_eq!(
            p(anchor, "2029-02-28T08:29:59Z"),
            pair("2029-01-29T08:30:00Z", "2029-02-28T08:30:00Z")
        );
        assert_eq!(
            p(anchor, "2032-02-29T09:00:00Z"),
            pair("2032-02-29T08:30:00Z", "2032-03-29T08:30:00Z")
        );
    }

    #[test]
    fn before_the_anchor() {
        assert_eq!(
            p("2026-03-31T00:00:00Z", "2026-03-01T00:00:00Z"),
            pair("2026-02-28T00:00:00Z", "2026-03-31T00:00:00Z")
        );
    }

    #[test]
    fn periods_tile_time_without_gaps() {
        for anchor in [
            "2026-01-31T23:59:59Z",
            "2028-02-29T00:00:00Z",
            "2026-05-30T06:00:00Z",
        ] {
            let anchor = t(anchor);
            let mut period = period_containing(anchor, anchor);
            assert_eq!(period.start, anchor);
            for _ in 0..60 {
                let next = period_containing(anchor, period.end);
                assert_eq!(next.start, period.end);
                assert!(next.end > next.start);
                let days = (next.end - next.start).num_days();
                assert!((28..=31).contains(&days), "{days}");
                period = next;
            }
        }
    }

    #[test]
    fn remaining_time() {
        let period = period_containing(t("2026-01-01T00:00:00Z"), t("2026-01-31T23:00:00Z"));
        assert_eq!(period.remaining(t("2026-01-31T23:00:00Z")).as_secs(), 3600);
        assert_eq!(period.remaining(t("2026-02-02T00:00:00Z")).as_secs(), 0);
    }
}
