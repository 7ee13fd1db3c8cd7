//! Provisioning: the tenant row, its default settings, its admin user and its schema are
//! created in one owner transaction, so a failure at any step leaves nothing behind. Duplicate
//! slugs and subdomains are refused by the unique indexes, which also settles concurrent
//! requests for the same slug (exactly one commits).

use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::model::{default_settings, Tenant, TENANT_COLUMNS};
use super::{validate, TenancyError};
use crate::auth::{password, JwtKeys, Role};
use crate::config::Config;
use crate::db::migrate::create_tenant_schema;
use crate::db::template::TenantTemplate;
use crate::db::{DbError, PgPool};
use crate::error::FieldError;
use crate::input::Text;

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    pub name: Text,
    pub slug: Text,
    pub subdomain: Option<Text>,
    pub plan: Option<Text>,
    pub admin_email: Text,
    pub admin_password: Option<Text>,
}

#[derive(Debug)]
pub struct Provisioned {
    pub tenant: Tenant,
    pub admin_id: Uuid,
    pub admin_email: String,
    pub token: String,
    /// Only when the password was generated: it is shown once and never stored in clear.
    pub generated_password: Option<String>,
}

pub struct ProvisionContext<'a> {
    pub owner: &'a PgPool,
    pub template: &'a TenantTemplate,
    pub config: &'a Config,
    pub jwt: &'a JwtKeys,
}

/// Where a test may make provisioning fail on purpose, to prove the rollback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultPoint {
    None,
    AfterSchemaCreated,
}

pub async fn provision(
    ctx: &ProvisionContext<'_>,
    new: NewTenant,
    request_id: Option<&str>,
) -> Result<Provisioned, TenancyError> {
    provision_with_fault(ctx, new, request_id, FaultPoint::None).await
}

pub fn validate(new: &NewTenant) -> Result<(String, String), TenancyError> {
    let mut errors = Vec::new();
    validate::name("name", &new.name, &mut errors);
    validate::slug("slug", &new.slug, &mut errors);
    let subdomain = new.subdomain.as_deref().unwrap_or(&new.slug).to_string();
    if new.subdomain.is_some() {
        validate::slug("subdomain", &subdomain, &mut errors);
    }
    let plan = new.plan.as_deref().unwrap_or("free").to_string();
    validate::plan("plan", &plan, &mut errors);
    validate::email("admin_email", &new.admin_email, &mut errors);
    if let Some(pw) = &new.admin_password {
        validate::password("admin_password", pw, &mut errors);
    }
    if errors.is_empty() {
        Ok((subdomain, plan))
    } else {
        Err(TenancyError::Validation(errors))
    }
}

