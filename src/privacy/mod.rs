//! GDPR erasure of one data subject in a tenant (docs/privacy.md, API.md "Operations").
//!
//! - [`erase`]: finds the subject's user rows (by id or email), then in one transaction removes
//!   their personal data from every table of the shared schema and of the tenant's schema, and
//!   pseudonymises the audit trail; the erasure is itself audited (`privacy.erasure`);
//! - [`scrub`]: the text and JSON rewriting it relies on (no database).
//!
//! The whole-tenant erasure is `tenancy::lifecycle::purge_now` (`tenantry tenants purge <t> --now`).

pub mod erase;
pub mod scrub;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::AccessError;
use crate::db::DbError;
use crate::error::FieldError;
use crate::input::Text;

pub use erase::{erase, GetErasure};

#[derive(Debug, Error)]
pub enum PrivacyError {
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// `user`, `erasure`.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The subject is the tenant's last live admin.
    #[error("the tenant must keep at least one admin")]
    LastAdmin,
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for PrivacyError {
    fn from(err: tokio_postgres::Error) -> Self {
        PrivacyError::Db(err.into())
    }
}

impl From<deadpool::managed::PoolError<tokio_postgres::Error>> for PrivacyError {
    fn from(err: deadpool::managed::PoolError<tokio_postgres::Error>) -> Self {
        PrivacyError::Db(err.into())
    }
}

/// `POST /privacy/erasure`: exactly one of `user_id` and `email`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErasureRequest {
    /// The user's id in this tenant.
    pub user_id: Option<Uuid>,
    /// The user's email address in this tenant (case-insensitive); every user row of the
    /// tenant with that address is erased.
    #[schema(value_type = Option<String>)]
    pub email: Option<Text>,
}

/// Who is to be erased, once the request is validated.
#[derive(Debug, Clone)]
pub enum Subject {
    Id(Uuid),
    Email(String),
}

impl ErasureRequest {
    pub fn subject(self) -> Result<Subject, PrivacyError> {
        match (self.user_id, self.email) {
            (Some(id), None) => Ok(Subject::Id(id)),
            (None, Some(email)) => {
                let email = email.trim().to_string();
                let mut errors = Vec::new();
                crate::tenancy::validate::email("email", &email, &mut errors);
                if errors.is_empty() {
                    Ok(Subject::Email(email))
                } else {
                    Err(PrivacyError::Validation(errors))
                }
            }
            (Some(_), Some(_)) => Err(PrivacyError::Validation(vec![FieldError::new(
                "user_id",
                "give either user_id or email, not both",
            )])),
            (None, None) => Err(PrivacyError::Validation(vec![FieldError::new(
                "user_id",
                "give user_id or email",
            )])),
        }
    }
}

/// An erasure as `POST /privacy/erasure` and `GET /privacy/erasure/{id}` answer it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Erasure {
    pub erasure_id: Uuid,
    /// `completed`: the erasure runs within the request, so a recorded erasure is complete.
    pub status: &'static str,
    /// What stands for the subject in the rows that were kept (the audit trail).
    pub pseudonym: Uuid,
    pub completed_at: chrono::DateTime<chrono::Utc>,
    /// The subject's own rows of `app.users` removed.
    pub users_erased: i64,
    /// The user ids erased, for the caller's cache invalidation; never serialised.
    #[serde(skip)]
    pub user_ids: Vec<Uuid>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(user_id: Option<Uuid>, email: Option<&str>) -> ErasureRequest {
        ErasureRequest {
            user_id,
            email: email.map(|e| Text::parse(e).unwrap()),
        }
    }

    #[test]
    fn exactly_one_of_id_and_email() {
        let id = Uuid::now_v7();
        assert!(matches!(request(Some(id), None).subject(), Ok(Subject::Id(got)) if got == id));
        assert!(matches!(
            request(None, Some(" a@b.io ")).subject(),
            Ok(Subject::Email(e)) if e == "a@b.io"
        ));
        for bad in [
            request(None, None),
            request(Some(id), Some("a@b.io")),
            request(None, Some("not an email")),
        ] {
            assert!(matches!(bad.subject(), Err(PrivacyError::Validation(_))));
        }
    }
}
