//! API keys: `tk_<tenant id hex>_<secret>`. The tenant part lets the key be looked up under
//! that tenant's row-level security (no cross-tenant lookup by hash is ever needed); only a
//! SHA-256 of the whole key is stored. Admins create, list and revoke their tenant's keys
//! through the operations below; [`verify`] finds the user and role a presented key acts as.

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{stored_role, AuthError, Caller, Role};
use crate::actors::TenantOp;
use crate::audit::{self, AuditAction};
use crate::db::{begin_tenant_tx, DbError, PgPool, TenantTx};
use crate::input::Text;
use crate::page::{CursorKey, Keyset, Page, TimeKey};

pub const PREFIX: &str = "tk_";

pub struct NewKey {
    pub key: String,
    pub hash: String,
    /// Enough of the key to recognise it in a listing, never enough to use it.
    pub display_prefix: String,
}

pub fn generate(tenant: Uuid) -> NewKey {
    let key = format!("{PREFIX}{}_{}", tenant.simple(), super::random_token(40));
    let display_prefix = key.chars().take(PREFIX.len() + 32 + 5).collect();
    NewKey {
        hash: hash(&key),
        key,
        display_prefix,
    }
}

pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The tenant a key claims to belong to; the claim is only trusted once the hash is found in
/// that tenant's rows.
pub fn tenant_of(key: &str) -> Option<Uuid> {
    let rest = key.strip_prefix(PREFIX)?;
    let (tenant_hex, secret) = rest.split_once('_')?;
    if tenant_hex.len() != 32 || secret.len() < 20 {
        return None;
    }
    Uuid::try_parse(tenant_hex).ok()
}

/// The user and role the live key with this hash acts as, if `tenant` has one; its
/// `last_used_at` is updated. A key whose creator was deleted acts as no one.
pub async fn verify(pool: &PgPool, tenant: Uuid, hash: &str) -> Result<(Uuid, Role), AuthError> {
    let mut conn = pool.get().await.map_err(DbError::from)?;
    let tx = begin_tenant_tx(&mut conn, tenant).await?;
    let stmt = tx
        .prepare_cached(
            "update app.api_keys k set last_used_at = now() from app.users u \
             where k.tenant_id = $1 and k.key_hash = $2 and k.deleted_at is null \
             and u.tenant_id = k.tenant_id and u.id = k.created_by and u.deleted_at is null \
             returning k.created_by, k.role",
        )
        .await?;
    let row = tx.query_opt(&stmt, &[&tenant, &hash]).await?;
    tx.commit().await?;
    let Some(row) = row else {
        return Err(AuthError::InvalidToken("unknown or revoked API key".into()));
    };
    Ok((row.get(0), stored_role("api_keys.role", row.get(1))?))
}

#[derive(Serialize, ToSchema)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub role: Role,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedApiKey {
    pub id: Uuid,
    /// Shown once; only its hash is stored.
    pub key: String,
    pub name: String,
    pub prefix: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

/// A new key of the caller's tenant, acting as the calling admin with `role`. The plan gate
/// (`api_access`) is the caller's to check first: it reads plans, which the tenant's
/// transaction does not.
pub struct CreateApiKey {
    pub name: Text,
    pub role: Role,
}

impl TenantOp for CreateApiKey {
    type Output = CreatedApiKey;
    type Error = AuthError;
    const OPENS_TENANT_SCHEMA: bool = false;

