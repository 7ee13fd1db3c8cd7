//! Users of a tenant. Admins manage them; every user may read them and change their own name,
//! email and password. The seat limit of the tenant's plan and the "at least one admin" rule are
//! checked under a per-tenant advisory lock, so two concurrent requests cannot both take the last
//! seat or both remove the last two admins.

use crate::db::TenantTx;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio_postgres::Row;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{
    check, execute, query_one, read_row, record_change, tenant_op, text, Change, DomainError, Read,
};
use crate::audit::AuditAction;
use crate::auth::Caller;
use crate::auth::{AccessError, Role};
use crate::input::Text;
use crate::page::{CursorKey, Keyset, Page, TimeKey};
use crate::tenancy::validate;
use crate::tenant_config::Limit;

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const USER_COLUMNS: &str = "id, email, name, role, created_at, updated_at";

impl User {
    fn from_row(row: &Row) -> Result<User, DomainError> {
        let role: &str = row.get("role");
        Ok(User {
            id: row.get("id"),
            email: row.get("email"),
            name: row.get("name"),
            role: Role::parse(role).ok_or_else(|| DomainError::CorruptRow {
                column: "users.role",
                value: role.to_string(),
            })?,
            created_at: row.get("created_at"),
            updated_at: row.get("updated_at"),
        })
    }

