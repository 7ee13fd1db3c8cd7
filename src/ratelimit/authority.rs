//! Redis as the shared authority of every limit: atomic scripts over one key each (hash-tagged
//! so a Redis Cluster keeps a tenant's keys on one node), and the way the process behaves while
//! Redis does not answer: every caller is told at once (no waiting), Redis is asked again by one
//! caller a second, and the change is logged once each way.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::Script;

use super::{RateLimitError, WINDOW};

/// Longest wait for Redis on the request path: past it the request is decided locally.
const TIMEOUT: Duration = Duration::from_millis(250);
/// How long Redis is left alone after a failure before one caller asks again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Hands out at most `slice` of `limit` for the window the key stands for; the key expires with
/// the window, which starts with the first lease. Answers the grant, what the window has handed
/// out so far (the grant included), and the milliseconds left in the window.
const LEASE: &str = r"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local grant = math.min(tonumber(ARGV[2]), tonumber(ARGV[1]) - used)
if grant > 0 then
  used = redis.call('INCRBY', KEYS[1], grant)
  if used == grant then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
else
  grant = 0
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -1 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
if ttl < 0 then ttl = tonumber(ARGV[3]) end
return {grant, used, ttl}
";

/// Counts one request in the window the key stands for (which starts with its first request).
/// Answers the count, this request included, and the milliseconds left in the window.
const COUNT: &str = r"
local used = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {used, ttl}
";

/// A metered quota's counter for one billing period (`usage::quota`): hands out at most
/// ARGV[2] of what is left under the limit ARGV[1]. A missing counter (a new period, or a Redis
/// that lost its keys) is created from the seed ARGV[4], what PostgreSQL holds of the period,
/// when ARGV[5] is 1, and otherwise reported as -1 so the caller can read that seed first.
/// Answers the grant and what the period has handed out so far.
const QUOTA: &str = r"
local used = redis.call('GET', KEYS[1])
if not used then
  if ARGV[5] ~= '1' then return {-1, 0} end
  redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[3])
  used = tonumber(ARGV[4])
else
  used = tonumber(used)
end
local grant = math.min(tonumber(ARGV[2]), tonumber(ARGV[1]) - used)
if grant > 0 then used = redis.call('INCRBY', KEYS[1], grant) else grant = 0 end
return {grant, used}
";

/// A lease as Redis answered it.
#[derive(Clone, Copy, Debug)]
pub struct Lease {
    pub granted: u32,
    pub used: u64,
    pub remaining_window: Duration,
}

pub struct Authority {
    client: redis::Client,
    connection: Mutex<Option<MultiplexedConnection>>,
    lease: Script,
    count: Script,
    quota: Script,
    epoch: Instant,
    /// Milliseconds after `epoch` before which Redis is not asked; 0 while it answers.
    retry_at: AtomicU64,
    /// Whether the last call failed (what is logged once per outage).
    down: AtomicBool,
}

impl Authority {
    pub fn new(client: redis::Client) -> Self {
        Authority {
            client,
            connection: Mutex::new(None),
            lease: Script::new(LEASE),
            count: Script::new(COUNT),
            quota: Script::new(QUOTA),
            epoch: Instant::now(),
            retry_at: AtomicU64::new(0),
            down: AtomicBool::new(false),
        }
    }

    pub async fn lease(&self, key: &str, limit: u32, slice: u32) -> Result<Lease, RateLimitError> {
        let args = [u64::from(limit), u64::from(slice), millis(WINDOW)];
        let (granted, used, ttl): (i64, i64, i64) = self.call(&self.lease, key, &args).await?;
        Ok(Lease {
            granted: u32::try_from(granted.max(0)).unwrap_or(0),
            used: u64::try_from(used.max(0)).unwrap_or(0),
            remaining_window: Duration::from_millis(u64::try_from(ttl.max(0)).unwrap_or(0)),
        })
    }

