//! A tenant's users as authentication sees them: the login (find the user by email, check the
//! password) and the check that a token's subject is still a live user with the role the token
//! claims.

use futures_util::future::BoxFuture;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{password, stored_role, AuthError, Caller, Claims, Role};
use crate::actors::TenantOp;
use crate::db::{DbError, PgPool, TenantTx};
use crate::input::Text;

/// The user a login names, as stored: the role is checked only once the password matched.
pub struct LoginCandidate {
    id: Uuid,
    email: String,
    role: String,
    password_hash: Option<String>,
}

/// Finds the live user of the caller's tenant with this email (in any case).
pub struct FindLoginUser {
    pub email: Text,
}

impl TenantOp for FindLoginUser {
    type Output = Option<LoginCandidate>;
    type Error = AuthError;
    const OPENS_TENANT_SCHEMA: bool = false;

    fn run<'a>(
        self,
        tx: &'a TenantTx<'a>,
        caller: &'a Caller,
    ) -> BoxFuture<'a, Result<Self::Output, AuthError>> {
        Box::pin(async move {
            let stmt = tx
                .prepare_cached(
                    "select id, email, role, password_hash from app.users \
                     where tenant_id = $1 and lower(email) = lower($2) and deleted_at is null",
                )
                .await?;
            let row = tx
                .query_opt(&stmt, &[&caller.tenant_id, &self.email])
                .await?;
            Ok(row.map(|r| LoginCandidate {
                id: r.get(0),
                email: r.get(1),
                role: r.get(2),
                password_hash: r.get(3),
            }))
        })
    }
}

#[derive(Serialize, ToSchema)]
pub struct LoginUser {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
}

/// A real hash to verify against when the email is unknown, so that a wrong email and a wrong
/// password cost the same time.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| password::hash("not-a-real-password").unwrap_or_default())
}

/// The user `candidate` is, if `given` is their password ([`AuthError::InvalidCredentials`]
/// otherwise, whether the email or the password was wrong). Runs on the blocking thread pool.
pub async fn check_password(
    candidate: Option<LoginCandidate>,
    given: String,
) -> Result<LoginUser, AuthError> {
    let (stored, user) = match candidate {
        Some(LoginCandidate {
            id,
            email,
            role,
            password_hash: Some(hash),
        }) => (hash, Some((id, email, role))),
        _ => (String::new(), None),
    };
    let matches = tokio::task::spawn_blocking(move || {
        let hash = if stored.is_empty() {
            dummy_hash()
        } else {
            stored.as_str()
        };
        password::verify(&given, hash)
    })
    .await
    .map_err(AuthError::HashingTask)?;
    let Some((id, email, role)) = user.filter(|_| matches) else {
        return Err(AuthError::InvalidCredentials);
    };
    Ok(LoginUser {
        id,
        email,
        role: stored_role("users.role", &role)?,
    })
}

/// The role of `user` if they are a live user of `tenant`.
pub async fn live_role(pool: &PgPool, tenant: Uuid, user: Uuid) -> Result<Option<Role>, AuthError> {
    let conn = pool.get().await.map_err(DbError::from)?;
    let stmt = conn
        .prepare_cached(
            "select role from app.users where tenant_id = $1 and id = $2 and deleted_at is null",
        )
        .await?;
    // The context and the read share one Sync: a lookup costs one round trip.
    let row = TenantTx::single_statement(&conn, tenant)
        .query_opt_then_commit(&stmt, &[&tenant, &user])
        .await?;
    row.map(|r| stored_role("users.role", r.get(0))).transpose()
}

/// A validly signed token is not enough: its subject must be a live user (`role` is their
/// current role, None when they no longer exist) with the role the token claims, so that a
/// deleted or demoted user's tokens stop working at once.
pub fn check_claims(role: Option<Role>, claims: &Claims) -> Result<(), AuthError> {
    match role {
        None => Err(AuthError::InvalidToken("the user no longer exists".into())),
        Some(role) if role != claims.role => {
            Err(AuthError::InvalidToken("the user's role changed".into()))
        }
        Some(_) => Ok(()),
    }
}
