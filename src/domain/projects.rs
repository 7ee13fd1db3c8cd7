//! Projects of a tenant. Names are unique per tenant among live projects (case-insensitive, the
//! `projects_tenant_name_key` index): a duplicate is 409.

use crate::db::TenantTx;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio_postgres::Row;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{
    check, execute, query, query_one, read_row, record_change, tenant_op, text, Change,
    DomainError, Read, MAX_DESCRIPTION,
};
use crate::audit::AuditAction;
use crate::auth::Caller;
use crate::input::Text;
use crate::page::{CursorKey, Keyset, Page, TimeKey};

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Project {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const PROJECT_COLUMNS: &str = "id, name, description, created_at, updated_at";

impl Project {
    fn from_row(row: &Row) -> Project {
        Project {
            id: row.get("id"),
            name: row.get("name"),
            description: row.get("description"),
            created_at: row.get("created_at"),
            updated_at: row.get("updated_at"),
        }
    }

    fn json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProject {
    pub name: Text,
    pub description: Option<Text>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectPatch {
    pub name: Option<Text>,
    pub description: Option<Text>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProjectQuery {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

async fn find(
    tx: &TenantTx<'_>,
    tenant: Uuid,
    id: Uuid,
    read: Read,
) -> Result<Project, DomainError> {
    let sql = format!(
        "select {PROJECT_COLUMNS} from app.projects where tenant_id = $1 and id = $2 and deleted_at is null{}",
        read.suffix()
    );
    read_row(tx, &sql, &[&tenant, &id], read)
        .await?
        .map(|r| Project::from_row(&r))
        .ok_or(DomainError::NotFound("project"))
}

static PROJECTS: Keyset<TimeKey> = Keyset::ascending("projects", &["created_at", "id"]);

pub struct ListProjects(pub ProjectQuery, pub CursorKey);

async fn list(
    tx: &TenantTx<'_>,
    caller: &Caller,
    ListProjects(q, cursors): ListProjects,
) -> Result<Page<Project>, DomainError> {
    caller.user()?;
    let page = PROJECTS.parse(&cursors, q.limit, q.cursor.as_deref())?;
    page.fetch(
        tx,
        &format!(
            "select {PROJECT_COLUMNS} from app.projects where tenant_id = $1 and deleted_at is null"
        ),
        &[&caller.tenant_id],
        |r| Ok(Project::from_row(r)),
        |p| TimeKey {
            at: p.created_at,
            id: p.id,
        },
    )
    .await
}
tenant_op!(ListProjects => Page<Project>, list);

pub struct GetProject(pub Uuid);

async fn get(
    tx: &TenantTx<'_>,
    caller: &Caller,
    GetProject(id): GetProject,
) -> Result<Project, DomainError> {
    caller.user()?;
    find(tx, caller.tenant_id, id, Read::Last).await
}
tenant_op!(GetProject => Project, get, single_statement);

pub struct CreateProject(pub NewProject);

async fn create(
    tx: &TenantTx<'_>,
    caller: &Caller,
    CreateProject(new): CreateProject,
) -> Result<Project, DomainError> {
    caller.user()?;
    let mut errors = Vec::new();
    let name = text("name", &new.name, 1, 200, &mut errors);
    let description = text(
        "description",
        new.description.as_deref().unwrap_or(""),
        0,
        MAX_DESCRIPTION,
        &mut errors,
    );
    check(errors)?;
    let id = Uuid::now_v7();
    let row = query_one(
        tx,
        &format!(
            "insert into app.projects (tenant_id, id, name, description) values ($1, $2, $3, $4) \
             returning {PROJECT_COLUMNS}"
        ),
        &[&caller.tenant_id, &id, &name, &description],
    )
    .await?;
    let project = Project::from_row(&row);
    record_change(
        tx,
        caller,
        Change {
            action: AuditAction::Create,
            resource: "project",
            resource_id: id.to_string(),
            before: None,
            after: Some(project.json()),
            event_type: "project.created",
        },
    )
    .await?;
    Ok(project)
}
tenant_op!(CreateProject => Project, create);

pub struct UpdateProject(pub Uuid, pub ProjectPatch);

async fn update(
    tx: &TenantTx<'_>,
    caller: &Caller,
    UpdateProject(id, patch): UpdateProject,
) -> Result<Project, DomainError> {
    caller.user()?;
    let mut errors = Vec::new();
    let name = patch
        .name
        .as_deref()
        .map(|n| text("name", n, 1, 200, &mut errors));
    let description = patch
        .description
        .as_deref()
        .map(|d| text("description", d, 0, MAX_DESCRIPTION, &mut errors));
    if name.is_none() && description.is_none() {
        errors.push(crate::error::FieldError::new("body", "nothing to change"));
    }
    check(errors)?;
    let before = find(tx, caller.tenant_id, id, Read::ForUpdate).await?;
    let row = query_one(
        tx,
        &format!(
            "update app.projects set name = $3, description = $4, updated_at = now() \
             where tenant_id = $1 and id = $2 and deleted_at is null returning {PROJECT_COLUMNS}"
        ),
        &[
            &caller.tenant_id,
            &id,
            &name.as_deref().unwrap_or(&before.name),
            &description.as_deref().unwrap_or(&before.description),
        ],
    )
    .await?;
    let after = Project::from_row(&row);
    record_change(
        tx,
        caller,
        Change {
            action: AuditAction::Update,
            resource: "project",
            resource_id: id.to_string(),
            before: Some(before.json()),
            after: Some(after.json()),
            event_type: "project.updated",
        },
    )
    .await?;
    Ok(after)
}
tenant_op!(UpdateProject => Project, update);

pub struct DeleteProject(pub Uuid);

/// Deletes the project with its tasks and memberships, all stamped with one time. Each deleted
/// task gets its own audit row and `task.deleted` event, as if deleted one by one.
async fn delete(
    tx: &TenantTx<'_>,
    caller: &Caller,
    DeleteProject(id): DeleteProject,
) -> Result<(), DomainError> {
    caller.user()?;
    let tenant = caller.tenant_id;
    let before = find(tx, tenant, id, Read::ForUpdate).await?;
    execute(
        tx,
        "update app.projects set deleted_at = now(), updated_at = now() \
         where tenant_id = $1 and id = $2 and deleted_at is null",
        &[&tenant, &id],
    )
    .await?;
    let tasks = query(
        tx,
        &format!(
            "update app.tasks set deleted_at = now() \
             where tenant_id = $1 and project_id = $2 and deleted_at is null \
             returning {}",
            super::tasks::TASK_COLUMNS
        ),
        &[&tenant, &id],
    )
    .await?;
    let members = execute(
        tx,
        "update app.project_members set deleted_at = now() \
         where tenant_id = $1 and project_id = $2 and deleted_at is null",
        &[&tenant, &id],
    )
    .await?;
    for row in &tasks {
        let task = super::tasks::Task::from_row(row)?;
        record_change(
            tx,
            caller,
            Change {
                action: AuditAction::Delete,
                resource: "task",
                resource_id: task.id.to_string(),
                before: Some(task.json()),
                after: None,
                event_type: "task.deleted",
            },
        )
        .await?;
    }
    let mut extra = Map::new();
    extra.insert(
        "cascade".into(),
        json!({"tasks_deleted": tasks.len(), "memberships_removed": members}),
    );
    crate::audit::record(
        tx,
        caller,
        crate::audit::Entry {
            action: AuditAction::Delete,
            resource: "project",
            resource_id: id.to_string(),
            before: Some(before.json()),
            after: None,
            extra: Some(extra),
        },
    )
    .await?;
    crate::jobs::enqueue(tx, tenant, "project.deleted", &before.json()).await?;
    Ok(())
}
tenant_op!(DeleteProject => (), delete);
