//! The error answers every operation of a kind can give, added to the OpenAPI document in one
//! place instead of on each route: the guard, the extractors and the rate limiter answer them
//! before a handler runs. Every error response is `application/problem+json` (a `Problem`
//! schema). schemathesis (tests/api/schemathesis.rs) checks the answers against this.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa::openapi::{Content, Ref, RefOr, Response, ResponseBuilder};
use utoipa::Modify;

const PROBLEM: &str = "application/problem+json";

/// The answers of the extractors, the guard and the limiter, by what an operation takes.
const TENANT: &[(&str, &str)] = &[
    (
        "400",
        "No tenant identified (no token, X-Tenant-ID or subdomain), or a malformed request",
    ),
    ("401", "Missing, invalid or expired credentials"),
    (
        "403",
        "A token of another tenant, a role that may not, or a suspended tenant",
    ),
    (
        "429",
        "The tenant's rate limit is reached: Retry-After says when to retry",
    ),
    (
        "503",
        "The tenant has too many operations under way: Retry-After",
    ),
];
/// Of the tenant itself: a token that outlived its tenant, writes while it is suspended.
const TENANT_GONE: &[(&str, &str)] = &[("404", "The tenant does not exist (any more)")];
const TENANT_WRITE: &[(&str, &str)] = &[(
    "402",
    "The tenant is suspended (`tenant_suspended`): reads work, writes are refused",
)];
const OPERATOR: &[(&str, &str)] = &[("401", "Missing or wrong PLATFORM_ADMIN_TOKEN")];
const BODY: &[(&str, &str)] = &[
    ("400", "The body is not well-formed JSON"),
    ("413", "The body is larger than the endpoint accepts"),
    ("415", "The body is not application/json"),
    (
        "422",
        "The body does not validate: `errors` lists `{field, message}`",
    ),
];
/// Operations without credentials that name their tenant by header or subdomain.
const NAMED_TENANT: &[(&str, &str)] =
    &[("400", "No tenant identified (no X-Tenant-ID or subdomain)")];
const PARAMETERS: &[(&str, &str)] = &[(
    "422",
    "A path or query parameter does not validate: `errors` lists `{field, message}`",
)];

pub struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .components
            .get_or_insert_with(Default::default)
            .schemas
            .insert("Problem".into(), RefOr::T(problem_schema().into()));
        for item in openapi.paths.paths.values_mut() {
            if let Some(operation) = &mut item.get {
                complete(operation, false);
            }
            for operation in [
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                complete(operation, true);
            }
        }
    }
}

fn complete(operation: &mut Operation, write: bool) {
    let schemes = serde_json::to_value(&operation.security).unwrap_or_default();
    let secured_by = |scheme: &str| {
        schemes
            .as_array()
            .is_some_and(|all| all.iter().any(|s| s.get(scheme).is_some()))
    };
    let mut common: Vec<(&str, &str)> = Vec::new();
    if secured_by("bearer") {
        common.extend(TENANT);
        common.extend(TENANT_GONE);
        if write {
            common.extend(TENANT_WRITE);
        }
    }
    if secured_by("operator") {
        common.extend(OPERATOR);
    }
    if operation.request_body.is_some() {
        common.extend(BODY);
    }
    let parameters = operation.parameters.as_deref().unwrap_or_default();
    if parameters
        .iter()
        .any(|p| p.name.eq_ignore_ascii_case("X-Tenant-ID"))
    {
        common.extend(NAMED_TENANT);
    }
    if parameters
        .iter()
        .any(|p| !matches!(p.parameter_in, ParameterIn::Header))
    {
        common.extend(PARAMETERS);
    }
    let responses = &mut operation.responses.responses;
    for (status, description) in common {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(problem_response(description)));
    }
    // Error answers declared without a body, or with another one (OFREP's failures), may also
    // come as problem details from the guard.
    for (status, response) in responses.iter_mut() {
        let error = status.parse::<u16>().is_ok_and(|s| s >= 400);
        if let (true, RefOr::T(response)) = (error, response) {
            response
                .content
                .entry(PROBLEM.to_owned())
                .or_insert_with(problem_content);
        }
    }
}

fn problem_content() -> Content {
    Content::new(Some(Ref::from_schema_name("Problem")))
}

fn problem_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(PROBLEM, problem_content())
        .build()
}

/// RFC 9457 problem details with the stable `code`; members beyond these (`errors`,
/// `code_detail`, ...) depend on the code.
fn problem_schema() -> Object {
    let string = || ObjectBuilder::new().schema_type(Type::String);
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("type", string())
        .property("title", string())
        .property("status", ObjectBuilder::new().schema_type(Type::Integer))
        .property("detail", string())
        .property("code", string())
        .required("type")
        .required("title")
        .required("status")
        .required("code")
        .build()
}
