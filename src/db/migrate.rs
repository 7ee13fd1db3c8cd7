//! `tenantry migrate`: roles, the shared schema, then every tenant schema.
//!
//! - One runner at a time: a session advisory lock (refinery takes none of its own).
//! - Resumable: each tenant schema is migrated in its own transaction, which also records the
//!   schema's version in `app.tenants.schema_version`; a crash leaves every schema either at
//!   its old or its new version, and the next run picks up the rest.
//! - Cheap when there is nothing to do: one catalog query finds the schemas behind the
//!   template, instead of opening every schema's history table.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use secrecy::ExposeSecret;
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

use super::pool::{build_pool, owner_settings, PoolOptions};
use super::roles::{self, RoleSetup};
use super::template::{shared_runner, TenantTemplate};
use super::{tenant_schema_name, DbError};
use crate::config::Config;
use crate::error::error_chain;

/// Any constant works as long as every runner uses the same one.
const MIGRATION_LOCK_KEY: i64 = 0x7465_6e61_6e74_7279; // "tenantry"

pub struct MigrateOptions {
    pub jobs: usize,
    pub template: TenantTemplate,
    pub progress: bool,
}

#[derive(Debug, Default)]
pub struct MigrateReport {
    pub shared_applied: usize,
    pub tenants_total: i64,
    pub tenants_migrated: usize,
    pub tenants_failed: Vec<(Uuid, String)>,
    pub template_version: i32,
    pub elapsed: Duration,
}

impl std::fmt::Display for MigrateReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "migrate: shared schema {} new migration(s); {} of {} tenant schema(s) migrated to template v{}, {} failed, in {:.2}s",
            self.shared_applied,
            self.tenants_migrated,
            self.tenants_total,
            self.template_version,
            self.tenants_failed.len(),
            self.elapsed.as_secs_f64()
        )
    }
}

pub async fn connect(url: &str, settings: &[(String, String)]) -> Result<Client, DbError> {
    let mut pg: tokio_postgres::Config =
        url.parse().map_err(|e| DbError::InvalidUrl(Arc::new(e)))?;
    let mut options = pg.get_options().unwrap_or_default().to_string();
    for (name, value) in settings {
        options.push_str(&format!(" -c {name}={value}"));
    }
    pg.options(options.trim());
    pg.application_name("tenantry-migrate");
    pg.connect_timeout(Duration::from_secs(10));
    if super::tls::wanted(&pg) {
        let (client, connection) = pg.connect(super::tls::connector()?).await?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::warn!(%err, "migration connection closed");
            }
        });
        return Ok(client);
    }
    let (client, connection) = pg.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::warn!(%err, "migration connection closed");
        }
    });
    Ok(client)
}

pub fn password_of(url: &str) -> Option<String> {
    url.parse::<tokio_postgres::Config>().ok().and_then(|c| {
        c.get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
    })
}

