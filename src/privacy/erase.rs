//! The erasure of one data subject, in one transaction of the owner role bound to the tenant.
//!
//! Why the owner: the audit trail is append-only for the app and admin roles (db::roles), and
//! pseudonymising it is a rewrite only the owner may do. Row-level security is forced for the
//! owner too, so the transaction's tenant context still holds every statement to this tenant,
//! and every statement also filters by tenant_id.
//!
//! What stands for the subject afterwards is a pseudonym drawn at random for this erasure and
//! kept nowhere beside the subject: ids become the pseudonym, emails `erased:<pseudonym>`,
//! names `[erased]` (docs/privacy.md has the table of what goes where).

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use futures_util::future::BoxFuture;
use serde_json::{json, Map, Value};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::scrub::{self, Needle};
use super::{Erasure, PrivacyError, Subject};
use crate::actors::TenantOp;
use crate::analytics::store::{flush_lock_key, FLUSH_LOCK_SQL};
use crate::auth::Caller;
use crate::db::roles::quote_ident;
use crate::db::{begin_tenant_tx, tenant_schema_name, PgPool, TenantTx, TENANT_TABLES};

/// The audit action of an erasure.
pub const ERASURE_ACTION: &str = "privacy.erasure";
const ERASURE_RESOURCE: &str = "erasure";

/// Same key as `domain::users`' roster lock: an erasure and a user's deletion or role change
/// cannot interleave, so the last-admin rule holds for both.
const ROSTER_LOCK: i32 = 0x5553_4552; // "USER"

/// Text columns wider than this may grow when an email is replaced (the replacement is longer
/// than the shortest addresses); every length CHECK of the schema allows at least this much.
const SAFE_TEXT_LENGTH: i32 = 200;

/// Columns of the tenants row an erasure never rewrites: identifiers with a format of their own.
const TENANT_ROW_KEPT: &[&str] = &["slug", "subdomain", "plan", "status"];

/// One column the sweep looks at.
struct Column {
    /// Schema-qualified, quoted.
    table: String,
    /// Bare table name, for the counts.
    table_name: String,
    column: String,
    kind: Kind,
    max_length: Option<i32>,
    /// The predicate that holds the statement to the tenant, `$1` being its id.
    scope: &'static str,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Jsonb,
    Uuid,
}

