//! /projects and their members. Any authenticated user of the tenant may read and write them.

use actix_web::{delete, get, patch, post, web, HttpResponse};
use uuid::Uuid;

use crate::domain::members::{
    AddMember, ListMembers, Member, MemberQuery, NewMember, RemoveMember,
};
use crate::domain::projects::{
    CreateProject, DeleteProject, GetProject, ListProjects, NewProject, Project, ProjectPatch,
    ProjectQuery, UpdateProject,
};
use crate::http::extract::{Json, Query};
use crate::http::problem::Problem;
use crate::http::tenant::TenantRequest;
use crate::page::Page;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list_projects)
        .service(create_project)
        .service(get_project)
        .service(update_project)
        .service(delete_project)
        .service(list_members)
        .service(add_member)
        .service(remove_member);
}

#[utoipa::path(get, path = "/projects", tag = "projects", params(ProjectQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<Project>), (status = 422)))]
#[get("/projects")]
pub async fn list_projects(
    req: TenantRequest,
    query: Query<ProjectQuery>,
) -> Result<HttpResponse, Problem> {
    let page = req
        .execute(ListProjects(
            query.into_inner(),
            req.state().cursors.clone(),
        ))
        .await?;
    Ok(HttpResponse::Ok().json(page))
}

#[utoipa::path(post, path = "/projects", tag = "projects", request_body = NewProject, security(("bearer" = [])),
    responses((status = 201, body = Project), (status = 409, description = "A project of this name exists"), (status = 422)))]
#[post("/projects")]
pub async fn create_project(
    req: TenantRequest,
    body: Json<NewProject>,
) -> Result<HttpResponse, Problem> {
    let project = req.execute(CreateProject(body.into_inner())).await?;
    Ok(HttpResponse::Created().json(project))
}

#[utoipa::path(get, path = "/projects/{id}", tag = "projects", security(("bearer" = [])),
    responses((status = 200, body = Project), (status = 404)))]
#[get("/projects/{id}")]
pub async fn get_project(req: TenantRequest, id: web::Path<Uuid>) -> Result<HttpResponse, Problem> {
    let project = req.execute(GetProject(*id)).await?;
    Ok(HttpResponse::Ok().json(project))
}

#[utoipa::path(patch, path = "/projects/{id}", tag = "projects", request_body = ProjectPatch, security(("bearer" = [])),
    responses((status = 200, body = Project), (status = 404), (status = 409), (status = 422)))]
#[patch("/projects/{id}")]
pub async fn update_project(
    req: TenantRequest,
    id: web::Path<Uuid>,
    body: Json<ProjectPatch>,
) -> Result<HttpResponse, Problem> {
    let project = req.execute(UpdateProject(*id, body.into_inner())).await?;
    Ok(HttpResponse::Ok().json(project))
}

#[utoipa::path(delete, path = "/projects/{id}", tag = "projects", security(("bearer" = [])),
    responses((status = 204, description = "Deleted, with its tasks and memberships"), (status = 404)))]
#[delete("/projects/{id}")]
pub async fn delete_project(
    req: TenantRequest,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    req.execute(DeleteProject(*id)).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/projects/{id}/members", tag = "projects", params(MemberQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<Member>), (status = 404)))]
#[get("/projects/{id}/members")]
pub async fn list_members(
    req: TenantRequest,
    id: web::Path<Uuid>,
    query: Query<MemberQuery>,
) -> Result<HttpResponse, Problem> {
    let page = req
        .execute(ListMembers(
            *id,
            query.into_inner(),
            req.state().cursors.clone(),
        ))
        .await?;
    Ok(HttpResponse::Ok().json(page))
}

#[utoipa::path(post, path = "/projects/{id}/members", tag = "projects", request_body = NewMember, security(("bearer" = [])),
    responses((status = 201, body = Member), (status = 404), (status = 409, description = "Already a member"),
        (status = 422, description = "`user_id` is not a user of the tenant (`invalid_reference`)")))]
#[post("/projects/{id}/members")]
pub async fn add_member(
    req: TenantRequest,
    id: web::Path<Uuid>,
    body: Json<NewMember>,
) -> Result<HttpResponse, Problem> {
    let member = req.execute(AddMember(*id, body.into_inner())).await?;
    Ok(HttpResponse::Created().json(member))
}

#[utoipa::path(delete, path = "/projects/{id}/members/{user_id}", tag = "projects", security(("bearer" = [])),
    responses((status = 204), (status = 404)))]
#[delete("/projects/{id}/members/{user_id}")]
pub async fn remove_member(
    req: TenantRequest,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, Problem> {
    let (project, user) = path.into_inner();
    req.execute(RemoveMember(project, user)).await?;
    Ok(HttpResponse::NoContent().finish())
}
