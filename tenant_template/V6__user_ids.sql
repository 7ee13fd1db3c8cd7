-- Analytics user ids are any string of 1 to 200 characters (API.md "Analytics"): the product's
-- own user ids and anonymous ids, UUIDs included.
--
-- user_ids       the tenant's dictionary from user id to a dense integer `user_key`, assigned
--                under the tenant's flush lock (the key of store::flush_lock_key) as
--                max(user_key) + 1, so keys stay small and dense without a sequence (one
--                relation fewer per tenant). `user_activity` and `type_activity` keep their
--                masks and keys as they were, with `user_id` now that integer: a row stays
--                fixed width (no toast relation) and 12 bytes narrower than with the uuid, and
--                DAU/MAU stay exact (one key per distinct string). Rows are never removed by
--                retention: an activity block outlives the raw events that made it.
--                varchar(200) bounds the row (at most 800 bytes of text), so no toast relation.
--                Three relations more per tenant (17 in all).
-- events.user_id becomes text, the id as sent. A UUID is stored in its canonical form
--                (lower-case, hyphenated; model::canonical_user_id does the same at ingest), so
--                the UUIDs stored before this migration and the same UUIDs sent after it in any
--                spelling that parsed before (upper case, braces, no hyphens) are one user.
--
-- Existing rows: every UUID already stored (in events and both activity tables) gets a key,
-- in UUID order, and the activity tables are rewritten once with the key in place of the UUID
-- (ALTER ... TYPE ... USING, one pass, the primary keys rebuilt with it), under the flush lock
-- so no flush commits rows the conversion misses. `events` is rewritten too (its column changes
-- type): time and disk proportional to the tenant's raw events, not measured at 10M events yet.
--
-- Runs with search_path set to the tenant's schema and app.current_tenant set to the tenant.

SELECT pg_advisory_xact_lock(hashtextextended(
    'tenantry.analytics.flush:' || coalesce(current_setting('app.current_tenant', true), ''), 0));

CREATE TABLE user_ids (
    tenant_id uuid NOT NULL,
    user_id   varchar(200) NOT NULL,
    user_key  integer NOT NULL,
    PRIMARY KEY (tenant_id, user_id),
    UNIQUE (tenant_id, user_key)
);

ALTER TABLE user_ids ENABLE ROW LEVEL SECURITY;
ALTER TABLE user_ids FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation_select ON user_ids FOR SELECT
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_insert ON user_ids FOR INSERT
    WITH CHECK (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_update ON user_ids FOR UPDATE
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid))
    WITH CHECK (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_delete ON user_ids FOR DELETE
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));

INSERT INTO user_ids (tenant_id, user_id, user_key)
SELECT tenant_id, user_id::text, row_number() OVER (PARTITION BY tenant_id ORDER BY user_id)::integer
FROM (
    SELECT tenant_id, user_id FROM events WHERE user_id IS NOT NULL
    UNION
    SELECT tenant_id, user_id FROM user_activity
    UNION
    SELECT tenant_id, user_id FROM type_activity
) u;

-- ALTER ... USING takes no subquery; a session-local function does the lookup (resolved in
-- the tenant's schema through search_path).
CREATE FUNCTION pg_temp.tenantry_user_key(t uuid, u uuid) RETURNS integer
    LANGUAGE sql STABLE
    AS 'SELECT user_key FROM user_ids WHERE tenant_id = t AND user_id = u::text';

ALTER TABLE user_activity ALTER COLUMN user_id TYPE integer
    USING pg_temp.tenantry_user_key(tenant_id, user_id);
ALTER TABLE type_activity ALTER COLUMN user_id TYPE integer
    USING pg_temp.tenantry_user_key(tenant_id, user_id);
ALTER TABLE events ALTER COLUMN user_id TYPE text USING user_id::text;

DROP FUNCTION pg_temp.tenantry_user_key(uuid, uuid);