/// Erases `subject` from `caller`'s tenant. The caller must be an admin of it.
pub async fn erase(
    owner: &PgPool,
    caller: &Caller,
    subject: Subject,
) -> Result<Erasure, PrivacyError> {
    caller.admin()?;
    let tenant = caller.tenant_id;
    let mut conn = owner.get().await?;
    let tx = begin_tenant_tx(&mut conn, tenant).await?;
    let (hi, lo) = tenant.as_u64_pair();
    let b = (hi ^ lo).to_le_bytes();
    let spread = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    tx.execute(
        "select pg_advisory_xact_lock($1, $2)",
        &[&ROSTER_LOCK, &spread],
    )
    .await?;

    let (ids, emails) = find_subject(&tx, tenant, &subject).await?;
    keeps_an_admin(&tx, tenant, &ids).await?;

    let pseudonym = Uuid::new_v4();
    let erasure_id = Uuid::now_v7();
    let mut counts = Map::new();
    let mut count = |table: &str, n: u64| {
        if n > 0 {
            let entry = counts.entry(table.to_string()).or_insert(json!(0));
            *entry = json!(entry.as_u64().unwrap_or(0) + n);
        }
    };

    // A deleted stand-in user with the pseudonym as id, so rows that must keep pointing at a
    // user (an API key's creator) point at it; it names nobody and is in no listing.
    tx.execute(
        "insert into app.users (tenant_id, id, email, name, role, password_hash, deleted_at) \
         values ($1, $2, $3, '', 'member', null, now())",
        &[&tenant, &pseudonym, &scrub::erased_email(pseudonym)],
    )
    .await?;
    count(
        "project_members",
        tx.execute(
            "delete from app.project_members where tenant_id = $1 and user_id = any($2)",
            &[&tenant, &ids],
        )
        .await?,
    );
    count(
        "tasks",
        tx.execute(
            "update app.tasks set assignee_id = null, updated_at = now() \
             where tenant_id = $1 and assignee_id = any($2)",
            &[&tenant, &ids],
        )
        .await?,
    );

    // A key authenticates as its creator while the creator is live (auth::api_keys): the
    // subject's keys die with them, as with a deleted user, and their rows stay on record.
    count(
        "api_keys",
        tx.execute(
            "update app.api_keys set deleted_at = now() \
             where tenant_id = $1 and created_by = any($2) and deleted_at is null",
            &[&tenant, &ids],
        )
        .await?,
    );

    let schema = tenant_schema_name(tenant);
    let columns = columns(&tx, &schema).await?;
    erase_analytics(
        &tx, tenant, &schema, &columns, &ids, &emails, pseudonym, &mut count,
    )
    .await?;

    // Every other reference to the subject's ids (the audit trail's user_id, the settings
    // history's author, an API key's creator) now names the pseudonym.
    for col in columns.iter().filter(|c| c.kind == Kind::Uuid) {
        let sql = format!(
            "update {} set {col} = $2 where {} and {col} = any($3)",
            col.table,
            col.scope,
            col = col.column
        );
        count(
            &col.table_name,
            tx.execute(&sql, &[&tenant, &pseudonym, &ids]).await?,
        );
    }
    count(
        "users",
        tx.execute(
            "delete from app.users where tenant_id = $1 and id = any($2)",
            &[&tenant, &ids],
        )
        .await?,
    );

    // Then every mention in text and JSON: ids, emails.
    let text_needles = scrub::needles(&ids, &emails, pseudonym, false);
    let json_needles = scrub::needles(&ids, &emails, pseudonym, true);
    for col in columns.iter().filter(|c| c.kind != Kind::Uuid) {
        let needles = if col.kind == Kind::Jsonb {
            &json_needles
        } else {
            &text_needles
        };
        count(&col.table_name, rewrite(&tx, tenant, col, needles).await?);
    }
    count("names_erased", scrub_names(&tx, tenant, pseudonym).await?);

    // The erasure's own record: who asked, when, what stands for the subject now; never the
    // subject's id or email. An admin erasing themselves is recorded under the pseudonym.
    let by = caller
        .user_id
        .map(|u| if ids.contains(&u) { pseudonym } else { u });
    let users_erased = i64::try_from(ids.len()).unwrap_or(i64::MAX);
    let completed_at: DateTime<Utc> = tx
        .query_one(
            "insert into app.audit_logs \
             (tenant_id, id, user_id, actor, action, resource, resource_id, changes, request_id) \
             values ($1, $2, $3, 'user', $4, $5, $6, $7, $8) returning created_at",
            &[
                &tenant,
                &Uuid::now_v7(),
                &by,
                &ERASURE_ACTION,
                &ERASURE_RESOURCE,
                &erasure_id.to_string(),
                &json!({
                    "before": null,
                    "after": {
                        "erasure_id": erasure_id,
                        "pseudonym": pseudonym,
                        "users_erased": users_erased,
                        "rows": counts,
                    },
                }),
                &caller.request_id,
            ],
        )
        .await?
        .get(0);
    tx.commit().await?;
    tracing::info!(tenant_id = %tenant, %erasure_id, "data subject erased");
    Ok(Erasure {
        erasure_id,
        status: "completed",
        pseudonym,
        completed_at,
        users_erased,
        user_ids: ids,
    })
}

/// The subject's user rows (deleted ones included: erasure is also for people who left) and
/// their distinct email addresses. By id, every row sharing that row's address is the same
/// person and is erased with it.
async fn find_subject(
    tx: &Transaction<'_>,
    tenant: Uuid,
    subject: &Subject,
) -> Result<(Vec<Uuid>, Vec<String>), PrivacyError> {
    let email: String = match subject {
        Subject::Id(id) => tx
            .query_opt(
                "select email from app.users where tenant_id = $1 and id = $2",
                &[&tenant, id],
            )
            .await?
            .ok_or(PrivacyError::NotFound("user"))?
            .get(0),
        Subject::Email(email) => email.clone(),
    };
    let rows = tx
        .query(
            "select id, email from app.users \
             where tenant_id = $1 and lower(email) = lower($2) order by id for update",
            &[&tenant, &email],
        )
        .await?;
    if rows.is_empty() {
        return Err(PrivacyError::NotFound("user"));
    }
    let ids = rows.iter().map(|r| r.get::<_, Uuid>(0)).collect();
    let mut emails: Vec<String> = Vec::new();
    for row in &rows {
        let e: String = row.get(1);
        if !emails
            .iter()
            .any(|known| known.to_lowercase() == e.to_lowercase())
        {
            emails.push(e);
        }
    }
    Ok((ids, emails))
}

