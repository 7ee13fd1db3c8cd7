//! Writes: a batch of events and every rollup it changes, in the caller's transaction, so
//! the rollups are exact the moment the events commit. Also the API-call counts recorded by
//! the request pipeline.
//!
//! Table names are qualified with `tenant_schema_name(tenant)`, derived from the tenant id
//! only. Statements go through `query_typed` (one round trip, no named statement): their text
//! differs per tenant schema, and a per-connection statement cache would keep one entry per
//! tenant the connection ever served.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Transaction;
use uuid::Uuid;

use super::buckets::{
    block_of_hour, day_column, floor_day, floor_hour, hour_index, BlockActivity, BLOCK_DAYS,
    BLOCK_HOURS, HOUR_SECS,
};
use super::model::ValidEvent;
use super::AnalyticsError;
use crate::db::tenant_schema_name;

/// Counter kinds (`counters.kind`); lower case is hourly, upper case daily.
pub mod kind {
    pub const EVENTS_BY_TYPE: u8 = b'e';
    pub const EVENTS_BY_TYPE_DAY: u8 = b'E';
    pub const EVENTS: u8 = b't';
    pub const EVENTS_DAY: u8 = b'T';
    pub const FEATURE: u8 = b'f';
    pub const FEATURE_DAY: u8 = b'F';
    pub const API_CALLS: u8 = b'a';
    pub const API_CALLS_DAY: u8 = b'A';
    pub const USERS: u8 = b'u';
    pub const USERS_DAY: u8 = b'U';
    /// Distinct users of one event type in the hour, keyed by event_type (`type_activity`).
    pub const TYPE_USERS: u8 = b'p';
    /// Distinct users of one event type in the day, keyed by event_type (`type_activity`).
    pub const TYPE_USERS_DAY: u8 = b'P';
    pub const ALL: &[u8] = b"eEtTfFaAuUpP";
}

/// Every flush of a tenant, from any server instance, runs under this transaction-level lock:
/// the distinct-user counters are derived from the activity bits read before the update, which
/// is only right if no other flush of the tenant interleaves.
pub const FLUSH_LOCK_SQL: &str = "select pg_advisory_xact_lock(hashtextextended($1, 0))";

pub fn flush_lock_key(tenant: Uuid) -> String {
    format!("tenantry.analytics.flush:{tenant}")
}

/// A user's dense integer key in the tenant's dictionary (`user_ids`, tenant_template V6): the
/// activity tables key their masks by it.
pub type UserKey = i32;

type CounterKey = (u8, DateTime<Utc>, String);

#[derive(Default)]
struct Counters(BTreeMap<CounterKey, i64>);

impl Counters {
    fn add(&mut self, kind: u8, bucket: DateTime<Utc>, key: &str, n: i64) {
        *self.0.entry((kind, bucket, key.to_string())).or_insert(0) += n;
    }

    fn merge(&mut self, other: Counters) {
        for (key, n) in other.0 {
            *self.0.entry(key).or_insert(0) += n;
        }
    }

    /// Sorted by key (a BTreeMap), so concurrent upserts of overlapping rows lock them in the
    /// same order and cannot deadlock.
    async fn upsert(
        self,
        tx: &Transaction<'_>,
        schema: &str,
        tenant: Uuid,
    ) -> Result<(), AnalyticsError> {
        if self.0.is_empty() {
            return Ok(());
        }
        let mut kinds: Vec<i8> = Vec::with_capacity(self.0.len());
        let mut buckets = Vec::with_capacity(self.0.len());
        let mut keys = Vec::with_capacity(self.0.len());
        let mut counts = Vec::with_capacity(self.0.len());
        for ((kind, bucket, key), n) in self.0 {
            kinds.push(kind.cast_signed());
            buckets.push(bucket);
            keys.push(key);
            counts.push(n);
        }
        let sql = format!(
            "insert into {schema}.counters as c (tenant_id, kind, bucket, key, n) \
             select $1, * from unnest($2::\"char\"[], $3::timestamptz[], $4::text[], $5::int8[]) \
             on conflict (tenant_id, kind, bucket, key) do update set n = c.n + excluded.n"
        );
        tx.query_typed(
            &sql,
            &[
                (&tenant, Type::UUID),
                (&kinds, Type::CHAR_ARRAY),
                (&buckets, Type::TIMESTAMPTZ_ARRAY),
                (&keys, Type::TEXT_ARRAY),
                (&counts, Type::INT8_ARRAY),
            ],
        )
        .await?;
        Ok(())
    }
}

