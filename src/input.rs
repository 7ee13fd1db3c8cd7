//! Values a client sends, parsed at the boundary into types PostgreSQL can store ("parse, don't
//! validate"): once a request body, query or command-line argument has deserialised, no text in
//! it can make a statement fail.
//!
//! - [`Text`]: a string without the NUL character, which PostgreSQL refuses in `text` and
//!   `jsonb` (the database is UTF-8, so every other character is storable). Every string a
//!   client sends that may reach SQL is a `Text`, so a NUL is a 422 naming the field instead of
//!   a 500 from the statement.
//! - [`Date`]: an RFC 3339 full-date, `YYYY-MM-DD`: four-digit years keep every date inside
//!   PostgreSQL's range (4713 BC to 5874897 AD), which chrono's own parser does not (it reads
//!   `-5000-01-01`).
//! - [`json_is_storable`]: the same rule for a JSON document bound for a `jsonb` column;
//!   [`timestamp_is_storable`]: a decoded instant PostgreSQL's `timestamptz` holds.
//!
//! Lengths and shapes (a name of 1 to 200 characters, an email address) stay with each area's
//! validation, which reports every bad field of a body at once; these types refuse only what
//! no area could store. This module imports nothing of the crate.

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::{Serialize, Serializer};
use serde_json::Value;
use thiserror::Error;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

/// Why a value a client sent cannot be taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum InputError {
    #[error("must not contain the NUL character (\\u0000)")]
    Nul,
    #[error("must be a date as YYYY-MM-DD")]
    Date,
}

/// Text PostgreSQL can store: any string without the NUL character. Derefs to `str`.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Text(String);

impl Text {
    pub fn parse(value: impl Into<String>) -> Result<Text, InputError> {
        let value = value.into();
        if value.contains('\0') {
            Err(InputError::Nul)
        } else {
            Ok(Text(value))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<Text> for String {
    fn from(text: Text) -> String {
        text.0
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Command-line arguments (clap finds this).
impl FromStr for Text {
    type Err = InputError;
    fn from_str(value: &str) -> Result<Text, InputError> {
        Text::parse(value)
    }
}

impl TryFrom<String> for Text {
    type Error = InputError;
    fn try_from(value: String) -> Result<Text, InputError> {
        Text::parse(value)
    }
}

impl TryFrom<&str> for Text {
    type Error = InputError;
    fn try_from(value: &str) -> Result<Text, InputError> {
        Text::parse(value)
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Text, D::Error> {
        struct TextVisitor;

        impl Visitor<'_> for TextVisitor {
            type Value = Text;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Text, E> {
                Text::parse(value).map_err(E::custom)
            }

            fn visit_string<E: de::Error>(self, value: String) -> Result<Text, E> {
                Text::parse(value).map_err(E::custom)
            }
        }

        deserializer.deserialize_string(TextVisitor)
    }
}

/// Bound as a `text` (or `varchar`) parameter, like the `str` it holds.
impl ToSql for Text {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.0.as_str().to_sql(ty, out)
    }

    fn accepts(ty: &Type) -> bool {
        <&str as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

impl utoipa::PartialSchema for Text {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("Text without the NUL character (\\u0000)"))
            .into()
    }
}

impl utoipa::ToSchema for Text {}

/// A calendar date as RFC 3339 writes it (`YYYY-MM-DD`), so always one PostgreSQL's `date`
/// holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(NaiveDate);

impl Date {
    pub fn parse(value: &str) -> Result<Date, InputError> {
        let bytes = value.as_bytes();
        let shaped = bytes.len() == 10
            && bytes.iter().enumerate().all(|(i, b)| match i {
                4 | 7 => *b == b'-',
                _ => b.is_ascii_digit(),
            });
        if !shaped {
            return Err(InputError::Date);
        }
        NaiveDate::parse_from_str(value, "%Y-%m-%d")
            .map(Date)
            .map_err(|_| InputError::Date)
    }

    pub fn get(self) -> NaiveDate {
        self.0
    }
}

impl From<Date> for NaiveDate {
    fn from(date: Date) -> NaiveDate {
        date.0
    }
}

impl FromStr for Date {
    type Err = InputError;
    fn from_str(value: &str) -> Result<Date, InputError> {
        Date::parse(value)
    }
}

impl Serialize for Date {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Date, D::Error> {
        struct DateVisitor;

        impl Visitor<'_> for DateVisitor {
            type Value = Date;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a date as YYYY-MM-DD")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Date, E> {
                Date::parse(value).map_err(E::custom)
            }
        }

        deserializer.deserialize_str(DateVisitor)
    }
}

impl utoipa::PartialSchema for Date {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::schema::SchemaFormat::KnownFormat(
                utoipa::openapi::schema::KnownFormat::Date,
            )))
            .into()
    }
}

