-- One tenant's own schema. Runs with search_path set to the new schema inside the provisioning
-- transaction, so names stay unqualified. Keep the relation count small: every relation here is
-- multiplied by the number of tenants in the catalog and in each connection's relation cache.
CREATE TABLE events (
    tenant_id   uuid NOT NULL,
    id          uuid NOT NULL,
    event_type  text NOT NULL,
    user_id     uuid,
    feature     text,
    metadata    jsonb,
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX events_tenant_occurred_idx ON events (tenant_id, occurred_at);

ALTER TABLE events ENABLE ROW LEVEL SECURITY;
ALTER TABLE events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation_select ON events FOR SELECT
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_insert ON events FOR INSERT
    WITH CHECK (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_update ON events FOR UPDATE
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid))
    WITH CHECK (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_isolation_delete ON events FOR DELETE
    USING (tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid));