/// Inserts `events` into the tenant's raw table and updates every rollup they touch. `tx`
/// must be bound to `tenant` (`begin_tenant_tx`). Returns the number of events written.
pub async fn insert_batch(
    tx: &Transaction<'_>,
    tenant: Uuid,
    events: &[ValidEvent],
) -> Result<u64, AnalyticsError> {
    Ok(insert_batch_skipping(tx, tenant, events, &NothingKnown)
        .await?
        .events)
}

/// Activity marks a caller knows to be committed (taken from an earlier `BatchWritten`), so a
/// flush need not read them back from the database.
pub trait KnownActivity {
    /// `user` is marked in `hour` (hours since the epoch) in `user_activity`.
    fn hour(&self, user: UserKey, hour: i64) -> bool;
    /// `user` is marked with `event_type` in `hour` (hours since the epoch) in `type_activity`.
    fn type_hour(&self, user: UserKey, event_type: &str, hour: i64) -> bool;
}

/// Knows nothing: every mark of a batch is looked up.
pub struct NothingKnown;

impl KnownActivity for NothingKnown {
    fn hour(&self, _: UserKey, _: i64) -> bool {
        false
    }

    fn type_hour(&self, _: UserKey, _: &str, _: i64) -> bool {
        false
    }
}

/// What a batch wrote.
#[derive(Debug, Default)]
pub struct BatchWritten {
    pub events: u64,
    /// The (user, hour since the epoch) pairs now marked in `user_activity`; once the
    /// transaction commits the caller may remember them and report them as known next time.
    pub activity: Vec<(UserKey, i64)>,
    /// The (user, event_type, hour since the epoch) triples now marked in `type_activity`,
    /// likewise.
    pub type_activity: Vec<(UserKey, String, i64)>,
}

/// The (block, event_type, user) rows a batch marks, with the hours it marks in each; the
/// event_type is '' for `user_activity`. Ordered like the primary keys, so concurrent writers
/// would lock rows in the same order.
type ActivityBatch<'a> = BTreeMap<(i32, &'a str, UserKey), BlockActivity>;

/// `insert_batch`, skipping the activity marks `known` says are already stored. Marks are
/// only ever added (retention removes whole days older than anything accepted), so a mark
/// once committed stays true and costs nothing to skip; a wrong "known" would lose a distinct
/// user, so only report marks taken from a committed `BatchWritten`.
pub async fn insert_batch_skipping(
    tx: &Transaction<'_>,
    tenant: Uuid,
    events: &[ValidEvent],
    known: &(impl KnownActivity + Sync),
) -> Result<BatchWritten, AnalyticsError> {
    if events.is_empty() {
        return Ok(BatchWritten::default());
    }
    let schema = tenant_schema_name(tenant);
    tx.query_typed(FLUSH_LOCK_SQL, &[(&flush_lock_key(tenant), Type::TEXT)])
        .await?;
    // The raw insert and the user keys do not depend on each other: pipelined.
    let ((), keys) = tokio::try_join!(
        insert_raw(tx, &schema, tenant, events),
        user_keys(tx, &schema, tenant, events),
    )?;

    let mut counters = Counters::default();
    for e in events {
        let hour = floor_hour(e.occurred_at);
        let day = floor_day(e.occurred_at);
        counters.add(kind::EVENTS, hour, "", 1);
        counters.add(kind::EVENTS_DAY, day, "", 1);
        counters.add(kind::EVENTS_BY_TYPE, hour, &e.event_type, 1);
        counters.add(kind::EVENTS_BY_TYPE_DAY, day, &e.event_type, 1);
        if let Some(feature) = &e.feature {
            counters.add(kind::FEATURE, hour, feature, 1);
            counters.add(kind::FEATURE_DAY, day, feature, 1);
        }
    }
    let mut users = ActivityBatch::new();
    let mut types = ActivityBatch::new();
    let mut written = BatchWritten {
        events: events.len() as u64,
        ..Default::default()
    };
    for e in events {
        let Some(user) = e.user_id.as_deref() else {
            continue;
        };
        let Some(&user) = keys.get(user) else {
            return Err(AnalyticsError::UserKeyMissing);
        };
        let hour = hour_index(e.occurred_at);
        let block = block_of_hour(hour);
        // 0..768: `hour` is in `block`.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let offset = (hour - i64::from(block) * BLOCK_HOURS) as usize;
        if !known.hour(user, hour) && mark(&mut users, (block, "", user), offset) {
            written.activity.push((user, hour));
        }
        let event_type = e.event_type.as_str();
        if !known.type_hour(user, event_type, hour)
            && mark(&mut types, (block, event_type, user), offset)
        {
            written
                .type_activity
                .push((user, e.event_type.clone(), hour));
        }
    }
    // Two tables, no dependency between them: their statements go out pipelined.
    let (by_user, by_type) = tokio::try_join!(
        update_activity(tx, &schema, tenant, Activity::Users, &users),
        update_activity(tx, &schema, tenant, Activity::Types, &types),
    )?;
    counters.merge(by_user);
    counters.merge(by_type);
    counters.upsert(tx, &schema, tenant).await?;
    Ok(written)
}

