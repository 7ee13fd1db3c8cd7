-- Stripe billing (issue 13 items 4-6; docs/billing.md). Builds on V8 (app.subscriptions).

-- The subscription item billing moves on a plan change, and the Stripe `created` time of the
-- last event applied to the row (an older event never overwrites it).
ALTER TABLE app.subscriptions
    ADD COLUMN stripe_item_id text,
    ADD COLUMN stripe_event_at timestamptz;

-- What each plan costs in Stripe, as data beside the plan (operators set it; no code names a
-- price): the recurring price of the subscription and, per metered metric, the Billing Meter
-- event name and the overage price used by GET /billing's projection. A plan without a row (or
-- with a null price) gets a Stripe customer but no subscription.
CREATE TABLE app.plan_prices (
    plan            text PRIMARY KEY REFERENCES app.plans (name) ON UPDATE CASCADE,
    stripe_price_id text CHECK (stripe_price_id ~ '^[A-Za-z0-9_]{1,255}$'),
    -- {metric: {"event_name": text, "unit_amount_cents": int >= 0, "unit_size": int >= 1}}:
    -- over the plan's limit, every started block of unit_size units costs unit_amount_cents.
    metered         jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metered) = 'object'),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- One row per tenant: its Stripe customer and its billing (dunning) state. `state_at` is the
-- Stripe `created` time of the event that set the state: an older event never overwrites it.
CREATE TABLE app.billing_accounts (
    tenant_id            uuid NOT NULL REFERENCES app.tenants (id),
    stripe_customer_id   text,
    state                text NOT NULL DEFAULT 'active'
                         CHECK (state IN ('active', 'past_due', 'suspended', 'canceled')),
    state_at             timestamptz NOT NULL DEFAULT '1970-01-01 00:00:00+00',
    past_due_since       timestamptz,
    -- The tenant was suspended by billing (and only then does a payment resume it).
    suspended_by_billing boolean NOT NULL DEFAULT false,
    -- The end of the last billing period whose usage went to Stripe as meter events.
    metered_through      timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    deleted_at           timestamptz,
    PRIMARY KEY (tenant_id)
);
CREATE UNIQUE INDEX billing_accounts_tenant_customer_key
    ON app.billing_accounts (tenant_id, stripe_customer_id);
CREATE INDEX billing_accounts_tenant_created_idx ON app.billing_accounts (tenant_id, created_at);
-- The webhook finds the tenant of a Stripe customer (app.billing_tenant_of below) by a scan of
-- this table, one row per tenant: an index on the customer alone would not lead with tenant_id
-- (DESIGN.md "Keys"), and one row per tenant scans fast for as many tenants as one database holds.