    fn json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedUser {
    #[serde(flatten)]
    pub user: User,
    /// Only when the request gave no password: generated, shown this once, never stored in clear.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub email: Text,
    pub name: Text,
    pub role: Option<Role>,
    pub password: Option<Text>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    pub email: Option<Text>,
    pub name: Option<Text>,
    /// Admins only.
    pub role: Option<Role>,
    pub password: Option<Text>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UserQuery {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// Checks the body before any password is hashed (hashing is the expensive part).
pub fn validate_new(new: &NewUser) -> Result<(), DomainError> {
    let mut errors = Vec::new();
    validate::email("email", new.email.trim(), &mut errors);
    text("name", &new.name, 1, 200, &mut errors);
    if let Some(pw) = &new.password {
        validate::password("password", pw, &mut errors);
    }
    check(errors)
}

pub fn validate_patch(patch: &UserPatch) -> Result<(), DomainError> {
    let mut errors = Vec::new();
    if let Some(email) = &patch.email {
        validate::email("email", email.trim(), &mut errors);
    }
    if let Some(name) = &patch.name {
        text("name", name, 1, 200, &mut errors);
    }
    if let Some(pw) = &patch.password {
        validate::password("password", pw, &mut errors);
    }
    if patch.email.is_none()
        && patch.name.is_none()
        && patch.role.is_none()
        && patch.password.is_none()
    {
        errors.push(crate::error::FieldError::new("body", "nothing to change"));
    }
    check(errors)
}

/// Serialises seat counting and admin counting within one tenant (transaction-scoped).
async fn lock_roster(tx: &TenantTx<'_>, tenant: Uuid) -> Result<(), DomainError> {
    // Two-key form: the first key names this lock's purpose, so it never meets another area's
    // advisory locks; the second spreads tenants (a collision only serialises two tenants).
    const ROSTER_LOCK: i32 = 0x5553_4552; // "USER"
    let (hi, lo) = tenant.as_u64_pair();
    #[allow(clippy::cast_possible_truncation)] // a hash: any 32 of its bits will do
    let key = (hi ^ lo) as i32;
    execute(
        tx,
        "select pg_advisory_xact_lock($1, $2)",
        &[&ROSTER_LOCK, &key],
    )
    .await?;
    Ok(())
}

async fn live_admins_other_than(
    tx: &TenantTx<'_>,
    tenant: Uuid,
    user: Uuid,
) -> Result<i64, DomainError> {
    Ok(query_one(
        tx,
        "select count(*) from app.users \
         where tenant_id = $1 and id <> $2 and role = 'admin' and deleted_at is null",
        &[&tenant, &user],
    )
    .await?
    .get(0))
}

async fn find(tx: &TenantTx<'_>, tenant: Uuid, id: Uuid, read: Read) -> Result<User, DomainError> {
    let sql = format!(
        "select {USER_COLUMNS} from app.users where tenant_id = $1 and id = $2 and deleted_at is null{}",
        read.suffix()
    );
    read_row(tx, &sql, &[&tenant, &id], read)
        .await?
        .map(|r| User::from_row(&r))
        .transpose()?
        .ok_or(DomainError::NotFound("user"))
}

static USERS: Keyset<TimeKey> = Keyset::ascending("users", &["created_at", "id"]);

pub struct ListUsers(pub UserQuery, pub CursorKey);

async fn list(
    tx: &TenantTx<'_>,
    caller: &Caller,
    ListUsers(q, cursors): ListUsers,
) -> Result<Page<User>, DomainError> {
    caller.user()?;
    let page = USERS.parse(&cursors, q.limit, q.cursor.as_deref())?;
    page.fetch(
        tx,
        &format!(
            "select {USER_COLUMNS} from app.users where tenant_id = $1 and deleted_at is null"
        ),
        &[&caller.tenant_id],
        User::from_row,
        |u| TimeKey {
            at: u.created_at,
            id: u.id,
        },
    )
    .await
}
tenant_op!(ListUsers => Page<User>, list);

pub struct GetUser(pub Uuid);

async fn get(
    tx: &TenantTx<'_>,
    caller: &Caller,
    GetUser(id): GetUser,
) -> Result<User, DomainError> {
    caller.user()?;
    find(tx, caller.tenant_id, id, Read::Last).await
}
tenant_op!(GetUser => User, get, single_statement);

/// The body, validated, with its password already hashed (off the async workers).
pub struct CreateUser {
    pub email: Text,
    pub name: Text,
    pub role: Role,
    pub password_hash: String,
    pub generated_password: Option<String>,
}

async fn create(
    tx: &TenantTx<'_>,
    caller: &Caller,
    op: CreateUser,
) -> Result<CreatedUser, DomainError> {
    caller.admin()?;
    let tenant = caller.tenant_id;
    lock_roster(tx, tenant).await?;
    // The limit comes from the tenant's config snapshot (a plan change reaches it before the
    // next request); the count, under the roster lock, from the rows.
    if caller.plan().limit(Limit::MaxUsers).is_some() {
        let current: i64 = query_one(
            tx,
            "select count(*) from app.users where tenant_id = $1 and deleted_at is null",
            &[&tenant],
        )
        .await?
        .get(0);
        caller.plan().require_within(Limit::MaxUsers, current)?;
    }
    let id = Uuid::now_v7();
    let row = query_one(
        tx,
        &format!(
            "insert into app.users (tenant_id, id, email, name, role, password_hash) \
             values ($1, $2, $3, $4, $5, $6) returning {USER_COLUMNS}"
        ),
        &[
            &tenant,
            &id,
            &op.email.trim(),
            &op.name.trim(),
            &op.role.as_str(),
            &op.password_hash,
        ],
    )
    .await?;
    let user = User::from_row(&row)?;
    record_change(
        tx,
        caller,
        Change {
            action: AuditAction::Create,
            resource: "user",
            resource_id: id.to_string(),
            before: None,
            after: Some(user.json()),
            event_type: "user.created",
        },
    )
    .await?;
    Ok(CreatedUser {
        user,
        password: op.generated_password,
    })
}
tenant_op!(CreateUser => CreatedUser, create);

pub struct UpdateUser {
    pub id: Uuid,
    pub email: Option<Text>,
    pub name: Option<Text>,
    pub role: Option<Role>,
    pub password_hash: Option<String>,
}

async fn update(tx: &TenantTx<'_>, caller: &Caller, op: UpdateUser) -> Result<User, DomainError> {
    let me = caller.user()?;
    let tenant = caller.tenant_id;
    let demoting = op.role == Some(Role::Member);
    if demoting {
        lock_roster(tx, tenant).await?;
    }
    // Found first: a user of another tenant is 404 for everyone, never 403.
    let before = find(tx, tenant, op.id, Read::ForUpdate).await?;
    if !caller.is_admin() {
        if op.id != me {
            // Another user's account: only an admin may change it.
            return Err(AccessError::RoleRequired {
                required: Role::Admin,
            }
            .into());
        }
        if op.role.is_some_and(|r| r != before.role) {
            return Err(AccessError::RoleRequired {
                required: Role::Admin,
            }
            .into());
        }
    }
    if demoting
        && before.role == Role::Admin
        && live_admins_other_than(tx, tenant, op.id).await? == 0
    {
        return Err(DomainError::LastAdmin);
    }
    let email = op.email.as_deref().map(str::trim).unwrap_or(&before.email);
    let name = op.name.as_deref().map(str::trim).unwrap_or(&before.name);
    let role = op.role.unwrap_or(before.role).as_str();
    let row = query_one(
        tx,
        &format!(
            "update app.users set email = $3, name = $4, role = $5, \
             password_hash = coalesce($6, password_hash), updated_at = now() \
             where tenant_id = $1 and id = $2 and deleted_at is null returning {USER_COLUMNS}"
        ),
        &[&tenant, &op.id, &email, &name, &role, &op.password_hash],
    )
    .await?;
    let after = User::from_row(&row)?;
    let password_changed = op.password_hash.is_some();
    let mut extra = Map::new();
    if password_changed {
        extra.insert("password_changed".into(), json!(true));
    }
    crate::audit::record(
        tx,
        caller,
        crate::audit::Entry {
            action: AuditAction::Update,
            resource: "user",
            resource_id: op.id.to_string(),
            before: Some(before.json()),
            after: Some(after.json()),
            extra: Some(extra),
        },
    )
    .await?;
    crate::jobs::enqueue(tx, tenant, "user.updated", &after.json()).await?;
    Ok(after)
}
tenant_op!(UpdateUser => User, update);

pub struct DeleteUser(pub Uuid);

async fn delete(
    tx: &TenantTx<'_>,
    caller: &Caller,
    DeleteUser(id): DeleteUser,
) -> Result<(), DomainError> {
    caller.user()?;
    let tenant = caller.tenant_id;
    // Existence before role: a user of another tenant is 404 for everyone.
    find(tx, tenant, id, Read::Plain).await?;
    caller.admin()?;
    // The roster lock is taken before any row lock, in every path, so paths cannot deadlock.
    lock_roster(tx, tenant).await?;
    let before = find(tx, tenant, id, Read::ForUpdate).await?;
    if before.role == Role::Admin && live_admins_other_than(tx, tenant, id).await? == 0 {
        return Err(DomainError::LastAdmin);
    }
    execute(
        tx,
        "update app.users set deleted_at = now(), updated_at = now() \
         where tenant_id = $1 and id = $2 and deleted_at is null",
        &[&tenant, &id],
    )
    .await?;
    // Nothing live may keep pointing at a deleted user.
    let memberships = execute(
        tx,
        "update app.project_members set deleted_at = now() \
         where tenant_id = $1 and user_id = $2 and deleted_at is null",
        &[&tenant, &id],
    )
    .await?;
    let unassigned = execute(
        tx,
        "update app.tasks set assignee_id = null, updated_at = now() \
         where tenant_id = $1 and assignee_id = $2 and deleted_at is null",
        &[&tenant, &id],
    )
    .await?;
    let mut extra = Map::new();
    extra.insert(
        "cascade".into(),
        json!({"memberships_removed": memberships, "tasks_unassigned": unassigned}),
    );
    crate::audit::record(
        tx,
        caller,
        crate::audit::Entry {
            action: AuditAction::Delete,
            resource: "user",
            resource_id: id.to_string(),
            before: Some(before.json()),
            after: None,
            extra: Some(extra),
        },
    )
    .await?;
    crate::jobs::enqueue(tx, tenant, "user.deleted", &before.json()).await?;
    Ok(())
}
tenant_op!(DeleteUser => (), delete);
