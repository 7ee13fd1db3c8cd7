//! One pagination for every list (API.md "Lists"): `{"items", "next_cursor"}`, `?limit=`
//! 1..=500 (default 50; outside that 422 on `limit`, never clamped), `?cursor=` opaque.
//!
//! Pages are cut on a keyset: the list's sort columns (`created_at, id` for most lists, which
//! every tenant table indexes as `(tenant_id, created_at)`), so a page costs the same whatever
//! its depth and rows inserted meanwhile never shift a page boundary. A list declares its
//! [`Keyset`] once, as a `static`; its operation parses the request with [`Keyset::parse`]
//! (after its guard, so a caller who may not read the list learns nothing from a 422) and reads
//! the page with [`PageRequest::fetch`], giving it the list's query up to its `where` filters.
//!
//! A cursor is the position of the last row of a page, sealed: its bytes (a version tag and the
//! key's values) and the list's name are authenticated with HMAC-SHA256 under a key derived from
//! the server's secret ([`CursorKey`]), so every instance sharing the secret accepts the cursors
//! of the others. An edited cursor, or one issued by another list, fails the check and is 422
//! without being decoded; a cursor that passes is read into checked values (a timestamp within
//! PostgreSQL's range), so nothing a client sends as a cursor reaches SQL unchecked. A cursor
//! names a position only, never a tenant: replayed by another tenant, it starts that tenant's
//! list at that position, and the list's own `tenant_id` filter shows that tenant's rows only.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::Sha256;
use thiserror::Error;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::db::TenantTx;
use crate::error::FieldError;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

/// The first byte of every cursor's payload: a cursor of another format is refused, not misread.
const VERSION: u8 = 1;
const TAG_LEN: usize = 32;
/// Longer than any cursor this module issues; anything longer is refused before decoding.
const MAX_CURSOR_CHARS: usize = 256;
/// The label the cursor key is derived under, so it is never the JWT signing key itself.
const KEY_LABEL: &[u8] = b"tenantry cursor v1";

/// The earliest instant PostgreSQL's `timestamptz` holds (4714-11-24 00:00:00 UTC BC), in
/// microseconds since the Unix epoch. chrono's latest instant is below PostgreSQL's latest.
const PG_MIN_MICROS: i64 = -210_866_803_200_000_000;

#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `?cursor=` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// `?limit=` or `?cursor=` refused: each area wraps it in its own validation error.
#[derive(Debug, Error)]
#[error("invalid page request")]
pub struct PageError(pub Vec<FieldError>);

type HmacSha256 = Hmac<Sha256>;

/// The key cursors are sealed with. Cheap to clone; `Debug` never shows it.
#[derive(Clone)]
pub struct CursorKey(HmacSha256);

impl CursorKey {
    /// HMAC(secret, label): every instance configured with the same secret derives the same
    /// key, and rotating the secret invalidates outstanding cursors as it does tokens.
    pub fn derive(secret: &SecretString) -> CursorKey {
        let mut mac = hmac_with(secret.expose_secret().as_bytes());
        mac.update(KEY_LABEL);
        CursorKey(hmac_with(&mac.finalize().into_bytes()))
    }

    fn tag(&self, list: &str, payload: &[u8]) -> HmacSha256 {
        let mut mac = self.0.clone();
        // The list's name is NUL-free, so the separator keeps (list, payload) unambiguous.
        mac.update(list.as_bytes());
        mac.update(&[0]);
        mac.update(payload);
        mac
    }

    fn seal<K: Key>(&self, list: &str, key: &K) -> String {
        let mut bytes = vec![VERSION];
        key.write(&mut bytes);
        let tag = self.tag(list, &bytes).finalize().into_bytes();
        bytes.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The position `cursor` names, if this key sealed it for `list`. The tag is checked (in
    /// constant time) before a byte of the payload is read.
    fn open<K: Key>(&self, list: &str, cursor: &str) -> Option<K> {
        if cursor.len() > MAX_CURSOR_CHARS {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
        let (payload, tag) = bytes.split_at(bytes.len().checked_sub(TAG_LEN)?);
        self.tag(list, payload).verify_slice(tag).ok()?;
        match payload.split_first()? {
            (&VERSION, key) => K::read(key),
            _ => None,
        }
    }
}

impl fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CursorKey(..)")
    }
}

#[allow(clippy::expect_used)] // see below
fn hmac_with(key: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length (a long one is hashed first): this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts keys of every length")
}

/// The values of a list's sort columns for one row: what a cursor carries.
pub trait Key: Copy + Send + Sync + 'static {
    /// Appends the values, fixed-width.
    fn write(&self, out: &mut Vec<u8>);
    /// Reads back exactly what `write` wrote, checking every value.
    fn read(bytes: &[u8]) -> Option<Self>;
    /// The values as query parameters, in the order of the keyset's columns.
    fn params(&self) -> Vec<&(dyn ToSql + Sync)>;
}

