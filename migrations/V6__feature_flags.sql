-- Feature flags (src/flags, docs/flags.md). A definition is platform data like app.plans: one
-- row per flag, changed by operators only. Every version of a definition is kept in
-- app.flag_versions (history and rollback). A tenant's overrides are tenant data: tenant_id,
-- keys led by it, row-level security forced.

-- Keys are also URL path segments and OpenFeature flag keys; dots and capitals are allowed so
-- that keys of other systems (`Feature.flexibleRollout.10`) fit as they are.
CREATE TABLE app.flags (
    key             text PRIMARY KEY CHECK (key ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$'),
    description     text NOT NULL DEFAULT '' CHECK (length(description) <= 1000),
    -- Any JSON value but null; plan values and overrides hold values of the same JSON type.
    default_value   jsonb NOT NULL CHECK (jsonb_typeof(default_value) <> 'null'),
    -- {plan name: value}; plan names are checked against app.plans when written.
    plan_values     jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(plan_values) = 'object'),
    rollout_percent smallint CHECK (rollout_percent BETWEEN 0 AND 100),
    version         integer NOT NULL CHECK (version >= 1),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Append-only history: version n of a flag is the definition as it was after its n-th change.
-- A rollback writes a new version equal to an old one (restored_version names it).
CREATE TABLE app.flag_versions (
    flag_key         text NOT NULL REFERENCES app.flags (key),
    version          integer NOT NULL CHECK (version >= 1),
    description      text NOT NULL,
    default_value    jsonb NOT NULL,
    plan_values      jsonb NOT NULL,
    rollout_percent  smallint,
    change           text NOT NULL CHECK (change IN ('create', 'update', 'rollback')),
    restored_version integer,
    actor            text NOT NULL,
    request_id       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (flag_key, version)
);

-- One row per tenant and flag. DELETE of an override marks the row (deleted_at) and a later
-- PUT brings it back with the next version, so `version` counts every change of the override.
-- No foreign key to app.flags: a key of a tenant table must lead with tenant_id (DESIGN.md);
-- definitions are never deleted, and evaluation starts from them, so an override without a
-- definition is never read.
CREATE TABLE app.flag_overrides (
    tenant_id  uuid NOT NULL REFERENCES app.tenants (id),
    flag_key   text NOT NULL,
    value      jsonb NOT NULL CHECK (jsonb_typeof(value) <> 'null'),
    version    integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    PRIMARY KEY (tenant_id, flag_key)
);
CREATE INDEX flag_overrides_tenant_created_idx ON app.flag_overrides (tenant_id, created_at);

ALTER TABLE app.flag_overrides ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.flag_overrides FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation_select ON app.flag_overrides FOR SELECT
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_insert ON app.flag_overrides FOR INSERT
    WITH CHECK (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_update ON app.flag_overrides FOR UPDATE
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid))
    WITH CHECK (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_delete ON app.flag_overrides FOR DELETE
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
