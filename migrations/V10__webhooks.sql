-- Outgoing webhooks (src/webhooks, docs/webhooks.md): endpoints, one message per (outbox event,
-- endpoint) with a stable id reused by every attempt, one delivery row per attempt, and the
-- per-tenant delivery rate window shared by every instance. Tenant data: tenant_id leads every
-- key, row-level security forced, soft delete like every tenant table.

CREATE TABLE app.webhooks (
    tenant_id                  uuid NOT NULL REFERENCES app.tenants (id),
    id                         uuid NOT NULL,
    url                        text NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    description                text NOT NULL DEFAULT '' CHECK (length(description) <= 1000),
    -- Exact types (`task.created`) and prefix wildcards (`project.*`, or `*` for every type).
    events                     text[] NOT NULL CHECK (cardinality(events) BETWEEN 1 AND 64),
    -- The signing secret as src/webhooks/secret.rs seals it; the key id names how.
    secret_ciphertext          bytea NOT NULL,
    secret_key_id              text NOT NULL,
    -- After a rotation the old secret keeps signing until previous_secret_expires_at.
    previous_secret_ciphertext bytea,
    previous_secret_key_id     text,
    previous_secret_expires_at timestamptz,
    status                     text NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled')),
    disabled_reason            text,
    -- The first failed attempt since the last success; five days of failure disable the endpoint.
    failing_since              timestamptz,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    deleted_at                 timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX webhooks_tenant_created_idx ON app.webhooks (tenant_id, created_at, id);

CREATE TABLE app.webhook_messages (
    tenant_id       uuid NOT NULL,
    -- The `webhook-id` every attempt of this message carries (receivers deduplicate on it).
    id              uuid NOT NULL,
    webhook_id      uuid NOT NULL,
    -- The outbox event fanned out; null for `POST /webhooks/{id}/test`.
    outbox_id       uuid,
    event_type      text NOT NULL,
    -- The exact bytes signed and sent: `{type, timestamp, data}`.
    body            text NOT NULL,
    -- pending: to send (now or at next_attempt_at); succeeded; dead: the retries ran out;
    -- refused: never sendable (over the payload limit), the reason on its delivery row.
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'succeeded', 'dead', 'refused')),
    -- Every attempt ever made; the attempts of the current round of the retry schedule (a
    -- replay starts a new round).
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    round_attempts  integer NOT NULL DEFAULT 0 CHECK (round_attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- The lease of the instance sending it: no other claims it before this time.
    locked_until    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, webhook_id) REFERENCES app.webhooks (tenant_id, id),
    -- An outbox event fanned out twice makes no second message (NULLs are distinct: tests).
    UNIQUE (tenant_id, outbox_id, webhook_id)
);
CREATE INDEX webhook_messages_tenant_created_idx ON app.webhook_messages (tenant_id, created_at);
-- The claim's scan: only messages still to send.
CREATE INDEX webhook_messages_tenant_due_idx ON app.webhook_messages (tenant_id, next_attempt_at)
    WHERE status = 'pending' AND deleted_at IS NULL;

CREATE TABLE app.webhook_deliveries (
    tenant_id     uuid NOT NULL,
    id            uuid NOT NULL,
    message_id    uuid NOT NULL,
    webhook_id    uuid NOT NULL,
    -- The message's attempt number (1 for the first attempt ever).
    attempt       integer NOT NULL CHECK (attempt >= 0),
    -- succeeded; failed (a retry follows at next_retry_at); dead (the last one failed);
    -- refused (never sent: `error` says why).
    status        text NOT NULL CHECK (status IN ('succeeded', 'failed', 'dead', 'refused')),
    response_code integer,
    -- The first 4 KiB of the receiver's answer.
    response_body text CHECK (length(response_body) <= 4096),
    duration_ms   integer CHECK (duration_ms >= 0),
    error         text,
    next_retry_at timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, message_id) REFERENCES app.webhook_messages (tenant_id, id),
    FOREIGN KEY (tenant_id, webhook_id) REFERENCES app.webhooks (tenant_id, id)
);
CREATE INDEX webhook_deliveries_tenant_created_idx ON app.webhook_deliveries (tenant_id, created_at);
CREATE INDEX webhook_deliveries_tenant_webhook_idx
    ON app.webhook_deliveries (tenant_id, webhook_id, created_at, id);
CREATE INDEX webhook_deliveries_tenant_message_idx
    ON app.webhook_deliveries (tenant_id, message_id);

-- The delivery budget of the tenant's current minute, shared by every instance: a claim locks
-- the row, takes what is left of the plan's `webhook_deliveries_per_minute`, and commits.
CREATE TABLE app.webhook_rate_windows (
    tenant_id    uuid NOT NULL REFERENCES app.tenants (id),
    window_start timestamptz NOT NULL,
    used         integer NOT NULL DEFAULT 0 CHECK (used >= 0),
    deleted_at   timestamptz,
    PRIMARY KEY (tenant_id)
);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['webhooks', 'webhook_messages', 'webhook_deliveries', 'webhook_rate_windows'] LOOP
        EXECUTE format('ALTER TABLE app.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE app.%I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY tenant_isolation_select ON app.%I FOR SELECT
            USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid))$p$, t);
        EXECUTE format($p$CREATE POLICY tenant_isolation_insert ON app.%I FOR INSERT
            WITH CHECK (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid))$p$, t);
        EXECUTE format($p$CREATE POLICY tenant_isolation_update ON app.%I FOR UPDATE
            USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid))
            WITH CHECK (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid))$p$, t);
        EXECUTE format($p$CREATE POLICY tenant_isolation_delete ON app.%I FOR DELETE
            USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid))$p$, t);
    END LOOP;
END
$$;

-- Finding which tenants have messages due must look across tenants, which no tenant context
-- can. As with app.claim_outbox (V3): the app role gets no cross-tenant read; it may call this
-- SECURITY DEFINER function (owner-owned, pinned search_path), which returns tenant ids only.
-- The messages themselves are claimed, sent and recorded in a transaction bound to each tenant.
CREATE POLICY webhook_due_select ON app.webhook_messages FOR SELECT TO CURRENT_USER USING (true);
CREATE POLICY webhook_due_select ON app.webhooks FOR SELECT TO CURRENT_USER USING (true);

CREATE FUNCTION app.webhook_due_tenants(p_now timestamptz, p_limit integer)
RETURNS TABLE (tenant_id uuid)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT DISTINCT m.tenant_id
    FROM app.webhook_messages m
    JOIN app.webhooks w ON w.tenant_id = m.tenant_id AND w.id = m.webhook_id
    WHERE m.status = 'pending' AND m.deleted_at IS NULL
      AND m.next_attempt_at <= p_now
      AND (m.locked_until IS NULL OR m.locked_until <= p_now)
      AND w.status = 'enabled' AND w.deleted_at IS NULL
    LIMIT least(greatest(p_limit, 1), 10000)
$$;
REVOKE ALL ON FUNCTION app.webhook_due_tenants(timestamptz, integer) FROM PUBLIC;
