//! The outbox and the tenant job worker: events are written with the change, a job runs in its
//! tenant's context (database setting, task-local and span), failures retry with backoff and
//! end in the dead letters, and concurrent workers never run a row twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Transaction;
use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use tenantry::db::{PgPool, Pools, TenantTx};
use tenantry::jobs::{Job, JobError, JobHandler, Registry, Worker, WorkerOptions};
use uuid::Uuid;

use crate::fixtures::{create_project, create_task, expect, id_of};
use crate::helpers::{spawn_app_with, test_config, TestApp};

/// A server whose own outbox worker is off, so the test's worker is the only one.
async fn app_without_worker() -> TestApp {
    let (mut config, database) = test_config().await;
    config.job_worker = false;
    spawn_app_with(config, database).await
}

fn fast_options() -> WorkerOptions {
    WorkerOptions {
        batch_size: 10,
        backoff_base: Duration::ZERO,
        ..WorkerOptions::default()
    }
}

async fn drain(worker: &Worker) {
    for _ in 0..100 {
        if worker.run_once().await.unwrap() == 0 {
            return;
        }
    }
    panic!("the outbox did not drain");
}

#[derive(Debug, Clone)]
struct Observation {
    job_tenant: Uuid,
    db_setting: String,
    task_local: Option<Uuid>,
    event_type: String,
    payload: Value,
    visible_tasks: i64,
    own_tasks: i64,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Observation>>>);

impl JobHandler for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    fn handles(&self, _event_type: &str) -> bool {
        true
    }

    fn handle<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
        job: &'a Job,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let db_setting: String = tx
                .query_one("select current_setting('app.current_tenant')", &[])
                .await?
                .get(0);
            // Unfiltered on purpose: RLS must confine the job to its tenant.
            let visible_tasks: i64 = tx
                .query_one("select count(*) from app.tasks", &[])
                .await?
                .get(0);
            let own_tasks: i64 = tx
                .query_one(
                    "select count(*) from app.tasks where tenant_id = $1",
                    &[&job.tenant_id],
                )
                .await?
                .get(0);
            self.0.lock().unwrap().push(Observation {
                job_tenant: job.tenant_id,
                db_setting,
                task_local: tenantry::context::current_tenant(),
                event_type: job.event_type.clone(),
                payload: job.payload.clone(),
                visible_tasks,
                own_tasks,
            });
            Ok(())
        })
    }
}

#[tokio::test]
async fn a_job_runs_as_the_tenant_that_enqueued_it() {
    let app = app_without_worker().await;
    let a = app.create_tenant("tenant-a").await;
    let b = app.create_tenant("tenant-b").await;
    let pa = id_of(&create_project(&app, &a.token, "A project").await);
    let ta = id_of(&create_task(&app, &a.token, pa, "A task").await);
    let pb = id_of(&create_project(&app, &b.token, "B project").await);
    create_task(&app, &b.token, pb, "B task 1").await;
    create_task(&app, &b.token, pb, "B task 2").await;

    let pools = Pools::new(&app.config).unwrap();
    let recorder = Recorder::default();
    let worker = Worker::new(
        pools.app.clone(),
        Registry::new().with(recorder.clone()),
        fast_options(),
    );
    drain(&worker).await;

    let seen = recorder.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 5);
    for o in &seen {
        assert_eq!(o.db_setting, o.job_tenant.to_string(), "{o:?}");
        assert_eq!(o.task_local, Some(o.job_tenant), "{o:?}");
        assert_eq!(o.visible_tasks, o.own_tasks, "{o:?}");
    }
    let of = |tenant: Uuid| -> Vec<(String, Value)> {
        seen.iter()
            .filter(|o| o.job_tenant == tenant)
            .map(|o| (o.event_type.clone(), o.payload["id"].clone()))
            .collect()
    };
    let mut a_events = of(a.id);
    a_events.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        a_events,
        vec![
            ("project.created".to_string(), json!(pa)),
            ("task.created".to_string(), json!(ta)),
        ]
    );
    assert_eq!(of(b.id).len(), 3);
    assert_eq!(tenantry::context::current_tenant(), None);

    let db = app.superuser_db().await;
    let pending: i64 = db
        .query_one(
            "select count(*) from app.outbox where processed_at is null or attempts <> 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pending, 0);
}

