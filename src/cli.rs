//! The `tenantry` command line: thin wrappers over the library, for operators.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use secrecy::ExposeSecret;
use serde_json::json;

use crate::auth::JwtKeys;
use crate::config::Config;
use crate::db::migrate::{self, MigrateOptions};
use crate::db::template::TenantTemplate;
use crate::db::Pools;
use crate::input::Text;
use crate::page::{CursorKey, MAX_LIMIT};
use crate::startup::{Application, ServerOptions};
use crate::tenancy::lifecycle::{self, PlatformAction};
use crate::tenancy::{self, NewTenant, TenancyError};

#[derive(Parser, Debug)]
#[command(
    name = "tenantry",
    version,
    about = "Multi-tenant SaaS backend: server, migrations and tenant operations"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP server.
    Serve {
        /// HTTP worker threads (default: one per core).
        #[arg(long, default_value_t = 0)]
        workers: usize,
        /// Also serve the benchmark's reference endpoint, which reads any tenant's data without
        /// credentials. For bench/ on a private machine only.
        #[arg(long)]
        enable_bench_routes: bool,
    },
    /// Create the roles, migrate the shared schema and bring every tenant schema to the latest
    /// template version.
    Migrate(MigrateArgs),
    /// Operator commands on tenants.
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// Create the demo tenant if missing, give its admin a fresh password and print the login.
    Demo,
    /// Stored secrets (docs/security.md).
    #[command(subcommand)]
    Secrets(SecretsCommand),
}

#[derive(Subcommand, Debug)]
pub enum SecretsCommand {
    /// Re-seal every stored secret under SECRETS_KEY; values under a key of
    /// SECRETS_KEY_PREVIOUS are opened with it. Servers keep running meanwhile.
    Rotate {
        /// Rows read and updated per statement.
        #[arg(long, default_value_t = 500)]
        batch: usize,
    },
}

#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// Tenant schemas migrated at once (each on its own connection).
    #[arg(long, default_value_t = 8)]
    pub jobs: usize,
    /// Read the tenant template from this folder instead of the one built in. It must hold every
    /// built-in migration unchanged.
    #[arg(long, env = "TENANT_TEMPLATE_DIR")]
    pub tenant_template: Option<PathBuf>,
    /// Never draw a progress bar, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// The database runs Citus (docs/scale-out.md): distribute the shared tables by tenant_id,
    /// make the platform tables reference tables and the tenant schemas distributed schemas.
    #[arg(long)]
    pub citus: bool,
}

