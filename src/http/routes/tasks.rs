//! /tasks. Any authenticated user of the tenant may read and write them.

use actix_web::{delete, get, patch, post, web, HttpResponse};
use uuid::Uuid;

use crate::domain::tasks::{
    CreateTask, DeleteTask, GetTask, ListTasks, NewTask, Task, TaskPatch, TaskQuery, UpdateTask,
};
use crate::http::extract::{Json, Query};
use crate::http::problem::Problem;
use crate::http::tenant::TenantRequest;
use crate::page::Page;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list_tasks)
        .service(create_task)
        .service(get_task)
        .service(update_task)
        .service(delete_task);
}

#[utoipa::path(get, path = "/tasks", tag = "tasks", params(TaskQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<Task>), (status = 422)))]
#[get("/tasks")]
pub async fn list_tasks(
    req: TenantRequest,
    query: Query<TaskQuery>,
) -> Result<HttpResponse, Problem> {
    let page = req
        .execute(ListTasks(query.into_inner(), req.state().cursors.clone()))
        .await?;
    Ok(HttpResponse::Ok().json(page))
}

#[utoipa::path(post, path = "/tasks", tag = "tasks", request_body = NewTask, security(("bearer" = [])),
    responses((status = 201, body = Task), (status = 409, description = "A task of this title exists in the project"),
        (status = 422, description = "Invalid body, or `project_id`/`assignee_id` not of the tenant (`invalid_reference`)")))]
#[post("/tasks")]
pub async fn create_task(req: TenantRequest, body: Json<NewTask>) -> Result<HttpResponse, Problem> {
    let task = req.execute(CreateTask(body.into_inner())).await?;
    Ok(HttpResponse::Created().json(task))
}

#[utoipa::path(get, path = "/tasks/{id}", tag = "tasks", security(("bearer" = [])),
    responses((status = 200, body = Task), (status = 404)))]
#[get("/tasks/{id}")]
pub async fn get_task(req: TenantRequest, id: web::Path<Uuid>) -> Result<HttpResponse, Problem> {
    let task = req.execute(GetTask(*id)).await?;
    Ok(HttpResponse::Ok().json(task))
}

#[utoipa::path(patch, path = "/tasks/{id}", tag = "tasks", request_body = TaskPatch, security(("bearer" = [])),
    responses((status = 200, body = Task), (status = 404), (status = 409), (status = 422)))]
#[patch("/tasks/{id}")]
pub async fn update_task(
    req: TenantRequest,
    id: web::Path<Uuid>,
    body: Json<TaskPatch>,
) -> Result<HttpResponse, Problem> {
    let task = req.execute(UpdateTask(*id, body.into_inner())).await?;
    Ok(HttpResponse::Ok().json(task))
}

#[utoipa::path(delete, path = "/tasks/{id}", tag = "tasks", security(("bearer" = [])),
    responses((status = 204), (status = 404)))]
#[delete("/tasks/{id}")]
pub async fn delete_task(req: TenantRequest, id: web::Path<Uuid>) -> Result<HttpResponse, Problem> {
    req.execute(DeleteTask(*id)).await?;
    Ok(HttpResponse::NoContent().finish())
}