#[tokio::test]
async fn events_are_written_with_the_change() {
    let app = app_without_worker().await;
    let t = app.create_tenant("acme").await;
    let project = create_project(&app, &t.token, "Apollo").await;
    let pid = id_of(&project);
    let task = create_task(&app, &t.token, pid, "Launch").await;
    let r = app
        .post("/projects", &t.token)
        .json(&json!({"name": "Apollo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
    let r = app
        .patch(&format!("/tasks/{}", id_of(&task)), &t.token)
        .json(&json!({"status": "done"}))
        .send()
        .await
        .unwrap();
    let updated = expect(r, 200).await;
    let r = app
        .delete(&format!("/projects/{pid}"), &t.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);

    let db = app.superuser_db().await;
    let rows = db
        .query(
            "select event_type, payload from app.outbox where tenant_id = $1 order by id",
            &[&t.id],
        )
        .await
        .unwrap();
    let events: Vec<(String, Value)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let types: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        types,
        [
            "project.created",
            "task.created",
            "task.updated",
            "task.deleted",
            "project.deleted"
        ]
    );
    assert_eq!(events[0].1, project);
    assert_eq!(events[1].1, task);
    assert_eq!(events[2].1, updated);
    assert_eq!(events[3].1["id"], updated["id"]);
}

/// Fails every job's first attempt; the second succeeds.
struct FlakyOnce;

impl JobHandler for FlakyOnce {
    fn name(&self) -> &'static str {
        "flaky"
    }
    fn handles(&self, event_type: &str) -> bool {
        event_type.starts_with("project.")
    }
    fn handle<'a>(
        &'a self,
        _tx: &'a Transaction<'a>,
        job: &'a Job,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            if job.attempt == 1 {
                Err(JobError::Handler {
                    handler: "flaky",
                    reason: "receiver unavailable".into(),
                })
            } else {
                Ok(())
            }
        })
    }
}

/// Writes a row in the job's transaction, so a later failure must undo it.
struct WritesAuditRow;

impl JobHandler for WritesAuditRow {
    fn name(&self) -> &'static str {
        "writer"
    }
    fn handles(&self, _event_type: &str) -> bool {
        true
    }
    fn handle<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
        job: &'a Job,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            tx.execute(
                "insert into app.audit_logs (tenant_id, id, actor, action, resource, resource_id) \
                 values ($1, $2, 'system', 'job', 'outbox', $3)",
                &[&job.tenant_id, &Uuid::now_v7(), &job.id.to_string()],
            )
            .await?;
            Ok(())
        })
    }
}

struct AlwaysFails;

impl JobHandler for AlwaysFails {
    fn name(&self) -> &'static str {
        "broken"
    }
    fn handles(&self, _event_type: &str) -> bool {
        true
    }
    fn handle<'a>(
        &'a self,
        _tx: &'a Transaction<'a>,
        _job: &'a Job,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            Err(JobError::Handler {
                handler: "broken",
                reason: "always".into(),
            })
        })
    }
}