/// Creates the database named in DATABASE_URL when it does not exist (local runs and tests).
pub async fn create_database_if_missing(database_url: &str) -> Result<(), DbError> {
    let pg: tokio_postgres::Config = database_url
        .parse()
        .map_err(|e| DbError::InvalidUrl(Arc::new(e)))?;
    let Some(name) = pg.get_dbname().map(str::to_string) else {
        return Ok(());
    };
    let maintenance = crate::config::with_database(database_url, "postgres");
    let client = connect(&maintenance, &[]).await?;
    let exists = client
        .query_opt("select 1 from pg_database where datname = $1", &[&name])
        .await?
        .is_some();
    if !exists {
        match client
            .batch_execute(&format!("CREATE DATABASE {}", roles::quote_ident(&name)))
            .await
        {
            Ok(()) => tracing::info!(database = %name, "created database"),
            // Another runner created it in the meantime: DUPLICATE_DATABASE once its commit is
            // visible, a unique violation of the catalog while both are under way.
            Err(e)
                if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE)
                    || e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `tenantry migrate` on plain PostgreSQL.
pub async fn migrate(config: &Config, opts: MigrateOptions) -> Result<MigrateReport, DbError> {
    run(config, opts, false).await
}

/// `tenantry migrate --citus`: the same, and the Citus steps of [`super::citus`] (on a database
/// with the `citus` extension and its workers added).
pub async fn migrate_citus(
    config: &Config,
    opts: MigrateOptions,
) -> Result<MigrateReport, DbError> {
    run(config, opts, true).await
}

async fn run(config: &Config, opts: MigrateOptions, citus: bool) -> Result<MigrateReport, DbError> {
    let started = Instant::now();
    let login = connect(config.database_url.expose_secret(), &[]).await?;
    match (citus, super::citus::is_citus(&login).await?) {
        (false, true) => {
            return Err(DbError::DeploymentMode(
                "this database has the citus extension: run `tenantry migrate --citus` \
                 (docs/scale-out.md)"
                    .into(),
            ))
        }
        (true, false) => {
            return Err(DbError::DeploymentMode(
                "--citus: this database has no citus extension (CREATE EXTENSION citus and \
                 add the workers first; docs/scale-out.md)"
                    .into(),
            ))
        }
        _ => {}
    }
    roles::ensure_roles(
        &login,
        &RoleSetup {
            roles: &config.roles,
            app_password: password_of(config.app_database_url.expose_secret()),
            admin_password: password_of(config.admin_database_url.expose_secret()),
        },
    )
    .await?;
    if citus {
        super::citus::prepare_database(&login, &config.roles).await?;
    }
    drop(login);

    let owner_settings = owner_settings(config);
    let lock_holder = connect(config.database_url.expose_secret(), &owner_settings).await?;
    let locked: bool = lock_holder
        .query_one("select pg_try_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?
        .get(0);
    if !locked {
        eprintln!("migrate: another runner holds the migration lock; waiting for it to finish");
        lock_holder
            .execute("select pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
            .await?;
    }

    let mut report = MigrateReport {
        template_version: opts.template.latest_version(),
        ..Default::default()
    };
    if citus {
        report.shared_applied = migrate_shared_citus(&lock_holder, config).await?;
    } else {
        report.shared_applied = migrate_shared(&lock_holder, config).await?;
    }
    migrate_tenants(config, &lock_holder, &opts, &mut report).await?;
    if citus {
        super::citus::distribute_tenant_schemas(&lock_holder).await?;
    }
    lock_holder
        .execute("select pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    report.elapsed = started.elapsed();
    Ok(report)
}

async fn migrate_shared(owner: &Client, config: &Config) -> Result<usize, DbError> {
    owner
        .batch_execute("CREATE SCHEMA IF NOT EXISTS app")
        .await?;
    let mut owner_client = owner_client_ref(owner);
    let report = shared_runner()
        .set_migration_table_name("app.refinery_schema_history")
        .run_async(&mut owner_client)
        .await
        .map_err(|e| DbError::Migration {
            schema: "app".into(),
            source: Arc::new(e),
        })?;
    roles::grant_shared_schema(owner, &config.roles).await?;
    Ok(report.applied_migrations().len())
}

/// The shared schema on Citus: the migrations one statement at a time, then the tables
/// distributed, then the grants (Citus copies a table's grants to its shards).
async fn migrate_shared_citus(owner: &Client, config: &Config) -> Result<usize, DbError> {
    owner
        .batch_execute("CREATE SCHEMA IF NOT EXISTS app")
        .await?;
    let applied = super::citus::migrate_shared(owner).await?;
    super::citus::distribute_shared(owner).await?;
    roles::grant_shared_schema(owner, &config.roles).await?;
    Ok(applied)
}

/// refinery's driver wants `&mut Client`; the lock holder is shared by reference, so the
/// shared migrations run through a second handle on the same session.
fn owner_client_ref(owner: &Client) -> OwnerClient<'_> {
    OwnerClient { client: owner }
}

struct OwnerClient<'a> {
    client: &'a Client,
}

impl refinery_core::traits::r#async::AsyncTransaction for OwnerClient<'_> {
    type Error = tokio_postgres::Error;

    async fn execute<'a, T: Iterator<Item = &'a str> + Send + 'a>(
        &'a mut self,
        queries: T,
    ) -> Result<usize, Self::Error> {
        // One transaction for the whole batch, like refinery's own driver.
        self.client.batch_execute("BEGIN").await?;
        let mut count = 0;
        for query in queries {
            if let Err(e) = self.client.batch_execute(query).await {
                let _ = self.client.batch_execute("ROLLBACK").await;
                return Err(e);
            }
            count += 1;
        }
        self.client.batch_execute("COMMIT").await?;
        Ok(count)
    }
}

impl refinery_core::traits::r#async::AsyncQuery<Vec<refinery_core::Migration>> for OwnerClient<'_> {
    async fn query(&mut self, query: &str) -> Result<Vec<refinery_core::Migration>, Self::Error> {
        let rows = self.client.query(query, &[]).await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let applied_on: String = row.get(2);
                let checksum: String = row.get(3);
                refinery_core::Migration::applied(
                    row.get(0),
                    row.get(1),
                    time::OffsetDateTime::parse(
                        &applied_on,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
                    checksum.parse().unwrap_or(0),
                )
            })
            .collect())
    }
}

