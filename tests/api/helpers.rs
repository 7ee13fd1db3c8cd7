//! The test harness: a fresh, migrated database and a running server per test.

#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::{json, Value};
use tenantry::auth::JwtKeys;
use tenantry::config::{with_database, Config};
use tenantry::db::migrate::{self, MigrateOptions};
use tenantry::db::template::TenantTemplate;
use tenantry::db::Pools;
use tenantry::input::Text;
use tenantry::startup::{Application, ServerOptions};
use tenantry::tenancy::provision::{provision, ProvisionContext};
use tenantry::tenancy::{NewTenant, Provisioned};
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

pub const OPERATOR_TOKEN: &str = "test-operator-token-0123456789";

pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub config: Config,
    pub database: String,
    pub http: reqwest::Client,
    /// The in-process server, stopped when the test ends (`Drop`).
    running: Option<RunningServer>,
}

/// A server started on a thread of its own by [`spawn_app_with`].
struct RunningServer {
    handle: actix_web::dev::ServerHandle,
    /// Closed when the server's thread ends.
    ended: mpsc::Receiver<()>,
}

/// How long a test's end waits for its server to shut down (loops stopped, last flushes
/// written) before dropping its database regardless.
const SERVER_STOP_WAIT: Duration = Duration::from_secs(15);

pub struct TestTenant {
    pub id: Uuid,
    pub slug: String,
    pub admin_id: Uuid,
    pub admin_email: String,
    pub admin_password: String,
    pub token: String,
}

/// The server under test may use the maintenance URL of TEST_DATABASE_URL (default: local
/// trust auth as postgres); every test creates its own database from it.
pub fn base_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// Citus (scripts/citus-check.sh): TEST_DATABASE_URL names the coordinator and
/// TEST_CITUS_WORKERS the maintenance URLs of its workers, comma-separated. Every test database
/// is then created on each node with the citus extension, the workers are added to it, and it
/// is migrated with `migrate --citus`.
pub fn citus_workers() -> Option<Vec<String>> {
    let workers = std::env::var("TEST_CITUS_WORKERS").ok()?;
    let workers: Vec<String> = workers
        .split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect();
    (!workers.is_empty()).then_some(workers)
}

/// For tests that add a trigger of their own to a tenant table (fault injection): Citus refuses
/// triggers on distributed tables unless the session allows them. Nothing on plain PostgreSQL.
/// Citus also wants such DDL one statement per query string.
pub async fn allow_test_triggers(db: &Client) {
    if citus_workers().is_some() {
        db.batch_execute("SET citus.enable_unsafe_triggers = on")
            .await
            .expect("citus.enable_unsafe_triggers");
    }
}

/// For tests that take a tenant schema back to an older template version and replay template
/// migrations on it: on Citus the schema is made a local one first (its tables back on the
/// coordinator), so that the replay's DDL and backfills run where plain PostgreSQL runs them.
/// Citus 13.2 cannot run the template's backfills (`INSERT ... SELECT` within a distributed
/// schema: docs/scale-out.md); the replay checks their SQL, which on Citus runs before the
/// schema is distributed, when a tenant is provisioned. Nothing on plain PostgreSQL.
pub async fn undistribute_for_replay(db: &Client, schema: &str) {
    if citus_workers().is_some() {
        db.execute(
            "select citus_schema_undistribute($1::text::regnamespace)",
            &[&schema],
        )
        .await
        .expect("citus_schema_undistribute");
    }
}

pub fn host_port(url: &str) -> (String, i32) {
    let pg: tokio_postgres::Config = url.parse().expect("database URL");
    let host = match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".to_string(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    (host, i32::from(port))
}

