//! The tenant audit trail (DESIGN.md "Audit"): every create, update and delete of tenant data
//! writes one `app.audit_logs` row in the same transaction as the change, with the state before
//! and after it, who did it and the request id. The app role may only INSERT and SELECT there,
//! so the trail is append-only for everything on the request path. Tenant admins read it
//! through `domain::audit_logs`.

use crate::db::TenantTx;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio_postgres::Row;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Caller;
use crate::db::DbError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditAction {
    Create,
    Update,
    Delete,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Create => "create",
            AuditAction::Update => "update",
            AuditAction::Delete => "delete",
        }
    }
}

pub struct Entry {
    pub action: AuditAction,
    /// Singular resource name: `user`, `project`, `project_member`, `task`.
    pub resource: &'static str,
    pub resource_id: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    /// Further members of `changes` (e.g. `password_changed`, cascades).
    pub extra: Option<Map<String, Value>>,
}

/// Secrets never reach the trail, whatever representation a caller passes in.
const REDACTED_KEYS: &[&str] = &["password", "password_hash", "secret", "key_hash"];

fn redact(value: Option<Value>) -> Value {
    match value {
        Some(Value::Object(mut map)) => {
            for key in REDACTED_KEYS {
                map.remove(*key);
            }
            Value::Object(map)
        }
        Some(other) => other,
        None => Value::Null,
    }
}

/// The entry's `changes` document, and what else its row needs.
fn split(entry: Entry) -> (AuditAction, &'static str, String, Value) {
    let mut changes = Map::new();
    changes.insert("before".into(), redact(entry.before));
    changes.insert("after".into(), redact(entry.after));
    for (k, v) in entry.extra.unwrap_or_default() {
        changes.entry(k).or_insert(v);
    }
    (
        entry.action,
        entry.resource,
        entry.resource_id,
        Value::Object(changes),
    )
}

pub async fn record(tx: &TenantTx<'_>, caller: &Caller, entry: Entry) -> Result<(), DbError> {
    let (action, resource, resource_id, changes) = split(entry);
    let stmt = tx
        .prepare_cached(
            "insert into app.audit_logs \
             (tenant_id, id, user_id, actor, action, resource, resource_id, changes, request_id) \
             values ($1, $2, $3, 'user', $4, $5, $6, $7, $8)",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &caller.tenant_id,
            &Uuid::now_v7(),
            &caller.user_id,
            &action.as_str(),
            &resource,
            &resource_id,
            &changes,
            &caller.request_id,
        ],
    )
    .await?;
    Ok(())
}

/// An operator's change of a tenant's data, in the operator's transaction (the admin role):
/// the tenant's own trail shows it with actor `platform` and no user.
pub async fn record_platform(
    client: &impl deadpool_postgres::GenericClient,
    tenant: Uuid,
    entry: Entry,
    request_id: Option<&str>,
) -> Result<(), DbError> {
    let (action, resource, resource_id, changes) = split(entry);
    client
        .execute(
            "insert into app.audit_logs \
             (tenant_id, id, actor, action, resource, resource_id, changes, request_id) \
             values ($1, $2, 'platform', $3, $4, $5, $6, $7)",
            &[
                &tenant,
                &Uuid::now_v7(),
                &action.as_str(),
                &resource,
                &resource_id,
                &changes,
                &request_id,
            ],
        )
        .await?;
    Ok(())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditLog {
    pub id: Uuid,
    pub user_id: Option<Uuid>,
    /// `user` for tenant users, `platform` for operator actions on the tenant.
    pub actor: String,
    pub action: String,
    pub resource: String,
    pub resource_id: Option<String>,
    /// `{before, after}`; secrets are never recorded.
    #[schema(value_type = Object)]
    pub changes: Value,
    pub request_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

pub const AUDIT_COLUMNS: &str =
    "id, user_id, actor, action, resource, resource_id, changes, request_id, created_at";

impl AuditLog {
    pub fn from_row(row: &Row) -> AuditLog {
        let mut changes: Value = row.get("changes");
        // Rows written before this module (provisioning) share the {before, after} shape;
        // guarantee it for every row a client reads.
        if let Value::Object(map) = &mut changes {
            map.entry("before").or_insert(Value::Null);
            map.entry("after").or_insert(Value::Null);
        } else {
            changes = json!({"before": null, "after": null});
        }
        AuditLog {
            id: row.get("id"),
            user_id: row.get("user_id"),
            actor: row.get("actor"),
            action: row.get("action"),
            resource: row.get("resource"),
            resource_id: row.get("resource_id"),
            changes,
            request_id: row.get("request_id"),
            created_at: row.get("created_at"),
        }
    }
}
