-- Analytics storage of one tenant (src/analytics). Three tables, eight relations in all with
-- their indexes and toast (see bench/results/analytics.md for the count and for the
-- measurements behind each choice):
--
-- events         the raw events. One B-tree, the primary key (tenant_id, occurred_at, id):
--                no API reads an event by id, and the time key serves every raw read (the
--                partial hours at the edges of a query range, retention). Measured on 10M rows:
--                a 37-minute range takes ~3 ms with a B-tree on occurred_at, ~40 ms with BRIN
--                minmax-multi and ~210 ms with plain BRIN (late events widen every block
--                range); weekly partitions query like the B-tree but multiply the relation
--                count by the number of partitions. Dropping the second index of V1 buys
--                ingest throughput instead. COPY FROM is refused on tables under RLS, so
--                batches arrive as one multi-row INSERT ... SELECT FROM unnest(...).
-- counters       every additive rollup, one row per (kind, bucket, key), updated in the same
--                transaction as the events it counts (exact at commit, late events land in
--                their own buckets). Lower-case kinds are hourly, upper-case daily (UTC):
--                  e/E events per event_type   t/T all events   f/F events per feature
--                  a/A API calls               u   distinct users in the hour
--                  U   distinct users in the day
--                `key` is varchar(100) (the longest event_type/feature accepted) so the row
--                width is bounded and the table needs no toast relation.
-- user_activity  the exact set of (user, hour) pairs: one row per user and 32-day block (UTC,
--                aligned on the epoch), `d00`..`d31` the hours of each day as a 24-bit mask
--                (bit h = hour h) and `days` the days with any activity (bit d = day d). Distinct
--                users over any window (DAU, MAU, partial days) read at most two rows per user
--                with integer tests: on 10,000 users, MAU took ~190 ms over a (day, user) table,
--                ~40 ms with a bit(768) column and ~13 ms with these integer masks. Fixed
--                width: no toast relation.
--
-- Runs with search_path set to the tenant's schema (names stay unqualified here).

ALTER TABLE events DROP CONSTRAINT events_pkey;
DROP INDEX events_tenant_occurred_idx;
ALTER TABLE events ADD PRIMARY KEY (tenant_id, occurred_at, id);

CREATE TABLE counters (
    tenant_id uuid NOT NULL,
    kind      "char" NOT NULL,
    bucket    timestamptz NOT NULL,
    key       varchar(100) NOT NULL DEFAULT '',
    n         bigint NOT NULL,
    PRIMARY KEY (tenant_id, kind, bucket, key)
) WITH (fillfactor = 80);

CREATE TABLE user_activity (
    tenant_id uuid NOT NULL,
    block     integer NOT NULL,
    user_id   uuid NOT NULL,
    days      integer NOT NULL DEFAULT 0,
    d00       integer NOT NULL DEFAULT 0,
    d01       integer NOT NULL DEFAULT 0,
    d02       integer NOT NULL DEFAULT 0,
    d03       integer NOT NULL DEFAULT 0,
    d04       integer NOT NULL DEFAULT 0,
    d05       integer NOT NULL DEFAULT 0,
    d06       integer NOT NULL DEFAULT 0,
    d07       integer NOT NULL DEFAULT 0,
    d08       integer NOT NULL DEFAULT 0,
    d09       integer NOT NULL DEFAULT 0,
    d10       integer NOT NULL DEFAULT 0,
    d11       integer NOT NULL DEFAULT 0,
    d12       integer NOT NULL DEFAULT 0,
    d13       integer NOT NULL DEFAULT 0,
    d14       integer NOT NULL DEFAULT 0,
    d15       integer NOT NULL DEFAULT 0,
    d16       integer NOT NULL DEFAULT 0,
    d17       integer NOT NULL DEFAULT 0,
    d18       integer NOT NULL DEFAULT 0,
    d19       integer NOT NULL DEFAULT 0,
    d20       integer NOT NULL DEFAULT 0,
    d21       integer NOT NULL DEFAULT 0,
    d22       integer NOT NULL DEFAULT 0,
    d23       integer NOT NULL DEFAULT 0,
    d24       integer NOT NULL DEFAULT 0,
    d25       integer NOT NULL DEFAULT 0,
    d26       integer NOT NULL DEFAULT 0,
    d27       integer NOT NULL DEFAULT 0,
    d28       integer NOT NULL DEFAULT 0,
    d29       integer NOT NULL DEFAULT 0,
    d30       integer NOT NULL DEFAULT 0,
    d31       integer NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, block, user_id)
) WITH (fillfactor = 80);

ALTER TABLE counters ENABLE ROW LEVEL SECURITY;
ALTER TABLE counters FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation_select ON counters FOR SELECT
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_insert ON counters FOR INSERT
    WITH CHECK (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_update ON counters FOR UPDATE
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid))
    WITH CHECK (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_delete ON counters FOR DELETE
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));

ALTER TABLE user_activity ENABLE ROW LEVEL SECURITY;
ALTER TABLE user_activity FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation_select ON user_activity FOR SELECT
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_insert ON user_activity FOR INSERT
    WITH CHECK (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_update ON user_activity FOR UPDATE
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid))
    WITH CHECK (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_delete ON user_activity FOR DELETE
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
