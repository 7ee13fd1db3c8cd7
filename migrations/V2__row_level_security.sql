-- Fail closed: no context, or the '' a reused connection reports after a transaction-local
-- set_config, compares against NULL and matches no row. The sub-select is evaluated once per
-- statement (an InitPlan), not once per row.
DO $$
DECLARE
    t text;
    cmd text;
BEGIN
    FOREACH t IN ARRAY ARRAY['users', 'projects', 'project_members', 'tasks', 'audit_logs'] LOOP
        EXECUTE format('ALTER TABLE app.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE app.%I FORCE ROW LEVEL SECURITY', t);
        FOREACH cmd IN ARRAY ARRAY['select', 'insert', 'update', 'delete'] LOOP
            IF cmd = 'insert' THEN
                EXECUTE format(
                    'CREATE POLICY tenant_isolation_%s ON app.%I FOR INSERT WITH CHECK '
                    '(tenant_id = (select nullif(current_setting(''app.current_tenant'', true), '''')::uuid))',
                    cmd, t);
            ELSIF cmd = 'update' THEN
                EXECUTE format(
                    'CREATE POLICY tenant_isolation_%s ON app.%I FOR UPDATE USING '
                    '(tenant_id = (select nullif(current_setting(''app.current_tenant'', true), '''')::uuid)) WITH CHECK '
                    '(tenant_id = (select nullif(current_setting(''app.current_tenant'', true), '''')::uuid))',
                    cmd, t);
            ELSE
                EXECUTE format(
                    'CREATE POLICY tenant_isolation_%s ON app.%I FOR %s USING '
                    '(tenant_id = (select nullif(current_setting(''app.current_tenant'', true), '''')::uuid))',
                    cmd, t, upper(cmd));
            END IF;
        END LOOP;
    END LOOP;
END $$;

-- Tenants: every tenant is visible for resolution (slug, subdomain, id lookups happen before a
-- context exists), but only the current tenant's row may be changed through the app role.
ALTER TABLE app.tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenants_resolve ON app.tenants FOR SELECT USING (true);
CREATE POLICY tenants_update_own ON app.tenants FOR UPDATE
    USING (id = (select nullif(current_setting('app.current_tenant', true), '')::uuid))
    WITH CHECK (id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
-- The owner provisions and purges tenants; it is subject to FORCE like everyone but superusers.
CREATE POLICY tenants_owner_insert ON app.tenants FOR INSERT WITH CHECK (true);
CREATE POLICY tenants_owner_delete ON app.tenants FOR DELETE USING (true);
