//! Reads: the summary and the time series. Exact for any [from, to): whole days and whole
//! hours come from the rollups (`counters`, `user_activity`; per-type active users from the
//! `p`/`P` counters that `type_activity` keeps), the partial hours at the two ends
//! of the range from the raw events. Rollups are written in the same transaction as the events,
//! so every committed event is counted as soon as it is acknowledged.
//!
//! API calls are recorded per hour (the request pipeline aggregates them), so they are exact
//! per hour: a range counts every hour it overlaps.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::GenericClient;
use utoipa::ToSchema;
use uuid::Uuid;

use super::buckets::{
    block_windows, ceil_hour, day_column, floor_hour, hour_index, Interval, Plan, Range,
};
use super::store::kind;
use super::AnalyticsError;
use crate::actors::TenantOp;
use crate::auth::Caller;
use crate::db::{tenant_schema_name, TenantTx};
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

/// [`summary`] of the caller's tenant over [from, to).
pub struct GetSummary {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl TenantOp for GetSummary {
    type Output = Summary;
    type Error = AnalyticsError;

    fn run<'a>(
        self,
        tx: &'a TenantTx<'a>,
        caller: &'a Caller,
    ) -> BoxFuture<'a, Result<Summary, AnalyticsError>> {
        Box::pin(async move { summary(tx.client(), caller.tenant_id, self.from, self.to).await })
    }
}

/// [`timeseries`] of the caller's tenant.
pub struct GetSeries(pub SeriesRequest);

impl TenantOp for GetSeries {
    type Output = Series;
    type Error = AnalyticsError;

    fn run<'a>(
        self,
        tx: &'a TenantTx<'a>,
        caller: &'a Caller,
    ) -> BoxFuture<'a, Result<Series, AnalyticsError>> {
        Box::pin(async move { timeseries(tx.client(), caller.tenant_id, &self.0).await })
    }
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
    db: &(impl GenericClient + Sync),
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
        db,
        schema: &schema,
        tenant,
    };
    let plan = Plan::new(from, to, true);
    let api_plan = Plan::new(floor_hour(from), ceil_hour(to), true);
    let mut parts = Vec::new();
    for range in &plan.hourly {
        parts.push(Part::counters(&[kind::EVENTS, kind::FEATURE], None, *range));
    }
    if let Some(range) = plan.daily {
        parts.push(Part::counters(
            &[kind::EVENTS_DAY, kind::FEATURE_DAY],
            None,
            range,
        ));
    }
    for range in &api_plan.hourly {
        parts.push(Part::counters(&[kind::API_CALLS], None, *range));
    }
    if let Some(range) = api_plan.daily {
        parts.push(Part::counters(&[kind::API_CALLS_DAY], None, range));
    }
    for range in &plan.raw {
        parts.push(Part::Raw {
            event_type: None,
            range: *range,
        });
    }
    // Two statements in one round trip: every count, and the distinct users (DAU, MAU).
    let user_windows = [(to - MAU_WINDOW, to), (to - DAU_WINDOW, to)];
    let (sums, users) = tokio::try_join!(
        reader.sums(&parts, Group::Key),
        reader.distinct_users(&user_windows, None),
    )?;
    let (mut events, mut api_calls) = (0i64, 0i64);
    let mut features: HashMap<String, i64> = HashMap::new();
    for ((kind, key), n) in sums {
        match kind {
            kind::EVENTS | kind::EVENTS_DAY => events += n,
            kind::API_CALLS | kind::API_CALLS_DAY => api_calls += n,
            kind::FEATURE | kind::FEATURE_DAY => *features.entry(key).or_insert(0) += n,
            RAW => {
                events += n;
                if !key.is_empty() {
                    *features.entry(key).or_insert(0) += n;
                }
            }
            _ => {}
        }
    }
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
        events,
        api_calls,
        top_features: top,
    })
}

