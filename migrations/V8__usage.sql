-- Usage metering (API.md "Usage metering and billing"; docs/usage.md).
--
-- usage_events    every metered event as it was accepted: POST /usage/events and the hourly
--                 samples of `active_users` and `storage_bytes` (their idempotency keys are
--                 `sample:<metric>:<hour>`, so a second instance sampling the same hour adds
--                 nothing). The idempotency key is unique per tenant: a repeat is ignored by
--                 `INSERT ... ON CONFLICT DO NOTHING`, whichever instance receives it.
-- usage_rollups   hourly and daily totals per metric, recomputed from usage_events (never
--                 incremented), so a late event only makes its buckets be computed again.
--                 `api_calls` is not copied here: it stays in the tenant schema's analytics
--                 counters, which are already hourly and daily.
-- subscriptions   the tenant's Stripe subscription, with the seed's columns. Its
--                 current_period_start anchors the billing periods (src/usage/period.rs);
--                 without a row the tenant's created_at does. Billing adds its columns in V9.

CREATE TABLE app.usage_events (
    tenant_id       uuid NOT NULL REFERENCES app.tenants (id),
    id              uuid NOT NULL,
    idempotency_key text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    metric          text NOT NULL CHECK (metric ~ '^[a-z][a-z0-9_]{0,62}$'),
    quantity        bigint NOT NULL CHECK (quantity >= 0),
    occurred_at     timestamptz NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX usage_events_tenant_key ON app.usage_events (tenant_id, idempotency_key);
-- Rollups and period totals read by metric and time; the rollup pass finds its work by
-- received_at.
CREATE INDEX usage_events_tenant_metric_occurred_idx
    ON app.usage_events (tenant_id, metric, occurred_at) INCLUDE (quantity);
CREATE INDEX usage_events_tenant_received_idx ON app.usage_events (tenant_id, received_at);

CREATE TABLE app.usage_rollups (
    tenant_id    uuid NOT NULL REFERENCES app.tenants (id),
    granularity  text NOT NULL CHECK (granularity IN ('hour', 'day')),
    period_start timestamptz NOT NULL,
    metric       text NOT NULL CHECK (metric ~ '^[a-z][a-z0-9_]{0,62}$'),
    quantity     bigint NOT NULL CHECK (quantity >= 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz,
    PRIMARY KEY (tenant_id, granularity, period_start, metric)
);
CREATE INDEX usage_rollups_tenant_created_idx ON app.usage_rollups (tenant_id, created_at);

CREATE TABLE app.subscriptions (
    tenant_id              uuid NOT NULL REFERENCES app.tenants (id),
    stripe_subscription_id text,
    -- Not a foreign key: keys of tenant tables lead with tenant_id, and app.plans has none.
    plan                   text NOT NULL,
    status                 text NOT NULL,
    current_period_start   timestamptz,
    current_period_end     timestamptz,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    deleted_at             timestamptz,
    -- One subscription per tenant.
    PRIMARY KEY (tenant_id)
);
CREATE UNIQUE INDEX subscriptions_tenant_stripe_key
    ON app.subscriptions (tenant_id, stripe_subscription_id);
CREATE INDEX subscriptions_tenant_created_idx ON app.subscriptions (tenant_id, created_at);

ALTER TABLE app.usage_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.usage_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation_select ON app.usage_events FOR SELECT
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_insert ON app.usage_events FOR INSERT
    WITH CHECK (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_update ON app.usage_events FOR UPDATE
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid))
    WITH CHECK (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_delete ON app.usage_events FOR DELETE
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));

ALTER TABLE app.usage_rollups ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.usage_rollups FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation_select ON app.usage_rollups FOR SELECT
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_insert ON app.usage_rollups FOR INSERT
    WITH CHECK (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_update ON app.usage_rollups FOR UPDATE
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid))
    WITH CHECK (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_delete ON app.usage_rollups FOR DELETE
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));

ALTER TABLE app.subscriptions ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.subscriptions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation_select ON app.subscriptions FOR SELECT
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_insert ON app.subscriptions FOR INSERT
    WITH CHECK (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_update ON app.subscriptions FOR UPDATE
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid))
    WITH CHECK (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_delete ON app.subscriptions FOR DELETE
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));

-- Metered quotas per month beside api_calls_per_month: `usage_quotas` maps a metric of
-- POST /usage/events to its limit in a billing period (absent or null: unlimited). Plans are
-- data: operators change it with PUT /admin/plans/{plan}.
UPDATE app.plans SET limits = jsonb_build_object('usage_quotas', '{}'::jsonb) || limits,
    updated_at = now();
