//! Operator views: metrics, tenant actors, and the explicit cross-tenant bypass.

use actix_web::{get, web, HttpResponse};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::actors::ActorInfo;
use crate::http::extract::{PlatformOperator, Query, RequestId};
use crate::http::problem::Problem;
use crate::state::AppState;
use crate::tenancy::lifecycle::record_platform_action;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(metrics)
        .service(admin_actors)
        .service(admin_tasks);
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
#[get("/metrics")]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state.metrics.observe_pools(&state.pools);
    state.actors.snapshot();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

#[derive(Serialize, ToSchema)]
pub struct ActorsReport {
    pub active: usize,
    pub activations: u64,
    pub evictions: u64,
    pub restarts: u64,
    pub items: Vec<ActorInfo>,
}

#[utoipa::path(get, path = "/admin/actors", tag = "operations", security(("operator" = [])),
    responses((status = 200, body = ActorsReport), (status = 401)))]
#[get("/admin/actors")]
pub async fn admin_actors(_op: PlatformOperator, state: web::Data<AppState>) -> HttpResponse {
    let items = state.actors.snapshot();
    let m = &state.metrics;
    HttpResponse::Ok().json(ActorsReport {
        active: items.len(),
        activations: m.actor_activations.get(),
        evictions: m.actor_evictions.get(),
        restarts: m.actor_restarts.get(),
        items,
    })
}

#[derive(Deserialize, IntoParams)]
pub struct AdminTasksQuery {
    pub tenant_id: Option<Uuid>,
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AdminTask {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub project_id: Uuid,
    pub title: String,
    pub status: String,
    pub assignee_id: Option<Uuid>,
    pub due_date: Option<NaiveDate>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct AdminTaskPage {
    pub items: Vec<AdminTask>,
    pub next_cursor: Option<String>,
}

/// The platform bypass: reads tasks across tenants through the BYPASSRLS admin role. Explicit
/// (its own route, operator token) and audited (one platform audit row per call).
#[utoipa::path(get, path = "/admin/tasks", tag = "operations", params(AdminTasksQuery), security(("operator" = [])),
    responses((status = 200, body = AdminTaskPage), (status = 401)))]
#[get("/admin/tasks")]
pub async fn admin_tasks(
    _op: PlatformOperator,
    state: web::Data<AppState>,
    request_id: RequestId,
    query: Query<AdminTasksQuery>,
) -> Result<HttpResponse, Problem> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(Problem::validation(vec![crate::error::FieldError::new(
            "limit",
            "must be between 1 and 500",
        )]));
    }
    let cursor = match &query.cursor {
        Some(raw) => Some(parse_cursor(raw).ok_or_else(|| Problem::bad_request("invalid cursor"))?),
        None => None,
    };
    let (after_tenant, after_id) = cursor.unzip();
    let mut conn = state
        .pools
        .admin
        .get()
        .await
        .map_err(crate::db::DbError::from)?;
    let tx = conn.transaction().await?;
    let rows = tx
        .query(
            "select tenant_id, id, project_id, title, status, assignee_id, due_date, created_at \
             from app.tasks t where deleted_at is null \
             and ($1::uuid is null or tenant_id = $1) \
             and ($2::uuid is null or (tenant_id, id) > ($2, $3)) \
             and exists (select 1 from app.tenants x where x.id = t.tenant_id and x.deleted_at is null) \
             order by tenant_id, id limit $4",
            &[&query.tenant_id, &after_tenant, &after_id, &(limit + 1)],
        )
        .await?;
    record_platform_action(
        &tx,
        "operator",
        "tasks.read_across_tenants",
        query.tenant_id,
        json!({"limit": limit, "returned": rows.len().min(limit as usize)}),
        Some(&request_id.0),
    )
    .await?;
    tx.commit().await?;
    let mut items: Vec<AdminTask> = rows
        .iter()
        .map(|r| AdminTask {
            tenant_id: r.get(0),
            id: r.get(1),
            project_id: r.get(2),
            title: r.get(3),
            status: r.get(4),
            assignee_id: r.get(5),
            due_date: r.get(6),
            created_at: r.get(7),
        })
        .collect();
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items
            .last()
            .map(|t| format!("{}.{}", t.tenant_id.simple(), t.id.simple()))
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(AdminTaskPage { items, next_cursor }))
}

fn parse_cursor(raw: &str) -> Option<(Uuid, Uuid)> {
    let (tenant, id) = raw.split_once('.')?;
    Some((Uuid::try_parse(tenant).ok()?, Uuid::try_parse(id).ok()?))
}
