//! What the benches that drive a real server (`analytics_http`, `config_propagation`,
//! `usage_http`, `webhooks`) share: a fresh bench database, migrated, and `tenantry serve` (the
//! binary cargo builds beside the bench) started on it as a child process. Each includes it with
//! `mod server;`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use secrecy::ExposeSecret;
use tenantry::config::{with_database, with_user, Config};
use tenantry::db::migrate::{self, connect, MigrateOptions};
use tenantry::db::template::TenantTemplate;

pub const OPERATOR_TOKEN: &str = "bench-operator-token-0123456789abcdef";
const JWT_SECRET: &str = "bench-jwt-secret-0123456789abcdef0123456789";

/// A `tenantry serve` process, killed when dropped.
pub struct Server {
    pub child: Child,
    pub address: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// The server's resident memory in MB (one decimal).
    #[allow(dead_code)] // Not every bench reports it.
    pub fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| (kb / 102.4).round() / 10.0)
    }
}

/// The configuration of a bench database, dropped and created again, then migrated: the URL in
/// `$url_var`, else `default_name` on the server of DATABASE_URL. Its name must contain `bench`,
/// since it is dropped first.
pub async fn fresh_database(url_var: &str, default_name: &str) -> Config {
    let mut config = Config::from_env().expect("configuration");
    let url = std::env::var(url_var)
        .unwrap_or_else(|_| with_database(config.database_url.expose_secret(), default_name));
    let database = url
        .rsplit('/')
        .next()
        .and_then(|d| d.split('?').next())
        .unwrap_or_default()
        .to_string();
    assert!(
        database.contains("bench")
            && database
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "the bench database is dropped first: its name must be a plain identifier containing `bench`, got {database:?}"
    );
    let admin = connect(&with_database(&url, "postgres"), &[])
        .await
        .expect("connect to postgres");
    admin
        .batch_execute(&format!("drop database if exists {database} with (force)"))
        .await
        .expect("drop the previous bench database");
    config.database_url = url.clone().into();
    config.app_database_url = with_user(&url, &config.roles.app).expect("app url").into();
    config.admin_database_url = with_user(&url, &config.roles.admin)
        .expect("admin url")
        .into();
    migrate::create_database_if_missing(&url)
        .await
        .expect("create database");
    migrate::migrate(
        &config,
        MigrateOptions {
            jobs: 2,
            template: TenantTemplate::embedded(),
            progress: false,
        },
    )
    .await
    .expect("migrate");
    config
}

/// `tenantry serve --workers <workers>` on `config`'s database and Redis, with `env` on top of
/// the bench's tokens; its log goes to `$TMPDIR/<log>.log`. Returns once `/readyz` answers.
/// Provisioning goes through `POST /tenants` from one address, so the per-address limit of the
/// public endpoints is lifted.
pub async fn start_server(
    config: &Config,
    workers: usize,
    log: &str,
    env: &[(&str, &str)],
) -> Server {
    start_server_wrapped(config, workers, log, env, &[], Duration::from_secs(30)).await
}

/// [`start_server`] with the binary run by `wrapper` (e.g. `valgrind --tool=callgrind ...`:
/// the binary's path and arguments follow it), waiting up to `ready_within` for `/readyz`.
#[allow(dead_code)] // Only usage_http runs a server under callgrind.
pub async fn start_server_wrapped(
    config: &Config,
    workers: usize,
    log: &str,
    env: &[(&str, &str)],
    wrapper: &[&str],
    ready_within: Duration,
) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let log_path = std::env::temp_dir().join(format!("{log}.log"));
    let log_file = std::fs::File::create(&log_path).expect("server log");
    let binary = env!("CARGO_BIN_EXE_tenantry");
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(binary);
            c
        }
        None => Command::new(binary),
    };
    let child = command
        .args(["serve", "--workers", &workers.to_string()])
        .env("DATABASE_URL", config.database_url.expose_secret())
        .env("APP_DATABASE_URL", config.app_database_url.expose_secret())
        .env(
            "ADMIN_DATABASE_URL",
            config.admin_database_url.expose_secret(),
        )
        .env("REDIS_URL", config.redis_url.expose_secret())
        .env("JWT_SECRET", JWT_SECRET)
        .env("PLATFORM_ADMIN_TOKEN", OPERATOR_TOKEN)
        .env("BIND", format!("127.0.0.1:{port}"))
        .env("PUBLIC_REQUESTS_PER_MINUTE", "1000000")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file))
        .spawn()
        .expect("start tenantry serve");
    let server = Server {
        child,
        address: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    let began = std::time::Instant::now();
    while began.elapsed() < ready_within {
        if let Ok(r) = http.get(server.url("/readyz")).send().await {
            if r.status().is_success() {
                println!(
                    "server {log}: {} (pid {})",
                    server.address,
                    server.child.id()
                );
                return server;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "tenantry serve did not answer /readyz; see {}",
        log_path.display()
    );
}