#[derive(Subcommand, Debug)]
pub enum TenantsCommand {
    /// Provision a tenant: its row, admin user and schema, in one transaction.
    Create {
        #[arg(long)]
        name: Text,
        #[arg(long)]
        slug: Text,
        #[arg(long)]
        subdomain: Option<Text>,
        #[arg(long, default_value = "free")]
        plan: Text,
        #[arg(long)]
        admin_email: Text,
        /// Generated and printed when omitted.
        #[arg(long)]
        admin_password: Option<Text>,
    },
    /// List tenants.
    List {
        #[arg(long)]
        include_deleted: bool,
        /// One JSON object a line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one tenant (id or slug).
    Show { tenant: Text },
    /// Suspend a tenant: its users can no longer use it.
    Suspend { tenant: Text },
    /// Resume a suspended tenant.
    Resume { tenant: Text },
    /// Soft-delete a tenant and every row of it; restorable within the retention period.
    Delete { tenant: Text },
    /// Restore a soft-deleted tenant.
    Restore { tenant: Text },
    /// Write every row of a tenant as NDJSON (GDPR export).
    Export {
        tenant: Text,
        /// File to write; standard output when omitted.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Remove for good the tenants deleted longer ago than the retention period; or, with a
    /// tenant and --now, erase that tenant at once (docs/privacy.md).
    Purge {
        /// Overrides TENANT_RETENTION_DAYS for this run (0 purges every deleted tenant).
        #[arg(long, conflicts_with = "tenant")]
        retention_days: Option<u64>,
        /// The tenant (id or slug) to erase now, live or deleted: every row, its schema, its
        /// tenant row. Needs --now.
        #[arg(requires = "now")]
        tenant: Option<Text>,
        /// Erase TENANT immediately instead of waiting for the retention period.
        #[arg(long, requires = "tenant")]
        now: bool,
        /// Do not ask for the slug as confirmation (required without a terminal).
        #[arg(long, requires = "now")]
        yes: bool,
    },
}

pub async fn run(cli: Cli) -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    crate::telemetry::init(config.log_format);
    let result = match cli.command {
        Command::Serve {
            workers,
            enable_bench_routes,
        } => serve(config, workers, enable_bench_routes).await,
        Command::Migrate(args) => run_migrate(&config, args).await,
        Command::Tenants(cmd) => tenants(&config, cmd).await,
        Command::Demo => demo(&config).await,
        Command::Secrets(SecretsCommand::Rotate { batch }) => rotate_secrets(&config, batch).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // With its causes: the outer error says what failed, the inner ones why.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config, workers: usize, bench_routes: bool) -> anyhow::Result<()> {
    for warning in config.startup_warnings() {
        tracing::warn!("{warning}");
    }
    let bind = config.bind.clone();
    let app = Application::build(
        config,
        ServerOptions {
            workers,
            bench_routes,
            ..Default::default()
        },
    )
    .await?;
    tracing::info!(%bind, port = app.port(), "tenantry listening");
    app.run_until_signalled().await?;
    Ok(())
}

async fn rotate_secrets(config: &Config, batch: usize) -> anyhow::Result<()> {
    if config.secrets_key_generated {
        anyhow::bail!("SECRETS_KEY is not set: rotation re-seals under SECRETS_KEY, set it");
    }
    let keyring = crate::secrets::Keyring::from_config(config)?;
    let pools = Pools::new(config)?;
    let columns = crate::secrets::registry::ENCRYPTED_COLUMNS;
    let done = crate::secrets::rotate::rotate_all(&pools.admin, &keyring, columns, batch).await?;
    for rotated in &done {
        println!(
            "{}.{}: {} re-sealed under key {}",
            rotated.table,
            rotated.column,
            rotated.resealed,
            keyring.current_key_id()
        );
    }
    println!(
        "{} column(s) under key {}; SECRETS_KEY_PREVIOUS may now be removed",
        done.len(),
        keyring.current_key_id()
    );
    Ok(())
}

async fn run_migrate(config: &Config, args: MigrateArgs) -> anyhow::Result<()> {
    migrate::create_database_if_missing(config.database_url.expose_secret()).await?;
    let template = match &args.tenant_template {
        Some(dir) => TenantTemplate::from_dir(dir)?,
        None => TenantTemplate::embedded(),
    };
    let opts = MigrateOptions {
        jobs: args.jobs,
        template,
        progress: !args.no_progress,
    };
    let report = if args.citus {
        migrate::migrate_citus(config, opts).await?
    } else {
        migrate::migrate(config, opts).await?
    };
    println!("{report}");
    if !report.tenants_failed.is_empty() {
        for (tenant, err) in &report.tenants_failed {
            eprintln!("  tenant {tenant}: {err}");
        }
        anyhow::bail!(
            "{} tenant schema(s) failed to migrate; run again after fixing",
            report.tenants_failed.len()
        );
    }
    Ok(())
}

struct Ops {
    pools: Pools,
    redis: redis::Client,
    jwt: JwtKeys,
    template: TenantTemplate,
}

impl Ops {
    fn new(config: &Config) -> anyhow::Result<Ops> {
        Ok(Ops {
            pools: Pools::new(config)?,
            redis: redis::Client::open(config.redis_url.expose_secret())?,
            jwt: JwtKeys::hs256(config.jwt_secret.expose_secret(), config.jwt_ttl),
            template: TenantTemplate::embedded(),
        })
    }

    fn provision_context<'a>(
        &'a self,
        config: &'a Config,
    ) -> tenancy::provision::ProvisionContext<'a> {
        tenancy::provision::ProvisionContext {
            owner: &self.pools.owner,
            template: &self.template,
            config,
            jwt: &self.jwt,
        }
    }

    /// Running servers cache tenants; tell them this one changed.
    async fn tell_servers(&self, tenant: uuid::Uuid) {
        // The Redis copy of the tenant's config snapshot goes first, so no server reloads the
        // old configuration from it.
        crate::tenant_config::load::SnapshotStore::new(self.redis.clone(), Default::default())
            .forget_logged(&[tenant])
            .await;
        crate::cache::publish(&self.redis, &crate::cache::Invalidation::Tenant(tenant)).await;
    }

    async fn find(&self, key: &str) -> Result<tenancy::Tenant, TenancyError> {
        let mut conn = self.pools.admin.get().await?;
        let tx = conn.transaction().await?;
        lifecycle::find(tx.client(), key).await
    }
}

