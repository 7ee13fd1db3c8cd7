//! Request extractors shared by the routes.

use std::future::{ready, Ready};
use std::ops::Deref;

use actix_web::http::{header, StatusCode};
use actix_web::{dev::Payload, web, FromRequest, HttpMessage, HttpRequest};
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;

use crate::auth::{constant_time_eq, AuthError};
use crate::error::FieldError;
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

/// The largest request body (API.md "Errors": 413 over 1 MiB).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// A JSON request body. Like `web::Json`, with the 422 of a member that does not deserialise
/// naming that member (`title`, `events[3].metadata`): each input type refuses what it cannot
/// take (see [`crate::input`]), and the client learns where.
///
/// `Json<Option<T>>` also takes an empty body, as `None`.
pub struct Json<T>(pub T);

impl<T> Json<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Json<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let is_json = match req.mime_type() {
            Ok(Some(mime)) => {
                Some(mime.subtype() == "json" || mime.suffix().is_some_and(|s| s == "json"))
            }
            Ok(None) => None,
            Err(_) => Some(false),
        };
        let length = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            if is_json == Some(false) {
                return Err(unsupported_media_type().into());
            }
            if length.is_some_and(|n| n > BODY_LIMIT) {
                return Err(payload_too_large().into());
            }
            let mut body = web::BytesMut::with_capacity(length.unwrap_or(0));
            while let Some(chunk) = payload.next().await {
                let chunk = chunk
                    .map_err(|e| Problem::bad_request(format!("cannot read the body: {e}")))?;
                if body.len() + chunk.len() > BODY_LIMIT {
                    return Err(payload_too_large().into());
                }
                body.extend_from_slice(&chunk);
            }
            if body.is_empty() {
                if let Ok(value) = serde_json::from_slice::<T>(b"null") {
                    return Ok(Json(value));
                }
            }
            if is_json.is_none() {
                return Err(unsupported_media_type().into());
            }
            parse_json(&body).map(Json).map_err(Into::into)
        })
    }
}

fn unsupported_media_type() -> Problem {
    Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "send the body as application/json",
    )
}

fn payload_too_large() -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the body is over the limit of 1 MiB",
    )
}

/// A body that is not JSON is 400; JSON that does not fit `T` is 422 naming the member.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    // The common case pays nothing for the path: it is only traced once the body has failed.
    serde_json::from_slice(body).map_err(|err| {
        // serde_json calls some misfits syntax errors (a number where an enum's name belongs):
        // a body that is JSON is the client's data, not malformed.
        let is_json = || {
            std::str::from_utf8(body)
                .is_ok_and(|text| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok())
        };
        if !err.is_data() && !is_json() {
            return Problem::bad_request(format!("malformed JSON body: {err}"));
        }
        let traced = serde_path_to_error::deserialize::<_, T>(
            &mut serde_json::Deserializer::from_slice(body),
        );
        let (field, err) = match traced {
            Err(traced) => (member(traced.path(), "body"), traced.into_inner()),
            Ok(_) => ("body".to_string(), err),
        };
        let position = format!(" at line {} column {}", err.line(), err.column());
        let message = err.to_string();
        let message = message.strip_suffix(&position).unwrap_or(&message);
        Problem::validation(vec![FieldError::new(&field, message)])
    })
}

/// The query string, as `web::Query` reads it, with the 422 of a parameter that does not fit
/// naming that parameter.
pub struct Query<T>(pub T);

impl<T> Query<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Query<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned> FromRequest for Query<T> {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            parse_query(req.query_string())
                .map(Query)
                .map_err(Into::into),
        )
    }
}

/// Percent-decoding is lossy, as `web::Query`'s: bytes that are not UTF-8 become U+FFFD, so
/// a query string can only fail on a parameter's own rule.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, Problem> {
    serde_urlencoded::from_str(query).map_err(|err| {
        let traced = serde_path_to_error::deserialize::<_, T>(serde_urlencoded::Deserializer::new(
            form_urlencoded::parse(query.as_bytes()),
        ));
        let (field, message) = match traced {
            Err(traced) => (member(traced.path(), "query"), traced.inner().to_string()),
            Ok(_) => ("query".to_string(), err.to_string()),
        };
        Problem::validation(vec![FieldError::new(&field, message)])
    })
}

