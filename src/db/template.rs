//! refinery migrations run inside a transaction we own. refinery's own tokio-postgres driver
//! opens and commits transactions on a `Client`; tenant provisioning needs the template applied
//! inside the provisioning transaction (a failed provisioning must leave nothing behind), so
//! this wrapper implements refinery's public driver traits over a borrowed transaction.

use std::path::Path;
use std::sync::Arc;

use refinery_core::traits::r#async::{AsyncMigrate, AsyncQuery, AsyncTransaction};
use refinery_core::{Migration, Runner};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio_postgres::Transaction;

use super::DbError;

mod embedded_shared {
    refinery::embed_migrations!("migrations");
}

mod embedded_template {
    refinery::embed_migrations!("tenant_template");
}

pub fn shared_runner() -> Runner {
    embedded_shared::migrations::runner()
}

/// The tenant template: the embedded one, or one read from a folder (operators and the
/// benchmark ship a new template migration without rebuilding). A folder must contain every
/// embedded migration unchanged; refinery's checksums enforce it when applied.
#[derive(Clone)]
pub struct TenantTemplate {
    migrations: Vec<Migration>,
}

impl TenantTemplate {
    pub fn embedded() -> Self {
        TenantTemplate {
            migrations: embedded_template::migrations::runner()
                .get_migrations()
                .clone(),
        }
    }

    pub fn from_dir(dir: &Path) -> Result<Self, DbError> {
        let mut migrations =
            refinery_core::load_sql_migrations(dir).map_err(|e| DbError::TemplateRead {
                dir: dir.display().to_string(),
                source: Arc::new(e),
            })?;
        migrations.sort_by_key(|m| m.version());
        if migrations.is_empty() {
            return Err(DbError::TemplateEmpty(dir.display().to_string()));
        }
        let template = TenantTemplate { migrations };
        // Every existing schema was provisioned from the built-in migrations; a folder that
        // changes one of them would leave the schemas disagreeing with their own history.
        let origin = dir.display().to_string();
        for base in &TenantTemplate::embedded().migrations {
            match template.find(base.version()) {
                Some(m) if m.name() == base.name() && m.checksum() == base.checksum() => {}
                Some(m) => {
                    return Err(divergent(format!(
                        "V{}__{} in {origin} differs from the built-in V{}__{}",
                        m.version(),
                        m.name(),
                        base.version(),
                        base.name()
                    )))
                }
                None => {
                    return Err(divergent(format!(
                        "{origin} lacks the built-in V{}__{}",
                        base.version(),
                        base.name()
                    )))
                }
            }
        }
        Ok(template)
    }

    fn find(&self, version: i32) -> Option<&Migration> {
        self.migrations.iter().find(|m| m.version() == version)
    }

    /// Compares the history of one tenant schema (version, name, checksum as refinery records
    /// them) with this template: an applied migration the template has under another name or
    /// content means the template was edited after that schema was built.
    pub fn check_history(
        &self,
        schema: &str,
        applied: &[(i32, String, String)],
    ) -> Result<(), DbError> {
        for (version, name, checksum) in applied {
            let Some(m) = self.find(*version) else {
                continue; // the schema is ahead of this template; nothing here will touch it
            };
            if m.name() != name || m.checksum().to_string() != *checksum {
                return Err(divergent(format!(
                    "V{version}__{} differs from V{version}__{name} as applied to {schema}",
                    m.name()
                )));
            }
        }
        Ok(())
    }

    pub fn latest_version(&self) -> i32 {
        self.migrations
            .iter()
            .map(|m| m.version())
            .max()
            .unwrap_or(0)
    }

    /// Applies the pending template migrations to the tenant's schema inside `tx`. The caller
    /// has set `search_path` to the schema, and the schema name comes from the tenant id.
    pub async fn apply(&self, tx: &Transaction<'_>, schema: &str) -> Result<(), DbError> {
        self.apply_statements(tx, schema, false).await
    }

    /// [`apply`](TenantTemplate::apply), each migration split into its statements when
    /// `one_at_a_time` (Citus: a query string of several statements is forwarded whole to the
    /// workers as soon as one of them is).
    pub async fn apply_statements(
        &self,
        tx: &Transaction<'_>,
        schema: &str,
        one_at_a_time: bool,
    ) -> Result<(), DbError> {
        let mut runner = Runner::new(&self.migrations)
            .set_grouped(true)
            .set_abort_divergent(true);
        runner.set_migration_table_name(format!("{schema}.refinery_schema_history"));
        let mut driver = TxDriver { tx, one_at_a_time };
        runner
            .run_async(&mut driver)
            .await
            .map_err(|e| DbError::Migration {
                schema: schema.to_string(),
                source: Arc::new(e),
            })?;
        Ok(())
    }
}

fn divergent(detail: String) -> DbError {
    DbError::TemplateDiverges(detail)
}

struct TxDriver<'a, 'b> {
    tx: &'a Transaction<'b>,
    one_at_a_time: bool,
}

impl AsyncTransaction for TxDriver<'_, '_> {
    type Error = tokio_postgres::Error;

    async fn execute<'a, T: Iterator<Item = &'a str> + Send + 'a>(
        &'a mut self,
        queries: T,
    ) -> Result<usize, Self::Error> {
        let mut count = 0;
        for query in queries {
            if self.one_at_a_time {
                // On Citus: a later template version's policies go onto tables of a
                // distributed schema, which refuse the sub-select form.
                let query = super::citus::plain_policy_text(query);
                for statement in super::citus::split_statements(&query) {
                    self.tx.batch_execute(&statement).await?;
                }
            } else {
                self.tx.batch_execute(query).await?;
            }
            count += 1;
        }
        Ok(count)
    }
}

impl AsyncQuery<Vec<Migration>> for TxDriver<'_, '_> {
    async fn query(&mut self, query: &str) -> Result<Vec<Migration>, Self::Error> {
        let rows = self.tx.query(query, &[]).await?;
        let mut applied = Vec::with_capacity(rows.len());
        for row in rows {
            let applied_on: String = row.get(2);
            let checksum: String = row.get(3);
            // Both were written by refinery itself; a row that does not parse means the history
            // table was edited by hand, which we surface as a divergent migration.
            let applied_on =
                OffsetDateTime::parse(&applied_on, &Rfc3339).unwrap_or(OffsetDateTime::UNIX_EPOCH);
            let checksum = checksum.parse::<u64>().unwrap_or(0);
            applied.push(Migration::applied(
                row.get(0),
                row.get(1),
                applied_on,
                checksum,
            ));
        }
        Ok(applied)
    }
}

impl AsyncMigrate for TxDriver<'_, '_> {}