impl refinery_core::traits::r#async::AsyncMigrate for OwnerClient<'_> {}

async fn migrate_tenants(
    config: &Config,
    owner: &Client,
    opts: &MigrateOptions,
    report: &mut MigrateReport,
) -> Result<(), DbError> {
    let latest = opts.template.latest_version();
    check_template_against_schemas(owner, &opts.template).await?;
    report.tenants_total = owner
        .query_one("select count(*) from app.tenants", &[])
        .await?
        .get(0);
    let pool = build_pool(PoolOptions {
        url: config.database_url.expose_secret(),
        size: opts.jobs.max(1),
        settings: owner_settings(config),
        tenant_schema_budget: config.tenant_schemas_per_connection,
        wakes: config.wakes.clone(),
    })?;
    let mut failed: Vec<Uuid> = Vec::new();
    // Tenants provisioned while we run (by a server built with an older template) are picked
    // up by the next pass; failures are not retried within one run.
    for _pass in 0..3 {
        let behind: Vec<Uuid> = owner
            .query(
                "select id from app.tenants where schema_version < $1 and not (id = any($2)) order by id",
                &[&latest, &failed],
            )
            .await?
            .into_iter()
            .map(|r| r.get(0))
            .collect();
        if behind.is_empty() {
            break;
        }
        let bar = if opts.progress && std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(behind.len() as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} tenant schemas [{bar:40}] {pos}/{len} {per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            Some(bar)
        } else {
            None
        };
        let results: Vec<(Uuid, Result<(), DbError>)> = stream::iter(behind)
            .map(|tenant| {
                let pool = pool.clone();
                let bar = bar.clone();
                async move {
                    let result = async {
                        let mut conn = pool.get().await?;
                        conn.touch_tenant_schema(tenant);
                        let tx = conn.transaction().await?;
                        migrate_tenant_schema(&tx, tenant, &opts.template, config).await?;
                        tx.commit().await?;
                        Ok(())
                    }
                    .await;
                    if let Some(bar) = &bar {
                        bar.inc(1);
                    }
                    (tenant, result)
                }
            })
            .buffer_unordered(opts.jobs.max(1))
            .collect()
            .await;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        for (tenant, result) in results {
            match result {
                Ok(()) => report.tenants_migrated += 1,
                Err(err) => {
                    // The reason PostgreSQL gave is at the end of the chain (refinery's own
                    // message ends at "db error"); an operator needs it to repair the schema.
                    let reason = error_chain(&err);
                    tracing::error!(tenant_id = %tenant, error = %reason, "tenant schema migration failed");
                    failed.push(tenant);
                    report.tenants_failed.push((tenant, reason));
                }
            }
        }
    }
    Ok(())
}

