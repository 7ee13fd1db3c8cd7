-- Issue 16 (docs/scale-out.md): the cross-tenant functions that read a distributed table with a
-- parameter in a filter other than tenant_id are written in PL/pgSQL. On Citus a SQL-language
-- function's statement is planned with its parameters unresolved, and a multi-shard query
-- with such a parameter cannot be planned ("could not create distributed plan"); PL/pgSQL
-- hands Citus each statement with its values bound. Same signatures, results, owner, grants,
-- SECURITY DEFINER and pinned search_path as before; on plain PostgreSQL neither form is
-- inlined (SECURITY DEFINER and SET prevent it), so the caller sees the same plan.
-- `#variable_conflict use_column`: the OUT column tenant_id and the tables' tenant_id are
-- always qualified, but a bare name would mean the column.

CREATE OR REPLACE FUNCTION app.outbox_pending_tenants(p_limit integer)
RETURNS TABLE (tenant_id uuid)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT DISTINCT o.tenant_id
    FROM app.outbox o
    WHERE o.processed_at IS NULL AND o.failed_at IS NULL AND o.deleted_at IS NULL
      AND o.next_attempt_at <= now()
    LIMIT least(greatest(p_limit, 1), 10000);
END
$$;

CREATE OR REPLACE FUNCTION app.webhook_due_tenants(p_now timestamptz, p_limit integer)
RETURNS TABLE (tenant_id uuid)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT DISTINCT m.tenant_id
    FROM app.webhook_messages m
    JOIN app.webhooks w ON w.tenant_id = m.tenant_id AND w.id = m.webhook_id
    WHERE m.status = 'pending' AND m.deleted_at IS NULL
      AND m.next_attempt_at <= p_now
      AND (m.locked_until IS NULL OR m.locked_until <= p_now)
      AND w.status = 'enabled' AND w.deleted_at IS NULL
    LIMIT least(greatest(p_limit, 1), 10000);
END
$$;

CREATE OR REPLACE FUNCTION app.billing_tenant_of(p_customer text)
RETURNS uuid
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_tenant uuid;
BEGIN
    SELECT a.tenant_id INTO v_tenant FROM app.billing_accounts a
    WHERE a.stripe_customer_id = p_customer AND a.deleted_at IS NULL;
    RETURN v_tenant;
END
$$;

CREATE OR REPLACE FUNCTION app.billing_accounts_past_due(p_cutoff timestamptz)
RETURNS TABLE (tenant_id uuid)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT a.tenant_id FROM app.billing_accounts a
    WHERE a.state = 'past_due' AND a.past_due_since <= p_cutoff AND a.deleted_at IS NULL
    ORDER BY a.tenant_id;
END
$$;