async fn keeps_an_admin(
    tx: &Transaction<'_>,
    tenant: Uuid,
    ids: &[Uuid],
) -> Result<(), PrivacyError> {
    let row = tx
        .query_one(
            "select count(*) filter (where id = any($2)), count(*) filter (where not id = any($2)) \
             from app.users where tenant_id = $1 and role = 'admin' and deleted_at is null",
            &[&tenant, &ids],
        )
        .await?;
    let (subject_admins, other_admins): (i64, i64) = (row.get(0), row.get(1));
    if subject_admins > 0 && other_admins == 0 {
        return Err(PrivacyError::LastAdmin);
    }
    Ok(())
}

/// The text, jsonb and uuid columns of the tenant's tables, from the catalog, so a table or
/// column added later is swept without being listed here. The shared schema's tenant tables are
/// those of `TENANT_TABLES` (the catalog test keeps that list complete); the tenants row and
/// the platform audit log are scoped by their own columns.
async fn columns(tx: &Transaction<'_>, schema: &str) -> Result<Vec<Column>, PrivacyError> {
    let shared: Vec<String> = TENANT_TABLES.iter().map(|t| t.to_string()).collect();
    let rows = tx
        .query(
            "select c.table_schema::text, c.table_name::text, c.column_name::text, c.data_type::text, \
                    c.character_maximum_length::integer \
             from information_schema.columns c \
             join information_schema.tables t \
               on t.table_schema = c.table_schema and t.table_name = c.table_name \
             where t.table_type = 'BASE TABLE' \
               and c.data_type in ('text', 'character varying', 'jsonb', 'uuid') \
               and ((c.table_schema::text = 'app' \
                     and (c.table_name::text = any($1::text[]) \
                          or c.table_name::text in ('tenants', 'platform_audit_logs'))) \
                    or (c.table_schema::text = $2::text \
                        and c.table_name::text <> 'refinery_schema_history')) \
             order by c.table_schema, c.table_name, c.ordinal_position",
            &[&shared, &schema],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let (table_schema, table, column, data_type): (String, String, String, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let kind = match data_type.as_str() {
            "jsonb" => Kind::Jsonb,
            "uuid" => Kind::Uuid,
            _ => Kind::Text,
        };
        let scope = match table.as_str() {
            "tenants" if table_schema == "app" => "id = $1",
            "platform_audit_logs" if table_schema == "app" => "target_tenant_id = $1",
            _ => "tenant_id = $1",
        };
        let skip = match (table.as_str(), column.as_str()) {
            // The tenant's scope, and the users' own ids (their rows are deleted).
            (_, "tenant_id" | "target_tenant_id") | ("users", "id") => true,
            ("tenants", c) => kind == Kind::Uuid || TENANT_ROW_KEPT.contains(&c),
            _ => false,
        };
        if skip {
            continue;
        }
        out.push(Column {
            table: format!("{}.{}", quote_ident(&table_schema), quote_ident(&table)),
            table_name: table,
            column: quote_ident(&column),
            kind,
            max_length: row.get(4),
            scope,
        });
    }
    Ok(out)
}

/// The tenant schema's analytics: the subject's own events are deleted (their behaviour, as
/// they sent it); their entry of the `user_ids` dictionary is renamed, so the activity rollups
/// keyed by its number keep counting them among the active users of past days without naming
/// anyone, and the number is never handed to someone else.
// One step of `erase`, with its state passed in rather than bundled for one call site.
#[allow(clippy::too_many_arguments)]
async fn erase_analytics(
    tx: &Transaction<'_>,
    tenant: Uuid,
    schema: &str,
    columns: &[Column],
    ids: &[Uuid],
    emails: &[String],
    pseudonym: Uuid,
    count: &mut impl FnMut(&str, u64),
) -> Result<(), PrivacyError> {
    let has = |table: &str, column: &str| {
        columns.iter().any(|c| {
            c.table_name == table
                && c.column == quote_ident(column)
                && c.table.starts_with(&quote_ident(schema))
        })
    };
    // A flush of the tenant's analytics derives its counters from the dictionary and the
    // activity it reads: it must see the dictionary before or after this, never between.
    tx.query_typed(
        FLUSH_LOCK_SQL,
        &[(&flush_lock_key(tenant), tokio_postgres::types::Type::TEXT)],
    )
    .await?;
    let id_texts: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    let lowered: Vec<String> = emails.iter().map(|e| e.to_lowercase()).collect();
    if has("events", "user_id") {
        let sql = format!(
            "delete from {schema}.events where tenant_id = $1 \
             and (lower(user_id) = any($2) or lower(user_id) = any($3))"
        );
        count(
            "events",
            tx.execute(&sql, &[&tenant, &id_texts, &lowered]).await?,
        );
    }
    if has("user_ids", "user_id") {
        let sql = format!(
            "update {schema}.user_ids set user_id = 'erased:' || $4::text || ':' || user_key \
             where tenant_id = $1 and (lower(user_id) = any($2) or lower(user_id) = any($3))"
        );
        count(
            "user_ids",
            tx.execute(
                &sql,
                &[&tenant, &id_texts, &lowered, &pseudonym.to_string()],
            )
            .await?,
        );
    }
    Ok(())
}

/// Rewrites every value of `col` in the tenant matching one of `needles`, in one statement.
async fn rewrite(
    tx: &Transaction<'_>,
    tenant: Uuid,
    col: &Column,
    needles: &[Needle],
) -> Result<u64, PrivacyError> {
    if needles.is_empty() {
        return Ok(0);
    }
    let c = &col.column;
    let source = if col.kind == Kind::Jsonb {
        format!("{c}::text")
    } else {
        c.clone()
    };
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&tenant];
    let mut value = source.clone();
    for needle in needles {
        params.push(&needle.pattern);
        let p = params.len();
        params.push(&needle.replacement);
        value = format!("regexp_replace({value}, ${p}, ${}, 'gi')", p + 1);
    }
    let any: String = needles
        .iter()
        .map(|n| format!("({})", n.pattern))
        .collect::<Vec<_>>()
        .join("|");
    params.push(&any);
    let any_param = params.len();
    let limit = col.max_length.unwrap_or(SAFE_TEXT_LENGTH);
    let value = match col.kind {
        Kind::Jsonb => format!("({value})::jsonb"),
        // Never longer than the column allows: at most the old length, or the safe length.
        _ => {
            params.push(&limit);
            format!("left({value}, greatest(length({c}), ${}))", params.len())
        }
    };
    let sql = format!(
        "update {table} set {c} = {value} where {scope} and {source} ~* ${any_param}",
        table = col.table,
        scope = col.scope,
    );
    Ok(tx.execute(&sql, &params).await?)
}

