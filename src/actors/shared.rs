//! What the registry and every tenant actor both hold: the settings, the metrics, and each
//! actor's counters. The registry's map of actors is not here: it names the actor type, and the
//! actor must not name it back (`TenantActor::new` takes the way out of the map as a callback).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::tenant_config::load::SnapshotStore;

#[derive(Clone, Debug)]
pub struct ActorSettings {
    pub idle_timeout: Duration,
    pub mailbox_capacity: usize,
    pub max_in_flight: usize,
    pub max_connections_per_tenant: usize,
    /// Dedicated threads for the actors; 0 hosts them on the HTTP worker threads.
    pub arbiters: usize,
    /// Connections of each host's pool.
    pub pool_per_host: usize,
    /// Threads expected to host actors (the HTTP workers), to size each one's pool.
    pub expected_hosts: usize,
}

impl ActorSettings {
    /// The actor settings of `config`, with `config.app_pool_size` split over the threads that
    /// will host actors: `hosts` HTTP workers, or `ACTOR_ARBITERS` dedicated threads.
    pub fn for_hosts(config: &Config, hosts: usize) -> Result<Self, ConfigError> {
        let hosts = if config.actor_arbiters > 0 {
            config.actor_arbiters
        } else {
            hosts.max(1)
        };
        let pool_per_host = config.app_pool_size.div_ceil(hosts).max(1);
        Ok(ActorSettings {
            idle_timeout: config.actor_idle_timeout,
            mailbox_capacity: config.actor_mailbox_capacity,
            max_in_flight: config.actor_max_in_flight,
            max_connections_per_tenant: config.tenant_connections(hosts, pool_per_host)?,
            arbiters: config.actor_arbiters,
            pool_per_host,
            expected_hosts: hosts,
        })
    }
}

/// Shared by every tenant actor of the process.
pub struct ActorShared {
    pub metrics: Metrics,
    pub settings: ActorSettings,
    /// The config snapshots' copies in Redis; their TTL is also the snapshots' own.
    pub snapshots: Arc<SnapshotStore>,
}

/// One actor's counters, readable without messaging it.
pub struct ActorStats {
    pub activated_at: SystemTime,
    /// Messages sent but not yet picked up by the actor.
    pub queued: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub restarts: AtomicU64,
    pub evicted: AtomicBool,
    /// Set once the actor has run `started` and bounded its mailbox. Until then actix's
    /// default bound (16) applies, and on a busy host thread a burst of first requests arrives
    /// before the actor gets to run at all.
    pub started: AtomicBool,
    /// Set by each request that read the actor's config snapshot (which does not message the
    /// actor): the actor is not idle while requests use it.
    pub touched: AtomicBool,
}
