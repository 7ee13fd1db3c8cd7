//! Supervision of the server's background loops (API calls flush, cache invalidations, analytics
//! upkeep, retention, tenant purge, the outbox worker).
//!
//! Each loop is registered once under a name. A loop that ends without being asked to (it
//! returns, returns an error, or panics) is logged with its error, counted in `/metrics`
//! (`tenantry_background_task_restarts_total{task}`) and started again after a pause that doubles
//! from `Backoff::first` up to `Backoff::max`, and starts over from `first` once a run has lasted
//! `max`. At shutdown one `CancellationToken` tells every loop to stop; a loop watches it where it
//! waits (between two passes), so a pass in progress finishes, and a loop still running after the
//! grace period is aborted.
//!
//! Hand-written because no well-kept crate restarts failed tasks: `tokio-graceful-shutdown`
//! (the closest) shuts the whole program down when a subsystem fails or panics, and it wants to
//! own the signal handling, which here belongs to actix's server; `tokio_util::task::TaskTracker`
//! only waits for tasks. What is left is a `JoinSet`, a token, and a loop around
//! `catch_unwind`.
//!
//! Every loop runs on the runtime that registers it: the server registers them from its actix
//! System's own thread, where they ran before they were supervised.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures_util::FutureExt;
use prometheus::{IntCounter, IntCounterVec};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What a supervised loop returns when it ends. Ending with `Ok` is still unexpected unless the
/// loop was told to stop.
pub type TaskResult = anyhow::Result<()>;

/// Pauses between the restarts of a loop that keeps failing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    fn after(&self, delay: Duration) -> Duration {
        delay.saturating_mul(2).min(self.max)
    }
}

pub struct Supervisor {
    stop: CancellationToken,
    restarts: IntCounterVec,
    backoff: Backoff,
    tasks: Mutex<Tasks>,
}

#[derive(Default)]
struct Tasks {
    set: JoinSet<&'static str>,
    names: Vec<&'static str>,
}

impl Supervisor {
    /// `restarts` is labelled by `task`: `Metrics::background_restarts` in the server.
    pub fn new(restarts: IntCounterVec, backoff: Backoff) -> Supervisor {
        Supervisor {
            stop: CancellationToken::new(),
            restarts,
            backoff,
            tasks: Mutex::new(Tasks::default()),
        }
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, Tasks> {
        // Only pushes and takes happen under the lock; a panic cannot leave it half changed.
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The names of the loops registered so far, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.tasks().names.clone()
    }

    /// Starts `task` on the current runtime under `name`, and again each time it ends before
    /// shutdown. `task` is given the token that says when to stop.
    pub fn spawn<F, Fut>(&self, name: &'static str, task: F)
    where
        F: Fn(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = TaskResult> + Send + 'static,
    {
        // Created now, so the series is in /metrics at 0 before anything failed.
        let restarts = self.restarts.with_label_values(&[name]);
        let mut tasks = self.tasks();
        tasks.names.push(name);
        tasks.set.spawn(supervise(
            name,
            task,
            self.stop.clone(),
            restarts,
            self.backoff,
        ));
    }

    /// Tells every loop to stop and waits for them, up to `grace`; the loops still running then
    /// are aborted, and their names returned.
    pub async fn shutdown(&self, grace: Duration) -> Vec<&'static str> {
        self.stop.cancel();
        let Tasks { mut set, mut names } = std::mem::take(&mut *self.tasks());
        let deadline = tokio::time::sleep(grace);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = set.join_next() => match next {
                    Some(Ok(name)) => names.retain(|n| *n != name),
                    // Aborted from outside, or a panic outside the loop's own future (the
                    // loop's panics are caught in `supervise`): nothing left to wait for.
                    Some(Err(err)) => tracing::error!(%err, "a background task supervisor failed"),
                    None => return Vec::new(),
                },
                _ = &mut deadline => {
                    tracing::warn!(tasks = ?names, "background tasks did not stop in time; aborted");
                    set.shutdown().await;
                    return names;
                }
            }
        }
    }
}

