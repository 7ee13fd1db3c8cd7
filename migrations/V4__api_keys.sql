-- API keys of tenants on plans with api_access. Only a SHA-256 of the key is stored; the key
-- itself is shown once at creation.
CREATE TABLE app.api_keys (
    tenant_id    uuid NOT NULL REFERENCES app.tenants (id),
    id           uuid NOT NULL,
    name         text NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    prefix       text NOT NULL,
    key_hash     text NOT NULL,
    role         text NOT NULL DEFAULT 'admin' CHECK (role IN ('admin', 'member')),
    created_by   uuid NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    deleted_at   timestamptz,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, created_by) REFERENCES app.users (tenant_id, id)
);
CREATE UNIQUE INDEX api_keys_tenant_hash_key ON app.api_keys (tenant_id, key_hash);
CREATE INDEX api_keys_tenant_created_idx ON app.api_keys (tenant_id, created_at);
CREATE INDEX api_keys_tenant_created_by_idx ON app.api_keys (tenant_id, created_by);

ALTER TABLE app.api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation_select ON app.api_keys FOR SELECT
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_insert ON app.api_keys FOR INSERT
    WITH CHECK (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_update ON app.api_keys FOR UPDATE
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid))
    WITH CHECK (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_delete ON app.api_keys FOR DELETE
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
