//! Project members: which users belong to a project. The row is keyed by
//! (tenant_id, project_id, user_id); removing a member soft-deletes the row and adding them back
//! revives it.

use crate::db::TenantTx;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::Row;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::refs::{project_is_live, user_is_live};
use super::{query_opt, record_change, tenant_op, Change, DomainError};
use crate::audit::AuditAction;
use crate::auth::Caller;
use crate::error::FieldError;
use crate::page::{CursorKey, Keyset, Page, TimeKey};

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Member {
    pub project_id: Uuid,
    pub user_id: Uuid,
    pub created_at: DateTime<Utc>,
}

const MEMBER_COLUMNS: &str = "project_id, user_id, created_at";

impl Member {
    fn from_row(row: &Row) -> Member {
        Member {
            project_id: row.get("project_id"),
            user_id: row.get("user_id"),
            created_at: row.get("created_at"),
        }
    }

    fn json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    fn resource_id(&self) -> String {
        format!("{}/{}", self.project_id, self.user_id)
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    pub user_id: Uuid,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MemberQuery {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

async fn project_or_404(tx: &TenantTx<'_>, tenant: Uuid, project: Uuid) -> Result<(), DomainError> {
    if project_is_live(tx, tenant, project).await? {
        Ok(())
    } else {
        Err(DomainError::NotFound("project"))
    }
}

/// In the order members were added; a member added back is placed by when they came back.
static MEMBERS: Keyset<TimeKey> = Keyset::ascending("project members", &["created_at", "user_id"]);

pub struct ListMembers(pub Uuid, pub MemberQuery, pub CursorKey);

async fn list(
    tx: &TenantTx<'_>,
    caller: &Caller,
    ListMembers(project, q, cursors): ListMembers,
) -> Result<Page<Member>, DomainError> {
    caller.user()?;
    let page = MEMBERS.parse(&cursors, q.limit, q.cursor.as_deref())?;
    project_or_404(tx, caller.tenant_id, project).await?;
    page.fetch(
        tx,
        &format!(
            "select {MEMBER_COLUMNS} from app.project_members \
             where tenant_id = $1 and project_id = $2 and deleted_at is null"
        ),
        &[&caller.tenant_id, &project],
        |r| Ok(Member::from_row(r)),
        |m| TimeKey {
            at: m.created_at,
            id: m.user_id,
        },
    )
    .await
}
tenant_op!(ListMembers => Page<Member>, list);

pub struct AddMember(pub Uuid, pub NewMember);

async fn add(
    tx: &TenantTx<'_>,
    caller: &Caller,
    AddMember(project, new): AddMember,
) -> Result<Member, DomainError> {
    caller.user()?;
    let tenant = caller.tenant_id;
    project_or_404(tx, tenant, project).await?;
    if !user_is_live(tx, tenant, new.user_id).await? {
        return Err(DomainError::InvalidReference(vec![FieldError::new(
            "user_id",
            "no such user",
        )]));
    }
    // A removed membership is revived; a live one makes the upsert return nothing. The revived
    // row takes the insert's created_at (its default, now()): Citus refuses a function that
    // is not immutable in DO UPDATE SET on a distributed table.
    let row = query_opt(
        tx,
        &format!(
            "insert into app.project_members (tenant_id, project_id, user_id) values ($1, $2, $3) \
             on conflict (tenant_id, project_id, user_id) do update \
             set deleted_at = null, created_at = excluded.created_at \
             where project_members.deleted_at is not null \
             returning {MEMBER_COLUMNS}"
        ),
        &[&tenant, &project, &new.user_id],
    )
    .await?
    .ok_or(DomainError::Conflict(
        "the user is already a member of the project",
    ))?;
    let member = Member::from_row(&row);
    record_change(
        tx,
        caller,
        Change {
            action: AuditAction::Create,
            resource: "project_member",
            resource_id: member.resource_id(),
            before: None,
            after: Some(member.json()),
            event_type: "project.member_added",
        },
    )
    .await?;
    Ok(member)
}
tenant_op!(AddMember => Member, add);

pub struct RemoveMember(pub Uuid, pub Uuid);

async fn remove(
    tx: &TenantTx<'_>,
    caller: &Caller,
    RemoveMember(project, user): RemoveMember,
) -> Result<(), DomainError> {
    caller.user()?;
    let tenant = caller.tenant_id;
    project_or_404(tx, tenant, project).await?;
    let row = query_opt(
        tx,
        &format!(
            "update app.project_members set deleted_at = now() \
             where tenant_id = $1 and project_id = $2 and user_id = $3 and deleted_at is null \
             returning {MEMBER_COLUMNS}"
        ),
        &[&tenant, &project, &user],
    )
    .await?
    .ok_or(DomainError::NotFound("member"))?;
    let member = Member::from_row(&row);
    record_change(
        tx,
        caller,
        Change {
            action: AuditAction::Delete,
            resource: "project_member",
            resource_id: member.resource_id(),
            before: Some(member.json()),
            after: None,
            event_type: "project.member_removed",
        },
    )
    .await?;
    Ok(())
}
tenant_op!(RemoveMember => (), remove);
