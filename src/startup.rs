//! Builds the application from a `Config`: pools, state, the HTTP server and its background
//! jobs. `main` and the tests go through the same path.
//!
//! Shutdown, on SIGTERM or Ctrl-C (`run_until_signalled`), in this order:
//! 1. The listening socket stops taking connections: a new one is refused, so a load balancer
//!    tries another instance at once.
//! 2. A request arriving on a connection kept alive is answered 503 `shutting_down` with
//!    `Connection: close`; the requests under way on every worker finish (up to
//!    `SHUTDOWN_TIMEOUT`; an analytics request finishes when its events are committed). No
//!    worker stops before all of them have: tenant actors live on the workers' threads and serve
//!    requests accepted by any worker, and a pooled connection dies with the runtime that opened
//!    it, whoever uses it (see `http::middleware::Drain`).
//! 3. The background loops are told to stop and waited for, while the workers still run: a
//!    loop may be using a pooled connection opened on a worker's runtime.
//! 4. The shared app pool keeps only connections opened on this (the main) runtime, which the
//!    last writes below use; then the workers stop.
//! 5. The analytics committers are waited for until they hold no event, and the `api_calls`
//!    counted in memory are written.
//!
//! Then the process exits.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpResponse, HttpServer};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::actors::{ActorSettings, TenantRegistry};
use crate::auth::JwtKeys;
use crate::config::Config;
use crate::db::template::TenantTemplate;
use crate::db::Pools;
use crate::error::error_chain;
use crate::http;
use crate::http::middleware::Drain;
use crate::http::problem::{json_config, path_config, query_config, Problem};
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::supervise::{Backoff, Supervisor, TaskResult};

/// How long requests under way may take to finish once shutdown begins; also the background
/// loops' and the analytics committers' share of the shutdown.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the workers wait, once no request is under way, for their connections to close
/// before they are closed: what is left then is an answer being written, an idle connection
/// kept alive, or a WebSocket.
const CONNECTIONS_GRACE: Duration = Duration::from_secs(1);

/// Ample for the accept thread to act on a pause (see `run_until_signalled`).
const ACCEPT_PAUSE_SETTLE: Duration = Duration::from_millis(100);

pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    background: Arc<Supervisor>,
    drain: Arc<Drain>,
    /// The listening socket, shared with the server, to stop it taking connections.
    listener: TcpListener,
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {bind}: {source}")]
    Bind {
        bind: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error("invalid REDIS_URL: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot serve HTTPS (TLS_CERT_FILE, TLS_KEY_FILE)")]
    Tls(#[from] crate::http::tls::TlsError),
}

pub struct ServerOptions {
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// How often deleted tenants past retention are purged; None disables the job.
    pub purge_interval: Option<Duration>,
    /// Serve the benchmark's unauthenticated reference endpoint (bench/ only).
    pub bench_routes: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            workers: 0,
            purge_interval: Some(Duration::from_secs(3600)),
            bench_routes: false,
        }
    }
}

/// How long a start waits for Redis's connections ([`open_redis`]).
const REDIS_OPEN_WAIT: Duration = Duration::from_secs(2);

/// Opens the rate limits' and the config snapshots' Redis connections before the first request,
/// on this runtime (the actix System's, which outlives the HTTP workers): a request's call to
/// Redis then waits for its command only, not also for a connection, which on a loaded host can
/// take longer than a call may wait (it would be decided locally, or the snapshot read from
/// PostgreSQL). Redis down does not hold the start past [`REDIS_OPEN_WAIT`]: each connection is
/// opened on first use then, as before.
async fn open_redis(
    limits: &crate::ratelimit::RateLimits,
    snapshots: &crate::tenant_config::load::SnapshotStore,
) {
    let opened = tokio::time::timeout(REDIS_OPEN_WAIT, async {
        futures_util::join!(limits.authority().open(), snapshots.open())
    })
    .await;
    let warning = "Redis not reachable at start; its connections open on first use";
    match opened {
        Ok((Ok(()), Ok(()))) => {}
        Ok((limits, snapshots)) => {
            let limits = limits.err().map(|e| e.to_string());
            let snapshots = snapshots.err().map(|e| e.to_string());
            tracing::warn!(?limits, ?snapshots, "{warning}");
        }
        Err(_) => tracing::warn!(waited = ?REDIS_OPEN_WAIT, "{warning}"),
    }
}

