-- The shared schema. Every table that holds tenant data carries tenant_id, leads every key and
-- index with it, and is guarded by row-level security (see V2). Roles and grants are applied by
-- `tenantry migrate` after these files, because their names are configurable.
CREATE SCHEMA IF NOT EXISTS app;

-- Plans are data so operators can change limits without a release.
CREATE TABLE app.plans (
    name         text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,30}$'),
    display_name text NOT NULL,
    rank         integer NOT NULL,
    price_cents  bigint NOT NULL DEFAULT 0,
    currency     text NOT NULL DEFAULT 'usd',
    limits       jsonb NOT NULL DEFAULT '{}'::jsonb,
    features     jsonb NOT NULL DEFAULT '{}'::jsonb,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

INSERT INTO app.plans (name, display_name, rank, price_cents, limits, features) VALUES
  ('free', 'Free', 0, 0,
   '{"max_users": 100, "api_calls_per_month": 100000, "analytics_retention_days": 30}',
   '{"api_access": false, "webhooks": false, "custom_integrations": false}'),
  ('pro', 'Pro', 1, 4900,
   '{"max_users": 1000, "api_calls_per_month": 5000000, "analytics_retention_days": 365}',
   '{"api_access": true, "webhooks": true, "custom_integrations": false}'),
  ('enterprise', 'Enterprise', 2, 49900,
   '{"max_users": null, "api_calls_per_month": null, "analytics_retention_days": 730}',
   '{"api_access": true, "webhooks": true, "custom_integrations": true}');

-- A tenant row is the tenant itself, so it has no tenant_id column; `id` plays that part.
CREATE TABLE app.tenants (
    id             uuid PRIMARY KEY,
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    slug           text NOT NULL CHECK (slug ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    subdomain      text NOT NULL CHECK (subdomain ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    plan           text NOT NULL REFERENCES app.plans (name),
    status         text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    settings       jsonb NOT NULL DEFAULT '{}'::jsonb,
    schema_version integer NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    deleted_at     timestamptz
);
-- Slugs and subdomains stay reserved while a deleted tenant can still be restored.
CREATE UNIQUE INDEX tenants_slug_key ON app.tenants (slug);
CREATE UNIQUE INDEX tenants_subdomain_key ON app.tenants (subdomain);
CREATE INDEX tenants_deleted_at_idx ON app.tenants (deleted_at) WHERE deleted_at IS NOT NULL;
CREATE INDEX tenants_schema_version_idx ON app.tenants (schema_version);

CREATE TABLE app.users (
    tenant_id     uuid NOT NULL REFERENCES app.tenants (id),
    id            uuid NOT NULL,
    email         text NOT NULL CHECK (length(email) BETWEEN 3 AND 320),
    name          text NOT NULL DEFAULT '',
    role          text NOT NULL DEFAULT 'member' CHECK (role IN ('admin', 'member')),
    password_hash text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX users_tenant_email_key ON app.users (tenant_id, lower(email)) WHERE deleted_at IS NULL;
CREATE INDEX users_tenant_created_idx ON app.users (tenant_id, created_at);

CREATE TABLE app.projects (
    tenant_id   uuid NOT NULL REFERENCES app.tenants (id),
    id          uuid NOT NULL,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX projects_tenant_name_key ON app.projects (tenant_id, lower(name)) WHERE deleted_at IS NULL;
CREATE INDEX projects_tenant_created_idx ON app.projects (tenant_id, created_at);

CREATE TABLE app.project_members (
    tenant_id  uuid NOT NULL,
    project_id uuid NOT NULL,
    user_id    uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    PRIMARY KEY (tenant_id, project_id, user_id),
    FOREIGN KEY (tenant_id, project_id) REFERENCES app.projects (tenant_id, id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES app.users (tenant_id, id)
);
CREATE INDEX project_members_tenant_user_idx ON app.project_members (tenant_id, user_id);
CREATE INDEX project_members_tenant_created_idx ON app.project_members (tenant_id, created_at);

CREATE TABLE app.tasks (
    tenant_id   uuid NOT NULL,
    id          uuid NOT NULL,
    project_id  uuid NOT NULL,
    title       text NOT NULL CHECK (length(title) BETWEEN 1 AND 500),
    description text NOT NULL DEFAULT '',
    status      text NOT NULL DEFAULT 'todo' CHECK (status IN ('todo', 'in_progress', 'done')),
    assignee_id uuid,
    due_date    date,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, project_id) REFERENCES app.projects (tenant_id, id),
    -- MATCH SIMPLE: an unassigned task (NULL assignee) is not checked, an assigned one must be
    -- a user of the same tenant.
    FOREIGN KEY (tenant_id, assignee_id) REFERENCES app.users (tenant_id, id)
);
CREATE UNIQUE INDEX tasks_tenant_project_title_key ON app.tasks (tenant_id, project_id, lower(title)) WHERE deleted_at IS NULL;
CREATE INDEX tasks_tenant_created_idx ON app.tasks (tenant_id, created_at);
CREATE INDEX tasks_tenant_project_idx ON app.tasks (tenant_id, project_id, created_at);
CREATE INDEX tasks_tenant_assignee_idx ON app.tasks (tenant_id, assignee_id) WHERE assignee_id IS NOT NULL;
CREATE INDEX tasks_tenant_status_idx ON app.tasks (tenant_id, status);

-- Append-only for the app role (INSERT and SELECT granted, nothing else).
CREATE TABLE app.audit_logs (
    tenant_id   uuid NOT NULL REFERENCES app.tenants (id),
    id          uuid NOT NULL,
    user_id     uuid,
    actor       text NOT NULL DEFAULT 'user',
    action      text NOT NULL,
    resource    text NOT NULL,
    resource_id text,
    changes     jsonb NOT NULL DEFAULT '{}'::jsonb,
    request_id  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX audit_logs_tenant_created_idx ON app.audit_logs (tenant_id, created_at);
CREATE INDEX audit_logs_tenant_resource_idx ON app.audit_logs (tenant_id, resource, created_at);

-- Platform operators' actions (cross-tenant reads, lifecycle changes). Not tenant data: it
-- names the tenant it concerns in target_tenant_id and is never readable by the app role.
CREATE TABLE app.platform_audit_logs (
    id               uuid PRIMARY KEY,
    actor            text NOT NULL,
    action           text NOT NULL,
    target_tenant_id uuid,
    details          jsonb NOT NULL DEFAULT '{}'::jsonb,
    request_id       text,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX platform_audit_logs_created_idx ON app.platform_audit_logs (created_at);
