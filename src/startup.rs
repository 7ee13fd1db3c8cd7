//! Builds the application from a `Config`: pools, state, the HTTP server and its background
//! jobs. `main` and the tests go through the same path.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpResponse, HttpServer};

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

pub struct Application {
    port: u16,
    server: Server,
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
        let redis = redis::Client::open(config.redis_url.as_str())?;
        let jwt = JwtKeys::hs256(&config.jwt_secret, config.jwt_ttl);
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
            ActorSettings::for_hosts(&config, workers),
        )?;
        let analytics = crate::analytics::AnalyticsRegistry::new(
            pools.app.clone(),
            crate::analytics::CommitterConfig::default(),
        );
        let state = web::Data::new(AppState {
            config,
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
        actix_web::rt::spawn(state.api_calls.clone().run(
            state.pools.app.clone(),
            state.config.api_calls_flush_interval,
        ));
        actix_web::rt::spawn(crate::cache::subscribe(state.clone()));
        actix_web::rt::spawn(crate::analytics::maintain(
            state.analytics.clone(),
            state.metrics.registry().clone(),
        ));
        if let Some(every) = options.purge_interval {
            actix_web::rt::spawn(purge_loop(state.clone(), every));
            actix_web::rt::spawn(crate::analytics::retention::run(
                state.pools.app.clone(),
                every,
            ));
        }
        crate::jobs::spawn(&state, crate::jobs::Registry::standard());
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
            .shutdown_timeout(10)
            .run();
        Ok(Application { port, server })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

async fn not_found() -> Result<HttpResponse, Problem> {
    Err(Problem::not_found("route"))
}

async fn purge_loop(state: web::Data<AppState>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        match crate::tenancy::lifecycle::purge_expired(&state.pools.owner, state.config.retention)
            .await
        {
            Ok(purged) if !purged.is_empty() => {
                tracing::info!(count = purged.len(), "purged deleted tenants")
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(error = %error_chain(&err), "tenant purge failed; will retry")
            }
        }
    }
}