async fn supervise<F, Fut>(
    name: &'static str,
    task: F,
    stop: CancellationToken,
    restarts: IntCounter,
    backoff: Backoff,
) -> &'static str
where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = TaskResult>,
{
    let mut delay = backoff.first;
    loop {
        let started = Instant::now();
        // The loops share only state that stays usable after a panic (atomics, maps, pools).
        let outcome = AssertUnwindSafe(task(stop.clone())).catch_unwind().await;
        let error = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(format!("{err:#}")),
            Err(panic) => Some(format!("panicked: {}", panic_message(panic.as_ref()))),
        };
        if stop.is_cancelled() {
            match error {
                Some(error) => {
                    tracing::warn!(task = name, %error, "background task failed while stopping")
                }
                None => tracing::debug!(task = name, "background task stopped"),
            }
            return name;
        }
        if started.elapsed() >= backoff.max {
            delay = backoff.first;
        }
        let error = error.unwrap_or_else(|| "it returned without being told to stop".into());
        tracing::error!(
            task = name,
            %error,
            restart_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "background task ended unexpectedly; restarting it"
        );
        tokio::select! {
            _ = stop.cancelled() => return name,
            _ = tokio::time::sleep(delay) => {}
        }
        restarts.inc();
        delay = backoff.after(delay);
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Sleeps for `duration` unless `stop` is cancelled first; true when the loop should go on.
pub async fn pause(stop: &CancellationToken, duration: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(duration) => true,
    }
}

/// Which tenants a background loop should look at now, told by the commits of this process
/// (the outbox worker and the webhook dispatcher each keep one), and the wake-up that goes with
/// it. Each loop also reads its table on a timer, so a hint dropped (the list is full because no
/// loop takes them) or taken by another loop of the process only waits for that look.
pub struct TenantHints {
    tenants: Mutex<Vec<uuid::Uuid>>,
    wake: tokio::sync::Notify,
}

impl TenantHints {
    /// Past this many untaken hints new ones are dropped.
    const MAX: usize = 4096;

    pub const fn new() -> TenantHints {
        TenantHints {
            tenants: Mutex::new(Vec::new()),
            wake: tokio::sync::Notify::const_new(),
        }
    }

    /// Hints `tenant` and wakes the loop; false when the list was full and the hint dropped.
    pub fn hint(&self, tenant: uuid::Uuid) -> bool {
        let kept = {
            let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
            let room = tenants.len() < Self::MAX;
            if room {
                tenants.push(tenant);
            }
            room
        };
        self.wake();
        kept
    }

    /// Wakes the loop (those waiting now, and the next to wait).
    pub fn wake(&self) {
        self.wake.notify_waiters();
        self.wake.notify_one();
    }

    /// Resolves at the next [`TenantHints::hint`] or [`TenantHints::wake`]; take it before
    /// [`TenantHints::take`] so that no hint falls between the two.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }

    /// The hinted tenants, each once, in the order they were first hinted.
    pub fn take(&self) -> Vec<uuid::Uuid> {
        let mut tenants =
            std::mem::take(&mut *self.tenants.lock().unwrap_or_else(PoisonError::into_inner));
        let mut seen = std::collections::HashSet::with_capacity(tenants.len());
        tenants.retain(|t| seen.insert(*t));
        tenants
    }
}

/// The wake-ups of one server's background loops: the outbox worker's and the webhook
/// dispatcher's tenant hints, and the dispatcher's "read the table now". One per server, held
/// by its [`crate::config::Config`] (so every pool, transaction and loop of the server reaches
/// the same one) rather than per process: several servers in one process (the tests) must not
/// take each other's hints, which would leave a commit unnoticed until the next poll.
#[derive(Default)]
pub struct Wakes {
    /// Tenants whose outbox events committed (`TenantTx::commit`).
    pub outbox: TenantHints,
    /// Tenants whose webhook messages committed (the fan-out).
    pub deliveries: TenantHints,
    /// Set when something was queued for a tenant no hint names (a test send, a replay): the
    /// dispatcher reads its table at its next pass.
    pub deliveries_scan: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Wakes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Wakes")
    }
}

