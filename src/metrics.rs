//! Prometheus metrics: one registry per process, handles shared through `Metrics`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::db::Pools;

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub http_duration: HistogramVec,
    pub actors_active: IntGauge,
    pub actor_activations: IntCounter,
    pub actor_evictions: IntCounter,
    pub actor_restarts: IntCounter,
    pub actor_rejections: IntCounterVec,
    pub mailbox_depth_max: IntGauge,
    pub tenant_pool_in_use: IntGauge,
    pub db_pool: IntGaugeVec,
    pub ws_connections: IntGauge,
    /// Background loops restarted after they ended unexpectedly, by task (`crate::supervise`).
    pub background_restarts: IntCounterVec,
    /// Config snapshot loads of the tenant actors, by result: `redis`, `database` (applied,
    /// read from there), `superseded` or `failed` (`actors::config`).
    pub config_loads: IntCounterVec,
}

fn must<T>(result: Result<T, prometheus::Error>) -> T {
    // Metric definitions are constants of this file; a failure here is a programming error
    // caught by the first test that builds the application.
    result.unwrap_or_else(|e| panic!("invalid metric definition: {e}"))
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry =
            Registry::new_custom(Some("tenantry".into()), None).unwrap_or_else(|_| Registry::new());
        let http_duration = must(HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route and status",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["method", "route", "status"],
        ));
        let actors_active = must(IntGauge::new(
            "tenant_actors_active",
            "Tenant actors currently running",
        ));
        let actor_activations = must(IntCounter::new(
            "tenant_actor_activations_total",
            "Tenant actors started on first use",
        ));
        let actor_evictions = must(IntCounter::new(
            "tenant_actor_evictions_total",
            "Tenant actors stopped after being idle",
        ));
        let actor_restarts = must(IntCounter::new(
            "tenant_actor_restarts_total",
            "Tenant actors restarted by their supervisor after a failure",
        ));
        let actor_rejections = must(IntCounterVec::new(
            Opts::new(
                "tenant_actor_rejections_total",
                "Operations refused with 503 (back-pressure)",
            ),
            &["reason"],
        ));
        let mailbox_depth_max = must(IntGauge::new(
            "tenant_actor_mailbox_depth_max",
            "Largest queue (mailbox plus in-flight work) of any tenant actor at the last scrape",
        ));
        let tenant_pool_in_use = must(IntGauge::new(
            "tenant_pool_leases_in_use",
            "Database connections currently leased by tenant actors",
        ));
        let db_pool = must(IntGaugeVec::new(
            Opts::new(
                "db_pool_connections",
                "Database pool connections by pool and state",
            ),
            &["pool", "state"],
        ));
        let ws_connections = must(IntGauge::new(
            "analytics_ws_connections",
            "Open analytics WebSocket connections",
        ));
        let background_restarts = must(IntCounterVec::new(
            Opts::new(
                "background_task_restarts_total",
                "Background tasks restarted after they returned, failed or panicked",
            ),
            &["task"],
        ));
        let config_loads = must(IntCounterVec::new(
            Opts::new(
                "tenant_config_loads_total",
                "Config snapshot loads of the tenant actors, by result",
            ),
            &["result"],
        ));
        for collector in [
            Box::new(ws_connections.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_duration.clone()),
            Box::new(actors_active.clone()),
            Box::new(actor_activations.clone()),
            Box::new(actor_evictions.clone()),
            Box::new(actor_restarts.clone()),
            Box::new(actor_rejections.clone()),
            Box::new(mailbox_depth_max.clone()),
            Box::new(tenant_pool_in_use.clone()),
            Box::new(db_pool.clone()),
            Box::new(background_restarts.clone()),
            Box::new(config_loads.clone()),
        ] {
            must(registry.register(collector));
        }
        Metrics {
            registry,
            http_duration,
            actors_active,
            actor_activations,
            actor_evictions,
            actor_restarts,
            actor_rejections,
            mailbox_depth_max,
            tenant_pool_in_use,
            db_pool,
            ws_connections,
            background_restarts,
            config_loads,
        }
    }

    /// Lets other areas (analytics, webhooks) register their own collectors.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn observe_pools(&self, pools: &Pools) {
        for (name, pool) in [
            ("app", &pools.app),
            ("admin", &pools.admin),
            ("owner", &pools.owner),
        ] {
            let status = pool.status();
            let in_use = status.size.saturating_sub(status.available);
            self.db_pool
                .with_label_values(&[name, "in_use"])
                .set(i64::try_from(in_use).unwrap_or(i64::MAX));
            self.db_pool
                .with_label_values(&[name, "idle"])
                .set(i64::try_from(status.available).unwrap_or(i64::MAX));
            self.db_pool
                .with_label_values(&[name, "max"])
                .set(i64::try_from(status.max_size).unwrap_or(i64::MAX));
            self.db_pool
                .with_label_values(&[name, "waiting"])
                .set(i64::try_from(status.waiting).unwrap_or(i64::MAX));
        }
    }

    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
