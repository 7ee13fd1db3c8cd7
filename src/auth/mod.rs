//! Credentials: password hashing, JWTs for tenant users, API keys, the platform operator
//! token, the login and the live-user check ([`users`]); and the authorization guards
//! ([`guard`]) every operation checks its caller against, with the plans the plan gates read
//! ([`plans`]).

pub mod api_keys;
pub mod guard;
pub mod jwt;
pub mod password;
pub mod users;

use rand::distr::{Alphanumeric, SampleString};
use thiserror::Error;

use crate::db::DbError;

pub use guard::{AccessError, Caller};
pub use jwt::{Claims, JwtKeys, Role};

/// Establishing who the caller is: credentials, the user or key behind them, and the plan
/// gate on API keys.
#[derive(Debug, Error)]
pub enum AuthError {
    #[error("credentials are required")]
    MissingCredentials,
    #[error("invalid token: {0}")]
    InvalidToken(String),
    #[error("invalid credentials")]
    InvalidCredentials,
    /// A stored role this version does not know: an error, never read back as `member`.
    #[error("{column} holds {value:?}, which is not a value this version knows")]
    CorruptRow { column: &'static str, value: String },
    #[error("password hashing failed")]
    Hashing(#[source] argon2::password_hash::Error),
    #[error("the password hashing task did not finish")]
    HashingTask(#[source] tokio::task::JoinError),
    #[error("signing a token failed")]
    Signing(#[source] jsonwebtoken::errors::Error),
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Page(#[from] crate::page::PageError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for AuthError {
    fn from(err: tokio_postgres::Error) -> Self {
        AuthError::Db(err.into())
    }
}

/// A verified bearer credential, before the tenant it names has been checked.
#[derive(Clone, Debug)]
pub enum Credential {
    Jwt(Claims),
    /// An API key claiming this tenant; its hash is checked against that tenant's keys.
    ApiKey {
        tenant: uuid::Uuid,
        hash: String,
    },
}

impl Credential {
    /// Checks a bearer credential's form and, for a JWT, its signature and claims:
    /// [`AuthError::InvalidToken`] when it is not valid. An API key is only parsed here; it is
    /// checked against its tenant's rows ([`api_keys::verify`]) once the tenant is resolved.
    pub fn from_bearer(token: &str, jwt: &JwtKeys) -> Result<Credential, AuthError> {
        if token.starts_with(api_keys::PREFIX) {
            let tenant = api_keys::tenant_of(token)
                .ok_or_else(|| AuthError::InvalidToken("malformed API key".into()))?;
            return Ok(Credential::ApiKey {
                tenant,
                hash: api_keys::hash(token),
            });
        }
        Ok(Credential::Jwt(jwt.verify(token)?))
    }

    pub fn tenant(&self) -> uuid::Uuid {
        match self {
            Credential::Jwt(claims) => claims.tenant_id,
            Credential::ApiKey { tenant, .. } => *tenant,
        }
    }
}

/// The tenant a bearer credential claims, read without verifying anything. It only chooses
/// the tenant to resolve; the credential is verified after, against that tenant.
pub fn claimed_tenant(token: &str) -> Option<uuid::Uuid> {
    if token.starts_with(api_keys::PREFIX) {
        api_keys::tenant_of(token)
    } else {
        jwt::claimed_tenant(token)
    }
}

/// The role stored in `column`; an unknown one is [`AuthError::CorruptRow`].
pub fn stored_role(column: &'static str, value: &str) -> Result<Role, AuthError> {
    Role::parse(value).ok_or_else(|| AuthError::CorruptRow {
        column,
        value: value.to_string(),
    })
}

pub fn random_token(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

/// Compares secrets without leaking, through timing, how long a matching prefix was.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (da, db) = (Sha256::digest(a), Sha256::digest(b));
    da.iter()
        .zip(db.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}