fn describe(err: TenancyError) -> anyhow::Error {
    match err {
        TenancyError::Validation(errors) => anyhow::anyhow!(
            "invalid input: {}",
            errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        TenancyError::Db(crate::db::DbError::UniqueViolation { constraint }) => {
            anyhow::anyhow!("already exists ({})", constraint.unwrap_or_default())
        }
        other => anyhow::anyhow!(other),
    }
}

async fn tenants(config: &Config, cmd: TenantsCommand) -> anyhow::Result<()> {
    let ops = Ops::new(config)?;
    match cmd {
        TenantsCommand::Create {
            name,
            slug,
            subdomain,
            plan,
            admin_email,
            admin_password,
        } => {
            let created = tenancy::provision(
                &ops.provision_context(config),
                NewTenant {
                    name,
                    slug,
                    subdomain,
                    plan: Some(plan),
                    admin_email,
                    admin_password,
                },
                None,
            )
            .await
            .map_err(describe)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "tenant": created.tenant,
                    "admin": {"id": created.admin_id, "email": created.admin_email},
                    "credentials": {"token": created.token, "password": created.generated_password},
                }))?
            );
        }
        TenantsCommand::List {
            include_deleted,
            json,
        } => {
            let cursors = CursorKey::derive(&config.jwt_secret);
            let mut cursor: Option<String> = None;
            let mut stdout = std::io::stdout().lock();
            if !json {
                writeln!(
                    stdout,
                    "{:<36}  {:<24}  {:<10}  {:<9}  created",
                    "id", "slug", "plan", "status"
                )?;
            }
            loop {
                let request =
                    lifecycle::TENANTS.parse(&cursors, Some(MAX_LIMIT), cursor.as_deref())?;
                let page = lifecycle::list(&ops.pools.admin, include_deleted, &request, None)
                    .await
                    .map_err(describe)?;
                for t in &page.items {
                    if json {
                        writeln!(stdout, "{}", serde_json::to_string(t)?)?;
                    } else {
                        writeln!(
                            stdout,
                            "{:<36}  {:<24}  {:<10}  {:<9}  {}",
                            t.id,
                            t.slug,
                            t.plan,
                            serde_json::to_value(t.status)?.as_str().unwrap_or(""),
                            t.created_at.to_rfc3339()
                        )?;
                    }
                }
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
        }
        TenantsCommand::Show { tenant } => {
            let t = ops.find(&tenant).await.map_err(describe)?;
            // Read again through `get`, which audits the operator's cross-tenant read.
            let t = lifecycle::get(&ops.pools.admin, t.id, None)
                .await
                .map_err(describe)?;
            println!("{}", serde_json::to_string_pretty(&t)?);
        }
        TenantsCommand::Suspend { tenant } => {
            let t = ops.find(&tenant).await.map_err(describe)?;
            let t = lifecycle::set_status(&ops.pools.admin, t.id, true, None)
                .await
                .map_err(describe)?;
            ops.tell_servers(t.id).await;
            println!("suspended {} ({})", t.slug, t.id);
        }
        TenantsCommand::Resume { tenant } => {
            let t = ops.find(&tenant).await.map_err(describe)?;
            let t = lifecycle::set_status(&ops.pools.admin, t.id, false, None)
                .await
                .map_err(describe)?;
            ops.tell_servers(t.id).await;
            println!("resumed {} ({})", t.slug, t.id);
        }
        TenantsCommand::Delete { tenant } => {
            let t = ops.find(&tenant).await.map_err(describe)?;
            lifecycle::soft_delete(&ops.pools.admin, t.id, None)
                .await
                .map_err(describe)?;
            ops.tell_servers(t.id).await;
            println!(
                "deleted {} ({}); restorable for {} day(s)",
                t.slug,
                t.id,
                config.retention.as_secs() / 86_400
            );
        }
        TenantsCommand::Restore { tenant } => {
            let t = ops.find(&tenant).await.map_err(describe)?;
            let t = lifecycle::restore(&ops.pools.admin, t.id, config.retention, None)
                .await
                .map_err(describe)?;
            ops.tell_servers(t.id).await;
            println!("restored {} ({})", t.slug, t.id);
        }
        TenantsCommand::Export { tenant, output } => {
            let t = ops.find(&tenant).await.map_err(describe)?;
            export(&ops, t.id, output).await?;
        }
        TenantsCommand::Purge {
            tenant: Some(tenant),
            now: true,
            yes,
            ..
        } => {
            let t = ops.find(&tenant).await.map_err(describe)?;
            if !yes {
                confirm_slug(&t.slug)?;
            }
            let rows = lifecycle::purge_now(&ops.pools.owner, t.id)
                .await
                .map_err(describe)?;
            ops.tell_servers(t.id).await;
            println!(
                "purged {} ({}) now: {rows} row(s) of the shared schema and its schema",
                t.slug, t.id
            );
        }
        TenantsCommand::Purge { retention_days, .. } => {
            let retention = retention_days
                .map(|d| Duration::from_secs(d * 86_400))
                .unwrap_or(config.retention);
            let purged = lifecycle::purge_expired(&ops.pools.owner, retention)
                .await
                .map_err(describe)?;
            println!("purged {} tenant(s)", purged.len());
            for id in purged {
                println!("  {id}");
            }
        }
    }
    Ok(())
}

