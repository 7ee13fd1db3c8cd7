//! The OpenFeature Remote Evaluation Protocol (OFREP, open-feature/protocol `service/openapi.yaml`)
//! as shapes: the evaluation request, the success and failure bodies, the bulk body and its
//! ETag. The HTTP edge (`http::routes::ofrep`) gives each failure its status.
//!
//! - A body that is not JSON, or not an object: `PARSE_ERROR`.
//! - No `context` object, or a `targetingKey` that is not a non-empty string of at most
//!   [`MAX_TARGETING_KEY`] characters: `INVALID_CONTEXT`. Without a `targetingKey` the caller
//!   is the subject: its user, else its tenant (docs/flags.md).
//! - An unknown flag: `FLAG_NOT_FOUND`.
//! - `TYPE_MISMATCH` is not the server's to send: OFREP responses carry no requested type, and
//!   the client SDK compares the value it got with the type it asked for.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::{Definition, Evaluation};

pub const MAX_TARGETING_KEY: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    ParseError,
    InvalidContext,
    FlagNotFound,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ParseError => "PARSE_ERROR",
            ErrorCode::InvalidContext => "INVALID_CONTEXT",
            ErrorCode::FlagNotFound => "FLAG_NOT_FOUND",
        }
    }
}

/// An evaluation the protocol answers with an error body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub code: ErrorCode,
    pub details: String,
}

impl Failure {
    fn new(code: ErrorCode, details: impl Into<String>) -> Self {
        Failure {
            code,
            details: details.into(),
        }
    }

    pub fn not_found(key: &str) -> Self {
        Failure::new(
            ErrorCode::FlagNotFound,
            format!("flag '{key}' was not found"),
        )
    }

    /// `{key, errorCode, errorDetails}` (single evaluation), or without `key` (bulk).
    pub fn body(&self, key: Option<&str>) -> EvaluationFailure {
        EvaluationFailure {
            key: key.map(str::to_string),
            error_code: self.code.as_str().to_string(),
            error_details: self.details.clone(),
        }
    }
}

/// What evaluation takes from an OFREP request's context.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    pub targeting_key: Option<String>,
}

/// Reads `{"context": {"targetingKey": ..., ...}}`. Other context attributes are accepted and
/// not used: no rule of a flag targets them. The body is read in one pass that keeps only the
/// targeting key (no JSON tree is built); as with a tree, a member given twice counts once, the
/// last time.
pub fn parse_request(body: &[u8]) -> Result<Context, Failure> {
    let request = serde_json::from_slice::<Loose<RequestMembers>>(body).map_err(|err| {
        Failure::new(
            ErrorCode::ParseError,
            format!("the body is not JSON: {err}"),
        )
    })?;
    let Loose(Some(request)) = request else {
        return Err(Failure::new(
            ErrorCode::ParseError,
            "the body must be a JSON object",
        ));
    };
    let context = match request.context {
        Some(Loose(Some(context))) => context,
        Some(Loose(None)) => {
            return Err(Failure::new(
                ErrorCode::InvalidContext,
                "context must be an object",
            ))
        }
        None => {
            return Err(Failure::new(
                ErrorCode::InvalidContext,
                "the request has no context",
            ))
        }
    };
    let targeting_key = match context.targeting_key {
        None | Some(Scalar::Null) => None,
        Some(Scalar::String(key))
            if !key.is_empty() && key.chars().count() <= MAX_TARGETING_KEY =>
        {
            Some(key)
        }
        Some(_) => {
            return Err(Failure::new(
                ErrorCode::InvalidContext,
                format!(
                "targetingKey must be a non-empty string of at most {MAX_TARGETING_KEY} characters"
            ),
            ))
        }
    };
    Ok(Context { targeting_key })
}

/// Any JSON value: `Some` of the members read from an object, `None` for anything else.
struct Loose<T>(Option<T>);

/// The one member of an object that is read; the others are skipped unread.
trait Members: Default {
    const NAME: &'static str;
    type Value: for<'de> Deserialize<'de>;
    fn set(&mut self, value: Self::Value);
}

#[derive(Default)]
struct RequestMembers {
    context: Option<Loose<ContextMembers>>,
}