#[tokio::test]
async fn failures_retry_with_backoff_and_end_in_the_dead_letters() {
    let app = app_without_worker().await;
    let t = app.create_tenant("acme").await;
    create_project(&app, &t.token, "Apollo").await;
    let pools = Pools::new(&app.config).unwrap();
    let db = app.superuser_db().await;

    let worker = Worker::new(
        pools.app.clone(),
        Registry::new().with(WritesAuditRow).with(FlakyOnce),
        WorkerOptions {
            backoff_base: Duration::from_secs(3600),
            ..fast_options()
        },
    );
    assert_eq!(worker.run_once().await.unwrap(), 1);
    let row = db
        .query_one(
            "select attempts, last_error, processed_at is null, \
             next_attempt_at > now() + interval '59 minutes' from app.outbox where tenant_id = $1",
            &[&t.id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    assert!(row.get::<_, String>(1).contains("receiver unavailable"));
    assert!(row.get::<_, bool>(2));
    assert!(row.get::<_, bool>(3), "retry scheduled after the backoff");
    let job_rows = "select count(*) from app.audit_logs where tenant_id = $1 and action = 'job'";
    let written: i64 = db.query_one(job_rows, &[&t.id]).await.unwrap().get(0);
    assert_eq!(written, 0, "the failed attempt's writes are rolled back");

    // Not due yet: nothing to claim. Once due, the second attempt succeeds.
    assert_eq!(worker.run_once().await.unwrap(), 0);
    db.execute("update app.outbox set next_attempt_at = now()", &[])
        .await
        .unwrap();
    assert_eq!(worker.run_once().await.unwrap(), 1);
    let row = db
        .query_one(
            "select attempts, last_error, processed_at is not null from app.outbox where tenant_id = $1",
            &[&t.id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    assert_eq!(row.get::<_, Option<String>>(1), None);
    assert!(row.get::<_, bool>(2));
    let written: i64 = db.query_one(job_rows, &[&t.id]).await.unwrap().get(0);
    assert_eq!(written, 1);

    // A handler that never succeeds: dead-lettered after max_attempts, then left alone.
    create_project(&app, &t.token, "Gemini").await;
    let broken = Worker::new(
        pools.app.clone(),
        Registry::new().with(AlwaysFails),
        WorkerOptions {
            max_attempts: 3,
            ..fast_options()
        },
    );
    for _ in 0..3 {
        assert_eq!(broken.run_once().await.unwrap(), 1);
    }
    assert_eq!(broken.run_once().await.unwrap(), 0);
    let row = db
        .query_one(
            "select attempts, failed_at is not null, processed_at is null, last_error \
             from app.outbox where tenant_id = $1 and payload->>'name' = 'Gemini'",
            &[&t.id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 3);
    assert!(row.get::<_, bool>(1));
    assert!(row.get::<_, bool>(2));
    assert!(row.get::<_, String>(3).contains("always"));
}

struct Panics;

impl JobHandler for Panics {
    fn name(&self) -> &'static str {
        "panics"
    }
    fn handles(&self, _event_type: &str) -> bool {
        true
    }
    fn handle<'a>(
        &'a self,
        _tx: &'a Transaction<'a>,
        _job: &'a Job,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move { panic!("the handler broke") })
    }
}

/// A handler that panics is counted like one that fails: retried, then dead-lettered with the
/// panic's message, instead of being run again without end.
#[tokio::test]
async fn a_handler_that_panics_is_counted_and_dead_lettered() {
    let app = app_without_worker().await;
    let t = app.create_tenant("acme").await;
    create_project(&app, &t.token, "Apollo").await;
    let pools = Pools::new(&app.config).unwrap();
    let db = app.superuser_db().await;
    let worker = Worker::new(
        pools.app.clone(),
        Registry::new().with(Panics),
        WorkerOptions {
            max_attempts: 2,
            ..fast_options()
        },
    );
    for _ in 0..2 {
        assert_eq!(worker.run_once().await.unwrap(), 1);
    }
    assert_eq!(
        worker.run_once().await.unwrap(),
        0,
        "dead-lettered: left alone"
    );
    let row = db
        .query_one(
            "select attempts, failed_at is not null, last_error from app.outbox \
             where tenant_id = $1 and event_type = 'project.created'",
            &[&t.id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    assert!(row.get::<_, bool>(1));
    assert!(row.get::<_, String>(2).contains("the handler broke"));
}

#[derive(Clone, Default)]
struct Counter(Arc<Mutex<HashMap<Uuid, (Uuid, usize)>>>);

impl JobHandler for Counter {
    fn name(&self) -> &'static str {
        "counter"
    }
    fn handles(&self, _event_type: &str) -> bool {
        true
    }
    fn handle<'a>(
        &'a self,
        _tx: &'a Transaction<'a>,
        job: &'a Job,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            let mut seen = self.0.lock().unwrap();
            let entry = seen.entry(job.id).or_insert((job.tenant_id, 0));
            entry.1 += 1;
            Ok(())
        })
    }
}

/// Holds an instance's first job until the other instance has one too, so that the two run
/// batches at the same time: on a loaded machine one instance could otherwise take every row
/// before the other had begun, and the race would not be run.
#[derive(Clone)]
struct Meet {
    others: Arc<tokio::sync::Barrier>,
    met: Arc<std::sync::atomic::AtomicBool>,
}

impl Meet {
    fn new(others: &Arc<tokio::sync::Barrier>) -> Meet {
        Meet {
            others: others.clone(),
            met: Arc::default(),
        }
    }
}

impl JobHandler for Meet {
    fn name(&self) -> &'static str {
        "meet"
    }
    fn handles(&self, _event_type: &str) -> bool {
        true
    }
    fn handle<'a>(
        &'a self,
        _tx: &'a Transaction<'a>,
        _job: &'a Job,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            if !self.met.swap(true, std::sync::atomic::Ordering::SeqCst) {
                // Bounded: if the other never comes, the test's "both worked" fails instead.
                let _ = tokio::time::timeout(Duration::from_secs(30), self.others.wait()).await;
            }
            Ok(())
        })
    }
}

