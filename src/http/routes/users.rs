//! /users: the tenant's users. Reads for every user; writes for admins, except that a user may
//! change their own name, email and password.

use actix_web::{delete, get, patch, post, web, HttpResponse};
use uuid::Uuid;

use crate::auth::{password, Role};
use crate::cache::Invalidation;
use crate::domain::users::{
    self, CreateUser, CreatedUser, DeleteUser, GetUser, ListUsers, NewUser, UpdateUser, User,
    UserPatch, UserQuery,
};
use crate::http::extract::{Json, Query};
use crate::http::problem::Problem;
use crate::http::tenant::TenantRequest;
use crate::page::Page;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list_users)
        .service(create_user)
        .service(get_user)
        .service(update_user)
        .service(delete_user);
}

#[utoipa::path(get, path = "/users", tag = "users", params(UserQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<User>), (status = 401), (status = 422)))]
#[get("/users")]
pub async fn list_users(
    req: TenantRequest,
    query: Query<UserQuery>,
) -> Result<HttpResponse, Problem> {
    let page = req
        .execute(ListUsers(query.into_inner(), req.state().cursors.clone()))
        .await?;
    Ok(HttpResponse::Ok().json(page))
}

#[utoipa::path(post, path = "/users", tag = "users", request_body = NewUser, security(("bearer" = [])),
    responses((status = 201, body = CreatedUser), (status = 402, description = "Seat limit of the plan reached (`plan_limit`, with `limit` and `current`)"),
        (status = 403), (status = 409), (status = 422)))]
#[post("/users")]
pub async fn create_user(req: TenantRequest, body: Json<NewUser>) -> Result<HttpResponse, Problem> {
    // Refused before any hashing work is spent on a caller who may not create users.
    req.admin()?;
    let new = body.into_inner();
    users::validate_new(&new)?;
    let (clear, generated_password) = match new.password {
        Some(pw) => (pw.into_string(), None),
        None => {
            let pw = password::generate();
            (pw.clone(), Some(pw))
        }
    };
    // Hashed before the operation takes a database connection.
    let password_hash = password::hash_blocking(clear).await?;
    let created = req
        .execute(CreateUser {
            email: new.email,
            name: new.name,
            role: new.role.unwrap_or(Role::Member),
            password_hash,
            generated_password,
        })
        .await?;
    Ok(HttpResponse::Created().json(created))
}

#[utoipa::path(get, path = "/users/{id}", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = User), (status = 404)))]
#[get("/users/{id}")]
pub async fn get_user(req: TenantRequest, id: web::Path<Uuid>) -> Result<HttpResponse, Problem> {
    let user = req.execute(GetUser(*id)).await?;
    Ok(HttpResponse::Ok().json(user))
}

#[utoipa::path(patch, path = "/users/{id}", tag = "users", request_body = UserPatch, security(("bearer" = [])),
    responses((status = 200, body = User), (status = 403), (status = 404),
        (status = 409, description = "Duplicate email, or the last admin would be demoted"), (status = 422)))]
#[patch("/users/{id}")]
pub async fn update_user(
    req: TenantRequest,
    id: web::Path<Uuid>,
    body: Json<UserPatch>,
) -> Result<HttpResponse, Problem> {
    req.user()?;
    let patch = body.into_inner();
    users::validate_patch(&patch)?;
    let password_hash = match patch.password {
        Some(pw) => Some(password::hash_blocking(pw.into_string()).await?),
        None => None,
    };
    let user = req
        .execute(UpdateUser {
            id: *id,
            email: patch.email,
            name: patch.name,
            role: patch.role,
            password_hash,
        })
        .await?;
    // Tokens carry the role: a changed role must be re-checked by every instance.
    req.state()
        .invalidate(Invalidation::User {
            tenant: req.tenant_id,
            user: *id,
        })
        .await;
    Ok(HttpResponse::Ok().json(user))
}

#[utoipa::path(delete, path = "/users/{id}", tag = "users", security(("bearer" = [])),
    responses((status = 204), (status = 403), (status = 404),
        (status = 409, description = "The last admin of the tenant cannot be deleted")))]
#[delete("/users/{id}")]
pub async fn delete_user(req: TenantRequest, id: web::Path<Uuid>) -> Result<HttpResponse, Problem> {
    req.execute(DeleteUser(*id)).await?;
    req.state()
        .invalidate(Invalidation::User {
            tenant: req.tenant_id,
            user: *id,
        })
        .await;
    Ok(HttpResponse::NoContent().finish())
}
