-- Tenant configuration (API.md "Plans, settings, branding, feature flags"; docs/configuration-model.md).

-- Every plan names every limit; null means unlimited. Values already set are kept (the
-- defaults are on the left of ||). Request rates: free 600 and pro 6,000 a minute, enterprise
-- unlimited; webhook deliveries: API.md's 100 a minute per tenant on every plan.
UPDATE app.plans SET limits = jsonb_build_object(
        'max_users', null,
        'api_calls_per_month', null,
        'analytics_retention_days', null,
        'rate_limit_per_minute', CASE name WHEN 'free' THEN to_jsonb(600) WHEN 'pro' THEN to_jsonb(6000) END,
        'webhook_deliveries_per_minute', 100
    ) || limits,
    features = '{"api_access": false, "webhooks": false, "custom_integrations": false}'::jsonb || features,
    updated_at = now();

ALTER TABLE app.plans
    ADD CONSTRAINT plans_limits_object CHECK (jsonb_typeof(limits) = 'object'),
    ADD CONSTRAINT plans_features_object CHECK (jsonb_typeof(features) = 'object'),
    ADD CONSTRAINT plans_price_cents_check CHECK (price_cents >= 0),
    ADD CONSTRAINT plans_currency_check CHECK (currency ~ '^[a-z]{3}$');

-- The history of a tenant's settings (PATCH /settings, PUT /settings/branding): one row per
-- change, numbered from 1 per tenant, with the settings before and after it. Append-only for
-- the app role, like the audit trail beside it.
CREATE TABLE app.settings_versions (
    tenant_id  uuid NOT NULL REFERENCES app.tenants (id),
    version    integer NOT NULL CHECK (version > 0),
    settings   jsonb NOT NULL,
    previous   jsonb NOT NULL,
    -- What changed it: `settings` (PATCH /settings) or `branding` (PUT /settings/branding).
    change     text NOT NULL CHECK (change IN ('settings', 'branding')),
    user_id    uuid,
    request_id text,
    created_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    PRIMARY KEY (tenant_id, version)
);
CREATE INDEX settings_versions_tenant_created_idx ON app.settings_versions (tenant_id, created_at);

ALTER TABLE app.settings_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.settings_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation_select ON app.settings_versions FOR SELECT
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_insert ON app.settings_versions FOR INSERT
    WITH CHECK (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_update ON app.settings_versions FOR UPDATE
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid))
    WITH CHECK (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_delete ON app.settings_versions FOR DELETE
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
