//! `tenantry secrets rotate`: re-seals every registered column under the current key, while
//! servers keep running (docs/security.md, "Rotating SECRETS_KEY").
//!
//! Rows are read in batches in key order (a keyset, so each row is read once a pass) through the
//! admin role, which bypasses row-level security: rotation is a platform operation over every
//! tenant, not a tenant's. A row is updated only if its ciphertext is still the one that was
//! read, so a secret a server changed meanwhile is never overwritten with its old value; such
//! rows are picked up by another pass.

use tokio_postgres::types::ToSql;

use super::registry::EncryptedColumn;
use super::{Keyring, Sealed, SecretsError};
use crate::config::is_plain_identifier;
use crate::db::{DbError, PgPool};

/// Passes over a column before rotation gives up on rows that keep changing under it.
const MAX_PASSES: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("the registry names {name:?} in {table}, which is not a plain identifier")]
    Identifier { table: &'static str, name: String },
    #[error("{table} has no {column} column of type {expected} (check src/secrets/registry.rs)")]
    Column {
        table: &'static str,
        column: &'static str,
        expected: &'static str,
    },
    #[error("{table} row {key}: cannot open its secret")]
    Open {
        table: &'static str,
        key: String,
        #[source]
        source: SecretsError,
    },
    #[error("{table}: rows kept changing during {MAX_PASSES} passes; run the rotation again")]
    Unsettled { table: &'static str },
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for RotateError {
    fn from(err: tokio_postgres::Error) -> Self {
        RotateError::Db(err.into())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    pub table: &'static str,
    pub column: &'static str,
    /// Rows re-sealed under the current key.
    pub resealed: u64,
}

/// Re-seals every column of `columns` whose rows are under an older key than the keyring's
/// current one. Stops at the first row it cannot open (rows done stay done; run it again once
/// that row is fixed or its key is in SECRETS_KEY_PREVIOUS).
pub async fn rotate_all(
    admin: &PgPool,
    keyring: &Keyring,
    columns: &[EncryptedColumn],
    batch: usize,
) -> Result<Vec<Rotated>, RotateError> {
    let mut done = Vec::with_capacity(columns.len());
    for column in columns {
        let resealed = rotate_column(admin, keyring, column, batch).await?;
        done.push(Rotated {
            table: column.table,
            column: column.ciphertext,
            resealed,
        });
    }
    Ok(done)
}

pub async fn rotate_column(
    admin: &PgPool,
    keyring: &Keyring,
    column: &EncryptedColumn,
    batch: usize,
) -> Result<u64, RotateError> {
    let statements = Statements::for_column(admin, column).await?;
    let mut total = 0;
    for _ in 0..MAX_PASSES {
        let (resealed, skipped) = pass(admin, keyring, column, &statements, batch.max(1)).await?;
        total += resealed;
        if skipped == 0 {
            return Ok(total);
        }
    }
    Err(RotateError::Unsettled {
        table: column.table,
    })
}

struct Statements {
    /// `$1` current key id, `$2` limit, then the cursor: the last key read, as text.
    first: String,
    next: String,
    update: String,
}

impl Statements {
    /// The SQL of one column; identifiers come from the static registry and are checked, and
    /// the key columns' types from the catalog, so keys travel as text and compare typed.
    async fn for_column(
        admin: &PgPool,
        column: &EncryptedColumn,
    ) -> Result<Statements, RotateError> {
        let plain = |name: &str| {
            if is_plain_identifier(name) {
                Ok(())
            } else {
                Err(RotateError::Identifier {
                    table: column.table,
                    name: name.to_string(),
                })
            }
        };
        column.table.split('.').try_for_each(plain)?;
        if column.table.split('.').count() != 2 || column.key_columns.is_empty() {
            return Err(RotateError::Identifier {
                table: column.table,
                name: column.table.to_string(),
            });
        }
        for name in column
            .key_columns
            .iter()
            .chain([&column.ciphertext, &column.key_id])
        {
            plain(name)?;
        }
        let conn = admin.get().await.map_err(DbError::from)?;
        let conn = &conn;
        let type_of = |name: &'static str| async move {
            let row = conn
                .query_opt(
                    "select format_type(a.atttypid, a.atttypmod) from pg_attribute a \
                     where a.attrelid = to_regclass($1) and a.attname = $2 and a.attnum > 0 \
                     and not a.attisdropped",
                    &[&column.table, &name],
                )
                .await?;
            Ok::<Option<String>, RotateError>(row.map(|r| r.get(0)))
        };
        let expect = |name: &'static str, want: &'static str, got: Option<String>| {
            if got.as_deref() == Some(want) {
                Ok(())
            } else {
                Err(RotateError::Column {
                    table: column.table,
                    column: name,
                    expected: want,
                })
            }
        };
        expect(
            column.ciphertext,
            "bytea",
            type_of(column.ciphertext).await?,
        )?;
        expect(column.key_id, "text", type_of(column.key_id).await?)?;
        let mut key_types = Vec::with_capacity(column.key_columns.len());
        for name in column.key_columns {
            match type_of(name).await? {
                Some(ty) => key_types.push(ty),
                None => {
                    return Err(RotateError::Column {
                        table: column.table,
                        column: name,
                        expected: "any (a key column)",
                    })
                }
            }
        }
        let keys = column.key_columns.join(", ");
        let keys_text = column
            .key_columns
            .iter()
            .map(|k| format!("{k}::text"))
            .collect::<Vec<_>>()
            .join(", ");
        let cursor = key_types
            .iter()
            .enumerate()
            .map(|(i, ty)| format!("${}::text::{ty}", i + 3))
            .collect::<Vec<_>>()
            .join(", ");
        let (table, ct, kid) = (column.table, column.ciphertext, column.key_id);
        let select = |filter: String| {
            format!(
                "select {keys_text}, {ct}, {kid} from {table} \
                 where {kid} is not null and {kid} <> $1{filter} order by {keys} limit $2"
            )
        };
        let first = select(String::new());
        let next = select(format!(" and ({keys}) > ({cursor})"));
        // $1 new key id, $2 new ciphertexts, $3 old ciphertexts, $4.. one text[] per key column.
        let arrays = (0..key_types.len())
            .map(|i| format!("${}::text[]", i + 4))
            .collect::<Vec<_>>()
            .join(", ");
        let names = (0..key_types.len())
            .map(|i| format!("k{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let matches = column
            .key_columns
            .iter()
            .zip(&key_types)
            .enumerate()
            .map(|(i, (k, ty))| format!("t.{k} = v.k{i}::{ty}"))
            .collect::<Vec<_>>()
            .join(" and ");
        let update = format!(
            "update {table} as t set {ct} = v.new_ct, {kid} = $1 \
             from unnest($2::bytea[], $3::bytea[], {arrays}) as v(new_ct, old_ct, {names}) \
             where {matches} and t.{ct} = v.old_ct"
        );
        Ok(Statements {
            first,
            next,
            update,
        })
    }
}

/// One pass in key order: (rows re-sealed, rows that changed between the read and the update).
async fn pass(
    admin: &PgPool,
    keyring: &Keyring,
    column: &EncryptedColumn,
    sql: &Statements,
    batch: usize,
) -> Result<(u64, u64), RotateError> {
    let width = column.key_columns.len();
    let limit = i64::try_from(batch).unwrap_or(i64::MAX);
    let current = keyring.current_key_id().to_string();
    let mut cursor: Option<Vec<String>> = None;
    let (mut resealed, mut skipped) = (0u64, 0u64);
    loop {
        let conn = admin.get().await.map_err(DbError::from)?;
        let rows = {
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&current, &limit];
            match &cursor {
                None => conn.query(sql.first.as_str(), &params).await?,
                Some(keys) => {
                    params.extend(keys.iter().map(|k| k as &(dyn ToSql + Sync)));
                    conn.query(sql.next.as_str(), &params).await?
                }
            }
        };
        if rows.is_empty() {
            return Ok((resealed, skipped));
        }
        let mut keys: Vec<Vec<String>> = vec![Vec::with_capacity(rows.len()); width];
        let (mut new_cts, mut old_cts) = (Vec::new(), Vec::new());
        for row in &rows {
            let row_keys: Vec<String> = (0..width).map(|i| row.get(i)).collect();
            let sealed = Sealed {
                key_id: row.get(width + 1),
                ciphertext: row.get(width),
            };
            let plain = keyring.open(&sealed).map_err(|source| RotateError::Open {
                table: column.table,
                key: format!("({})", row_keys.join(", ")),
                source,
            })?;
            let fresh = keyring
                .seal(secrecy::ExposeSecret::expose_secret(&plain))
                .map_err(|source| RotateError::Open {
                    table: column.table,
                    key: format!("({})", row_keys.join(", ")),
                    source,
                })?;
            new_cts.push(fresh.ciphertext);
            old_cts.push(sealed.ciphertext);
            for (i, key) in row_keys.into_iter().enumerate() {
                keys[i].push(key);
            }
        }
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&current, &new_cts, &old_cts];
        params.extend(keys.iter().map(|k| k as &(dyn ToSql + Sync)));
        let updated = conn.execute(sql.update.as_str(), &params).await?;
        resealed += updated;
        skipped += (rows.len() as u64).saturating_sub(updated);
        cursor = Some(
            keys.iter()
                .map(|k| k.last().cloned().unwrap_or_default())
                .collect(),
        );
    }
}
