//! A tenant's users as authentication sees them: the login (find the user by email, check the
//! password).

use futures_util::future::BoxFuture;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{password, stored_role, AuthError, Caller, Role};
use crate::actors::TenantOp;
use crate::db::TenantTx;

/// The user a login names, as stored: the role is checked only once the password matched.
pub struct LoginCandidate {
    id: Uuid,
    email: String,
    role: String,
    password_hash: Option<String>,
}

/// Finds the live user of the caller's tenant with this email (in any case).
pub struct FindLoginUser {
    pub email: String,
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