/// A row's place in creation order: `(created_at, id)` (or the id column the list names), ties
/// between rows created in one transaction broken by the id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeKey {
    pub at: DateTime<Utc>,
    pub id: Uuid,
}

impl Key for TimeKey {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.at.timestamp_micros().to_be_bytes());
        out.extend_from_slice(self.id.as_bytes());
    }

    fn read(bytes: &[u8]) -> Option<Self> {
        let (micros, id) = bytes.split_first_chunk::<8>()?;
        let micros = i64::from_be_bytes(*micros);
        if micros < PG_MIN_MICROS {
            return None;
        }
        Some(TimeKey {
            at: DateTime::from_timestamp_micros(micros)?,
            id: <Uuid as Key>::read(id)?,
        })
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![&self.at, &self.id]
    }
}

/// A list sorted by one id column (the tenants, by id).
impl Key for Uuid {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }

    fn read(bytes: &[u8]) -> Option<Self> {
        Some(Uuid::from_bytes(*<&[u8; 16]>::try_from(bytes).ok()?))
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![self]
    }
}

/// A list sorted by two id columns (tasks across tenants, by `(tenant_id, id)`).
impl Key for (Uuid, Uuid) {
    fn write(&self, out: &mut Vec<u8>) {
        self.0.write(out);
        self.1.write(out);
    }

    fn read(bytes: &[u8]) -> Option<Self> {
        let (first, second) = bytes.split_first_chunk::<16>()?;
        Some((Uuid::from_bytes(*first), <Uuid as Key>::read(second)?))
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![&self.0, &self.1]
    }
}

/// How one list is sorted and paged: declared once per list, as a `static`.
pub struct Keyset<K> {
    /// Sealed into every cursor of the list, so a cursor of one list is refused by the others.
    list: &'static str,
    /// The sort columns, as SQL; a unique key of the rows the list reads, in index order.
    columns: &'static [&'static str],
    descending: bool,
    key: PhantomData<fn() -> K>,
}

impl<K: Key> Keyset<K> {
    pub const fn ascending(list: &'static str, columns: &'static [&'static str]) -> Self {
        Keyset {
            list,
            columns,
            descending: false,
            key: PhantomData,
        }
    }

    pub const fn descending(list: &'static str, columns: &'static [&'static str]) -> Self {
        Keyset {
            list,
            columns,
            descending: true,
            key: PhantomData,
        }
    }

    /// `?limit=` and `?cursor=` as the client sent them; an empty cursor is no cursor.
    pub fn parse(
        &'static self,
        cursors: &CursorKey,
        limit: Option<i64>,
        cursor: Option<&str>,
    ) -> Result<PageRequest<K>, PageError> {
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
            Some(raw) => {
                let after = cursors.open(self.list, raw);
                if after.is_none() {
                    errors.push(FieldError::new(
                        "cursor",
                        "not a cursor returned by this list",
                    ));
                }
                after
            }
        };
        if !errors.is_empty() {
            return Err(PageError(errors));
        }
        Ok(PageRequest {
            keyset: self,
            cursors: cursors.clone(),
            limit,
            fetch: limit + 1,
            after,
        })
    }

    /// `and (columns) > ($n, ..) order by columns limit $m`, numbering placeholders after the
    /// `base` query's own `params`.
    fn clause(&self, params: usize, after: bool) -> String {
        let columns = self.columns.join(", ");
        let mut next = params;
        let mut clause = String::new();
        if after {
            let placeholders: Vec<String> = self
                .columns
                .iter()
                .map(|_| {
                    next += 1;
                    format!("${next}")
                })
                .collect();
            let op = if self.descending { "<" } else { ">" };
            clause.push_str(&format!(
                " and ({columns}) {op} ({})",
                placeholders.join(", ")
            ));
        }
        let order: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                if self.descending {
                    format!("{c} desc")
                } else {
                    c.to_string()
                }
            })
            .collect();
        clause.push_str(&format!(
            " order by {} limit ${}",
            order.join(", "),
            next + 1
        ));
        clause
    }
}

/// Narrows a list's query by ` and {column} = $n` for each filter the client gave. Only the
/// constant column names are pasted; every value is a parameter.
pub fn and_equal<'a>(
    sql: &mut String,
    params: &mut Vec<&'a (dyn ToSql + Sync)>,
    filters: &[(&str, Option<&'a (dyn ToSql + Sync)>)],
) {
    for (column, value) in filters {
        if let Some(value) = value {
            params.push(*value);
            sql.push_str(&format!(" and {column} = ${}", params.len()));
        }
    }
}

/// A checked request for one page of a list.
pub struct PageRequest<K: 'static> {
    keyset: &'static Keyset<K>,
    cursors: CursorKey,
    limit: i64,
    /// One row more than the page, to know whether another page follows.
    fetch: i64,
    after: Option<K>,
}

