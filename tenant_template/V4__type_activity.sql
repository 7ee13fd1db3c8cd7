-- Distinct users of one event type per day (GET /analytics/timeseries?metric=active_users
-- &event_type=X&interval=day), kept exact in the flush like the other distinct-user counters
-- instead of being counted from the raw events at every read (V3: p95 62 ms for 7 days at 10M
-- events, growing with the range).
--
-- type_activity  one row per (32-day block, event_type, user): `days` has bit d set when the
--                user sent an event of that type on day d of the block (UTC, blocks aligned on
--                the epoch as in user_activity). Only flushes read it, under the tenant's flush
--                lock, to tell which (user, type, day) triples a batch adds; each added triple
--                adds 1 to the counter of kind 'P' (day, key = event_type). Whole days of a
--                range read those counters; the partial days at its ends, and series by hour,
--                still count the raw events through V3's index. Day masks rather than hour
--                masks: a row changes at most once a day per (user, type) instead of once an
--                hour, and stays 5 columns wide instead of 37.
--
--                A table of its own rather than rows of user_activity keyed by event_type
--                (event_type = '' for all types): DAU and MAU read every user_activity row of
--                one or two blocks. Measured on the 10M-event tenant of bench/analytics_store.rs
--                (10,000 users, 10 types, 90 days): the user_activity part of the summary's
--                distinct-user statement took 26.5 ms (median, 40K rows, seq scan of 1,213
--                pages) and 48.7 ms with the 400K per-type rows in the same table (bitmap scan
--                of 6,871 pages). This table holds those 400K rows in 72 MB. Two relations more
--                per tenant (15 in all); fixed width, so no toast relation.
--
-- Existing events are folded in below (37 s for those 10M events), under the tenant's flush
-- lock (the key of store::flush_lock_key) so no flush commits events the backfill misses.
--
-- Runs with search_path set to the tenant's schema and app.current_tenant set to the tenant.

CREATE TABLE type_activity (
    tenant_id  uuid NOT NULL,
    block      integer NOT NULL,
    event_type varchar(100) NOT NULL,
    user_id    uuid NOT NULL,
    days       integer NOT NULL,
    PRIMARY KEY (tenant_id, block, event_type, user_id)
) WITH (fillfactor = 80);

ALTER TABLE type_activity ENABLE ROW LEVEL SECURITY;
ALTER TABLE type_activity FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation_select ON type_activity FOR SELECT
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_insert ON type_activity FOR INSERT
    WITH CHECK (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_update ON type_activity FOR UPDATE
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid))
    WITH CHECK (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_delete ON type_activity FOR DELETE
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));

SELECT pg_advisory_xact_lock(hashtextextended(
    'tenantry.analytics.flush:' || coalesce(current_setting('app.current_tenant', true), ''), 0));

-- Day d since the epoch is bit (d & 31) of block (d >> 5): floor division, as in buckets.rs.
INSERT INTO type_activity (tenant_id, block, event_type, user_id, days)
SELECT tenant_id, (day >> 5)::integer, event_type, user_id, bit_or(1 << (day & 31)::integer)
FROM (
    SELECT tenant_id, event_type, user_id,
           floor(extract(epoch FROM occurred_at) / 86400)::bigint AS day
    FROM events
    WHERE user_id IS NOT NULL
) e
GROUP BY 1, 2, 3, 4;

INSERT INTO counters (tenant_id, kind, bucket, key, n)
SELECT tenant_id, 'P', to_timestamp((block::bigint * 32 + d) * 86400), event_type, count(*)
FROM type_activity, generate_series(0, 31) AS d
WHERE days & (1 << d) <> 0
GROUP BY tenant_id, block, d, event_type;