pub async fn provision_with_fault(
    ctx: &ProvisionContext<'_>,
    new: NewTenant,
    request_id: Option<&str>,
    fault: FaultPoint,
) -> Result<Provisioned, TenancyError> {
    let (subdomain, plan) = validate(&new)?;
    let (password, generated_password) = match new.admin_password.clone() {
        Some(pw) => (pw.into_string(), None),
        None => {
            let pw = password::generate();
            (pw.clone(), Some(pw))
        }
    };
    // The hash (CPU on this process) and the schema DDL (mostly waiting on PostgreSQL) are the
    // two halves of provisioning: run them side by side and take the hash just before the
    // admin row needs it (bench/tenant_schemas measures both).
    let hashing = password::hash_blocking(password);

    let tenant_id = Uuid::now_v7();
    let admin_id = Uuid::now_v7();
    let admin_email = new.admin_email.trim().to_string();
    let conn = ctx.owner.get().await?;
    let citus = conn.is_citus();
    // On Citus provisionings run one at a time (`serialize_provisioning`) and hold their
    // connection longer (the DDL goes to the workers): the hash is taken first, with the
    // connection back in the pool, so that neither the lock nor the pool waits on this
    // process's CPU.
    let (mut conn, hashing) = if citus {
        drop(conn);
        let hash = hashing.await;
        (
            ctx.owner.get().await?,
            futures_util::future::Either::Left(std::future::ready(hash)),
        )
    } else {
        (conn, futures_util::future::Either::Right(hashing))
    };
    conn.touch_tenant_schema(tenant_id);
    let tx = conn.transaction().await?;
    if citus {
        crate::db::citus::serialize_provisioning(&*tx).await?;
    }
    crate::db::tenant_tx::set_tenant_in_tx(&*tx, tenant_id).await?;
    let row = tx
        .query_one(
            &format!(
                "insert into app.tenants (id, name, slug, subdomain, plan, settings) \
                 values ($1, $2, $3, $4, $5, $6) returning {TENANT_COLUMNS}"
            ),
            &[
                &tenant_id,
                &new.name.trim(),
                &new.slug,
                &subdomain,
                &plan,
                &default_settings(),
            ],
        )
        .await?;
    let mut tenant = Tenant::from_row(&row)?;
    tx.execute(
        "insert into app.audit_logs (tenant_id, id, actor, action, resource, resource_id, changes, request_id) \
         values ($1, $2, 'platform', 'create', 'tenant', $3, $4, $5)",
        &[
            &tenant_id,
            &Uuid::now_v7(),
            &tenant_id.to_string(),
            &json!({"before": null, "after": tenant}),
            &request_id,
        ],
    )
    .await?;
    super::lifecycle::record_platform_action(
        &tx,
        "operator",
        "tenant.create",
        Some(tenant_id),
        json!({"slug": tenant.slug, "plan": tenant.plan}),
        request_id,
    )
    .await?;
    create_tenant_schema(&tx, tenant_id, ctx.template, ctx.config).await?;
    if citus {
        crate::db::citus::distribute_tenant_schema(&*tx, tenant_id).await?;
    }
    let password_hash = hashing.await?;
    tx.execute(
        "insert into app.users (tenant_id, id, email, name, role, password_hash) \
         values ($1, $2, $3, 'Administrator', 'admin', $4)",
        &[&tenant_id, &admin_id, &admin_email, &password_hash],
    )
    .await?;
    // The Stripe customer and subscription come later, from the outbox: never waited for here.
    let stripe_sync = ctx.config.billing.stripe_secret_key.is_some();
    crate::billing::outbound::on_provisioned(&tx, tenant_id, stripe_sync).await?;
    if fault == FaultPoint::AfterSchemaCreated {
        return Err(TenancyError::InjectedFault);
    }
    tx.commit().await.map_err(DbError::from)?;
    tenant.schema_version = ctx.template.latest_version();

    let (token, _) = ctx.jwt.issue(admin_id, tenant_id, Role::Admin)?;
    Ok(Provisioned {
        tenant,
        admin_id,
        admin_email,
        token,
        generated_password,
    })
}

/// Sets a new password for a tenant user (the demo command uses it to print a fresh login).
pub async fn reset_password(
    owner: &PgPool,
    tenant: Uuid,
    email: &str,
    new_password: &str,
) -> Result<Uuid, TenancyError> {
    let mut errors = Vec::new();
    validate::password("password", new_password, &mut errors);
    if !errors.is_empty() {
        return Err(TenancyError::Validation(errors));
    }
    let hash = password::hash_blocking(new_password.to_string()).await?;
    let mut conn = owner.get().await?;
    let tx = crate::db::begin_tenant_tx(&mut conn, tenant).await?;
    let row = tx
        .query_opt(
            "update app.users set password_hash = $3, updated_at = now() \
             where tenant_id = $1 and lower(email) = lower($2) and deleted_at is null returning id",
            &[&tenant, &email, &hash],
        )
        .await?;
    let Some(row) = row else {
        return Err(TenancyError::Validation(vec![FieldError::new(
            "email",
            "no such user in this tenant",
        )]));
    };
    tx.commit().await?;
    Ok(row.get(0))
}