pub async fn timeseries(
    db: &(impl GenericClient + Sync),
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
        db,
        schema: &schema,
        tenant,
    };
    let event_type = req.event_type.as_deref();
    let values = match req.metric {
        Metric::Events => {
            let plan = Plan::new(from, to, interval == Interval::Day);
            let (hourly, daily) = match event_type {
                None => (kind::EVENTS, kind::EVENTS_DAY),
                Some(_) => (kind::EVENTS_BY_TYPE, kind::EVENTS_BY_TYPE_DAY),
            };
            let parts = plan_parts(&plan, hourly, daily, event_type, true);
            reader.by_bucket(&parts, interval).await?
        }
        Metric::ApiCalls => {
            let plan = Plan::new(floor_hour(from), ceil_hour(to), interval == Interval::Day);
            let parts = plan_parts(&plan, kind::API_CALLS, kind::API_CALLS_DAY, None, false);
            reader.by_bucket(&parts, interval).await?
        }
        Metric::ActiveUsers => reader.active_users(from, to, interval, event_type).await?,
    };
    let mut out = Vec::with_capacity(usize::try_from(points).unwrap_or(0));
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

/// The parts of `plan` as counter reads of `hourly`/`daily` (optionally one `key`), plus its
/// raw edges when `raw` (API calls have no raw events: their plan is whole hours).
fn plan_parts<'a>(
    plan: &Plan,
    hourly: u8,
    daily: u8,
    key: Option<&'a str>,
    raw: bool,
) -> Vec<Part<'a>> {
    let mut parts = Vec::new();
    for range in &plan.hourly {
        parts.push(Part::counters(&[hourly], key, *range));
    }
    if let Some(range) = plan.daily {
        parts.push(Part::counters(&[daily], key, range));
    }
    if raw {
        for range in &plan.raw {
            parts.push(Part::Raw {
                event_type: key,
                range: *range,
            });
        }
    }
    parts
}

/// The pseudo-kind of raw-event rows in `Reader::sums` (no counter kind is `r`).
const RAW: u8 = b'r';
const _: () = assert!(!matches!(
    RAW,
    b'e' | b'E' | b't' | b'T' | b'f' | b'F' | b'a' | b'A' | b'u' | b'U' | b'p' | b'P'
));

/// One piece of a read: counter rows of some kinds in a range, or the raw events of a range.
enum Part<'a> {
    Counters {
        kinds: Vec<i8>,
        key: Option<&'a str>,
        range: Range,
    },
    Raw {
        event_type: Option<&'a str>,
        range: Range,
    },
}

impl<'a> Part<'a> {
    fn counters(kinds: &[u8], key: Option<&'a str>, range: Range) -> Part<'a> {
        Part::Counters {
            kinds: kinds.iter().map(|k| k.cast_signed()).collect(),
            key,
            range,
        }
    }
}

/// How `Reader::sums` groups: by (kind, key), or by bucket start.
#[derive(Clone, Copy)]
enum Group {
    Key,
    Bucket(Interval),
}

/// Parameters of a statement built at run time; `push` returns the placeholder.
#[derive(Default)]
struct Params(Vec<(Box<dyn ToSql + Sync + Send>, Type)>);

impl Params {
    fn push(&mut self, value: impl ToSql + Sync + Send + 'static, ty: Type) -> String {
        self.0.push((Box::new(value), ty));
        format!("${}", self.0.len())
    }

    fn refs(&self) -> Vec<(&(dyn ToSql + Sync), Type)> {
        self.0
            .iter()
            .map(|(v, t)| (v.as_ref() as &(dyn ToSql + Sync), t.clone()))
            .collect()
    }
}

struct Reader<'t, C> {
    db: &'t C,
    schema: &'t str,
    tenant: Uuid,
}

const EPOCH: &str = "timestamptz '1970-01-01 00:00:00+00'";