impl<K: Key> PageRequest<K> {
    pub fn limit(&self) -> i64 {
        self.limit
    }

    /// Reads one page. `base` is the list's query up to its filters, ending inside its `where`
    /// clause (`select .. from .. where tenant_id = $1 and ..`), with `params` for its
    /// placeholders; the keyset condition, order and limit are appended. `read` turns a row into
    /// an item and `key` gives an item's values in the keyset's columns.
    pub async fn fetch<T, E>(
        &self,
        client: &impl Rows,
        base: &str,
        params: &[&(dyn ToSql + Sync)],
        read: impl Fn(&Row) -> Result<T, E>,
        key: impl Fn(&T) -> K,
    ) -> Result<Page<T>, E>
    where
        E: From<tokio_postgres::Error>,
    {
        let mut all = params.to_vec();
        if let Some(after) = &self.after {
            all.extend(after.params());
        }
        all.push(&self.fetch);
        let sql = format!(
            "{base}{}",
            self.keyset.clause(params.len(), self.after.is_some())
        );
        let rows = client.rows(&sql, &all).await?;
        let items = rows.iter().map(read).collect::<Result<Vec<T>, E>>()?;
        Ok(self.finish(items, key))
    }

    /// Cuts the extra row off and seals the position of the last row kept.
    fn finish<T>(&self, mut items: Vec<T>, key: impl Fn(&T) -> K) -> Page<T> {
        // 1..=500, checked in `parse`.
        let kept = usize::try_from(self.limit).unwrap_or(0);
        let next_cursor = if items.len() > kept {
            items.truncate(kept);
            items
                .last()
                .map(|item| self.cursors.seal(self.keyset.list, &key(item)))
        } else {
            None
        };
        Page { items, next_cursor }
    }
}

/// Where a page's rows are read: a tenant operation's transaction or a deadpool one. Statements
/// are prepared once per connection and reused.
pub trait Rows: Sync {
    fn rows<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send + 'a;
}

/// The two have the same inherent `prepare_cached` and `query`, but no trait in common.
macro_rules! rows_through_statement_cache {
    ($($client:ty),*) => {$(
        impl Rows for $client {
            async fn rows<'a>(
                &'a self,
                sql: &'a str,
                params: &'a [&'a (dyn ToSql + Sync)],
            ) -> Result<Vec<Row>, tokio_postgres::Error> {
                let stmt = self.prepare_cached(sql).await?;
                self.query(&stmt, params).await
            }
        }
    )*};
}
rows_through_statement_cache!(TenantTx<'_>, deadpool_postgres::Transaction<'_>);

#[cfg(test)]
mod tests {
    use super::*;

    static LIST: Keyset<TimeKey> = Keyset::ascending("things", &["created_at", "id"]);
    static OTHER: Keyset<TimeKey> = Keyset::ascending("others", &["created_at", "id"]);
    static PAIRS: Keyset<(Uuid, Uuid)> = Keyset::ascending("pairs", &["tenant_id", "id"]);
    static NEWEST: Keyset<TimeKey> = Keyset::descending("newest", &["created_at", "id"]);

    fn key() -> CursorKey {
        CursorKey::derive(&SecretString::from("a-server-secret-of-at-least-32-chars"))
    }

    fn position() -> TimeKey {
        TimeKey {
            at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: Uuid::now_v7(),
        }
    }

    fn cursor_of(keyset: &'static Keyset<TimeKey>, at: TimeKey) -> String {
        key().seal(keyset.list, &at)
    }

    #[test]
    fn a_cursor_round_trips_through_its_list() {
        let at = position();
        let page = LIST
            .parse(&key(), None, Some(&cursor_of(&LIST, at)))
            .unwrap();
        assert_eq!(page.after, Some(at));
        assert_eq!(page.limit(), DEFAULT_LIMIT);

        let pair = (Uuid::now_v7(), Uuid::now_v7());
        let sealed = key().seal(PAIRS.list, &pair);
        assert_eq!(
            PAIRS.parse(&key(), Some(2), Some(&sealed)).unwrap().after,
            Some(pair)
        );
    }

    #[test]
    fn every_instance_with_the_secret_agrees_and_no_other_does() {
        let cursor = cursor_of(&LIST, position());
        assert!(LIST.parse(&key(), None, Some(&cursor)).is_ok());
        let stranger = CursorKey::derive(&SecretString::from("another-server-secret-of-32-chars!"));
        assert!(LIST.parse(&stranger, None, Some(&cursor)).is_err());
    }

    fn refused_cursor(result: Result<PageRequest<TimeKey>, PageError>) -> bool {
        matches!(result, Err(PageError(errors)) if errors.len() == 1 && errors[0].field == "cursor")
    }