impl Members for RequestMembers {
    const NAME: &'static str = "context";
    type Value = Loose<ContextMembers>;
    fn set(&mut self, value: Self::Value) {
        self.context = Some(value);
    }
}

#[derive(Default)]
struct ContextMembers {
    targeting_key: Option<Scalar>,
}

impl Members for ContextMembers {
    const NAME: &'static str = "targetingKey";
    type Value = Scalar;
    fn set(&mut self, value: Self::Value) {
        self.targeting_key = Some(value);
    }
}

/// A JSON value as a targeting key: null, a string, or anything else.
enum Scalar {
    Null,
    String(String),
    Other,
}

/// Whether an object's key is `.0`.
struct IsMember(&'static str);

impl<'de> DeserializeSeed<'de> for IsMember {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for IsMember {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

/// Skips the elements of an array or the members of an object.
fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

impl<'de, T: Members> Deserialize<'de> for Loose<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct LooseVisitor<T>(PhantomData<T>);
        impl<'de, T: Members> Visitor<'de> for LooseVisitor<T> {
            type Value = Loose<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Loose(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Loose(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Loose(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Loose(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Loose(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Loose(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                skip_seq(seq).map(|()| Loose(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = T::default();
                while let Some(wanted) = map.next_key_seed(IsMember(T::NAME))? {
                    if wanted {
                        members.set(map.next_value()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Loose(Some(members)))
            }
        }
        d.deserialize_any(LooseVisitor(PhantomData))
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl<'de> Visitor<'de> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Scalar, E> {
                Ok(Scalar::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Scalar, E> {
                Ok(Scalar::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Scalar, E> {
                Ok(Scalar::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Scalar, E> {
                Ok(Scalar::Other)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::String(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar::String(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Scalar, A::Error> {
                skip_seq(seq).map(|()| Scalar::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Scalar, A::Error> {
                skip_map(map).map(|()| Scalar::Other)
            }
        }
        d.deserialize_any(ScalarVisitor)
    }
}

/// `evaluationRequest` / `bulkEvaluationRequest`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct EvaluationRequest {
    /// `targetingKey` (optional here: the caller is the subject without it) and any other
    /// attributes.
    #[schema(value_type = Object)]
    context: Map<String, Value>,
}

/// `evaluationSuccess`. Borrows from the definitions it answers with: an answer is written
/// straight from them, no value copied.
#[derive(Debug, Serialize, ToSchema)]
pub struct EvaluationSuccess<'a> {
    pub key: &'a str,
    /// Boolean, string, number, array or object: the flag's type.
    #[schema(value_type = Value)]
    pub value: &'a Value,
    /// `STATIC`, `TARGETING_MATCH`, `SPLIT`, `DEFAULT` or `DISABLED`.
    pub reason: &'static str,
    /// `override`, `plan` or `default`.
    pub variant: &'static str,
    /// `version`: the definition's version.
    #[schema(value_type = Object)]
    pub metadata: Metadata,
}

/// An evaluation's `metadata`.
#[derive(Debug, Serialize)]
pub struct Metadata {
    pub version: i32,
}

impl<'a> EvaluationSuccess<'a> {
    pub fn new(definition: &'a Definition, evaluation: &Evaluation<'a>) -> Self {
        EvaluationSuccess {
            key: &definition.key,
            value: evaluation.value,
            reason: evaluation.reason.as_str(),
            variant: evaluation.variant.as_str(),
            metadata: Metadata {
                version: definition.version,
            },
        }
    }
}

/// `evaluationFailure`, `flagNotFound`, `bulkEvaluationFailure` (no `key`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationFailure {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `PARSE_ERROR`, `INVALID_CONTEXT` or `FLAG_NOT_FOUND`.
    pub error_code: String,
    pub error_details: String,
}

/// `bulkEvaluationSuccess`: every flag, ordered by key.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkEvaluationSuccess<'a> {
    pub flags: Vec<EvaluationSuccess<'a>>,
}

/// A strong ETag of a bulk response body: it changes exactly when the body does (a value, a
/// reason, a variant or a definition's version).
pub fn etag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!("\"{}\"", hex::encode(&digest[..16]))
}

/// Whether an `If-None-Match` header value names `etag` (RFC 9110: a list, `*`, weak
/// comparison).
pub fn none_match(header: &str, etag: &str) -> bool {
    let opaque = |tag: &str| {
        let tag = tag.trim();
        tag.strip_prefix("W/").unwrap_or(tag).to_string()
    };
    let ours = opaque(etag);
    header
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || opaque(tag) == ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(body: &str) -> Option<ErrorCode> {
        parse_request(body.as_bytes()).err().map(|f| f.code)
    }

    #[test]
    fn requests() {
        assert_eq!(
            parse_request(br#"{"context": {"targetingKey": "u-1", "plan": "x"}}"#),
            Ok(Context {
                targeting_key: Some("u-1".into())
            })
        );
        assert_eq!(parse_request(br#"{"context": {}}"#), Ok(Context::default()));
        assert_eq!(
            parse_request(br#"{"context": {"targetingKey": null, "a": [1, {"b": 2}]}}"#),
            Ok(Context::default())
        );
        // Escapes are read, and the last of a member given twice counts, as in a JSON tree.
        assert_eq!(
            parse_request(
                br#"{"context": {"targetingKey": 1, "targetingKey": "u\u002d2"}, "x": {}}"#
            ),
            Ok(Context {
                targeting_key: Some("u-2".into())
            })
        );
        assert_eq!(
            code(r#"{"context": {"targetingKey": "u"}, "context": null}"#),
            Some(ErrorCode::InvalidContext)
        );
        assert_eq!(code("3"), Some(ErrorCode::ParseError));
        assert_eq!(code(r#"{"context": {}} x"#), Some(ErrorCode::ParseError));
        assert_eq!(code(r#"{"context": {"#), Some(ErrorCode::ParseError));
        assert_eq!(
            code(r#"{"context": [{}]}"#),
            Some(ErrorCode::InvalidContext)
        );
        assert_eq!(
            code(r#"{"context": {"targetingKey": ["u"]}}"#),
            Some(ErrorCode::InvalidContext)
        );
        assert_eq!(
            code(r#"{"context": {"targetingKey": {"a": 1}}}"#),
            Some(ErrorCode::InvalidContext)
        );
        assert_eq!(code("not json"), Some(ErrorCode::ParseError));
        assert_eq!(code(""), Some(ErrorCode::ParseError));
        assert_eq!(code("[1]"), Some(ErrorCode::ParseError));
        assert_eq!(code("{}"), Some(ErrorCode::InvalidContext));
        assert_eq!(code(r#"{"context": 3}"#), Some(ErrorCode::InvalidContext));
        assert_eq!(
            code(r#"{"context": {"targetingKey": 3}}"#),
            Some(ErrorCode::InvalidContext)
        );
        assert_eq!(
            code(r#"{"context": {"targetingKey": ""}}"#),
            Some(ErrorCode::InvalidContext)
        );
        let long = format!(
            r#"{{"context": {{"targetingKey": "{}"}}}}"#,
            "k".repeat(1025)
        );
        assert_eq!(code(&long), Some(ErrorCode::InvalidContext));
    }

    #[test]
    fn failure_bodies() {
        let body = serde_json::to_value(Failure::not_found("x").body(Some("x"))).unwrap();
        assert_eq!(body["key"], "x");
        assert_eq!(body["errorCode"], "FLAG_NOT_FOUND");
        assert!(body["errorDetails"].as_str().unwrap().contains("'x'"));
        let bulk = serde_json::to_value(Failure::not_found("x").body(None)).unwrap();
        assert!(bulk.get("key").is_none());
    }

    #[test]
    fn etags() {
        let tag = etag(b"{}");
        assert!(tag.starts_with('"') && tag.ends_with('"') && tag.len() == 34);
        assert_ne!(tag, etag(b"{ }"));
        assert!(none_match(&tag, &tag));
        assert!(none_match(&format!("\"other\", W/{tag}"), &tag));
        assert!(none_match("*", &tag));
        assert!(!none_match("\"other\"", &tag));
    }
}