/// The test database on every node of the Citus cluster: the extension everywhere, the
/// coordinator told where it is and where its workers are. Few shards per table: each test
/// distributes the whole schema again.
async fn citus_cluster_database(coordinator_url: &str, database: &str, workers: &[String]) {
    for worker in workers {
        let url = with_database(worker, database);
        migrate::create_database_if_missing(&url)
            .await
            .expect("create worker database");
        connect(&url)
            .await
            .batch_execute("CREATE EXTENSION IF NOT EXISTS citus")
            .await
            .expect("citus on the worker");
    }
    let coordinator = connect(coordinator_url).await;
    coordinator
        .batch_execute(&format!(
            "CREATE EXTENSION IF NOT EXISTS citus; \
             ALTER DATABASE \"{database}\" SET citus.shard_count = 4"
        ))
        .await
        .expect("citus on the coordinator");
    let (host, port) = host_port(coordinator_url);
    coordinator
        .execute("select citus_set_coordinator_host($1, $2)", &[&host, &port])
        .await
        .expect("citus_set_coordinator_host");
    for worker in workers {
        let (host, port) = host_port(worker);
        // On a loaded machine Citus sometimes loses its new connection to the worker while
        // adding it ("failure on connection marked as essential"); the call is transactional,
        // so it is tried again.
        let mut tries = 0;
        loop {
            match coordinator
                .execute("select citus_add_node($1, $2)", &[&host, &port])
                .await
            {
                Ok(_) => break,
                Err(e) if tries < 4 => {
                    tries += 1;
                    eprintln!("citus_add_node {host}:{port} failed ({e}); trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Err(e) => panic!("citus_add_node: {e:?}"),
            }
        }
    }
}

/// A migrated database of its own, and the configuration pointing at it; no server.
pub async fn test_config() -> (Config, String) {
    let (config, database) = unmigrated_config();
    migrate::create_database_if_missing(config.database_url.expose_secret())
        .await
        .expect("create test database");
    let opts = MigrateOptions {
        jobs: 2,
        template: TenantTemplate::embedded(),
        progress: false,
    };
    if let Some(workers) = citus_workers() {
        // One test database migrated at a time: the roles are shared by the whole cluster,
        // and `migrate` sets their attributes, which Citus then forwards to every worker;
        // two at once fail with "tuple concurrently updated" on the same role.
        static CITUS_MIGRATE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _one_at_a_time = CITUS_MIGRATE.lock().await;
        citus_cluster_database(config.database_url.expose_secret(), &database, &workers).await;
        migrate::migrate_citus(&config, opts)
            .await
            .expect("migrate test database (Citus)");
    } else {
        migrate::migrate(&config, opts)
            .await
            .expect("migrate test database");
    }
    (config, database)
}

/// The configuration of a database of its own that does not exist yet (tests of the
/// migration runner create it); wrap it in a [`TestDb`] to have it dropped.
pub fn unmigrated_config() -> (Config, String) {
    let database = format!("tenantry_test_{}", Uuid::new_v4().simple());
    let mut config = Config::from_env().expect("test configuration");
    config.database_url = with_database(&base_database_url(), &database).into();
    config.app_database_url =
        tenantry::config::with_user(config.database_url.expose_secret(), &config.roles.app)
            .expect("app url")
            .into();
    config.admin_database_url =
        tenantry::config::with_user(config.database_url.expose_secret(), &config.roles.admin)
            .expect("admin url")
            .into();
    config.bind = "127.0.0.1:0".into();
    config.platform_admin_token = Some(OPERATOR_TOKEN.into());
    config.jwt_secret = "test-jwt-secret-0123456789abcdef0123456789".into();
    config.app_pool_size = 8;
    config.app_shared_pool_size = 4;
    config.api_calls_flush_interval = std::time::Duration::from_millis(200);
    (config, database)
}

pub async fn spawn_app() -> TestApp {
    let (config, database) = test_config().await;
    spawn_app_with(config, database).await
}

/// Starts a server for an already migrated configuration (tests that run two instances
/// against one database call this twice).
pub async fn spawn_app_with(config: Config, database: String) -> TestApp {
    let (started_tx, started_rx) = mpsc::channel();
    let (ended_tx, ended) = mpsc::channel::<()>();
    let server_config = config.clone();
    std::thread::spawn(move || {
        // Dropped when the thread ends, however it ends: that is what `Drop` waits for.
        let _ended = ended_tx;
        actix_web::rt::System::new().block_on(async move {
            let app = Application::build(
                server_config,
                ServerOptions {
                    workers: 1,
                    purge_interval: None,
                    bench_routes: false,
                },
            )
            .await
            .expect("build application");
            started_tx
                .send((app.port(), app.server_handle()))
                .expect("send port");
            let _ = app.run_until_stopped().await;
        })
    });
    let (port, handle) =
        tokio::task::spawn_blocking(move || started_rx.recv_timeout(Duration::from_secs(30)))
            .await
            .expect("join")
            .expect("server did not start");
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        config,
        database,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client"),
        running: Some(RunningServer { handle, ended }),
    }
}

pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Superuser connection to this test's database (inspection only).
    pub async fn superuser_db(&self) -> Client {
        connect(self.config.database_url.expose_secret()).await
    }

    /// Connection as the app role: RLS applies.
    pub async fn app_db(&self) -> Client {
        connect(self.config.app_database_url.expose_secret()).await
    }

    /// Connection as the admin role: BYPASSRLS.
    pub async fn admin_db(&self) -> Client {
        connect(self.config.admin_database_url.expose_secret()).await
    }

    pub fn operator(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        builder.bearer_auth(OPERATOR_TOKEN)
    }

    pub async fn create_tenant_raw(&self, body: &Value) -> reqwest::Response {
        self.operator(self.http.post(self.url("/tenants")))
            .json(body)
            .send()
            .await
            .expect("POST /tenants")
    }

    /// Provisions a tenant with a known admin password and returns its admin's token.
    pub async fn create_tenant(&self, slug: &str) -> TestTenant {
        self.create_tenant_on_plan(slug, "free").await
    }

    pub async fn create_tenant_on_plan(&self, slug: &str, plan: &str) -> TestTenant {
        create_tenant_at(&self.http, &self.address, slug, plan).await
    }

    /// The server's OpenAPI document (`GET /openapi.json`, 200).
    pub async fn openapi(&self) -> Value {
        let r = self
            .http
            .get(self.url("/openapi.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "GET /openapi.json");
        r.json().await.unwrap()
    }

    /// The plan `name` as `GET /plans` shows it.
    pub async fn plan(&self, name: &str) -> Value {
        let plans: Value = self
            .http
            .get(self.url("/plans"))
            .send()
            .await
            .expect("GET /plans")
            .json()
            .await
            .expect("plans json");
        plans["items"]
            .as_array()
            .and_then(|items| items.iter().find(|p| p["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no plan {name} in {plans}"))
    }

    /// Sets one limit of a plan through `PUT /admin/plans/{plan}` (null: unlimited).
    pub async fn set_plan_limit(&self, plan: &str, limit: &str, value: Value) {
        let mut body = self.plan(plan).await;
        body["limits"][limit] = value;
        let r = self
            .operator(self.http.put(self.url(&format!("/admin/plans/{plan}"))))
            .json(&body)
            .send()
            .await
            .expect("PUT /admin/plans");
        assert_eq!(
            r.status().as_u16(),
            200,
            "{}",
            r.text().await.unwrap_or_default()
        );
    }

    pub fn get(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path)).bearer_auth(token)
    }

    pub fn post(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http.post(self.url(path)).bearer_auth(token)
    }

    pub fn patch(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http.patch(self.url(path)).bearer_auth(token)
    }

    pub fn delete(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http.delete(self.url(path)).bearer_auth(token)
    }

    /// The server's `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// The value of one sample of `/metrics`, named with its labels as printed
    /// (`name{label="value"}`); 0 when absent.
    pub async fn metric(&self, sample: &str) -> u64 {
        self.metrics_text()
            .await
            .lines()
            .find_map(|line| {
                line.strip_prefix(sample)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    }
}

/// Provisions a tenant through `POST /tenants` of the server at `address`, with a known admin
/// password, and returns its admin's token.
pub async fn create_tenant_at(
    http: &reqwest::Client,
    address: &str,
    slug: &str,
    plan: &str,
) -> TestTenant {
    let email = format!("admin@{slug}.example.com");
    let password = "correct-horse-battery".to_string();
    // A 503 is the API's "retry" (a pool wait timed out on a loaded machine, nothing was
    // provisioned): a client tries again after a moment, and so does this set-up.
    let mut tries = 0;
    let response = loop {
        let response = http
            .post(format!("{address}/tenants"))
            .bearer_auth(OPERATOR_TOKEN)
            .json(&json!({
                "name": format!("Tenant {slug}"),
                "slug": slug,
                "plan": plan,
                "admin_email": email,
                "admin_password": password,
            }))
            .send()
            .await
            .expect("POST /tenants");
        if response.status().as_u16() == 503 && tries < 3 {
            tries += 1;
            let body = response.text().await.unwrap_or_default();
            eprintln!("create tenant {slug}: 503 ({body}); trying again");
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            continue;
        }
        break response;
    };
    assert_eq!(response.status().as_u16(), 201, "create tenant {slug}");
    let body: Value = response.json().await.expect("json");
    TestTenant {
        id: body["tenant"]["id"].as_str().unwrap().parse().unwrap(),
        slug: slug.to_string(),
        admin_id: body["admin"]["id"].as_str().unwrap().parse().unwrap(),
        admin_email: email,
        admin_password: password,
        token: body["credentials"]["token"].as_str().unwrap().to_string(),
    }
}

/// Polls `probe` until it returns true or `within` has passed since `since`; the last answer.
/// How tests wait for a change to reach another instance: never a fixed sleep, and the time
/// bound counted from the change, not from the first poll.
pub async fn eventually<F, Fut>(since: tokio::time::Instant, within: Duration, mut probe: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    loop {
        if probe().await {
            return true;
        }
        if since.elapsed() >= within {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl TestApp {
    /// Stops the server as its test ends (`Application::server_handle`) and waits for its
    /// thread to end: loops stopped, last flushes written, connections closed. Once; `Drop`
    /// calls it.
    pub fn stop(&mut self) {
        if let Some(server) = self.running.take() {
            // The command is sent when `stop` is called; its future only reports completion.
            drop(server.handle.stop(false));
            let _ = server.ended.recv_timeout(SERVER_STOP_WAIT);
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // A server left running after its test keeps its loops retrying against a dropped
        // database for the rest of the run: hundreds of them by the end of the suite, each
        // opening connections, which loaded the machine enough to time out other tests' waits.
        self.stop();
        drop_database(&self.database);
    }
}

/// A migrated database of its own, without a server, dropped with the value (tests of the
/// library and the CLI).
pub struct TestDb {
    pub config: Config,
    pub database: String,
}

pub async fn test_db() -> TestDb {
    let (config, database) = test_config().await;
    TestDb { config, database }
}

impl TestDb {
    pub async fn superuser_db(&self) -> Client {
        connect(self.config.database_url.expose_secret()).await
    }

    pub async fn app_db(&self) -> Client {
        connect(self.config.app_database_url.expose_secret()).await
    }

    pub async fn admin_db(&self) -> Client {
        connect(self.config.admin_database_url.expose_secret()).await
    }

    pub fn pools(&self) -> Pools {
        Pools::new(&self.config).expect("pools")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        drop_database(&self.database);
    }
}

/// Provisions a tenant through the library, as the server and the CLI do.
pub async fn provision_tenant(config: &Config, pools: &Pools, slug: &str) -> Provisioned {
    provision_tenant_with(config, pools, &TenantTemplate::embedded(), slug).await
}

pub async fn provision_tenant_with(
    config: &Config,
    pools: &Pools,
    template: &TenantTemplate,
    slug: &str,
) -> Provisioned {
    let jwt = JwtKeys::hs256(config.jwt_secret.expose_secret(), config.jwt_ttl);
    let ctx = ProvisionContext {
        owner: &pools.owner,
        template,
        config,
        jwt: &jwt,
    };
    provision(&ctx, new_tenant(slug), None)
        .await
        .expect("provision tenant")
}

pub fn new_tenant(slug: &str) -> NewTenant {
    let text = |s: String| Text::parse(s).expect("text without NUL");
    NewTenant {
        name: text(format!("Tenant {slug}")),
        slug: text(slug.to_string()),
        subdomain: None,
        plan: None,
        admin_email: text(format!("admin@{slug}.example.com")),
        admin_password: Some(text("correct-horse-battery".into())),
    }
}

fn drop_database(database: &str) {
    // Best effort: the server thread may still hold connections, hence FORCE. On Citus the
    // coordinator's copy goes first (it holds connections to the workers' copies).
    let mut urls = vec![with_database(&base_database_url(), "postgres")];
    urls.extend(
        citus_workers()
            .unwrap_or_default()
            .iter()
            .map(|w| with_database(w, "postgres")),
    );
    let database = database.to_string();
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(rt) = runtime {
            rt.block_on(async move {
                for url in urls {
                    if let Ok((client, conn)) = tokio_postgres::connect(&url, NoTls).await {
                        tokio::spawn(conn);
                        let _ = client
                            .batch_execute(&format!(
                                "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
                            ))
                            .await;
                    }
                }
            });
        }
    })
    .join();
}

/// Reads a problem+json body and checks its status and code.
pub async fn assert_problem(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body: Value = response.json().await.expect("problem body");
    assert!(
        content_type.starts_with("application/problem+json"),
        "content type {content_type}, body {body}"
    );
    assert_eq!(body["code"], code, "problem code in {body}");
    assert_eq!(body["status"], status);
    body
}

/// A `tenantry serve` process on its own port; killed (SIGKILL) when dropped, so a failing
/// test leaves no server behind.
pub struct Server {
    child: Child,
    pub address: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Server {
    pub async fn start(db: &TestDb) -> Server {
        Server::start_with(db, 2, &[]).await
    }

    /// With `workers` HTTP workers and `env` added to the environment.
    pub async fn start_with(db: &TestDb, workers: usize, env: &[(&str, &str)]) -> Server {
        Server::start_on(db, workers, env, "http", &reqwest::Client::new()).await
    }

    /// Serving HTTPS (`env` names the TLS files); `client` must trust the certificate.
    pub async fn start_https(
        db: &TestDb,
        env: &[(&str, &str)],
        client: &reqwest::Client,
    ) -> Server {
        Server::start_on(db, 2, env, "https", client).await
    }

    async fn start_on(
        db: &TestDb,
        workers: usize,
        env: &[(&str, &str)],
        scheme: &str,
        http: &reqwest::Client,
    ) -> Server {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_tenantry"))
            .args(["serve", "--workers", &workers.to_string()])
            .env("DATABASE_URL", db.config.database_url.expose_secret())
            .env(
                "APP_DATABASE_URL",
                db.config.app_database_url.expose_secret(),
            )
            .env(
                "ADMIN_DATABASE_URL",
                db.config.admin_database_url.expose_secret(),
            )
            .env("JWT_SECRET", db.config.jwt_secret.expose_secret())
            // The database's key, not one generated per run: a server restarted on this
            // database must open the secrets the one before it sealed.
            .env("SECRETS_KEY", db.config.secrets_key.expose_secret())
            .env("BIND", format!("127.0.0.1:{port}"))
            .env("APP_POOL_SIZE", "8")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tenantry serve");
        let server = Server {
            child,
            address: format!("{scheme}://127.0.0.1:{port}"),
        };
        for _ in 0..300 {
            if let Ok(r) = http.get(server.url("/healthz")).send().await {
                if r.status().is_success() {
                    return server;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("tenantry serve did not answer /healthz within 15 s");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// SIGKILL: no shutdown hook, no flush, no graceful close of anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: the orchestrator's request to stop.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// SIGHUP: reload what the server reloads (its TLS certificate).
    pub fn hang_up(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP failed");
    }

    /// Waits for the process to exit, for a minute at most.
    pub async fn exit_status(&mut self) -> ExitStatus {
        for _ in 0..1_200 {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("tenantry serve did not exit within a minute");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // An instrumented server (scripts/coverage.sh sets LLVM_PROFILE_FILE) writes its
        // coverage counters when it exits, which SIGKILL prevents: stop it as an orchestrator
        // would, and kill it only if it is still running after that.
        if std::env::var_os("LLVM_PROFILE_FILE").is_some() && self.stop_gracefully() {
            return;
        }
        self.kill();
    }
}

impl Server {
    /// SIGTERM, then up to 20 s for the process to exit; true if it did. Blocking: for `Drop`.
    fn stop_gracefully(&mut self) -> bool {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return true;
        }
        let signalled = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !signalled {
            return false;
        }
        for _ in 0..400 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}
