//! Builds the application from a `Config`: pools, state, the HTTP server and its background
//! jobs. `main` and the tests go through the same path.
//!
//! Shutdown, on SIGTERM or Ctrl-C (`run_until_signalled`), in this order: the server stops
//! accepting and lets the requests under way finish (up to `SHUTDOWN_TIMEOUT`; an analytics
//! request finishes when its events are committed), the background loops are told to stop and
//! waited for, the analytics committers are waited for until they hold no event, and the
//! `api_calls` counted in memory are written. Then the process exits.

use std::net::TcpListener;
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
use crate::http::problem::{json_config, path_config, query_config, Problem};
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::supervise::{Backoff, Supervisor, TaskResult};

/// How long requests under way may take to finish once shutdown begins; also the background
/// loops' and the analytics committers' share of the shutdown.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    background: Supervisor,
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
        let actors = TenantRegistry::start(
            &config,
            metrics.clone(),
            ActorSettings::for_hosts(&config, workers)?,
        )?;
        let analytics = crate::analytics::AnalyticsRegistry::new(
            pools.app.clone(),
            crate::analytics::CommitterConfig {
                // This runtime, the actix System's, outlives the HTTP workers'.
                rescue_runtime: Some(tokio::runtime::Handle::current()),
                ..Default::default()
            },
        );
        let ratelimit = crate::ratelimit::RateLimits::new(&config, redis.clone());
        let state = web::Data::new(AppState {
            config,
            ratelimit,
            analytics,
            pools,
            redis,
            jwt,
            template: TenantTemplate::embedded(),
            metrics,
            actors,
            caches: Default::default(),
            api_calls: Default::default(),
        });
        if let Err(err) =
            crate::analytics::register_metrics(&state.analytics, state.metrics.registry())
        {
            tracing::warn!(%err, "analytics ingest metrics not registered");
        }
        if let Err(err) =
            crate::ratelimit::register_metrics(&state.ratelimit, state.metrics.registry())
        {
            tracing::warn!(%err, "rate limit metrics not registered");
        }
        let background = start_background(&state, &options);
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
                .app_data(json_config())
                .app_data(query_config())
                .app_data(path_config())
                .app_data(web::PayloadConfig::new(1024 * 1024))
                .wrap(from_fn(http::middleware::request_context))
                .configure(http::configure)
                .configure(|cfg| {
                    if fault_injection {
                        http::routes::faults::configure(cfg);
                    }
                    if bench_routes {
                        http::routes::bench::configure(cfg);
                    }
                })
                .default_service(web::to(not_found))
        });
        server = server.workers(workers);
        let server = server
            .listen(listener)
            .map_err(|source| StartupError::Bind {
                bind: String::new(),
                source,
            })?
            .shutdown_timeout(SHUTDOWN_TIMEOUT.as_secs())
            // Signals are handled in `run_until_signalled`, so that Ctrl-C drains too, and
            // so that servers started in tests leave the test process's signals alone.
            .disable_signals()
            .run();
        Ok(Application {
            port,
            server,
            state,
            background,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
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
        let handle = self.server.handle();
        actix_web::rt::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down: no new connections; finishing the requests under way");
            handle.stop(true).await;
        });
        self.run_until_stopped().await
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
    let app = state.clone();
    background.spawn("cache_invalidations", move |stop| {
        let app = app.clone();
        async move {
            crate::cache::subscribe(app, stop).await;
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
    if let Some(worker) = crate::jobs::for_server(state, crate::jobs::Registry::standard()) {
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
/// `SHUTDOWN_TIMEOUT`.
async fn shut_down(state: &AppState, background: &Supervisor) {
    let aborted = background.shutdown(SHUTDOWN_TIMEOUT).await;
    if !aborted.is_empty() {
        tracing::warn!(tasks = ?aborted, "background tasks aborted at shutdown");
    }
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
