-- app.tenants was readable in full by the app role (policy tenants_resolve, USING (true)), so
-- that a request could be resolved by id, slug or subdomain before any tenant context exists.
-- Those rows carry every tenant's plan, status and settings: an unfiltered query on the request
-- path saw all of them, the one table that the RLS backstop did not wall off. Now the app role
-- sees its current tenant's row only, and the two reads that must happen before a context
-- exists go through SECURITY DEFINER functions owned by the owner role (this migration runs as
-- the owner), with a pinned search_path, that hand back routing data only, never settings:
-- resolution of one live tenant, and the list of live tenants with their plans for the
-- retention job. `tenantry migrate` grants both to the app role; PUBLIC may not run them.
DROP POLICY tenants_resolve ON app.tenants;
CREATE POLICY tenants_select_own ON app.tenants FOR SELECT
    USING (id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
-- The owner reads every tenant (provisioning, migrations, purge, and the functions below).
CREATE POLICY tenants_owner_select ON app.tenants FOR SELECT TO CURRENT_USER USING (true);

-- Exactly one of the keys is given; a deleted tenant does not resolve.
CREATE FUNCTION app.resolve_tenant(p_id uuid, p_slug text, p_subdomain text)
RETURNS TABLE (id uuid, slug text, subdomain text, plan text, suspended boolean)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.id, t.slug, t.subdomain, t.plan, t.status = 'suspended'
    FROM app.tenants t
    WHERE t.id = p_id AND t.deleted_at IS NULL
    UNION ALL
    SELECT t.id, t.slug, t.subdomain, t.plan, t.status = 'suspended'
    FROM app.tenants t
    WHERE t.slug = p_slug AND t.deleted_at IS NULL
    UNION ALL
    SELECT t.id, t.slug, t.subdomain, t.plan, t.status = 'suspended'
    FROM app.tenants t
    WHERE t.subdomain = p_subdomain AND t.deleted_at IS NULL
$$;
REVOKE ALL ON FUNCTION app.resolve_tenant(uuid, text, text) FROM PUBLIC;

CREATE FUNCTION app.live_tenant_plans()
RETURNS TABLE (id uuid, plan text)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.id, t.plan FROM app.tenants t WHERE t.deleted_at IS NULL ORDER BY t.id
$$;
REVOKE ALL ON FUNCTION app.live_tenant_plans() FROM PUBLIC;
