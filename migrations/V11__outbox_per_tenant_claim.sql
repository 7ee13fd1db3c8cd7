-- Issue 17: the outbox worker claims and processes each tenant's due events in one transaction
-- bound to that tenant (`WHERE tenant_id = $1`, an equality filter Citus can route to one
-- shard, and a fair share per tenant), instead of one cross-tenant claim and a transaction per
-- event. Inside a tenant transaction the app role reads and locks that tenant's rows under the
-- ordinary policies, so the only cross-tenant read left is which tenants have work: this
-- function, SECURITY DEFINER like app.claim_outbox (V3) and app.webhook_due_tenants (V10), owned
-- by the owner role, pinned search_path, tenant ids only, executable by the app role only.
CREATE FUNCTION app.outbox_pending_tenants(p_limit integer)
RETURNS TABLE (tenant_id uuid)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT DISTINCT o.tenant_id
    FROM app.outbox o
    WHERE o.processed_at IS NULL AND o.failed_at IS NULL AND o.deleted_at IS NULL
      AND o.next_attempt_at <= now()
    LIMIT least(greatest(p_limit, 1), 10000)
$$;
REVOKE ALL ON FUNCTION app.outbox_pending_tenants(integer) FROM PUBLIC;

-- The webhook rate limit becomes a sliding window (docs/webhooks.md "Rate limit"): the row keeps
-- the claims of the last 60 seconds, each with its time, and a claim takes only what the sum
-- of those leaves of the plan's limit, so any 60 s holds at most the limit, all instances
-- together (the row is locked by each claim). window_start and used stay: the time of the last
-- charge and the sum of the window at that moment, for operators.
ALTER TABLE app.webhook_rate_windows
    ADD COLUMN charged_at timestamptz[] NOT NULL DEFAULT '{}',
    ADD COLUMN charged integer[] NOT NULL DEFAULT '{}';
