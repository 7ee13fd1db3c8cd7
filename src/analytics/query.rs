//! Reads: the summary and the time series. Exact for any [from, to): whole days and whole
//! hours come from the rollups (`counters`, `user_activity`), the partial hours at the two ends
//! of the range from the raw events. Rollups are written in the same transaction as the events,
//! so every committed event is counted as soon as it is acknowledged.
//!
//! API calls are recorded per hour (the request pipeline aggregates them), so they are exact
//! per hour: a range counts every hour it overlaps.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use futures_util::future::try_join_all;
use serde::{Deserialize, Serialize};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;
use utoipa::ToSchema;
use uuid::Uuid;

use super::buckets::{
    block_windows, ceil_hour, ceil_to, day_column, floor_hour, hour_index, Interval, Plan, Range,
    DAY_SECS,
};
use super::store::kind;
use super::AnalyticsError;
use crate::db::tenant_schema_name;
use crate::error::FieldError;

pub const MAX_POINTS: i64 = 10_000;
pub const MAX_SUMMARY_DAYS: i64 = 1_100;
pub const TOP_FEATURES: usize = 10;
pub const MAU_WINDOW: Duration = Duration::days(30);
pub const DAU_WINDOW: Duration = Duration::days(1);

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct FeatureCount {
    pub feature: String,
    pub count: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Summary {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Distinct users with an event in the 24 hours ending at `to`.
    pub dau: i64,
    /// Distinct users with an event in the 30 days ending at `to`.
    pub mau: i64,
    /// Events that occurred in [from, to).
    pub events: i64,
    /// API requests of the tenant in every hour overlapping [from, to).
    pub api_calls: i64,
    /// The 10 most frequent features in [from, to), most frequent first.
    pub top_features: Vec<FeatureCount>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Events,
    ActiveUsers,
    ApiCalls,
}

impl Metric {
    pub fn parse(s: &str) -> Option<Metric> {
        match s {
            "events" => Some(Metric::Events),
            "active_users" => Some(Metric::ActiveUsers),
            "api_calls" => Some(Metric::ApiCalls),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Point {
    /// Start of the bucket (UTC). The first and last buckets count only the part inside
    /// [from, to).
    pub ts: DateTime<Utc>,
    pub value: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Series {
    pub metric: Metric,
    pub interval: Interval,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub points: Vec<Point>,
}

#[derive(Clone, Debug)]
pub struct SeriesRequest {
    pub metric: Metric,
    pub event_type: Option<String>,
    pub interval: Interval,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

fn invalid(field: &str, message: impl Into<String>) -> AnalyticsError {
    AnalyticsError::Validation(vec![FieldError::new(field, message)])
}

fn check_range(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<(), AnalyticsError> {
    if from >= to {
        return Err(invalid("from", "must be before `to`"));
    }
    Ok(())
}

pub async fn summary(
    tx: &Client,
    tenant: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Summary, AnalyticsError> {
    check_range(from, to)?;
    if to - from > Duration::days(MAX_SUMMARY_DAYS) {
        return Err(invalid(
            "from",
            format!("the range may span at most {MAX_SUMMARY_DAYS} days"),
        ));
    }
    let schema = tenant_schema_name(tenant);
    let reader = Reader {
        tx,
        schema: &schema,
        tenant,
    };
    let plan = Plan::new(from, to, true);
    let api_plan = Plan::new(floor_hour(from), ceil_hour(to), true);
    let user_windows = [(to - MAU_WINDOW, to), (to - DAU_WINDOW, to)];
    let (events, features, api_calls, users) = tokio::try_join!(
        reader.counts(Source::Events(None), &plan, Interval::Day),
        reader.features(&plan),
        reader.counts(Source::ApiCalls, &api_plan, Interval::Day),
        reader.distinct_users(&user_windows),
    )?;
    let mut top: Vec<FeatureCount> = features
        .into_iter()
        .map(|(feature, count)| FeatureCount { feature, count })
        .collect();
    top.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.feature.cmp(&b.feature))
    });
    top.truncate(TOP_FEATURES);
    Ok(Summary {
        from,
        to,
        dau: users[1],
        mau: users[0],
        events: events.values().sum(),
        api_calls: api_calls.values().sum(),
        top_features: top,
    })
}

pub async fn timeseries(
    tx: &Client,
    tenant: Uuid,
    req: &SeriesRequest,
) -> Result<Series, AnalyticsError> {
    let (from, to, interval) = (req.from, req.to, req.interval);
    check_range(from, to)?;
    let points = interval.buckets_between(from, to);
    if points > MAX_POINTS {
        return Err(invalid(
            "interval",
            format!(
                "the range holds {points} {} points, at most {MAX_POINTS}: narrow it or use a longer interval",
                interval.as_str()
            ),
        ));
    }
    if req.metric == Metric::ApiCalls && req.event_type.is_some() {
        return Err(invalid(
            "event_type",
            "applies to metric=events and metric=active_users only",
        ));
    }
    let schema = tenant_schema_name(tenant);
    let reader = Reader {
        tx,
        schema: &schema,
        tenant,
    };
    let event_type = req.event_type.as_deref();
    let values = match req.metric {
        Metric::Events => {
            let plan = Plan::new(from, to, interval == Interval::Day);
            reader
                .counts(Source::Events(event_type), &plan, interval)
                .await?
        }
        Metric::ApiCalls => {
            let plan = Plan::new(floor_hour(from), ceil_hour(to), interval == Interval::Day);
            reader.counts(Source::ApiCalls, &plan, interval).await?
        }
        Metric::ActiveUsers => match event_type {
            // Users per event type have no rollup (it would multiply user_activity by the
            // number of event types): this one reads the raw events of the range.
            Some(event_type) => {
                reader
                    .raw_by_bucket((from, to), interval, Some(event_type), true)
                    .await?
            }
            None => reader.active_users(from, to, interval).await?,
        },
    };
    let mut out = Vec::with_capacity(points as usize);
    let mut ts = interval.floor(from);
    while ts < to {
        out.push(Point {
            ts,
            value: values.get(&ts).copied().unwrap_or(0),
        });
        ts += interval.step();
    }
    Ok(Series {
        metric: req.metric,
        interval,
        event_type: req.event_type.clone(),
        from,
        to,
        points: out,
    })
}

#[derive(Clone, Copy)]
enum Source<'a> {
    /// All events, or those of one event type.
    Events(Option<&'a str>),
    ApiCalls,
}

impl Source<'_> {
    fn kinds(self) -> (u8, u8) {
        match self {
            Source::Events(None) => (kind::EVENTS, kind::EVENTS_DAY),
            Source::Events(Some(_)) => (kind::EVENTS_BY_TYPE, kind::EVENTS_BY_TYPE_DAY),
            Source::ApiCalls => (kind::API_CALLS, kind::API_CALLS_DAY),
        }
    }
}

struct Reader<'t> {
    tx: &'t Client,
    schema: &'t str,
    tenant: Uuid,
}

const EPOCH: &str = "timestamptz '1970-01-01 00:00:00+00'";

fn add_all(into: &mut BTreeMap<DateTime<Utc>, i64>, from: BTreeMap<DateTime<Utc>, i64>) {
    for (k, v) in from {
        *into.entry(k).or_insert(0) += v;
    }
}

impl Reader<'_> {
    /// Counts per bucket of `interval` over the parts of `plan`.
    async fn counts(
        &self,
        source: Source<'_>,
        plan: &Plan,
        interval: Interval,
    ) -> Result<BTreeMap<DateTime<Utc>, i64>, AnalyticsError> {
        let (hourly, daily) = source.kinds();
        let key = match source {
            Source::Events(t) => t,
            Source::ApiCalls => None,
        };
        let mut parts = Vec::new();
        for range in &plan.hourly {
            parts.push(self.counter_by_bucket(hourly, key, *range, interval));
        }
        if let Some(range) = plan.daily {
            parts.push(self.counter_by_bucket(daily, key, range, interval));
        }
        let raw_parts = plan.raw.iter().map(|range| {
            let event_type = match source {
                Source::Events(t) => t,
                Source::ApiCalls => None,
            };
            self.raw_by_bucket(*range, interval, event_type, false)
        });
        let (counted, raw) = tokio::try_join!(try_join_all(parts), try_join_all(raw_parts))?;
        let mut total = BTreeMap::new();
        for part in counted {
            add_all(&mut total, part);
        }
        if matches!(source, Source::Events(_)) {
            for part in raw {
                add_all(&mut total, part);
            }
        }
        Ok(total)
    }

    async fn counter_by_bucket(
        &self,
        kind: u8,
        key: Option<&str>,
        (lo, hi): Range,
        interval: Interval,
    ) -> Result<BTreeMap<DateTime<Utc>, i64>, AnalyticsError> {
        let schema = self.schema;
        let kind = kind as i8;
        let key_filter = if key.is_some() { "and key = $5" } else { "" };
        let sql = format!(
            "select date_bin('{}', bucket, {EPOCH}), sum(n)::int8 from {schema}.counters \
             where tenant_id = $1 and kind = $2 and bucket >= $3 and bucket < $4 {key_filter} \
             group by 1",
            interval.pg_interval()
        );
        let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![
            (&self.tenant, Type::UUID),
            (&kind, Type::CHAR),
            (&lo, Type::TIMESTAMPTZ),
            (&hi, Type::TIMESTAMPTZ),
        ];
        if let Some(key) = &key {
            params.push((key, Type::TEXT));
        }
        let rows = self.tx.query_typed(&sql, &params).await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Counts (or distinct users) of raw events per bucket in [lo, hi).
    async fn raw_by_bucket(
        &self,
        (lo, hi): Range,
        interval: Interval,
        event_type: Option<&str>,
        distinct_users: bool,
    ) -> Result<BTreeMap<DateTime<Utc>, i64>, AnalyticsError> {
        let schema = self.schema;
        let what = if distinct_users {
            "count(distinct user_id)"
        } else {
            "count(*)"
        };
        let type_filter = if event_type.is_some() {
            "and event_type = $4"
        } else {
            ""
        };
        let sql = format!(
            "select date_bin('{}', occurred_at, {EPOCH}), {what} from {schema}.events \
             where tenant_id = $1 and occurred_at >= $2 and occurred_at < $3 {type_filter} \
             group by 1",
            interval.pg_interval()
        );
        let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![
            (&self.tenant, Type::UUID),
            (&lo, Type::TIMESTAMPTZ),
            (&hi, Type::TIMESTAMPTZ),
        ];
        if let Some(t) = &event_type {
            params.push((t, Type::TEXT));
        }
        let rows = self.tx.query_typed(&sql, &params).await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Events per feature over the parts of `plan`.
    async fn features(&self, plan: &Plan) -> Result<HashMap<String, i64>, AnalyticsError> {
        let mut counted = Vec::new();
        for range in &plan.hourly {
            counted.push(self.counter_by_key(kind::FEATURE, *range));
        }
        if let Some(range) = plan.daily {
            counted.push(self.counter_by_key(kind::FEATURE_DAY, range));
        }
        let raw = plan.raw.iter().map(|r| self.raw_by_feature(*r));
        let (counted, raw) = tokio::try_join!(try_join_all(counted), try_join_all(raw))?;
        let mut total: HashMap<String, i64> = HashMap::new();
        for (feature, n) in counted.into_iter().chain(raw).flatten() {
            *total.entry(feature).or_insert(0) += n;
        }
        Ok(total)
    }

    async fn counter_by_key(
        &self,
        kind: u8,
        (lo, hi): Range,
    ) -> Result<Vec<(String, i64)>, AnalyticsError> {
        let schema = self.schema;
        let kind = kind as i8;
        let sql = format!(
            "select key::text, sum(n)::int8 from {schema}.counters \
             where tenant_id = $1 and kind = $2 and bucket >= $3 and bucket < $4 group by key"
        );
        let rows = self
            .tx
            .query_typed(
                &sql,
                &[
                    (&self.tenant, Type::UUID),
                    (&kind, Type::CHAR),
                    (&lo, Type::TIMESTAMPTZ),
                    (&hi, Type::TIMESTAMPTZ),
                ],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    async fn raw_by_feature(&self, (lo, hi): Range) -> Result<Vec<(String, i64)>, AnalyticsError> {
        let schema = self.schema;
        let sql = format!(
            "select feature, count(*) from {schema}.events where tenant_id = $1 \
             and occurred_at >= $2 and occurred_at < $3 and feature is not null group by 1"
        );
        let rows = self
            .tx
            .query_typed(
                &sql,
                &[
                    (&self.tenant, Type::UUID),
                    (&lo, Type::TIMESTAMPTZ),
                    (&hi, Type::TIMESTAMPTZ),
                ],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Distinct active users per bucket of [from, to).
    async fn active_users(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        interval: Interval,
    ) -> Result<BTreeMap<DateTime<Utc>, i64>, AnalyticsError> {
        let (whole_kind, secs) = match interval {
            Interval::Hour => (kind::USERS, 3_600),
            Interval::Day => (kind::USERS_DAY, DAY_SECS),
        };
        // Whole buckets are counters; each partial bucket at an end is one window of its own.
        let (b1, b2) = (ceil_to(from, secs), interval.floor(to));
        let mut windows: Vec<Range> = Vec::new();
        let whole = if b1 <= b2 {
            if from < b1 {
                windows.push((from, b1));
            }
            if b2 < to {
                windows.push((b2, to));
            }
            (b1 < b2).then_some((b1, b2))
        } else {
            windows.push((from, to));
            None
        };
        let counted = async {
            match whole {
                Some(range) => {
                    self.counter_by_bucket(whole_kind, None, range, interval)
                        .await
                }
                None => Ok(BTreeMap::new()),
            }
        };
        let (mut values, partial) = tokio::try_join!(counted, self.distinct_users(&windows))?;
        for (window, n) in windows.iter().zip(partial) {
            values.insert(interval.floor(window.0), n);
        }
        Ok(values)
    }

    /// Exact distinct users in each window [a, b): hours wholly inside a window are read from
    /// the activity masks (at most two rows per user for windows up to 32 days; integer tests
    /// on `days` for whole days and on `dNN` for the hours of partial days), the partial hours
    /// at its ends from the raw events, and the two sets are united before counting.
    async fn distinct_users(&self, windows: &[Range]) -> Result<Vec<i64>, AnalyticsError> {
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        let mut params: Vec<(Box<dyn ToSql + Sync + Send>, Type)> =
            vec![(Box::new(self.tenant), Type::UUID)];
        let mut next = |value: Box<dyn ToSql + Sync + Send>, ty: Type| {
            params.push((value, ty));
            format!("${}", params.len())
        };
        let mut bit_flags = Vec::new();
        let mut raw_flags = Vec::new();
        let mut raw_ranges = Vec::new();
        let (mut block_lo, mut block_hi) = (i32::MAX, i32::MIN);
        for &(a, b) in windows {
            let (ha, hb) = (ceil_hour(a), floor_hour(b));
            let mut raw = Vec::new();
            if ha < hb {
                let mut per_block = Vec::new();
                for w in block_windows(hour_index(ha), hour_index(hb)) {
                    block_lo = block_lo.min(w.block);
                    block_hi = block_hi.max(w.block);
                    let mut tests = Vec::new();
                    if w.days != 0 {
                        let m = next(Box::new(w.days as i32), Type::INT4);
                        tests.push(format!("(days & {m}) <> 0"));
                    }
                    for (day, mask) in w.partial {
                        let m = next(Box::new(mask as i32), Type::INT4);
                        tests.push(format!("({} & {m}) <> 0", day_column(day)));
                    }
                    let b = next(Box::new(w.block), Type::INT4);
                    per_block.push(format!("(block = {b} and ({}))", tests.join(" or ")));
                }
                bit_flags.push(format!("({})", per_block.join(" or ")));
                if a < ha {
                    raw.push((a, ha));
                }
                if hb < b {
                    raw.push((hb, b));
                }
            } else {
                bit_flags.push("false".to_string());
                raw.push((a, b));
            }
            let mut conds = Vec::new();
            for (lo, hi) in raw {
                let (x, y) = (
                    next(Box::new(lo), Type::TIMESTAMPTZ),
                    next(Box::new(hi), Type::TIMESTAMPTZ),
                );
                let cond = format!("(occurred_at >= {x} and occurred_at < {y})");
                conds.push(cond.clone());
                raw_ranges.push(cond);
            }
            raw_flags.push(if conds.is_empty() {
                "false".to_string()
            } else {
                format!("({})", conds.join(" or "))
            });
        }
        let schema = self.schema;
        let columns: Vec<String> = (0..windows.len()).map(|i| format!("w{i}")).collect();
        let mut branches = Vec::new();
        if block_lo <= block_hi {
            let (lo, hi) = (
                next(Box::new(block_lo), Type::INT4),
                next(Box::new(block_hi), Type::INT4),
            );
            let flags: Vec<String> = bit_flags
                .iter()
                .zip(&columns)
                .map(|(f, c)| format!("{f} as {c}"))
                .collect();
            branches.push(format!(
                "select user_id, {} from {schema}.user_activity \
                 where tenant_id = $1 and block between {lo} and {hi}",
                flags.join(", ")
            ));
        }
        if !raw_ranges.is_empty() {
            let flags: Vec<String> = raw_flags
                .iter()
                .zip(&columns)
                .map(|(f, c)| format!("{f} as {c}"))
                .collect();
            branches.push(format!(
                "select user_id, {} from {schema}.events \
                 where tenant_id = $1 and user_id is not null and ({})",
                flags.join(", "),
                raw_ranges.join(" or ")
            ));
        }
        let counts: Vec<String> = columns
            .iter()
            .map(|c| format!("count(distinct user_id) filter (where {c})"))
            .collect();
        let sql = format!(
            "select {} from ({}) s",
            counts.join(", "),
            branches.join(" union all ")
        );
        let refs: Vec<(&(dyn ToSql + Sync), Type)> = params
            .iter()
            .map(|(v, t)| (v.as_ref() as &(dyn ToSql + Sync), t.clone()))
            .collect();
        let row = self.tx.query_typed_one(&sql, &refs).await?;
        (0..windows.len())
            .map(|i| Ok(row.try_get::<_, i64>(i)?))
            .collect()
    }
}
