//! Request extractors shared by the routes.

use std::future::{ready, Ready};

use actix_web::{dev::Payload, web, FromRequest, HttpMessage, HttpRequest};
use secrecy::ExposeSecret;

use crate::auth::{constant_time_eq, AuthError};
use crate::http::problem::Problem;
use crate::state::AppState;

/// The id of the current request (from `X-Request-Id` when the caller sent a sane one).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

impl FromRequest for RequestId {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let id = req
            .extensions()
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(|| RequestId(uuid::Uuid::now_v7().to_string()));
        ready(Ok(id))
    }
}

pub fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// A platform operator, proven by `Authorization: Bearer <PLATFORM_ADMIN_TOKEN>`. Without a
/// configured token every operator endpoint answers 401.
pub struct PlatformOperator;

impl FromRequest for PlatformOperator {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = (|| {
            let state = req
                .app_data::<web::Data<AppState>>()
                .ok_or_else(Problem::internal)?;
            let expected = state
                .config
                .platform_admin_token
                .as_ref()
                .map(ExposeSecret::expose_secret)
                .ok_or_else(|| Problem::from(AuthError::MissingCredentials))?;
            let given =
                bearer_token(req).ok_or_else(|| Problem::from(AuthError::MissingCredentials))?;
            if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
                Ok(PlatformOperator)
            } else {
                Err(Problem::from(AuthError::InvalidCredentials))
            }
        })();
        ready(result.map_err(Into::into))
    }
}