impl Default for TenantHints {
    fn default() -> Self {
        TenantHints::new()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use prometheus::Opts;
    use tokio::sync::mpsc;

    use super::*;

    fn counter() -> IntCounterVec {
        IntCounterVec::new(Opts::new("restarts_total", "restarts"), &["task"]).unwrap()
    }

    const BACKOFF: Backoff = Backoff {
        first: Duration::from_secs(1),
        max: Duration::from_secs(4),
    };

    /// A task that reports each of its starts, with the (paused) clock's time, and then does
    /// what `run` says for that start.
    fn reporting<F, Fut>(
        supervisor: &Supervisor,
        name: &'static str,
        run: F,
    ) -> mpsc::UnboundedReceiver<(usize, Instant)>
    where
        F: Fn(usize, CancellationToken) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = TaskResult> + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let starts = Arc::new(AtomicUsize::new(0));
        let run = Arc::new(run);
        supervisor.spawn(name, move |stop| {
            let n = starts.fetch_add(1, Ordering::SeqCst) + 1;
            let _ = tx.send((n, Instant::now()));
            run(n, stop)
        });
        rx
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_panics_is_restarted_with_growing_pauses_and_counted() {
        let restarts = counter();
        let supervisor = Supervisor::new(restarts.clone(), BACKOFF);
        let mut starts = reporting(&supervisor, "flaky", |n, stop| async move {
            if n <= 2 {
                panic!("failure number {n}");
            }
            stop.cancelled().await;
            Ok(())
        });
        let (_, first) = starts.recv().await.unwrap();
        let (_, second) = starts.recv().await.unwrap();
        let (third, at) = starts.recv().await.unwrap();
        assert_eq!(third, 3, "it runs again after two panics");
        assert_eq!(second - first, BACKOFF.first);
        assert_eq!(at - second, BACKOFF.first * 2);
        assert_eq!(restarts.with_label_values(&["flaky"]).get(), 2);

        // Running now, and stopped through the token rather than aborted.
        assert!(supervisor.shutdown(Duration::from_secs(5)).await.is_empty());
        assert!(starts.recv().await.is_none(), "not started again");
        assert_eq!(restarts.with_label_values(&["flaky"]).get(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_and_early_returns_count_the_pause_is_capped_and_resets_after_a_long_run() {
        let restarts = counter();
        let supervisor = Supervisor::new(restarts.clone(), BACKOFF);
        let mut starts = reporting(&supervisor, "failing", |n, _stop| async move {
            match n {
                1..=4 => anyhow::bail!("attempt {n} failed"),
                5 => {
                    // A long, healthy run before the next failure.
                    tokio::time::sleep(BACKOFF.max).await;
                    anyhow::bail!("failed after a long run")
                }
                // Ends as if its work were done, without being told to stop.
                _ => Ok(()),
            }
        });
        let mut times = Vec::new();
        for _ in 0..7 {
            times.push(starts.recv().await.unwrap().1);
        }
        let pauses: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
        let s = Duration::from_secs;
        // 1, 2, 4, then capped at 4; run 5 lasted 4 s and then paused 1 s; run 6 returned at once.
        assert_eq!(pauses, [s(1), s(2), s(4), s(4), s(4) + s(1), s(2)]);
        assert_eq!(restarts.with_label_values(&["failing"]).get(), 6);
        supervisor.shutdown(Duration::from_secs(5)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_every_loop_and_aborts_one_that_ignores_the_token() {
        let restarts = counter();
        let supervisor = Supervisor::new(restarts.clone(), BACKOFF);
        let passes = Arc::new(AtomicUsize::new(0));
        let counted = passes.clone();
        supervisor.spawn("polite", move |stop| {
            let passes = counted.clone();
            async move {
                while pause(&stop, Duration::from_secs(1)).await {
                    passes.fetch_add(1, Ordering::SeqCst);
                }
                Ok(())
            }
        });
        supervisor.spawn("stubborn", |_stop| async {
            loop {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        });
        assert_eq!(supervisor.names(), ["polite", "stubborn"]);
        tokio::time::sleep(Duration::from_millis(10_500)).await;
        assert_eq!(passes.load(Ordering::SeqCst), 10);

        let aborted = supervisor.shutdown(Duration::from_secs(5)).await;
        assert_eq!(aborted, ["stubborn"]);
        let after = passes.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(passes.load(Ordering::SeqCst), after, "it stopped");
        for name in ["polite", "stubborn"] {
            assert_eq!(restarts.with_label_values(&[name]).get(), 0, "{name}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_failing_in_its_pause_is_not_restarted_after_shutdown() {
        let restarts = counter();
        let supervisor = Supervisor::new(restarts.clone(), BACKOFF);
        let mut starts = reporting(&supervisor, "broken", |_, _| async {
            anyhow::bail!("always")
        });
        starts.recv().await.unwrap();
        // Shut down while it waits to be restarted.
        assert!(supervisor.shutdown(Duration::from_secs(5)).await.is_empty());
        assert!(starts.recv().await.is_none());
        assert_eq!(restarts.with_label_values(&["broken"]).get(), 0);
    }
}