/// Sets hour `offset` of the row `key` in `batch`; false if the batch had it already.
fn mark<'a>(batch: &mut ActivityBatch<'a>, key: (i32, &'a str, UserKey), offset: usize) -> bool {
    let marks = batch.entry(key).or_default();
    if marks.get(offset) {
        return false;
    }
    marks.set(offset);
    true
}

async fn insert_raw(
    tx: &Transaction<'_>,
    schema: &str,
    tenant: Uuid,
    events: &[ValidEvent],
) -> Result<(), AnalyticsError> {
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let users: Vec<Option<&str>> = events.iter().map(|e| e.user_id.as_deref()).collect();
    let features: Vec<Option<&str>> = events.iter().map(|e| e.feature.as_deref()).collect();
    let metadata: Vec<Option<&serde_json::Value>> =
        events.iter().map(|e| e.metadata.as_ref()).collect();
    let occurred: Vec<DateTime<Utc>> = events.iter().map(|e| e.occurred_at).collect();
    let received: Vec<DateTime<Utc>> = events.iter().map(|e| e.received_at).collect();
    // `returning` in a CTE for Citus (docs/scale-out.md): its rows of an `INSERT ... SELECT`
    // from `unnest` are computed on the coordinator and written by `COPY`, which row-level
    // security refuses, unless the insert returns something. One row comes back either way.
    let sql = format!(
        "with i as (insert into {schema}.events \
         (tenant_id, id, event_type, user_id, feature, metadata, occurred_at, received_at) \
         select $1, * from unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::jsonb[], \
         $7::timestamptz[], $8::timestamptz[]) returning 1) select count(*) from i"
    );
    let params: [(&(dyn ToSql + Sync), Type); 8] = [
        (&tenant, Type::UUID),
        (&ids, Type::UUID_ARRAY),
        (&types, Type::TEXT_ARRAY),
        (&users, Type::TEXT_ARRAY),
        (&features, Type::TEXT_ARRAY),
        (&metadata, Type::JSONB_ARRAY),
        (&occurred, Type::TIMESTAMPTZ_ARRAY),
        (&received, Type::TIMESTAMPTZ_ARRAY),
    ];
    tx.query_typed(&sql, &params).await?;
    Ok(())
}

