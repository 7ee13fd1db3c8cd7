//! The ingest totals in `/metrics` (API.md "Operations": analytics ingest). Read from the
//! committers at scrape time rather than counted on the ingest path, which stays free of any
//! shared counter; the registry's `tenantry` namespace prefixes every name.

use std::sync::{Mutex, PoisonError};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntGauge, Opts};

use super::AnalyticsRegistry;

pub struct IngestCollector {
    registry: AnalyticsRegistry,
    metrics: Mutex<Handles>,
    descs: Vec<Desc>,
}

struct Handles {
    accepted: IntCounter,
    committed: IntCounter,
    refused: IntCounter,
    failed: IntCounter,
    refused_requests: IntCounter,
    flushes: IntCounter,
    failed_flushes: IntCounter,
    evicted: IntCounter,
    pending: IntGauge,
    active: IntGauge,
}

impl Handles {
    fn all(&self) -> [&dyn Collector; 10] {
        [
            &self.accepted,
            &self.committed,
            &self.refused,
            &self.failed,
            &self.refused_requests,
            &self.flushes,
            &self.failed_flushes,
            &self.evicted,
            &self.pending,
            &self.active,
        ]
    }
}

fn counter(name: &str, help: &str) -> prometheus::Result<IntCounter> {
    IntCounter::with_opts(Opts::new(name, help))
}

/// Brings a counter up to `total` (totals only grow: see `AnalyticsRegistry::totals`).
fn catch_up(counter: &IntCounter, total: u64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}

impl IngestCollector {
    pub fn register(
        registry: AnalyticsRegistry,
        into: &prometheus::Registry,
    ) -> prometheus::Result<()> {
        let handles = Handles {
            accepted: counter(
                "analytics_events_accepted_total",
                "Analytics events taken into a tenant's write queue",
            )?,
            committed: counter(
                "analytics_events_committed_total",
                "Analytics events committed (acknowledged with 202)",
            )?,
            refused: counter(
                "analytics_events_refused_total",
                "Analytics events refused with 503 because the tenant's queue was full",
            )?,
            failed: counter(
                "analytics_events_failed_total",
                "Analytics events answered with an error (nothing of their request stored)",
            )?,
            refused_requests: counter(
                "analytics_requests_refused_total",
                "POST /analytics/events requests refused with 503 (back-pressure)",
            )?,
            flushes: counter(
                "analytics_flushes_total",
                "Group-commit transactions committed",
            )?,
            failed_flushes: counter(
                "analytics_flushes_failed_total",
                "Group-commit transactions that failed (their requests are then retried alone when one of them may be the cause)",
            )?,
            evicted: counter(
                "analytics_committers_evicted_total",
                "Idle tenant committers dropped",
            )?,
            pending: IntGauge::with_opts(Opts::new(
                "analytics_events_pending",
                "Analytics events queued or being written, all tenants",
            ))?,
            active: IntGauge::with_opts(Opts::new(
                "analytics_committers_active",
                "Tenant group committers in memory",
            ))?,
        };
        let descs = handles
            .all()
            .iter()
            .flat_map(|c| c.desc().into_iter().cloned())
            .collect();
        into.register(Box::new(IngestCollector {
            registry,
            metrics: Mutex::new(handles),
            descs,
        }))
    }
}

impl Collector for IngestCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let totals = self.registry.totals();
        let s = totals.stats;
        // One scrape at a time: catching up reads then adds.
        let m = self.metrics.lock().unwrap_or_else(PoisonError::into_inner);
        catch_up(&m.accepted, s.accepted_events);
        catch_up(&m.committed, s.committed_events);
        catch_up(&m.refused, s.refused_events);
        catch_up(&m.failed, s.failed_events);
        catch_up(&m.refused_requests, s.rejected_overloaded);
        catch_up(&m.flushes, s.flushes);
        catch_up(&m.failed_flushes, s.failed_flushes);
        catch_up(&m.evicted, totals.committers_evicted);
        m.pending
            .set(i64::try_from(s.pending_events).unwrap_or(i64::MAX));
        m.active
            .set(i64::try_from(totals.committers_active).unwrap_or(i64::MAX));
        m.all().iter().flat_map(|c| c.collect()).collect()
    }
}