impl<C: GenericClient + Sync> Reader<'_, C> {
    fn params(&self) -> Params {
        let mut params = Params::default();
        params.push(self.tenant, Type::UUID);
        params
    }

    /// One statement summing every part: counter rows keep their kind and key, a raw event
    /// counts 1 under kind `RAW` with its feature as key (for `Group::Key`). Each branch of
    /// the union is one range scan of a primary key.
    async fn sum_rows(
        &self,
        parts: &[Part<'_>],
        group: Group,
    ) -> Result<Vec<tokio_postgres::Row>, AnalyticsError> {
        let schema = self.schema;
        let mut params = self.params();
        let mut branches = Vec::with_capacity(parts.len());
        for part in parts {
            match part {
                Part::Counters { kinds, key, range } => {
                    let kinds = params.push(kinds.clone(), Type::CHAR_ARRAY);
                    let (lo, hi) = (
                        params.push(range.0, Type::TIMESTAMPTZ),
                        params.push(range.1, Type::TIMESTAMPTZ),
                    );
                    let key_filter = match key {
                        Some(key) => {
                            format!("and key = {}", params.push(key.to_string(), Type::TEXT))
                        }
                        None => String::new(),
                    };
                    branches.push(format!(
                        "select kind, key::text as key, bucket as at, n from {schema}.counters \
                         where tenant_id = $1 and kind = any({kinds}) and bucket >= {lo} \
                         and bucket < {hi} {key_filter}"
                    ));
                }
                Part::Raw { event_type, range } => {
                    let (lo, hi) = (
                        params.push(range.0, Type::TIMESTAMPTZ),
                        params.push(range.1, Type::TIMESTAMPTZ),
                    );
                    let type_filter = match event_type {
                        Some(t) => format!(
                            "and event_type = {}",
                            params.push(t.to_string(), Type::TEXT)
                        ),
                        None => String::new(),
                    };
                    branches.push(format!(
                        "select '{}'::\"char\" as kind, coalesce(feature, '') as key, \
                         occurred_at as at, 1::int8 as n \
                         from {schema}.events where tenant_id = $1 and occurred_at >= {lo} \
                         and occurred_at < {hi} {type_filter}",
                        RAW as char
                    ));
                }
            }
        }
        if branches.is_empty() {
            return Ok(Vec::new());
        }
        let (select, group_by) = match group {
            Group::Key => ("kind, key".to_string(), "kind, key"),
            Group::Bucket(interval) => (
                format!("date_bin('{}', at, {EPOCH})", interval.pg_interval()),
                "1",
            ),
        };
        let sql = format!(
            "select {select}, sum(n)::int8 from ({}) s group by {group_by}",
            branches.join(" union all ")
        );
        Ok(self.db.query_typed(&sql, &params.refs()).await?)
    }

    /// Sums per (kind, key) over `parts`.
    async fn sums(
        &self,
        parts: &[Part<'_>],
        group: Group,
    ) -> Result<Vec<((u8, String), i64)>, AnalyticsError> {
        let rows = self.sum_rows(parts, group).await?;
        rows.iter()
            .map(|r| {
                Ok((
                    (
                        r.try_get::<_, i8>(0)?.cast_unsigned(),
                        r.try_get::<_, String>(1)?,
                    ),
                    r.try_get(2)?,
                ))
            })
            .collect()
    }

    /// Sums per bucket of `interval` over `parts`.
    async fn by_bucket(
        &self,
        parts: &[Part<'_>],
        interval: Interval,
    ) -> Result<BTreeMap<DateTime<Utc>, i64>, AnalyticsError> {
        let rows = self.sum_rows(parts, Group::Bucket(interval)).await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Distinct active users (of `event_type` only, if given) per bucket of [from, to).
    async fn active_users(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        interval: Interval,
        event_type: Option<&str>,
    ) -> Result<BTreeMap<DateTime<Utc>, i64>, AnalyticsError> {
        let whole_kind = match (event_type, interval) {
            (None, Interval::Hour) => kind::USERS,
            (None, Interval::Day) => kind::USERS_DAY,
            (Some(_), Interval::Hour) => kind::TYPE_USERS,
            (Some(_), Interval::Day) => kind::TYPE_USERS_DAY,
        };
        // Whole buckets are counters; each partial bucket at an end is one window of its own.
        let (b1, b2) = (interval.ceil(from), interval.floor(to));
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
                    let part = Part::counters(&[whole_kind], event_type, range);
                    self.by_bucket(&[part], interval).await
                }
                None => Ok(BTreeMap::new()),
            }
        };
        let (mut values, partial) =
            tokio::try_join!(counted, self.distinct_users(&windows, event_type))?;
        for (window, n) in windows.iter().zip(partial) {
            values.insert(interval.floor(window.0), n);
        }
        Ok(values)
    }

    /// Exact distinct users (of `event_type` only, if given) in each window [a, b): hours
    /// wholly inside a window are read from the activity masks (`user_activity`, or
    /// `type_activity` rows of that type; at most two rows per user for windows up to 32 days;
    /// integer tests on `days` for whole days and on `dNN` for the hours of partial days), the
    /// partial hours at its ends from the raw events, and the two sets are united before
    /// counting.
    async fn distinct_users(
        &self,
        windows: &[Range],
        event_type: Option<&str>,
    ) -> Result<Vec<i64>, AnalyticsError> {
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        let mut params = self.params();
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
                        let m = params.push(w.days.cast_signed(), Type::INT4);
                        tests.push(format!("(days & {m}) <> 0"));
                    }
                    for (day, mask) in w.partial {
                        let m = params.push(mask.cast_signed(), Type::INT4);
                        tests.push(format!("({} & {m}) <> 0", day_column(day)));
                    }
                    let b = params.push(w.block, Type::INT4);
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
                    params.push(lo, Type::TIMESTAMPTZ),
                    params.push(hi, Type::TIMESTAMPTZ),
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
        let type_filter = match event_type {
            Some(t) => format!(
                "and event_type = {}",
                params.push(t.to_string(), Type::TEXT)
            ),
            None => String::new(),
        };
        let mut branches = Vec::new();
        if block_lo <= block_hi {
            let flags: Vec<String> = bit_flags
                .iter()
                .zip(&columns)
                .map(|(f, c)| format!("{f} as {c}"))
                .collect();
            // type_activity's key is (block, event_type, user): a range of blocks would scan
            // every type of the blocks in it, so each block is probed for the type.
            let (table, rows) = match event_type {
                None => {
                    let (lo, hi) = (
                        params.push(block_lo, Type::INT4),
                        params.push(block_hi, Type::INT4),
                    );
                    ("user_activity", format!("block between {lo} and {hi}"))
                }
                Some(_) => {
                    let blocks: Vec<i32> = (block_lo..=block_hi).collect();
                    let blocks = params.push(blocks, Type::INT4_ARRAY);
                    (
                        "type_activity",
                        format!("block = any({blocks}) {type_filter}"),
                    )
                }
            };
            branches.push(format!(
                "select user_id, {} from {schema}.{table} where tenant_id = $1 and {rows}",
                flags.join(", ")
            ));
        }
        if !raw_ranges.is_empty() {
            let flags: Vec<String> = raw_flags
                .iter()
                .zip(&columns)
                .map(|(f, c)| format!("{f} as {c}"))
                .collect();
            // The raw events name users by their id; the activity rows by its dictionary key.
            branches.push(format!(
                "select k.user_key as user_id, {} from {schema}.events e \
                 join {schema}.user_ids k on k.tenant_id = $1 and k.user_id = e.user_id \
                 where e.tenant_id = $1 and e.user_id is not null and ({}) {type_filter}",
                flags.join(", "),
                raw_ranges.join(" or ")
            ));
        }
        // One hash aggregate by user, then a count per window: `count(distinct user_id)` per
        // window would sort the rows once for each.
        let any: Vec<String> = columns
            .iter()
            .map(|c| format!("bool_or({c}) as {c}"))
            .collect();
        let counts: Vec<String> = columns
            .iter()
            .map(|c| format!("count(*) filter (where {c})"))
            .collect();
        let sql = format!(
            "select {} from (select {} from ({}) s group by user_id) g",
            counts.join(", "),
            any.join(", "),
            branches.join(" union all ")
        );
        let row = self.db.query_typed_one(&sql, &params.refs()).await?;
        (0..windows.len())
            .map(|i| Ok(row.try_get::<_, i64>(i)?))
            .collect()
    }
}