async fn enqueue_many(pool: &PgPool, tenant: Uuid, n: usize) {
    let conn = pool.get().await.unwrap();
    let tx = TenantTx::begin(&conn, tenant).await.unwrap();
    for i in 0..n {
        tenantry::jobs::enqueue(&tx, tenant, "test.event", &json!({"n": i}))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn two_instances_claim_every_row_exactly_once() {
    let app = app_without_worker().await;
    let mut tenants = Vec::new();
    for i in 0..4 {
        tenants.push(app.create_tenant(&format!("tenant-{i}")).await.id);
    }
    // Two instances: separate pools, as two processes would have.
    let first = Pools::new(&app.config).unwrap();
    let second = Pools::new(&app.config).unwrap();
    for tenant in &tenants {
        enqueue_many(&first.app, *tenant, 60).await;
    }
    let counter = Counter::default();
    let options = WorkerOptions {
        batch_size: 7,
        concurrency: 3,
        ..fast_options()
    };
    let meeting = Arc::new(tokio::sync::Barrier::new(2));
    let w1 = Worker::new(
        first.app.clone(),
        Registry::new()
            .with(counter.clone())
            .with(Meet::new(&meeting)),
        options.clone(),
    );
    let w2 = Worker::new(
        second.app.clone(),
        Registry::new()
            .with(counter.clone())
            .with(Meet::new(&meeting)),
        options,
    );
    let claimed = Arc::new(Mutex::new([0usize; 2]));
    let run = |w: Worker, slot: usize| {
        let claimed = claimed.clone();
        async move {
            loop {
                let n = w.run_once().await.unwrap();
                if n == 0 {
                    break;
                }
                claimed.lock().unwrap()[slot] += n;
            }
        }
    };
    tokio::join!(run(w1, 0), run(w2, 1));
    // A worker may stop while the other still holds rows; finish what is left.
    drain(&Worker::new(
        first.app.clone(),
        Registry::new().with(counter.clone()),
        fast_options(),
    ))
    .await;

    let seen = counter.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 240);
    assert!(seen.values().all(|(_, n)| *n == 1), "a row ran twice");
    for tenant in &tenants {
        assert_eq!(seen.values().filter(|(t, _)| t == tenant).count(), 60);
    }
    let claimed = *claimed.lock().unwrap();
    assert!(
        claimed[0] > 0 && claimed[1] > 0,
        "both instances worked: {claimed:?}"
    );
}

#[tokio::test]
async fn the_server_runs_its_worker() {
    let (mut config, database) = test_config().await;
    config.job_poll_interval = Duration::from_millis(50);
    let app = spawn_app_with(config, database).await;
    let t = app.create_tenant("acme").await;
    create_project(&app, &t.token, "Apollo").await;
    let db = app.superuser_db().await;
    // Bounded wait for an asynchronous effect, not a timing assertion.
    for _ in 0..200 {
        let done: i64 = db
            .query_one(
                "select count(*) from app.outbox where tenant_id = $1 and processed_at is not null",
                &[&t.id],
            )
            .await
            .unwrap()
            .get(0);
        if done == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server's worker never processed the event");
}

/// Every domain write's commit wakes the worker for its tenant, whether the event was written
/// through `jobs::enqueue` (POST /projects) or by the write's own statement (POST /tasks): with
/// the worker's look at the table an hour apart, both events are processed anyway.
#[tokio::test]
async fn domain_writes_wake_the_worker_without_its_poll() {
    let (mut config, database) = test_config().await;
    config.job_poll_interval = Duration::from_secs(3600);
    let app = spawn_app_with(config, database).await;
    let t = app.create_tenant("acme").await;
    let db = app.superuser_db().await;
    let processed = |event: &'static str| {
        let db = &db;
        let tenant = t.id;
        async move {
            // Bounded wait for an asynchronous effect, not a timing assertion.
            for _ in 0..200 {
                let done: i64 = db
                    .query_one(
                        "select count(*) from app.outbox where tenant_id = $1 \
                         and event_type = $2 and processed_at is not null",
                        &[&tenant, &event],
                    )
                    .await
                    .unwrap()
                    .get(0);
                if done == 1 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("{event} was not processed: its commit did not wake the worker");
        }
    };
    let project = id_of(&create_project(&app, &t.token, "Apollo").await);
    processed("project.created").await;
    create_task(&app, &t.token, project, "Launch").await;
    processed("task.created").await;
}

/// Counts every job like [`Counter`], and records how many batches were inside the handler at
/// once; until two have been, a batch after the first waits (bounded) for another to join it.
#[derive(Clone, Default)]
struct Overlap {
    counter: Counter,
    state: Arc<Mutex<OverlapState>>,
    joined: Arc<tokio::sync::Notify>,
}

#[derive(Default)]
struct OverlapState {
    batches: usize,
    inside: usize,
    most_inside: usize,
}

impl JobHandler for Overlap {
    fn name(&self) -> &'static str {
        "overlap"
    }
    fn handles(&self, _event_type: &str) -> bool {
        true
    }
    fn handle<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
        job: &'a Job,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        self.counter.handle(tx, job)
    }
    fn handle_batch<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
        jobs: &'a [&'a Job],
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let wait = {
                let mut s = self.state.lock().unwrap();
                s.batches += 1;
                s.inside += 1;
                s.most_inside = s.most_inside.max(s.inside);
                s.batches > 1 && s.most_inside < 2
            };
            self.joined.notify_waiters();
            if wait {
                // Bounded: a worker that never runs two batches of the tenant at once fails
                // the assertion below instead of hanging.
                let joined = async {
                    while self.state.lock().unwrap().most_inside < 2 {
                        let notified = self.joined.notified();
                        if self.state.lock().unwrap().most_inside >= 2 {
                            break;
                        }
                        notified.await;
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(10), joined).await;
            }
            for job in jobs {
                self.counter.handle(tx, job).await?;
            }
            self.state.lock().unwrap().inside -= 1;
            Ok(())
        })
    }
}

