//! The platform bypass: operators read tasks across tenants through the BYPASSRLS admin role.
//! Explicit (its own route, the operator token) and audited (one platform audit row per read).

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::json;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use utoipa::ToSchema;
use uuid::Uuid;

use super::lifecycle::{with_platform_action, PlatformAction};
use super::TenancyError;
use crate::db::PgPool;
use crate::page::{and_equal, Keyset, Page, PageRequest};

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminTask {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub project_id: Uuid,
    pub title: String,
    pub status: String,
    pub assignee_id: Option<Uuid>,
    pub due_date: Option<NaiveDate>,
    pub created_at: DateTime<Utc>,
}

impl AdminTask {
    fn from_row(row: &Row) -> AdminTask {
        AdminTask {
            tenant_id: row.get("tenant_id"),
            id: row.get("id"),
            project_id: row.get("project_id"),
            title: row.get("title"),
            status: row.get("status"),
            assignee_id: row.get("assignee_id"),
            due_date: row.get("due_date"),
            created_at: row.get("created_at"),
        }
    }
}

/// Tenant by tenant, in the order of the tasks' primary key.
pub static ADMIN_TASKS: Keyset<(Uuid, Uuid)> =
    Keyset::ascending("admin tasks", &["tenant_id", "id"]);

/// Live tasks of live tenants, of one tenant if `tenant` is given.
pub async fn tasks_across_tenants(
    admin: &PgPool,
    tenant: Option<Uuid>,
    page: &PageRequest<(Uuid, Uuid)>,
    request_id: Option<&str>,
) -> Result<Page<AdminTask>, TenancyError> {
    let action = PlatformAction::operator("tasks.read_across_tenants", tenant, request_id);
    with_platform_action(admin, action, async |tx, details| {
        let mut sql = String::from(
            "select tenant_id, id, project_id, title, status, assignee_id, due_date, created_at \
             from app.tasks t where deleted_at is null \
             and exists (select 1 from app.tenants x where x.id = t.tenant_id and x.deleted_at is null)",
        );
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
        and_equal(
            &mut sql,
            &mut params,
            &[("tenant_id", tenant.as_ref().map(|t| t as _))],
        );
        let found = page
            .fetch(
                tx,
                &sql,
                &params,
                |r| Ok::<_, TenancyError>(AdminTask::from_row(r)),
                |t| (t.tenant_id, t.id),
            )
            .await?;
        *details = json!({"limit": page.limit(), "returned": found.items.len()});
        Ok(found)
    })
    .await
}