/// The dictionary key of every user id of `events`, adding the ids it lacks. Runs under the
/// tenant's flush lock, the only writer of `user_ids`: `max(user_key) + 1` onwards is free, so
/// keys are dense with no sequence, and no concurrent insert can conflict. One statement: the
/// lookup, the insert of the missing ids and the answer for both (a data-modifying CTE's rows
/// are not visible to the rest of the statement, hence the `union all` of what it returns).
/// The highest key is a materialized CTE rather than a subquery of the insert for Citus
/// (docs/scale-out.md): an `INSERT ... SELECT` whose `SELECT` reads a table of a distributed
/// schema is pushed down to the worker, and Citus 13.2 deparses that push-down into a
/// single-shard table with an empty `IS NOT NULL` filter (a syntax error); reading only CTE
/// results, the insert is planned on the coordinator instead.
async fn user_keys(
    tx: &Transaction<'_>,
    schema: &str,
    tenant: Uuid,
    events: &[ValidEvent],
) -> Result<HashMap<String, UserKey>, AnalyticsError> {
    let mut ids: Vec<&str> = events.iter().filter_map(|e| e.user_id.as_deref()).collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    ids.sort_unstable();
    ids.dedup();
    let sql = format!(
        "with wanted as (select u from unnest($2::text[]) as w(u)), \
         found as (select k.user_id::text as user_id, k.user_key from {schema}.user_ids k \
           where k.tenant_id = $1 and k.user_id = any($2::text[])), \
         top as materialized (select coalesce(max(user_key), 0) as k from {schema}.user_ids \
           where tenant_id = $1), \
         added as (insert into {schema}.user_ids (tenant_id, user_id, user_key) \
           select $1, w.u, top.k + row_number() over (order by w.u) \
           from wanted w cross join top \
           where not exists (select 1 from found f where f.user_id = w.u) \
           returning user_id::text, user_key) \
         select user_id, user_key from found union all select user_id, user_key from added"
    );
    let rows = tx
        .query_typed(&sql, &[(&tenant, Type::UUID), (&ids, Type::TEXT_ARRAY)])
        .await?;
    let mut keys = HashMap::with_capacity(rows.len());
    for row in rows {
        keys.insert(row.try_get(0)?, row.try_get(1)?);
    }
    Ok(keys)
}

/// The two activity tables. Both hold, per 32-day block, `days` (the days with any mark) and
/// `d00`..`d31` (the hours of each day); `type_activity` is keyed by event_type as well.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Activity {
    /// `user_activity`: users active in an hour; counters `u` and `U`.
    Users,
    /// `type_activity`: users of one event type in an hour; counters `p` and `P`, keyed by
    /// the type.
    Types,
}

impl Activity {
    fn table(self) -> &'static str {
        match self {
            Activity::Users => "user_activity",
            Activity::Types => "type_activity",
        }
    }

    /// The hourly and the daily counter kind of the users it counts.
    fn kinds(self) -> (u8, u8) {
        match self {
            Activity::Users => (kind::USERS, kind::USERS_DAY),
            Activity::Types => (kind::TYPE_USERS, kind::TYPE_USERS_DAY),
        }
    }
}

