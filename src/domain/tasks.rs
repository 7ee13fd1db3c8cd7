//! Tasks. A task belongs to a live project of its tenant and may be assigned to a live user of
//! the same tenant; both references are checked (and share-locked) before the write, so the
//! caller gets a clean 422 rather than a foreign-key error, and the composite foreign keys
//! (tenant_id, project_id) / (tenant_id, assignee_id) stay the guarantee underneath. Titles are
//! unique per project among live tasks (case-insensitive): a duplicate is 409.

use crate::db::TenantTx;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::refs::{project_is_live, user_is_live};
use super::{
    check, nullable, query_one, query_opt, read_row, record_change, tenant_op, text, Change,
    DomainError, Read, MAX_DESCRIPTION,
};
use crate::analytics::buckets::to_micros;
use crate::audit::AuditAction;
use crate::auth::Caller;
use crate::error::FieldError;
use crate::input::{Date, Text};
use crate::page::{and_equal, CursorKey, Keyset, Page, TimeKey};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Todo,
    InProgress,
    Done,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Todo => "todo",
            TaskStatus::InProgress => "in_progress",
            TaskStatus::Done => "done",
        }
    }

    fn parse(s: &str) -> Option<TaskStatus> {
        match s {
            "todo" => Some(TaskStatus::Todo),
            "in_progress" => Some(TaskStatus::InProgress),
            "done" => Some(TaskStatus::Done),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Task {
    pub id: Uuid,
    pub project_id: Uuid,
    pub title: String,
    pub description: String,
    pub status: TaskStatus,
    pub assignee_id: Option<Uuid>,
    pub due_date: Option<NaiveDate>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub const TASK_COLUMNS: &str =
    "id, project_id, title, description, status, assignee_id, due_date, created_at, updated_at";

impl Task {
    pub fn from_row(row: &Row) -> Result<Task, DomainError> {
        let status: &str = row.get("status");
        Ok(Task {
            id: row.get("id"),
            project_id: row.get("project_id"),
            title: row.get("title"),
            description: row.get("description"),
            status: TaskStatus::parse(status).ok_or_else(|| DomainError::CorruptRow {
                column: "tasks.status",
                value: status.to_string(),
            })?,
            assignee_id: row.get("assignee_id"),
            due_date: row.get("due_date"),
            created_at: row.get("created_at"),
            updated_at: row.get("updated_at"),
        })
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTask {
    pub project_id: Uuid,
    pub title: Text,
    pub description: Option<Text>,
    pub status: Option<TaskStatus>,
    pub assignee_id: Option<Uuid>,
    /// `YYYY-MM-DD`.
    pub due_date: Option<Date>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskPatch {
    /// Moves the task to another project of the tenant.
    pub project_id: Option<Uuid>,
    pub title: Option<Text>,
    pub description: Option<Text>,
    pub status: Option<TaskStatus>,
    /// `null` unassigns.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Uuid>)]
    pub assignee_id: Option<Option<Uuid>>,
    /// `null` clears the due date.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Date>)]
    pub due_date: Option<Option<Date>>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TaskQuery {
    pub project_id: Option<Uuid>,
    pub status: Option<TaskStatus>,
    pub assignee_id: Option<Uuid>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

async fn find(tx: &TenantTx<'_>, tenant: Uuid, id: Uuid, read: Read) -> Result<Task, DomainError> {
    let sql = format!(
        "select {TASK_COLUMNS} from app.tasks where tenant_id = $1 and id = $2 and deleted_at is null{}",
        read.suffix()
    );
    read_row(tx, &sql, &[&tenant, &id], read)
        .await?
        .map(|r| Task::from_row(&r))
        .transpose()?
        .ok_or(DomainError::NotFound("task"))
}

/// References in a task body must resolve to live rows of the caller's tenant.
async fn check_references(
    tx: &TenantTx<'_>,
    tenant: Uuid,
    project: Option<Uuid>,
    assignee: Option<Uuid>,
) -> Result<(), DomainError> {
    let mut errors = Vec::new();
    if let Some(project) = project {
        if !project_is_live(tx, tenant, project).await? {
            errors.push(FieldError::new("project_id", "no such project"));
        }
    }
    if let Some(assignee) = assignee {
        if !user_is_live(tx, tenant, assignee).await? {
            errors.push(FieldError::new("assignee_id", "no such user"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(DomainError::InvalidReference(errors))
    }
}

static TASKS: Keyset<TimeKey> = Keyset::ascending("tasks", &["created_at", "id"]);

pub struct ListTasks(pub TaskQuery, pub CursorKey);

async fn list(
    tx: &TenantTx<'_>,
    caller: &Caller,
    ListTasks(q, cursors): ListTasks,
) -> Result<Page<Task>, DomainError> {
    caller.user()?;
    let page = TASKS.parse(&cursors, q.limit, q.cursor.as_deref())?;
    let status = q.status.map(TaskStatus::as_str);
    let mut sql =
        format!("select {TASK_COLUMNS} from app.tasks where tenant_id = $1 and deleted_at is null");
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&caller.tenant_id];
    and_equal(
        &mut sql,
        &mut params,
        &[
            ("project_id", q.project_id.as_ref().map(|v| v as _)),
            ("status", status.as_ref().map(|v| v as _)),
            ("assignee_id", q.assignee_id.as_ref().map(|v| v as _)),
        ],
    );
    page.fetch(tx, &sql, &params, Task::from_row, |t| TimeKey {
        at: t.created_at,
        id: t.id,
    })
    .await
}
tenant_op!(ListTasks => Page<Task>, list);

pub struct GetTask(pub Uuid);

async fn get(
    tx: &TenantTx<'_>,
    caller: &Caller,
    GetTask(id): GetTask,
) -> Result<Task, DomainError> {
    caller.user()?;
    find(tx, caller.tenant_id, id, Read::Last).await
}
tenant_op!(GetTask => Task, get, single_statement);

pub struct CreateTask(pub NewTask);

/// The whole write of a new task in one statement, `CREATE_TASK_SQL` (unassigned) or
/// `CREATE_ASSIGNED_TASK_SQL`: the reference checks (share-locking the project, and the assignee
/// if any, as `check_references` does), the task, its audit row and its outbox event, which
/// insert only if the task did. It goes out with COMMIT under one Sync, right behind the
/// transaction's BEGIN and tenant context, so a create costs one round trip where the checks,
/// three inserts and COMMIT took five (docs/benchmarks.md, "The write path"). The row's JSON is
/// built here, before the insert, so the times are the application's (to the microsecond, as
/// stored) rather than the database's `now()`, like the UUIDv7 id already was; it travels once
/// ($12), as the event's payload and as the `after` of the audit document, which PostgreSQL
/// builds around it (`{"before": null, "after": ..}`, the document `audit::record` writes: a
/// task has none of the members the trail redacts).
///
/// Parameters: $1 tenant, $2 task id, $3 project, $4 title, $5 description, $6 status,
/// $7 assignee, $8 due date, $9 created/updated at, $10 audit row id, $11 user, $12 the task's
/// JSON, $13 request id, $14 outbox event id. Answers one row: the live projects and assignees
/// found (0 or 1 each) and the tasks inserted. The third argument is empty, or `returning 1`
/// for the audit and outbox inserts on Citus.
macro_rules! create_task_sql {
    ($assignee_cte:literal, $assignee_from:literal, $returning:literal) => {
        concat!(
            "with p as (select 1 from app.projects where tenant_id = $1 and id = $3 \
               and deleted_at is null for share), ",
            $assignee_cte,
            "t as (insert into app.tasks \
               (tenant_id, id, project_id, title, description, status, assignee_id, due_date, \
                created_at, updated_at) \
               select $1, $2::uuid, $3, $4::text, $5::text, $6::text, $7::uuid, $8::date, \
                 $9::timestamptz, $9 from p",
            $assignee_from,
            " returning 1), \
             a as (insert into app.audit_logs \
               (tenant_id, id, user_id, actor, action, resource, resource_id, changes, request_id) \
               select $1, $10::uuid, $11::uuid, 'user', 'create', 'task', $2::uuid::text, \
                 jsonb_build_object('before', null, 'after', $12::jsonb), $13::text from t",
            $returning,
            "), o as (insert into app.outbox (tenant_id, id, event_type, payload) \
               select $1, $14::uuid, 'task.created', $12::jsonb from t",
            $returning,
            ") select (select count(*) from p), (select count(*) from u), (select count(*) from t)"
        )
    };
}

/// See `create_task_sql`: a task without an assignee.
pub(crate) const CREATE_TASK_SQL: &str = create_task_sql!("u as (select 1 where false), ", "", "");

/// See `create_task_sql`: a task assigned to a live user of the tenant (share-locked).
pub(crate) const CREATE_ASSIGNED_TASK_SQL: &str = create_task_sql!(
    "u as (select 1 from app.users where tenant_id = $1 and id = $7 \
       and deleted_at is null for share), ",
    " cross join u",
    ""
);

/// [`CREATE_TASK_SQL`] on Citus (docs/scale-out.md): the same checks, rows, parameters and
/// answer, with every insert `returning 1`. Citus computes the rows of an `INSERT ... SELECT`
/// from CTEs on the coordinator and writes them into the shard with `COPY`, which row-level
/// security refuses; with `RETURNING` it writes them through an intermediate result and an
/// `INSERT ... SELECT` on the worker instead, which the policies check like any insert.
pub(crate) const CREATE_TASK_SQL_CITUS: &str =
    create_task_sql!("u as (select 1 where false), ", "", " returning 1");

/// [`CREATE_ASSIGNED_TASK_SQL`] on Citus (see [`CREATE_TASK_SQL_CITUS`]).
pub(crate) const CREATE_ASSIGNED_TASK_SQL_CITUS: &str = create_task_sql!(
    "u as (select 1 from app.users where tenant_id = $1 and id = $7 \
       and deleted_at is null for share), ",
    " cross join u",
    " returning 1"
);

async fn create(
    tx: &TenantTx<'_>,
    caller: &Caller,
    CreateTask(new): CreateTask,
) -> Result<Task, DomainError> {
    caller.user()?;
    let tenant = caller.tenant_id;
    let mut errors = Vec::new();
    let title = text("title", &new.title, 1, 500, &mut errors);
    let description = text(
        "description",
        new.description.as_deref().unwrap_or(""),
        0,
        MAX_DESCRIPTION,
        &mut errors,
    );
    check(errors)?;
    let now = to_micros(Utc::now());
    let task = Task {
        id: Uuid::now_v7(),
        project_id: new.project_id,
        title,
        description,
        status: new.status.unwrap_or(TaskStatus::Todo),
        assignee_id: new.assignee_id,
        due_date: new.due_date.map(NaiveDate::from),
        created_at: now,
        updated_at: now,
    };
    let after = task.json();
    let sql = match (task.assignee_id.is_some(), tx.is_citus()) {
        (true, false) => CREATE_ASSIGNED_TASK_SQL,
        (false, false) => CREATE_TASK_SQL,
        (true, true) => CREATE_ASSIGNED_TASK_SQL_CITUS,
        (false, true) => CREATE_TASK_SQL_CITUS,
    };
    let stmt = tx.prepare_cached(sql).await?;
    let row = tx
        .query_opt_then_commit(
            &stmt,
            &[
                &tenant,
                &task.id,
                &task.project_id,
                &task.title,
                &task.description,
                &task.status.as_str(),
                &task.assignee_id,
                &task.due_date,
                &task.created_at,
                &Uuid::now_v7(),
                &caller.user_id,
                &after,
                &caller.request_id,
                &Uuid::now_v7(),
            ],
        )
        .await?;
    // A select of three aggregates answers exactly one row.
    let (project, assignee, inserted): (i64, i64, i64) = match row {
        Some(row) => (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?),
        None => (0, 0, 0),
    };
    if inserted == 1 {
        // The event committed with the task: the outbox worker takes it at once rather than at
        // its next look at the table, as for every write that goes through `jobs::enqueue`.
        tx.note_enqueued();
        return Ok(task);
    }
    let mut errors = Vec::new();
    if project == 0 {
        errors.push(FieldError::new("project_id", "no such project"));
    }
    if task.assignee_id.is_some() && assignee == 0 {
        errors.push(FieldError::new("assignee_id", "no such user"));
    }
    Err(DomainError::InvalidReference(errors))
}
tenant_op!(CreateTask => Task, create);

pub struct UpdateTask(pub Uuid, pub TaskPatch);

async fn update(
    tx: &TenantTx<'_>,
    caller: &Caller,
    UpdateTask(id, patch): UpdateTask,
) -> Result<Task, DomainError> {
    caller.user()?;
    let tenant = caller.tenant_id;
    let mut errors = Vec::new();
    let title = patch
        .title
        .as_deref()
        .map(|t| text("title", t, 1, 500, &mut errors));
    let description = patch
        .description
        .as_deref()
        .map(|d| text("description", d, 0, MAX_DESCRIPTION, &mut errors));
    if patch.project_id.is_none()
        && title.is_none()
        && description.is_none()
        && patch.status.is_none()
        && patch.assignee_id.is_none()
        && patch.due_date.is_none()
    {
        errors.push(FieldError::new("body", "nothing to change"));
    }
    check(errors)?;
    // References are share-locked before the task row, the order every path takes (user or
    // project first, then tasks), so a concurrent user or project delete cannot deadlock with it.
    check_references(tx, tenant, patch.project_id, patch.assignee_id.flatten()).await?;
    let before = find(tx, tenant, id, Read::ForUpdate).await?;
    let project = patch.project_id.unwrap_or(before.project_id);
    let title = title.unwrap_or_else(|| before.title.clone());
    let description = description.unwrap_or_else(|| before.description.clone());
    let status = patch.status.unwrap_or(before.status).as_str();
    let assignee = patch.assignee_id.unwrap_or(before.assignee_id);
    let due_date = patch
        .due_date
        .map(|d| d.map(NaiveDate::from))
        .unwrap_or(before.due_date);
    let row = query_one(
        tx,
        &format!(
            "update app.tasks set project_id = $3, title = $4, description = $5, status = $6, \
             assignee_id = $7, due_date = $8, updated_at = now() \
             where tenant_id = $1 and id = $2 and deleted_at is null returning {TASK_COLUMNS}"
        ),
        &[
            &tenant,
            &id,
            &project,
            &title,
            &description,
            &status,
            &assignee,
            &due_date,
        ],
    )
    .await?;
    let after = Task::from_row(&row)?;
    record_change(
        tx,
        caller,
        Change {
            action: AuditAction::Update,
            resource: "task",
            resource_id: id.to_string(),
            before: Some(before.json()),
            after: Some(after.json()),
            event_type: "task.updated",
        },
    )
    .await?;
    Ok(after)
}
tenant_op!(UpdateTask => Task, update);

pub struct DeleteTask(pub Uuid);

async fn delete(
    tx: &TenantTx<'_>,
    caller: &Caller,
    DeleteTask(id): DeleteTask,
) -> Result<(), DomainError> {
    caller.user()?;
    let tenant = caller.tenant_id;
    let row = query_opt(
        tx,
        &format!(
            "update app.tasks set deleted_at = now() \
             where tenant_id = $1 and id = $2 and deleted_at is null returning {TASK_COLUMNS}"
        ),
        &[&tenant, &id],
    )
    .await?
    .ok_or(DomainError::NotFound("task"))?;
    let before = Task::from_row(&row)?;
    record_change(
        tx,
        caller,
        Change {
            action: AuditAction::Delete,
            resource: "task",
            resource_id: id.to_string(),
            before: Some(before.json()),
            after: None,
            event_type: "task.deleted",
        },
    )
    .await?;
    Ok(())
}
tenant_op!(DeleteTask => (), delete);