/// A tenant whose batches come back full has a backlog: the server's worker runs several of its
/// batches at once (disjoint rows, each locked by its own batch), never more than all but one
/// of its slots, and every event still runs exactly once.
#[tokio::test]
async fn a_backlog_runs_several_batches_at_once_each_event_once() {
    let app = app_without_worker().await;
    let tenant = app.create_tenant("backlog").await.id;
    let pools = Pools::new(&app.config).unwrap();
    enqueue_many(&pools.app, tenant, 60).await;
    let overlap = Overlap::default();
    let worker = Worker::new(
        pools.app.clone(),
        Registry::new().with(overlap.clone()),
        WorkerOptions {
            batch_size: 5,
            concurrency: 3,
            poll_interval: Duration::from_millis(50),
            ..fast_options()
        },
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(worker.run(stop.clone()));
    // Bounded wait for an asynchronous effect, not a timing assertion.
    for _ in 0..400 {
        if overlap.counter.0.lock().unwrap().len() == 60 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    running.await.unwrap();
    let most = overlap.state.lock().unwrap().most_inside;
    assert_eq!(
        most, 2,
        "two of the backlog's batches at once: all but one of the three slots"
    );
    let seen = overlap.counter.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 60, "every event ran");
    assert!(seen.values().all(|(_, n)| *n == 1), "an event ran twice");
}