impl utoipa::ToSchema for Date {}

/// Whether `value` can be stored in a `jsonb` column: no NUL character in any string or member
/// name, at any depth. serde_json refuses documents nested deeper than 128 levels, which bounds
/// the recursion.
pub fn json_is_storable(value: &Value) -> bool {
    match value {
        Value::String(s) => !s.contains('\0'),
        Value::Array(items) => items.iter().all(json_is_storable),
        Value::Object(members) => members
            .iter()
            .all(|(key, value)| !key.contains('\0') && json_is_storable(value)),
        Value::Null | Value::Bool(_) | Value::Number(_) => true,
    }
}

/// Whether PostgreSQL's `timestamptz` holds `at`: from 4714-11-24 BC (its first day) on;
/// chrono reaches back to 262143 BC, and its last instant (262143 AD) is before PostgreSQL's.
pub fn timestamp_is_storable(at: &DateTime<Utc>) -> bool {
    NaiveDate::from_ymd_opt(-4713, 11, 24)
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .is_some_and(|first| at.naive_utc() >= first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_refuses_the_nul_character_only() {
        assert_eq!(Text::parse("a\0b"), Err(InputError::Nul));
        for fine in ["", " ", "\u{1}\u{1f}\u{7f}", "\u{feff}", "\u{10ffff}", "😀"] {
            assert_eq!(Text::parse(fine).unwrap(), fine);
        }
        let err = serde_json::from_str::<Text>(r#""a\u0000b""#).unwrap_err();
        assert!(err.is_data(), "{err}");
        assert!(err.to_string().contains("NUL"), "{err}");
        assert_eq!(serde_json::from_str::<Text>(r#""ok""#).unwrap(), "ok");
        assert!(serde_json::from_str::<Text>("5").unwrap_err().is_data());
        assert_eq!(
            serde_json::to_string(&Text::parse("x").unwrap()).unwrap(),
            r#""x""#
        );
        assert_eq!("a\0".parse::<Text>(), Err(InputError::Nul));
    }

    #[test]
    fn dates_are_four_digit_years() {
        assert_eq!(
            Date::parse("2030-01-31").unwrap().get(),
            NaiveDate::from_ymd_opt(2030, 1, 31).unwrap()
        );
        assert!(Date::parse("0000-01-01").is_ok());
        assert!(Date::parse("9999-12-31").is_ok());
        for bad in [
            "-5000-01-01",
            "+262143-12-31",
            "2024-02-30",
            "2024-1-01",
            "2024-01-01T00:00:00Z",
            "２０２４-01-01",
            "",
        ] {
            assert_eq!(Date::parse(bad), Err(InputError::Date), "{bad}");
        }
        let err = serde_json::from_str::<Date>(r#""-4714-01-01""#).unwrap_err();
        assert!(err.is_data(), "{err}");
        assert_eq!(
            serde_json::to_string(&Date::parse("2030-01-31").unwrap()).unwrap(),
            r#""2030-01-31""#
        );
    }

    #[test]
    fn timestamps_before_postgresqls_first_day_are_not_storable() {
        let at = |micros: i64| DateTime::from_timestamp_micros(micros).unwrap();
        assert!(timestamp_is_storable(&at(0)));
        assert!(timestamp_is_storable(&DateTime::<Utc>::MAX_UTC));
        assert!(!timestamp_is_storable(&DateTime::<Utc>::MIN_UTC));
        // 4714-11-24 BC, 00:00 UTC, and one microsecond before it.
        let first = -210_866_803_200_000_000;
        assert!(timestamp_is_storable(&at(first)));
        assert!(!timestamp_is_storable(&at(first - 1)));
    }

    #[test]
    fn json_documents_with_a_nul_anywhere_are_not_storable() {
        assert!(json_is_storable(&json!({"a": [1, "b", {"c": null}]})));
        assert!(!json_is_storable(&json!({"a\u{0}": 1})));
        assert!(!json_is_storable(&json!({"a": [{"b": "\u{0}"}]})));
        assert!(!json_is_storable(&json!("\u{0}")));
    }
}