    /// Leases up to `want` of a metered quota (see [`QUOTA`]): `None` when the counter is
    /// missing and no `seed` was given; else the grant and the units handed out so far.
    pub async fn quota_lease(
        &self,
        key: &str,
        limit: u64,
        want: u64,
        ttl: Duration,
        seed: Option<u64>,
    ) -> Result<Option<(u64, u64)>, RateLimitError> {
        let args = [
            limit,
            want,
            millis(ttl).max(1),
            seed.unwrap_or(0),
            u64::from(seed.is_some()),
        ];
        let (granted, used): (i64, i64) = self.call(&self.quota, key, &args).await?;
        if granted < 0 {
            return Ok(None);
        }
        Ok(Some((
            u64::try_from(granted).unwrap_or(0),
            u64::try_from(used.max(0)).unwrap_or(0),
        )))
    }

    /// The count of the key's window after this request, and the time left in it.
    pub async fn count(&self, key: &str) -> Result<(u64, Duration), RateLimitError> {
        let (used, ttl): (i64, i64) = self.call(&self.count, key, &[millis(WINDOW)]).await?;
        Ok((
            u64::try_from(used.max(0)).unwrap_or(0),
            Duration::from_millis(u64::try_from(ttl.max(0)).unwrap_or(0)),
        ))
    }

    async fn call<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        key: &str,
        args: &[u64],
    ) -> Result<T, RateLimitError> {
        let retry_at = self.retry_at.load(Ordering::Acquire);
        if retry_at != 0 {
            let now = self.now_ms();
            if now < retry_at {
                return Err(RateLimitError::RedisBackingOff);
            }
            // One caller asks; the others keep to their shares until it knows.
            let next = now + millis(RETRY_EVERY);
            if self
                .retry_at
                .compare_exchange(retry_at, next, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                return Err(RateLimitError::RedisBackingOff);
            }
        }
        let outcome = tokio::time::timeout(TIMEOUT, self.invoke(script, key, args)).await;
        let result = match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(RateLimitError::Redis(err)),
            Err(_) => Err(RateLimitError::RedisTimeout(TIMEOUT)),
        };
        match &result {
            Ok(_) => {
                self.retry_at.store(0, Ordering::Release);
                if self.down.swap(false, Ordering::AcqRel) {
                    tracing::info!(
                        "Redis answers again: rate limits are shared across instances again"
                    );
                }
            }
            Err(err) => {
                self.retry_at
                    .store(self.now_ms() + millis(RETRY_EVERY), Ordering::Release);
                // A connection that failed may be broken: the next attempt opens a new one.
                *self
                    .connection
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = None;
                if !self.down.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        error = %crate::error::error_chain(err),
                        "Redis unavailable for rate limits: each instance enforces its share of \
                         every limit (RATE_LIMIT_INSTANCES) until Redis answers"
                    );
                }
            }
        }
        result
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        key: &str,
        args: &[u64],
    ) -> redis::RedisResult<T> {
        let mut connection = self.connection().await?;
        let mut invocation = script.key(key);
        for arg in args {
            invocation.arg(*arg);
        }
        invocation.invoke_async(&mut connection).await
    }

    /// The connection, opened (on the calling task's runtime) if there is none.
    async fn connection(&self) -> redis::RedisResult<MultiplexedConnection> {
        let cached = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(connection) = cached {
            return Ok(connection);
        }
        let connection = self.client.get_multiplexed_async_connection().await?;
        *self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(connection.clone());
        Ok(connection)
    }

    /// Opens the connection ahead of the first call, which then waits only for its script (a
    /// call may wait [`TIMEOUT`] in all, and opening a connection on a loaded host can take
    /// longer). Run on a runtime that outlives the HTTP workers: the connection's task lives
    /// there. A failure changes nothing: the first call opens it.
    pub async fn open(&self) -> redis::RedisResult<()> {
        self.connection().await.map(|_| ())
    }

    fn now_ms(&self) -> u64 {
        // At least 1: 0 means "Redis answers".
        millis(self.epoch.elapsed()).max(1)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