    #[test]
    fn any_edited_character_is_refused() {
        let cursor = cursor_of(&LIST, position());
        for i in 0..cursor.len() {
            let mut edited = cursor.clone().into_bytes();
            edited[i] = if edited[i] == b'A' { b'B' } else { b'A' };
            let edited = String::from_utf8(edited).unwrap();
            assert!(
                refused_cursor(LIST.parse(&key(), None, Some(&edited))),
                "character {i} edited: {edited}"
            );
        }
        for garbage in [
            "garbage",
            "not-a-cursor",
            "AAAA",
            "%%%",
            &"A".repeat(10_000),
            &cursor[..cursor.len() - 1],
            &format!("{cursor}A"),
        ] {
            assert!(refused_cursor(LIST.parse(&key(), None, Some(garbage))));
        }
    }

    #[test]
    fn a_cursor_of_another_list_is_refused() {
        let cursor = cursor_of(&OTHER, position());
        assert!(refused_cursor(LIST.parse(&key(), None, Some(&cursor))));
    }

    /// A payload that would decode to a value PostgreSQL cannot hold is refused even when
    /// sealed with the right key (which only this module does, from rows it read).
    #[test]
    fn a_sealed_timestamp_outside_postgres_range_is_refused() {
        let mut payload = vec![VERSION];
        payload.extend_from_slice(&(PG_MIN_MICROS - 1).to_be_bytes());
        payload.extend_from_slice(Uuid::now_v7().as_bytes());
        let tag = key().tag(LIST.list, &payload).finalize().into_bytes();
        payload.extend_from_slice(&tag);
        let cursor = URL_SAFE_NO_PAD.encode(&payload);
        assert!(refused_cursor(LIST.parse(&key(), None, Some(&cursor))));

        let earliest = TimeKey {
            at: DateTime::from_timestamp_micros(PG_MIN_MICROS).unwrap(),
            id: Uuid::nil(),
        };
        let cursor = cursor_of(&LIST, earliest);
        assert_eq!(
            LIST.parse(&key(), None, Some(&cursor)).unwrap().after,
            Some(earliest)
        );
    }

    #[test]
    fn a_sealed_payload_of_another_version_is_refused() {
        let mut payload = vec![VERSION + 1];
        position().write(&mut payload);
        let tag = key().tag(LIST.list, &payload).finalize().into_bytes();
        payload.extend_from_slice(&tag);
        let cursor = URL_SAFE_NO_PAD.encode(&payload);
        assert!(refused_cursor(LIST.parse(&key(), None, Some(&cursor))));
    }

    #[test]
    fn limits_are_checked_never_clamped() {
        assert_eq!(LIST.parse(&key(), None, None).unwrap().limit(), 50);
        assert_eq!(LIST.parse(&key(), Some(1), None).unwrap().limit(), 1);
        assert_eq!(LIST.parse(&key(), Some(500), None).unwrap().limit(), 500);
        assert_eq!(LIST.parse(&key(), None, Some("")).unwrap().after, None);
        for bad in [0, -1, 501, i64::MAX, i64::MIN] {
            let Err(PageError(errors)) = LIST.parse(&key(), Some(bad), None) else {
                panic!("limit {bad} accepted");
            };
            assert_eq!(
                errors,
                [FieldError::new("limit", "must be between 1 and 500")]
            );
        }
        // Both fields at once.
        let Err(PageError(errors)) = LIST.parse(&key(), Some(0), Some("x")) else {
            panic!("accepted");
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["limit", "cursor"]);
    }

    #[test]
    fn the_clause_numbers_after_the_base_params() {
        assert_eq!(LIST.clause(1, false), " order by created_at, id limit $2");
        assert_eq!(
            LIST.clause(3, true),
            " and (created_at, id) > ($4, $5) order by created_at, id limit $6"
        );
        assert_eq!(
            NEWEST.clause(1, true),
            " and (created_at, id) < ($2, $3) order by created_at desc, id desc limit $4"
        );
    }

    #[test]
    fn finish_cuts_and_points_at_the_last_row_kept() {
        let page = LIST.parse(&key(), Some(2), None).unwrap();
        let rows: Vec<TimeKey> = (0..3).map(|_| position()).collect();
        let cut = page.finish(rows.clone(), |k| *k);
        assert_eq!(cut.items, rows[..2]);
        let next = LIST
            .parse(&key(), None, cut.next_cursor.as_deref())
            .unwrap()
            .after;
        assert_eq!(next, Some(rows[1]));
        let last = page.finish(rows[..2].to_vec(), |k| *k);
        assert_eq!(last.next_cursor, None);
    }

    #[test]
    fn the_key_never_shows_in_debug() {
        assert_eq!(format!("{:?}", key()), "CursorKey(..)");
    }
}