/// `events[3].metadata`; `whole` when the error is the document's own (a missing member).
fn member(path: &serde_path_to_error::Path, whole: &str) -> String {
    if path.iter().next().is_none() {
        whole.to_string()
    } else {
        path.to_string()
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::StatusCode;
    use serde::Deserialize;

    use super::{parse_json, parse_query};
    use crate::domain::audit_logs::AuditQuery;
    use crate::domain::tasks::{NewTask, TaskQuery};
    use crate::http::problem::Problem;
    use crate::input::Text;

    fn field_error(problem: Problem) -> (StatusCode, String, String) {
        let body = problem.body();
        let error = &body["errors"][0];
        (
            problem.status,
            error["field"].as_str().unwrap_or_default().to_string(),
            error["message"].as_str().unwrap_or_default().to_string(),
        )
    }

    #[test]
    fn a_body_member_that_does_not_deserialise_is_named() {
        let body = br#"{"project_id": "01a24d40-c826-77db-818e-5fdd5253ce56", "title": "a\u0000"}"#;
        let (status, field, message) = field_error(parse_json::<NewTask>(body).unwrap_err());
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(field, "title");
        assert_eq!(message, "must not contain the NUL character (\\u0000)");

        let body =
            br#"{"project_id": "01a24d40-c826-77db-818e-5fdd5253ce56", "title": "t", "status": 5}"#;
        let (status, field, _) = field_error(parse_json::<NewTask>(body).unwrap_err());
        assert_eq!(
            (status, field.as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, "status")
        );

        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Batch {
            events: Vec<Event>,
        }
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Event {
            name: Text,
        }
        let body = br#"{"events": [{"name": "ok"}, {"name": "\u0000"}]}"#;
        let (_, field, _) = field_error(parse_json::<Batch>(body).unwrap_err());
        assert_eq!(field, "events[1].name");
    }

    #[test]
    fn an_unknown_member_is_named_and_a_missing_one_names_the_body() {
        let body = br#"{"project_id": "01a24d40-c826-77db-818e-5fdd5253ce56", "title": "t", "tenant_id": 1}"#;
        let (status, field, message) = field_error(parse_json::<NewTask>(body).unwrap_err());
        assert_eq!(
            (status, field.as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, "tenant_id")
        );
        assert!(
            message.starts_with("unknown field `tenant_id`"),
            "{message}"
        );
        assert!(!message.contains(" at line "), "{message}");
        let (_, field, _) = field_error(parse_json::<NewTask>(br#"{"title": "t"}"#).unwrap_err());
        assert_eq!(field, "body");
    }

    #[test]
    fn a_body_that_is_not_json_is_400() {
        for body in [&b"{"[..], b"{\"title\": \"\xff\"}", b""] {
            let problem = parse_json::<NewTask>(body).unwrap_err();
            assert_eq!(problem.status, StatusCode::BAD_REQUEST, "{problem}");
        }
        // Deeper than serde_json's recursion limit.
        let deep = format!("{{\"a\": {}", "[".repeat(1_000));
        let problem = parse_json::<serde_json::Value>(deep.as_bytes()).unwrap_err();
        assert_eq!(problem.status, StatusCode::BAD_REQUEST, "{problem}");
    }

    #[test]
    fn a_query_parameter_that_does_not_fit_is_named() {
        let (status, field, message) =
            field_error(parse_query::<AuditQuery>("action=a&resource=x%00y").unwrap_err());
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(field, "resource");
        assert!(message.contains("NUL"), "{message}");
        let (_, field, _) = field_error(parse_query::<TaskQuery>("limit=ten").unwrap_err());
        assert_eq!(field, "limit");
        let (_, field, _) = field_error(parse_query::<TaskQuery>("tenant_id=x").unwrap_err());
        assert_eq!(field, "tenant_id");
        // Not UTF-8: read as U+FFFD, like web::Query does, and taken.
        let query = parse_query::<AuditQuery>("resource=%FF").unwrap();
        assert_eq!(query.resource.unwrap(), "\u{fffd}");
    }
}