/// Sets the hour bits of the batch in `table` and counts, from the bits that were not set
/// before, how many users (of each event type, for `type_activity`) became active in each
/// hour and each day.
///
/// Runs under the tenant's flush lock (`FLUSH_LOCK_SQL`), which every writer of the activity
/// tables takes (flushes and retention): the rows read here cannot change before this
/// transaction ends. That lets the new masks be computed here and existing rows be rewritten
/// by `ctid`, with no second index probe and no `ON CONFLICT` (an upsert would be the most
/// expensive statement of a flush), and new rows be plain inserts.
async fn update_activity(
    tx: &Transaction<'_>,
    schema: &str,
    tenant: Uuid,
    table: Activity,
    batch: &ActivityBatch<'_>,
) -> Result<Counters, AnalyticsError> {
    let mut counters = Counters::default();
    if batch.is_empty() {
        return Ok(counters);
    }
    let name = table.table();
    let blocks: Vec<i32> = batch.keys().map(|(b, _, _)| *b).collect();
    let types: Vec<&str> = batch.keys().map(|(_, t, _)| *t).collect();
    let users: Vec<UserKey> = batch.keys().map(|(_, _, u)| *u).collect();
    // Only the day columns this batch touches (usually one or two of the 32) are read and
    // written; the statement text names them, and they are constants of the template.
    let touched = batch.values().fold(0u32, |acc, a| acc | a.days());
    let day_idx: Vec<usize> = (0..BLOCK_DAYS).filter(|d| touched & 1 << d != 0).collect();
    let cols: Vec<String> = day_idx.iter().map(|d| day_column(*d)).collect();
    let each =
        |f: &dyn Fn(&str) -> String| cols.iter().map(|c| f(c)).collect::<Vec<_>>().join(", ");
    let list = each(&|c| c.to_string());
    let type_key = match table {
        Activity::Users => "",
        Activity::Types => "and a.event_type = i.event_type",
    };
    // One primary-key probe per entry, whatever the statistics say: `limit 1` (the key is
    // unique) keeps the planner from turning the lateral subquery into a join. As a plain join,
    // on a table not analyzed yet (a new tenant, or just after a backfill) it would hash every
    // row of type_activity each flush.
    let read = format!(
        "select i.ord::int4, a.ctid::text, a.days, {list} \
         from unnest($2::int4[], $3::text[], $4::int4[]) \
           with ordinality as i(block, event_type, user_id, ord) \
         cross join lateral (select ctid, days, {list} from {schema}.{name} a \
           where a.tenant_id = $1 and a.block = i.block {type_key} \
           and a.user_id = i.user_id limit 1) a"
    );
    let rows = tx
        .query_typed(
            &read,
            &[
                (&tenant, Type::UUID),
                (&blocks, Type::INT4_ARRAY),
                (&types, Type::TEXT_ARRAY),
                (&users, Type::INT4_ARRAY),
            ],
        )
        .await?;
    // Per batch entry (by position): the row's ctid, `days` and the touched day columns.
    let mut old: Vec<Option<(String, u32, BlockActivity)>> = vec![None; batch.len()];
    for row in rows {
        // An ordinality out of range (never) finds no slot below.
        let at = usize::try_from(row.try_get::<_, i32>(0)? - 1).unwrap_or(usize::MAX);
        let mut activity = BlockActivity::default();
        for (k, d) in day_idx.iter().enumerate() {
            activity.0[*d] = row.try_get::<_, i32>(k + 3)?.cast_unsigned();
        }
        if let Some(slot) = old.get_mut(at) {
            *slot = Some((
                row.try_get(1)?,
                row.try_get::<_, i32>(2)?.cast_unsigned(),
                activity,
            ));
        }
    }

    let (hourly, daily) = table.kinds();
    let mut update = Changes::new(day_idx.len());
    let mut insert = Changes::new(day_idx.len());
    let empty = BlockActivity::default();
    for (((block, event_type, user), bits), before) in batch.iter().zip(&old) {
        let (before_bits, before_days) = match before {
            Some((_, days, activity)) => (activity, *days),
            None => (&empty, 0),
        };
        let added = bits.minus(before_bits);
        if added == empty {
            continue;
        }
        let mut merged = *before_bits;
        for (d, hours) in merged.0.iter_mut().zip(bits.0.iter()) {
            *d |= hours;
        }
        let masks = day_idx.iter().map(|d| merged.0[*d].cast_signed());
        let days = (before_days | bits.days()).cast_signed();
        match before {
            Some((ctid, _, _)) => update.push(Key::Ctid(ctid.clone()), days, masks),
            None => insert.push(Key::New(*block, event_type, *user), days, masks),
        }
        let block_start = i64::from(*block) * BLOCK_HOURS;
        let mut days_counted = 0u32;
        for offset in added.ones() {
            #[allow(clippy::cast_possible_wrap)] // an hour of the block: below 768
            let hour_ts = hour_ts(block_start + offset as i64);
            counters.add(hourly, hour_ts, event_type, 1);
            // New to the day if no hour of that day was set before (a block is 32 whole days,
            // so the day lies in this block).
            let day_bit = 1u32 << (offset / 24);
            if before_days & day_bit == 0 && days_counted & day_bit == 0 {
                days_counted |= day_bit;
                counters.add(daily, floor_day(hour_ts), event_type, 1);
            }
        }
    }

    let unnest_args = |first: usize| {
        (0..cols.len())
            .map(|k| format!("${}::int4[]", k + first))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let updated = async {
        if update.days.is_empty() {
            return Ok(0);
        }
        // `ctid = any(...)` makes the scan a TID scan whatever the batch size; the join then
        // only pairs each row with its new values.
        let sql = format!(
            "update {schema}.{name} a set days = u.days, {set} \
             from unnest($2::text[]::tid[], $3::int4[], {args}) as u(t, days, {list}) \
             where a.ctid = any($2::text[]::tid[]) and a.ctid = u.t and a.tenant_id = $1",
            set = each(&|c| format!("{c} = u.{c}")),
            args = unnest_args(4),
        );
        let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![
            (&tenant, Type::UUID),
            (&update.ctids, Type::TEXT_ARRAY),
            (&update.days, Type::INT4_ARRAY),
        ];
        for column in &update.columns {
            params.push((column, Type::INT4_ARRAY));
        }
        tx.execute_typed(&sql, &params).await
    };
    let inserted = async {
        if insert.days.is_empty() {
            return Ok(0);
        }
        let mut params: Vec<(&(dyn ToSql + Sync), Type)> =
            vec![(&tenant, Type::UUID), (&insert.blocks, Type::INT4_ARRAY)];
        let (keys, key_args) = match table {
            Activity::Users => ("block, user_id", "$2::int4[], $3::int4[]"),
            Activity::Types => {
                params.push((&insert.types, Type::TEXT_ARRAY));
                (
                    "block, event_type, user_id",
                    "$2::int4[], $3::text[], $4::int4[]",
                )
            }
        };
        params.push((&insert.users, Type::INT4_ARRAY));
        params.push((&insert.days, Type::INT4_ARRAY));
        let days_arg = params.len();
        for column in &insert.columns {
            params.push((column, Type::INT4_ARRAY));
        }
        // `returning` for Citus, as in `insert_raw`.
        let sql = format!(
            "with i as (insert into {schema}.{name} (tenant_id, {keys}, days, {list}) \
             select $1, * from unnest({key_args}, ${days_arg}::int4[], {args}) returning 1) \
             select count(*) from i",
            args = unnest_args(days_arg + 1),
        );
        tx.execute_typed(&sql, &params).await
    };
    let (updated, _) = tokio::try_join!(updated, inserted)?;
    // Every row read above must still be there: if one were not, its hours would be lost
    // and the distinct counts wrong, so the flush fails instead (nothing is acknowledged).
    if updated != update.days.len() as u64 {
        return Err(AnalyticsError::RollupChanged {
            table: name.to_string(),
            updated,
            expected: update.days.len(),
        });
    }
    Ok(counters)
}

enum Key<'a> {
    Ctid(String),
    New(i32, &'a str, UserKey),
}

/// Column arrays of the activity rows one statement writes.
struct Changes<'a> {
    ctids: Vec<String>,
    blocks: Vec<i32>,
    types: Vec<&'a str>,
    users: Vec<UserKey>,
    days: Vec<i32>,
    columns: Vec<Vec<i32>>,
}