    fn run<'a>(
        self,
        tx: &'a TenantTx<'a>,
        caller: &'a Caller,
    ) -> BoxFuture<'a, Result<CreatedApiKey, AuthError>> {
        Box::pin(async move {
            let user = caller.admin()?;
            let id = Uuid::now_v7();
            let key = generate(caller.tenant_id);
            let row = tx
                .query_one(
                    "insert into app.api_keys (tenant_id, id, name, prefix, key_hash, role, created_by) \
                     values ($1, $2, $3, $4, $5, $6, $7) returning created_at",
                    &[
                        &caller.tenant_id,
                        &id,
                        &self.name,
                        &key.display_prefix,
                        &key.hash,
                        &self.role.as_str(),
                        &user,
                    ],
                )
                .await?;
            let after = serde_json::json!({"id": id, "name": self.name, "prefix": key.display_prefix, "role": self.role});
            audit::record(
                tx,
                caller,
                audit::Entry {
                    action: AuditAction::Create,
                    resource: "api_key",
                    resource_id: id.to_string(),
                    before: None,
                    after: Some(after),
                    extra: None,
                },
            )
            .await?;
            Ok(CreatedApiKey {
                id,
                key: key.key,
                name: self.name.into_string(),
                prefix: key.display_prefix,
                role: self.role,
                created_at: row.get(0),
            })
        })
    }
}

/// The live keys of the caller's tenant, oldest first.
/// In creation order.
static API_KEYS: Keyset<TimeKey> = Keyset::ascending("api keys", &["created_at", "id"]);

/// One page of the caller's tenant's live keys (admins only).
pub struct ListApiKeys {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    pub cursors: CursorKey,
}

impl TenantOp for ListApiKeys {
    type Output = Page<ApiKey>;
    type Error = AuthError;
    const OPENS_TENANT_SCHEMA: bool = false;

    fn run<'a>(
        self,
        tx: &'a TenantTx<'a>,
        caller: &'a Caller,
    ) -> BoxFuture<'a, Result<Page<ApiKey>, AuthError>> {
        Box::pin(async move {
            caller.admin()?;
            let page = API_KEYS.parse(&self.cursors, self.limit, self.cursor.as_deref())?;
            page.fetch(
                tx,
                "select id, name, prefix, role, created_by, created_at, last_used_at \
                 from app.api_keys where tenant_id = $1 and deleted_at is null",
                &[&caller.tenant_id],
                |r| {
                    Ok(ApiKey {
                        id: r.get(0),
                        name: r.get(1),
                        prefix: r.get(2),
                        role: stored_role("api_keys.role", r.get(3))?,
                        created_by: r.get(4),
                        created_at: r.get(5),
                        last_used_at: r.get(6),
                    })
                },
                |k| TimeKey {
                    at: k.created_at,
                    id: k.id,
                },
            )
            .await
        })
    }
}

/// Revokes a live key of the caller's tenant; false when there is none with this id. The
/// caches that hold the key are the caller's to invalidate once this has committed.
pub struct RevokeApiKey {
    pub id: Uuid,
}

impl TenantOp for RevokeApiKey {
    type Output = bool;
    type Error = AuthError;
    const OPENS_TENANT_SCHEMA: bool = false;

    fn run<'a>(
        self,
        tx: &'a TenantTx<'a>,
        caller: &'a Caller,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move {
            caller.admin()?;
            let revoked = tx
                .execute(
                    "update app.api_keys set deleted_at = now() where tenant_id = $1 and id = $2 and deleted_at is null",
                    &[&caller.tenant_id, &self.id],
                )
                .await?;
            if revoked == 1 {
                audit::record(
                    tx,
                    caller,
                    audit::Entry {
                        action: AuditAction::Delete,
                        resource: "api_key",
                        resource_id: self.id.to_string(),
                        before: Some(serde_json::json!({"id": self.id})),
                        after: None,
                        extra: None,
                    },
                )
                .await?;
            }
            Ok(revoked == 1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_tenant() {
        let tenant = Uuid::now_v7();
        let k = generate(tenant);
        assert_eq!(tenant_of(&k.key), Some(tenant));
        assert_eq!(hash(&k.key), k.hash);
        assert!(k.key.starts_with(&k.display_prefix));
        assert_eq!(tenant_of("tk_nothex_secretsecretsecretsecret"), None);
        assert_eq!(tenant_of("eyJhbGciOi"), None);
    }
}
