//! Keyset pagination (API.md "Lists"): `{"items", "next_cursor"}`, `?limit=` 1..=500 (default
//! 50), `?cursor=` opaque. Pages are cut on `(created_at, id)`, which every tenant table indexes
//! as `(tenant_id, created_at)`, so a page costs the same whatever its depth and rows inserted
//! meanwhile never shift a page boundary.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::DomainError;
use crate::error::FieldError;
use crate::input::timestamp_is_storable;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `?cursor=` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// The position after which a page starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl Cursor {
    pub fn encode(&self) -> String {
        let raw = format!(
            "v1.{}.{}",
            self.created_at.timestamp_micros(),
            self.id.simple()
        );
        URL_SAFE_NO_PAD.encode(raw)
    }

    pub fn decode(value: &str) -> Option<Cursor> {
        let raw = URL_SAFE_NO_PAD.decode(value.trim()).ok()?;
        let raw = std::str::from_utf8(&raw).ok()?;
        let mut parts = raw.split('.');
        if parts.next()? != "v1" {
            return None;
        }
        let micros: i64 = parts.next()?.parse().ok()?;
        let id = Uuid::parse_str(parts.next()?).ok()?;
        if parts.next().is_some() {
            return None;
        }
        // An edited cursor must not carry an instant PostgreSQL refuses into the query.
        let created_at = DateTime::from_timestamp_micros(micros).filter(timestamp_is_storable)?;
        Some(Cursor { created_at, id })
    }
}

#[derive(Clone, Copy, Debug)]
pub struct PageRequest {
    pub limit: i64,
    pub after: Option<Cursor>,
}

impl PageRequest {
    pub fn parse(limit: Option<i64>, cursor: Option<&str>) -> Result<PageRequest, DomainError> {
        let mut errors = Vec::new();
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            errors.push(FieldError::new(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            ));
        }
        let after = match cursor.filter(|c| !c.is_empty()) {
            None => None,
            Some(raw) => match Cursor::decode(raw) {
                Some(c) => Some(c),
                None => {
                    errors.push(FieldError::new(
                        "cursor",
                        "not a cursor returned by this list",
                    ));
                    None
                }
            },
        };
        if errors.is_empty() {
            Ok(PageRequest { limit, after })
        } else {
            Err(DomainError::Validation(errors))
        }
    }

    /// Rows to fetch: one more than the page, to know whether another page follows.
    pub fn fetch(&self) -> i64 {
        self.limit + 1
    }

    /// Cuts the extra row off and derives the next cursor from the last row kept.
    pub fn finish<T>(&self, mut items: Vec<T>, key: impl Fn(&T) -> Cursor) -> Page<T> {
        let next_cursor = if items.len() as i64 > self.limit {
            items.truncate(self.limit as usize);
            items.last().map(|item| key(item).encode())
        } else {
            None
        };
        Page { items, next_cursor }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip() {
        let c = Cursor {
            created_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: Uuid::now_v7(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("garbage"), None);
        assert_eq!(Cursor::decode(""), None);
    }

    #[test]
    fn limits() {
        assert_eq!(PageRequest::parse(None, None).unwrap().limit, 50);
        assert!(PageRequest::parse(Some(0), None).is_err());
        assert!(PageRequest::parse(Some(501), None).is_err());
        assert!(PageRequest::parse(Some(500), None).is_ok());
        assert!(PageRequest::parse(None, Some("nope")).is_err());
    }

    #[test]
    fn finish_cuts_and_points_at_last_kept() {
        let req = PageRequest::parse(Some(2), None).unwrap();
        let now = Utc::now();
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let page = req.finish(ids.clone(), |id| Cursor {
            created_at: now,
            id: *id,
        });
        assert_eq!(page.items, ids[..2]);
        let next = Cursor::decode(page.next_cursor.as_deref().unwrap()).unwrap();
        assert_eq!(next.id, ids[1]);
        let last = req.finish(ids[..2].to_vec(), |id| Cursor {
            created_at: now,
            id: *id,
        });
        assert_eq!(last.next_cursor, None);
    }
}