/// Names beside the pseudonym in the JSON the trail and the event history keep (the user's
/// before/after states, user events' payloads): a name is not a pattern, so it is found by the
/// object it belongs to.
async fn scrub_names(
    tx: &Transaction<'_>,
    tenant: Uuid,
    pseudonym: Uuid,
) -> Result<u64, PrivacyError> {
    let p = pseudonym.to_string();
    let mut changed = 0;
    for (table, column, is_json) in [
        ("audit_logs", "changes", true),
        ("outbox", "payload", true),
        ("webhook_messages", "body", false),
    ] {
        let select = format!(
            "select id, {column}::text from app.{table} \
             where tenant_id = $1 and strpos({column}::text, $2) > 0"
        );
        let cast = if is_json { "::text::jsonb" } else { "" };
        let update =
            format!("update app.{table} set {column} = $3{cast} where tenant_id = $1 and id = $2");
        for row in tx.query(&select, &[&tenant, &p]).await? {
            let id: Uuid = row.get(0);
            let text: String = row.get(1);
            // A body that is not JSON holds no object to find a name in.
            let Ok(mut doc) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            if scrub::scrub_names(&mut doc, &p) {
                tx.execute(&update, &[&tenant, &id, &doc.to_string()])
                    .await?;
                changed += 1;
            }
        }
    }
    Ok(changed)
}

/// `GET /privacy/erasure/{id}`: the erasure's record in the audit trail.
pub struct GetErasure(pub Uuid);

impl TenantOp for GetErasure {
    type Output = Erasure;
    type Error = PrivacyError;
    const OPENS_TENANT_SCHEMA: bool = false;

    fn run<'a>(
        self,
        tx: &'a TenantTx<'a>,
        caller: &'a Caller,
    ) -> BoxFuture<'a, Result<Erasure, PrivacyError>> {
        Box::pin(async move {
            caller.admin()?;
            let row = tx
                .client()
                .query_opt(
                    "select changes -> 'after', created_at from app.audit_logs \
                     where tenant_id = $1 and action = $2 and resource = $3 and resource_id = $4",
                    &[
                        &caller.tenant_id,
                        &ERASURE_ACTION,
                        &ERASURE_RESOURCE,
                        &self.0.to_string(),
                    ],
                )
                .await
                .map_err(crate::db::DbError::from)?
                .ok_or(PrivacyError::NotFound("erasure"))?;
            let after: Value = row.get(0);
            Ok(Erasure {
                erasure_id: self.0,
                status: "completed",
                pseudonym: after
                    .get("pseudonym")
                    .and_then(Value::as_str)
                    .and_then(|s| Uuid::parse_str(s).ok())
                    .unwrap_or_default(),
                completed_at: row.get(1),
                users_erased: after
                    .get("users_erased")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
                user_ids: Vec::new(),
            })
        })
    }
}