/// An immediate purge cannot be undone: the operator types the tenant's slug. Without a
/// terminal to ask on, only --yes goes ahead.
fn confirm_slug(slug: &str) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        anyhow::bail!("refusing to purge without confirmation: no terminal to ask on; pass --yes");
    }
    eprint!("This erases tenant {slug} and all its data for good. Type its slug to confirm: ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if answer.trim() != slug {
        anyhow::bail!("confirmation did not match; nothing was purged");
    }
    Ok(())
}

async fn export(ops: &Ops, tenant: uuid::Uuid, output: Option<PathBuf>) -> anyhow::Result<()> {
    let (tx_lines, mut rx) = tokio::sync::mpsc::channel::<String>(256);
    let mut writer: Box<dyn Write + Send> = match &output {
        Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let writing = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
        let mut n = 0;
        while let Some(line) = rx.blocking_recv() {
            writer.write_all(line.as_bytes())?;
            writer.write_all(b"\n")?;
            n += 1;
        }
        writer.flush()?;
        Ok(n)
    });
    // An operator reading every row of a tenant is audited like any other operator action.
    let action = PlatformAction::operator("tenant.export", Some(tenant), None).in_tenant(tenant);
    lifecycle::with_platform_action(&ops.pools.admin, action, async move |tx, details| {
        let exported = tenancy::export::export(&**tx, tenant, tx_lines).await?;
        *details = json!({"lines": exported});
        Ok(())
    })
    .await
    .map_err(describe)?;
    let lines = writing.await??;
    if let Some(path) = output {
        eprintln!("exported {lines} line(s) to {}", path.display());
    }
    Ok(())
}

pub const DEMO_SLUG: &str = "demo";
pub const DEMO_EMAIL: &str = "admin@demo.example.com";

async fn demo(config: &Config) -> anyhow::Result<()> {
    let ops = Ops::new(config)?;
    let password = crate::auth::password::generate();
    let tenant = match ops.find(DEMO_SLUG).await {
        Ok(t) if t.deleted_at.is_none() => {
            tenancy::provision::reset_password(&ops.pools.owner, t.id, DEMO_EMAIL, &password)
                .await
                .map_err(describe)?;
            t
        }
        Ok(_) => {
            anyhow::bail!("the demo tenant is deleted; run `tenantry tenants restore demo` first")
        }
        Err(TenancyError::NotFound) => {
            tenancy::provision(
                &ops.provision_context(config),
                NewTenant {
                    name: Text::parse("Demo Company")?,
                    slug: Text::parse(DEMO_SLUG)?,
                    subdomain: None,
                    plan: Some(Text::parse("pro")?),
                    admin_email: Text::parse(DEMO_EMAIL)?,
                    admin_password: Some(Text::parse(password.clone())?),
                },
                None,
            )
            .await
            .map_err(describe)?
            .tenant
        }
        Err(e) => return Err(describe(e)),
    };
    println!("demo tenant ready");
    println!(
        "  tenant:   {} (id {}, plan {})",
        tenant.slug, tenant.id, tenant.plan
    );
    println!("  login:    {DEMO_EMAIL}");
    println!("  password: {password}");
    println!(
        "  try:      curl -s -X POST http://{}/auth/login -H 'X-Tenant-ID: {}' -H 'content-type: application/json' -d '{{\"email\":\"{DEMO_EMAIL}\",\"password\":\"{password}\"}}'",
        config.bind, tenant.slug
    );
    Ok(())
}