impl<'a> Changes<'a> {
    fn new(columns: usize) -> Changes<'a> {
        Changes {
            ctids: Vec::new(),
            blocks: Vec::new(),
            types: Vec::new(),
            users: Vec::new(),
            days: Vec::new(),
            columns: vec![Vec::new(); columns],
        }
    }

    fn push(&mut self, key: Key<'a>, days: i32, masks: impl Iterator<Item = i32>) {
        match key {
            Key::Ctid(ctid) => self.ctids.push(ctid),
            Key::New(block, event_type, user) => {
                self.blocks.push(block);
                self.types.push(event_type);
                self.users.push(user);
            }
        }
        self.days.push(days);
        for (column, mask) in self.columns.iter_mut().zip(masks) {
            column.push(mask);
        }
    }
}

fn hour_ts(hour: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(hour * HOUR_SECS, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Adds API-call counts of the tenant: `(any instant in the hour, count)` pairs, as the request
/// pipeline aggregates them. `tx` must be bound to `tenant`.
pub async fn record_api_calls(
    tx: &Transaction<'_>,
    tenant: Uuid,
    calls: &[(DateTime<Utc>, i64)],
) -> Result<(), AnalyticsError> {
    let mut counters = Counters::default();
    for (at, n) in calls {
        if *n <= 0 {
            continue;
        }
        counters.add(kind::API_CALLS, floor_hour(*at), "", *n);
        counters.add(kind::API_CALLS_DAY, floor_day(*at), "", *n);
    }
    counters
        .upsert(tx, &tenant_schema_name(tenant), tenant)
        .await
}

/// The oldest instant a day bucket may start at and still be kept: `floor_day(now - days)`.
pub fn retention_cutoff(now: DateTime<Utc>, days: u32) -> DateTime<Utc> {
    floor_day(now - Duration::days(i64::from(days)))
}
