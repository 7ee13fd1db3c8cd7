//! Operator views: metrics, tenant actors, and the explicit cross-tenant bypass.

use actix_web::{get, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::actors::ActorInfo;
use crate::http::extract::{PlatformOperator, Query, RequestId};
use crate::http::problem::Problem;
use crate::page::Page;
use crate::state::AppState;
use crate::tenancy::bypass::{self, AdminTask};

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

/// The platform bypass: reads tasks across tenants (`tenancy::bypass`).
#[utoipa::path(get, path = "/admin/tasks", tag = "operations", params(AdminTasksQuery), security(("operator" = [])),
    responses((status = 200, body = Page<AdminTask>), (status = 401), (status = 422)))]
#[get("/admin/tasks")]
pub async fn admin_tasks(
    _op: PlatformOperator,
    state: web::Data<AppState>,
    request_id: RequestId,
    query: Query<AdminTasksQuery>,
) -> Result<HttpResponse, Problem> {
    let page = bypass::ADMIN_TASKS.parse(&state.cursors, query.limit, query.cursor.as_deref())?;
    let tasks = bypass::tasks_across_tenants(
        &state.pools.admin,
        query.tenant_id,
        &page,
        Some(&request_id.0),
    )
    .await?;
    Ok(HttpResponse::Ok().json(tasks))
}