-- Each Stripe event id once per tenant (an event belongs to exactly one tenant, the one its
-- customer maps to): inserted in the transaction of the event's effect, so a retry storm or two
-- instances receiving the same event apply it once.
CREATE TABLE app.stripe_events (
    tenant_id   uuid NOT NULL REFERENCES app.tenants (id),
    event_id    text NOT NULL CHECK (length(event_id) BETWEEN 1 AND 255),
    type        text NOT NULL,
    created     timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    -- What the event did: applied, or ignored as older than the state it would change.
    outcome     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz,
    PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX stripe_events_tenant_created_idx ON app.stripe_events (tenant_id, created_at);

-- Invoices as Stripe reported them (GET /billing/invoices): the fields shown, and the object.
CREATE TABLE app.invoices (
    tenant_id          uuid NOT NULL REFERENCES app.tenants (id),
    id                 uuid NOT NULL,
    stripe_invoice_id  text NOT NULL,
    status             text,
    currency           text NOT NULL,
    amount_due         bigint NOT NULL,
    amount_paid        bigint NOT NULL,
    period_start       timestamptz,
    period_end         timestamptz,
    hosted_invoice_url text,
    -- Stripe's `created` of the invoice, and of the last event applied to it.
    stripe_created     timestamptz NOT NULL,
    event_at           timestamptz NOT NULL,
    object             jsonb NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    deleted_at         timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX invoices_tenant_stripe_key ON app.invoices (tenant_id, stripe_invoice_id);
CREATE INDEX invoices_tenant_created_idx ON app.invoices (tenant_id, created_at);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['billing_accounts', 'stripe_events', 'invoices'] LOOP
        EXECUTE format('ALTER TABLE app.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE app.%I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation_select ON app.%I FOR SELECT
            USING (tenant_id = (select nullif(current_setting(''app.current_tenant'', true), '''')::uuid))', t);
        EXECUTE format('CREATE POLICY tenant_isolation_insert ON app.%I FOR INSERT
            WITH CHECK (tenant_id = (select nullif(current_setting(''app.current_tenant'', true), '''')::uuid))', t);
        EXECUTE format('CREATE POLICY tenant_isolation_update ON app.%I FOR UPDATE
            USING (tenant_id = (select nullif(current_setting(''app.current_tenant'', true), '''')::uuid))
            WITH CHECK (tenant_id = (select nullif(current_setting(''app.current_tenant'', true), '''')::uuid))', t);
        EXECUTE format('CREATE POLICY tenant_isolation_delete ON app.%I FOR DELETE
            USING (tenant_id = (select nullif(current_setting(''app.current_tenant'', true), '''')::uuid))', t);
    END LOOP;
END $$;

-- The two reads billing makes before a tenant context exists go through SECURITY DEFINER
-- functions owned by the owner (this migration runs as the owner), with a pinned search_path,
-- handing back routing data only (the pattern of V3 and V5). The owner-only policy lets them
-- see every tenant's account row; the app role still sees its current tenant's only.
CREATE POLICY billing_accounts_owner_select ON app.billing_accounts FOR SELECT TO CURRENT_USER
    USING (true);

-- The tenant of a Stripe customer (the webhook's only way to a tenant: never the Host or a
-- header of the request).
CREATE FUNCTION app.billing_tenant_of(p_customer text)
RETURNS uuid
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.tenant_id FROM app.billing_accounts a
    WHERE a.stripe_customer_id = p_customer AND a.deleted_at IS NULL
$$;
REVOKE ALL ON FUNCTION app.billing_tenant_of(text) FROM PUBLIC;

-- Accounts past due since before p_cutoff (the grace check), and accounts with a customer
-- (the period-end meter report): tenant ids only.
CREATE FUNCTION app.billing_accounts_past_due(p_cutoff timestamptz)
RETURNS TABLE (tenant_id uuid)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.tenant_id FROM app.billing_accounts a
    WHERE a.state = 'past_due' AND a.past_due_since <= p_cutoff AND a.deleted_at IS NULL
    ORDER BY a.tenant_id
$$;
REVOKE ALL ON FUNCTION app.billing_accounts_past_due(timestamptz) FROM PUBLIC;

CREATE FUNCTION app.billing_customers()
RETURNS TABLE (tenant_id uuid)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.tenant_id FROM app.billing_accounts a
    WHERE a.stripe_customer_id IS NOT NULL AND a.deleted_at IS NULL
    ORDER BY a.tenant_id
$$;
REVOKE ALL ON FUNCTION app.billing_customers() FROM PUBLIC;

-- Billing suspends and resumes through the existing tenant suspension (app.tenants.status),
-- which the app role may not write. This function changes the status of the current tenant
-- only (the transaction's context: nothing else can be named), and only between active and
-- suspended. Returns whether the status changed.
CREATE FUNCTION app.billing_set_tenant_suspended(p_suspended boolean)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_tenant uuid := nullif(current_setting('app.current_tenant', true), '')::uuid;
    v_changed integer;
BEGIN
    IF v_tenant IS NULL THEN
        RAISE EXCEPTION 'no tenant context';
    END IF;
    UPDATE app.tenants
    SET status = CASE WHEN p_suspended THEN 'suspended' ELSE 'active' END, updated_at = now()
    WHERE id = v_tenant AND deleted_at IS NULL
      AND status = CASE WHEN p_suspended THEN 'active' ELSE 'suspended' END;
    GET DIAGNOSTICS v_changed = ROW_COUNT;
    RETURN v_changed > 0;
END
$$;
REVOKE ALL ON FUNCTION app.billing_set_tenant_suspended(boolean) FROM PUBLIC;
