-- The transactional outbox (DESIGN.md "Outbox"): a data change and the events it causes are
-- written in the same transaction; background workers deliver from here, so nothing is lost when
-- the process dies between the commit and the delivery.
CREATE TABLE app.outbox (
    tenant_id       uuid NOT NULL REFERENCES app.tenants (id),
    id              uuid NOT NULL,
    event_type      text NOT NULL CHECK (event_type ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$'),
    payload         jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    processed_at    timestamptz,
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    -- Dead letter: the handlers failed max_attempts times; kept for inspection and replay.
    failed_at       timestamptz,
    deleted_at      timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX outbox_tenant_created_idx ON app.outbox (tenant_id, created_at);
-- Only rows still to deliver, so the worker's claim scans the backlog, not the history. It leads
-- with tenant_id like every index of a tenant table (Citus distribution); the claim therefore
-- reads the whole (small) partial index and sorts the due rows, instead of a range scan.
CREATE INDEX outbox_tenant_pending_idx ON app.outbox (tenant_id, next_attempt_at)
    WHERE processed_at IS NULL AND failed_at IS NULL AND deleted_at IS NULL;

ALTER TABLE app.outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.outbox FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation_select ON app.outbox FOR SELECT
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_insert ON app.outbox FOR INSERT
    WITH CHECK (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_update ON app.outbox FOR UPDATE
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid))
    WITH CHECK (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_delete ON app.outbox FOR DELETE
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));

-- Claiming due rows must see every tenant's backlog, which no tenant context can give. The
-- choice (see src/jobs/mod.rs): the app role, which runs the workers, gets no cross-tenant read
-- at all; it may only call app.claim_outbox, a SECURITY DEFINER function owned by the owner role
-- (this migration runs as the owner) with a pinned search_path. The two policies below let the
-- owner, and only the owner (CURRENT_USER is resolved to the owner role when this runs), read and
-- lease pending rows; the function hands back routing data only (tenant id, row id, attempt),
-- never a payload. The payload is read, and the handler runs, in a transaction bound to the
-- row's tenant under the ordinary policies. The admin role stays reserved for operators.
CREATE POLICY outbox_claim_select ON app.outbox FOR SELECT TO CURRENT_USER USING (true);
CREATE POLICY outbox_claim_update ON app.outbox FOR UPDATE TO CURRENT_USER
    USING (true) WITH CHECK (true);

-- Leases up to p_limit due rows: each claimed row has its attempt counted and is hidden from
-- other claims for p_lease_seconds. SKIP LOCKED lets any number of workers, in any number of
-- instances, claim at once without waiting on each other; a row whose handler is running is
-- row-locked by that handler's transaction, so it is skipped even once its lease has expired.
-- A worker that dies leaves its rows to be claimed again when the lease runs out.
CREATE FUNCTION app.claim_outbox(p_limit integer, p_lease_seconds integer)
RETURNS TABLE (tenant_id uuid, id uuid, attempts integer)
LANGUAGE sql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH due AS (
        SELECT o.tenant_id, o.id
        FROM app.outbox o
        WHERE o.processed_at IS NULL AND o.failed_at IS NULL AND o.deleted_at IS NULL
          AND o.next_attempt_at <= now()
        ORDER BY o.next_attempt_at, o.id
        LIMIT least(greatest(p_limit, 1), 1000)
        FOR UPDATE SKIP LOCKED
    )
    UPDATE app.outbox o
    SET attempts = o.attempts + 1,
        next_attempt_at = now() + make_interval(secs => greatest(p_lease_seconds, 1))
    FROM due
    WHERE o.tenant_id = due.tenant_id AND o.id = due.id
    RETURNING o.tenant_id, o.id, o.attempts
$$;
-- Functions are executable by PUBLIC by default; `tenantry migrate` grants it to the app role.
REVOKE ALL ON FUNCTION app.claim_outbox(integer, integer) FROM PUBLIC;