impl Application {
    /// Must run inside an actix System (the tenant actors live on its arbiters).
    pub async fn build(
        config: Config,
        options: ServerOptions,
    ) -> Result<Application, StartupError> {
        let pools = Pools::new(&config)?;
        let redis = redis::Client::open(config.redis_url.expose_secret())?;
        let jwt = JwtKeys::hs256(config.jwt_secret.expose_secret(), config.jwt_ttl);
        let listener = TcpListener::bind(&config.bind).map_err(|source| StartupError::Bind {
            bind: config.bind.clone(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartupError::Bind {
                bind: config.bind.clone(),
                source,
            })?
            .port();
        let metrics = Metrics::new();
        let workers = if options.workers > 0 {
            options.workers
        } else {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        };
        // Made here, on the System's runtime, which then runs its Redis connection: that
        // runtime outlives the HTTP workers.
        let snapshots = std::sync::Arc::new(crate::tenant_config::load::SnapshotStore::new(
            redis.clone(),
            config.cache_ttl,
        ));
        let actors = TenantRegistry::start(
            &config,
            metrics.clone(),
            ActorSettings::for_hosts(&config, workers)?,
            snapshots.clone(),
        )?;
        let analytics = crate::analytics::AnalyticsRegistry::new(
            pools.app.clone(),
            crate::analytics::CommitterConfig {
                // This runtime, the actix System's, outlives the HTTP workers'.
                rescue_runtime: Some(tokio::runtime::Handle::current()),
                ..Default::default()
            },
        );
        let cursors = crate::page::CursorKey::derive(&config.jwt_secret);
        let caches = std::sync::Arc::new(crate::cache::Caches::new(config.cache_ttl));
        let ratelimit = crate::ratelimit::RateLimits::new(&config, redis.clone());
        open_redis(&ratelimit, &snapshots).await;
        let secrets = crate::secrets::Keyring::from_config(&config)?;
        let tls = match &config.tls {
            Some(files) => Some(http::tls::ReloadingCert::load(files.clone())?),
            None => None,
        };
        let state = web::Data::new(AppState {
            cursors,
            config,
            ratelimit,
            analytics,
            pools,
            redis,
            jwt,
            template: TenantTemplate::embedded(),
            metrics,
            actors,
            caches,
            api_calls: Default::default(),
            usage: Default::default(),
            secrets,
        });
        if let Err(err) =
            crate::analytics::register_metrics(&state.analytics, state.metrics.registry())
        {
            tracing::warn!(%err, "analytics ingest metrics not registered");
        }
        let drain = Arc::new(Drain::default());
        if let Err(err) = drain.register_metrics(state.metrics.registry()) {
            tracing::warn!(%err, "requests in flight metric not registered");
        }
        let drain_data = web::Data::from(drain.clone());
        if let Err(err) =
            crate::ratelimit::register_metrics(&state.ratelimit, state.metrics.registry())
        {
            tracing::warn!(%err, "rate limit metrics not registered");
        }
        let background = Arc::new(start_background(&state, &options));
        if let Some(cert) = &tls {
            let cert = cert.clone();
            background.spawn("tls_reload", move |stop| {
                http::tls::reload_on_sighup(cert.clone(), stop)
            });
        }
        let hsts = tls.is_some();
        let app_state = state.clone();
        let fault_injection = state.config.fault_injection;
        let bench_routes = options.bench_routes;
        if bench_routes {
            tracing::warn!("benchmark routes are enabled: /__bench/* reads any tenant's data without credentials");
        }
        let mut server = HttpServer::new(move || {
            // Each HTTP worker hosts a share of the tenant actors (see actors::supervisor).
            if let Err(err) = app_state.actors.host_on_current_thread() {
                tracing::error!(error = %error_chain(&err), "this worker cannot host tenant actors");
            }
            App::new()
                .app_data(app_state.clone())
                .app_data(drain_data.clone())
                .app_data(json_config())
                .app_data(query_config())
                .app_data(path_config())
                .app_data(web::PayloadConfig::new(1024 * 1024))
                .wrap(from_fn(http::middleware::request_context))
                .wrap(actix_web::middleware::Condition::new(
                    hsts,
                    actix_web::middleware::DefaultHeaders::new().add((
                        actix_web::http::header::STRICT_TRANSPORT_SECURITY,
                        http::tls::HSTS,
                    )),
                ))
                .configure(http::configure)
                .configure(|cfg| {
                    if fault_injection {
                        http::routes::faults::configure(cfg);
                        http::routes::billing::configure_test_hooks(cfg);
                    }
                    if bench_routes {
                        http::routes::bench::configure(cfg);
                    }
                })
                .default_service(web::to(not_found))
        });
        server = server.workers(workers);
        let shared_listener = listener.try_clone().map_err(|source| StartupError::Bind {
            bind: String::new(),
            source,
        })?;
        let server = match tls {
            Some(cert) => {
                server.listen_rustls_0_23(shared_listener, http::tls::server_config(cert)?)
            }
            None => server.listen(shared_listener),
        };
        let server = server
            .map_err(|source| StartupError::Bind {
                bind: String::new(),
                source,
            })?
            // The requests have been drained by then (`run_until_signalled`).
            .shutdown_timeout(CONNECTIONS_GRACE.as_secs())
            // Signals are handled in `run_until_signalled`, so that Ctrl-C drains too, and
            // so that servers started in tests leave the test process's signals alone.
            .disable_signals()
            .run();
        Ok(Application {
            port,
            server,
            state,
            background,
            drain,
            listener,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server from outside its runtime (`ServerHandle::stop`); `run_until_stopped`
    /// then shuts the rest down. For embedders and tests, which stop a server they started
    /// without sending the process a signal.
    pub fn server_handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until the server is stopped, then shuts the rest down (see the module
    /// documentation).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        shut_down(&self.state, &self.background).await;
        served
    }

    /// Serves until SIGTERM or Ctrl-C, then shuts down gracefully.
    pub async fn run_until_signalled(self) -> std::io::Result<()> {
        let (handle, drain, state, background) = (
            self.server.handle(),
            self.drain.clone(),
            self.state.clone(),
            self.background.clone(),
        );
        let listener = self.listener.try_clone()?;
        actix_web::rt::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down: no new connections; finishing the requests under way");
            handle.pause().await;
            // The pause is acknowledged before the accept thread has taken the socket out of
            // its poll; shut before that, the socket would wake it with an accept error.
            tokio::time::sleep(ACCEPT_PAUSE_SETTLE).await;
            stop_listening(&listener);
            let left = drain.close(SHUTDOWN_TIMEOUT).await;
            if left > 0 {
                tracing::warn!(
                    requests = left,
                    "requests still under way after the shutdown timeout are cut"
                );
            }
            stop_background(&background).await;
            // Before any worker stops: from here on the writes of `shut_down`, on this runtime,
            // get no connection whose runtime is going away.
            crate::db::pool::confine_to_current_runtime(&state.pools.app);
            handle.stop(left == 0).await;
        });
        self.run_until_stopped().await
    }
}

/// Refuses new connections from now on, and resets those the kernel accepted that the server
/// has not taken yet (their requests were never read: retrying them is safe). `pause` alone
/// would leave the kernel completing handshakes into the backlog, each client then waiting for
/// the drain to end before it is reset.
fn stop_listening(listener: &TcpListener) {
    // Linux takes a listening socket out of the LISTEN state on a shutdown of its read side;
    // elsewhere this may fail, and the paused server leaves new connections in the backlog.
    if let Err(err) = socket2::SockRef::from(listener).shutdown(std::net::Shutdown::Read) {
        tracing::debug!(%err, "the listening socket stays open until the server stops");
    }
}

/// Every background loop of the server, each under its name (`crate::supervise`).
fn start_background(state: &web::Data<AppState>, options: &ServerOptions) -> Supervisor {
    let background = Supervisor::new(
        state.metrics.background_restarts.clone(),
        Backoff::default(),
    );
    let (meter, pool, every) = (
        state.api_calls.clone(),
        state.pools.app.clone(),
        state.config.api_calls_flush_interval,
    );
    background.spawn("api_calls_flush", move |stop| {
        let (meter, pool) = (meter.clone(), pool.clone());
        async move {
            meter.run(pool, every, stop).await;
            Ok(())
        }
    });
    let (caches, actors, redis) = (
        state.caches.clone(),
        state.actors.clone(),
        state.redis.clone(),
    );
    background.spawn("cache_invalidations", move |stop| {
        let (caches, actors, redis) = (caches.clone(), actors.clone(), redis.clone());
        async move {
            crate::cache::subscribe(caches, actors, redis, stop).await;
            Ok(())
        }
    });
    let analytics = state.analytics.clone();
    background.spawn("analytics_upkeep", move |stop| {
        let analytics = analytics.clone();
        async move {
            crate::analytics::maintain(analytics, stop).await;
            Ok(())
        }
    });
    let (pool, touched, quotas) = (
        state.pools.app.clone(),
        state.usage.touched.clone(),
        state.usage.quotas.clone(),
    );
    background.spawn("usage_rollups", move |stop| {
        let (pool, touched, quotas) = (pool.clone(), touched.clone(), quotas.clone());
        async move {
            crate::usage::rollup::run(pool, touched, quotas, stop).await;
            Ok(())
        }
    });
    let pool = state.pools.app.clone();
    background.spawn("usage_samples", move |stop| {
        let pool = pool.clone();
        async move {
            crate::usage::sample::run(pool, stop).await;
            Ok(())
        }
    });
    if let Some(every) = options.purge_interval {
        let (owner, retention) = (state.pools.owner.clone(), state.config.retention);
        background.spawn("tenant_purge", move |stop| {
            purge_loop(owner.clone(), retention, every, stop)
        });
        let app_pool = state.pools.app.clone();
        background.spawn("analytics_retention", move |stop| {
            let pool = app_pool.clone();
            async move {
                crate::analytics::retention::run(pool, every, stop).await;
                Ok(())
            }
        });
    }
    let dispatcher = crate::webhooks::delivery::for_server(state);
    if let Some(dispatcher) = dispatcher.clone() {
        background.spawn("webhook_dispatcher", move |stop| {
            let dispatcher = dispatcher.clone();
            async move {
                dispatcher.run(stop).await;
                Ok(())
            }
        });
    }
    // Stripe billing: the grace check, the period-end meter report and the Stripe jobs.
    crate::billing::supervise(&background, state);
    // The fan-out hands what it writes straight to this server's dispatcher.
    let registry = crate::jobs::Registry::standard(dispatcher)
        .with(crate::billing::job_handler(&state.config));
    if let Some(worker) = crate::jobs::for_server(state, registry) {
        background.spawn("outbox_worker", move |stop| {
            let worker = worker.clone();
            async move {
                worker.run(stop).await;
                Ok(())
            }
        });
    }
    background
}

/// What follows the HTTP server's stop: every request has been answered by now, or cut after
/// `SHUTDOWN_TIMEOUT`; after a signal, the loops have stopped already.
async fn shut_down(state: &AppState, background: &Supervisor) {
    stop_background(background).await;
    let held = state.analytics.settle(SHUTDOWN_TIMEOUT).await;
    if held > 0 {
        tracing::error!(
            events = held,
            "analytics events still being written at exit"
        );
    }
    let unwritten = state.api_calls.flush_now(&state.pools.app).await;
    if unwritten > 0 {
        tracing::error!(
            calls = unwritten,
            "api_calls counts could not be written before exit"
        );
    }
    tracing::info!("shutdown complete");
}

/// Stops the loops and waits for them (`SHUTDOWN_TIMEOUT` at most); a second call finds none.
async fn stop_background(background: &Supervisor) {
    let aborted = background.shutdown(SHUTDOWN_TIMEOUT).await;
    if !aborted.is_empty() {
        tracing::warn!(tasks = ?aborted, "background tasks aborted at shutdown");
    }
}

/// SIGTERM (what orchestrators send) or Ctrl-C.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                return;
            }
            Err(err) => tracing::warn!(%err, "cannot listen for SIGTERM; Ctrl-C only"),
        }
    }
    if let Err(err) = tokio::signal::ctrl_c().await {
        tracing::error!(%err, "cannot listen for Ctrl-C");
        std::future::pending::<()>().await;
    }
}

async fn not_found() -> Result<HttpResponse, Problem> {
    Err(Problem::not_found("route"))
}

/// Each pass purges tenant by tenant, each in its own transaction: one under way at shutdown
/// is dropped, and the next start redoes it.
async fn purge_loop(
    owner: crate::db::PgPool,
    retention: Duration,
    every: Duration,
    stop: CancellationToken,
) -> TaskResult {
    let mut ticker = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = ticker.tick() => {}
        }
        let pass = crate::tenancy::lifecycle::purge_expired(&owner, retention);
        match stop.run_until_cancelled(pass).await {
            None => return Ok(()),
            Some(Ok(purged)) if !purged.is_empty() => {
                tracing::info!(count = purged.len(), "purged deleted tenants")
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => {
                tracing::warn!(error = %error_chain(&err), "tenant purge failed; will retry")
            }
        }
    }
}