/// Refuses a template that disagrees with what existing schemas recorded, before any schema is
/// touched. refinery would only notice in the schemas it opens, and a run with no tenant behind
/// opens none, so the histories of the oldest and the newest tenant schema are read here: two
/// small queries whatever the number of tenants.
async fn check_template_against_schemas(
    owner: &Client,
    template: &TenantTemplate,
) -> Result<(), DbError> {
    let sample: Vec<Uuid> = owner
        .query(
            "(select id from app.tenants where schema_version > 0 order by id limit 1) \
             union \
             (select id from app.tenants where schema_version > 0 order by id desc limit 1)",
            &[],
        )
        .await?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    for tenant in sample {
        let schema = tenant_schema_name(tenant);
        let history = format!("{schema}.refinery_schema_history");
        let exists: bool = owner
            .query_one("select to_regclass($1) is not null", &[&history])
            .await?
            .get(0);
        if !exists {
            continue; // purged since the sample was taken
        }
        let applied: Vec<(i32, String, String)> = owner
            .query(
                &format!("select version, name, checksum from {history} order by version"),
                &[],
            )
            .await?
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        template.check_history(&schema, &applied)?;
    }
    Ok(())
}

/// Brings one existing tenant schema to the template's latest version inside `tx`.
pub async fn migrate_tenant_schema(
    tx: &tokio_postgres::Transaction<'_>,
    tenant: Uuid,
    template: &TenantTemplate,
    config: &Config,
) -> Result<(), DbError> {
    super::tenant_tx::set_tenant_in_tx(tx, tenant).await?;
    // Row lock: a concurrent purge or a second runner cannot interleave with this schema.
    let current: Option<i32> = tx
        .query_opt(
            "select schema_version from app.tenants where id = $1 for update",
            &[&tenant],
        )
        .await?
        .map(|r| r.get(0));
    let Some(current) = current else {
        return Ok(()); // purged meanwhile
    };
    if current >= template.latest_version() {
        return Ok(());
    }
    apply_template(tx, tenant, template, config).await
}

/// Creates a new tenant's schema and applies the whole template inside `tx`.
pub async fn create_tenant_schema(
    tx: &tokio_postgres::Transaction<'_>,
    tenant: Uuid,
    template: &TenantTemplate,
    config: &Config,
) -> Result<(), DbError> {
    let schema = tenant_schema_name(tenant);
    tx.batch_execute(&format!("CREATE SCHEMA {schema}")).await?;
    apply_template(tx, tenant, template, config).await
}

async fn apply_template(
    tx: &tokio_postgres::Transaction<'_>,
    tenant: Uuid,
    template: &TenantTemplate,
    config: &Config,
) -> Result<(), DbError> {
    let schema = tenant_schema_name(tenant);
    // Whether the database runs Citus rides along in the same round trip: there the template
    // runs one statement at a time (docs/scale-out.md).
    let citus = tx
        .simple_query(&format!(
            "SET LOCAL search_path TO {schema}; {}",
            super::pool::IS_CITUS_SQL
        ))
        .await?
        .iter()
        .any(|message| {
            matches!(message, tokio_postgres::SimpleQueryMessage::Row(row)
                if row.get(0) == Some("t"))
        });
    roles::default_privileges_tenant_schema(tx, &schema, &config.roles).await?;
    template.apply_statements(tx, &schema, citus).await?;
    roles::grant_tenant_schema(tx, &schema, &config.roles).await?;
    tx.batch_execute("SET LOCAL search_path TO DEFAULT").await?;
    tx.execute(
        "update app.tenants set schema_version = $2 where id = $1",
        &[&tenant, &template.latest_version()],
    )
    .await?;
    Ok(())
}
