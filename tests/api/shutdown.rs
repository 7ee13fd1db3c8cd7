//! Graceful shutdown of the real server binary, and the supervisor's face in `/metrics`.

use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tenantry::analytics::store::flush_lock_key;
use tenantry::db::tenant_schema_name;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

use crate::analytics_durability::{batch, stored};
use crate::helpers::{provision_tenant, spawn_app, test_db, Server, TestDb};

async fn stored_api_calls(db: &TestDb, tenant: Uuid) -> i64 {
    db.superuser_db()
        .await
        .query_one(
            &format!(
                "select coalesce(sum(n), 0)::int8 from {}.counters where kind = 'a'",
                tenant_schema_name(tenant)
            ),
            &[],
        )
        .await
        .expect("count api calls")
        .get(0)
}

async fn gauge(http: &reqwest::Client, server: &Server, name: &str) -> Option<i64> {
    let text = http
        .get(server.url("/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

async fn pending_events(http: &reqwest::Client, server: &Server) -> Option<i64> {
    gauge(http, server, "tenantry_analytics_events_pending").await
}

fn port(server: &Server) -> u16 {
    server
        .address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port")
}

/// Polls until a new TCP connection is refused.
async fn connections_refused(server: &Server) -> bool {
    let port = port(server);
    for _ in 0..600 {
        if TcpStream::connect(("127.0.0.1", port)).is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// How a request sent while the server may be shutting down ended.
enum Reply {
    /// 2xx, with its JSON body (Null when it has none).
    Success(Value),
    /// The 503 of a request that arrived after SIGTERM on a connection kept alive.
    ShuttingDown,
    /// No connection: the server no longer listens.
    Refused,
}

/// Anything other than a [`Reply`] fails the test: a reset, a cut body or another error status
/// would be a request under way that the shutdown did not let finish.
async fn reply(sent: reqwest::Result<reqwest::Response>) -> Reply {
    let response = match sent {
        Ok(response) => response,
        Err(err) if err.is_connect() => return Reply::Refused,
        Err(err) => panic!("request cut: {err:?}"),
    };
    let status = response.status();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (retry_after, connection, content_type) = (
        header("retry-after"),
        header("connection"),
        header("content-type"),
    );
    let body = response.bytes().await.expect("whole body");
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if status.is_success() {
        return Reply::Success(body);
    }
    assert!(
        status.as_u16() == 503 && body["code"] == "shutting_down",
        "unexpected status {status}: {body}"
    );
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(connection.as_deref(), Some("close"));
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    Reply::ShuttingDown
}

/// SIGTERM while one tenant's requests wait for their commit and another tenant's clients
/// post events and read as fast as they can. The server must stop taking connections, answer
/// the requests under way, write the `api_calls` it counted (their flush interval is a
/// minute here, so only the shutdown writes them) and exit 0; every acknowledged event is
/// stored. One HTTP worker; `sigterm_with_two_workers_answers_every_request_under_way` runs
/// several.
#[tokio::test]
async fn sigterm_during_ingest_loses_no_acknowledged_event_and_no_counted_call() {
    let db = test_db().await;
    let pools = db.pools();
    let held = provision_tenant(&db.config, &pools, "held").await;
    let busy = provision_tenant(&db.config, &pools, "busy").await;
    let mut server = Server::start_with(
        &db,
        1,
        &[
            ("API_CALLS_FLUSH_MS", "60000"),
            // The readers loop as fast as they can until enough posts are acknowledged: on a
            // slower database (Citus) they would reach the plan's requests a minute first.
            ("TENANT_RATE_LIMITS", "off"),
        ],
    )
    .await;
    let http = reqwest::Client::new();

    // The held tenant's requests: the first one's flush waits for the lock, the others queue
    // behind it. All of them are under way when SIGTERM arrives.
    let lock = db.superuser_db().await;
    lock.execute(
        "select pg_advisory_lock(hashtextextended($1, 0))",
        &[&flush_lock_key(held.tenant.id)],
    )
    .await
    .expect("hold the flush lock");
    let held_sizes = [3usize, 5, 7];
    let mut waiting = Vec::new();
    for (k, n) in held_sizes.iter().enumerate() {
        let request = reqwest::Client::new()
            .post(server.url("/analytics/events"))
            .bearer_auth(&held.token)
            .json(&batch(&format!("held-{k}"), *n));
        waiting.push(tokio::spawn(request.send()));
        let expected = held_sizes[..=k].iter().sum::<usize>() as i64;
        let mut pending = None;
        for _ in 0..500 {
            pending = pending_events(&http, &server).await;
            if pending == Some(expected) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(pending, Some(expected), "held request {k} is queued");
    }

    // The busy tenant: posters and readers until the server goes away.
    let acked: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
    let answered = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for p in 0..4 {
        let (http, base, token) = (
            reqwest::Client::new(),
            server.address.clone(),
            busy.token.clone(),
        );
        let (acked, answered, sent) = (acked.clone(), answered.clone(), sent.clone());
        clients.push(tokio::spawn(async move {
            for k in 0.. {
                sent.fetch_add(1, Ordering::SeqCst);
                if p % 2 == 0 {
                    let tag = format!("p{p}-{k}");
                    let n = 1 + (p * 31 + k * 17) % 120;
                    let r = http
                        .post(format!("{base}/analytics/events"))
                        .bearer_auth(&token)
                        .json(&batch(&tag, n))
                        .send()
                        .await;
                    match reply(r).await {
                        Reply::Success(body) => {
                            assert_eq!(body["accepted"], n, "{body}");
                            acked.lock().unwrap().push((tag, n));
                        }
                        // The server is shutting down.
                        Reply::ShuttingDown | Reply::Refused => return,
                    }
                } else {
                    let r = http
                        .get(format!("{base}/tenant"))
                        .bearer_auth(&token)
                        .send()
                        .await;
                    match reply(r).await {
                        Reply::Success(_) => {}
                        Reply::ShuttingDown | Reply::Refused => return,
                    }
                }
                answered.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for _ in 0..1_000 {
        if acked.lock().unwrap().len() >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        acked.lock().unwrap().len() >= 20,
        "the busy tenant is ingesting"
    );

    server.terminate();
    // New connections are refused while the held requests are still under way...
    assert!(
        connections_refused(&server).await,
        "the server still accepts connections after SIGTERM"
    );
    for client in clients {
        client.await.expect("client");
    }
    assert!(
        waiting.iter().all(|w| !w.is_finished()),
        "the held requests wait for their commit"
    );
    // ...and are answered once their events can be written.
    drop(lock);
    for (k, request) in waiting.into_iter().enumerate() {
        let response = request.await.expect("join").expect("held request answered");
        assert_eq!(response.status().as_u16(), 202, "held request {k}");
        let body: Value = response.json().await.expect("202 body");
        assert_eq!(body["accepted"], held_sizes[k]);
    }
    let status = server.exit_status().await;
    assert!(status.success(), "exit status {status}");

    let (per_batch, _, _) = stored(&db, held.tenant.id).await;
    for (k, n) in held_sizes.iter().enumerate() {
        assert_eq!(per_batch.get(&format!("held-{k}")), Some(&(*n as i64)));
    }
    let (per_batch, raw, counted) = stored(&db, busy.tenant.id).await;
    assert_eq!(counted, raw, "rollups match the raw events");
    let acked = acked.lock().unwrap().clone();
    for (tag, n) in &acked {
        assert_eq!(
            per_batch.get(tag),
            Some(&(*n as i64)),
            "acknowledged batch {tag}"
        );
    }
    // Every request answered with success was counted before it was answered; none is lost.
    let calls = stored_api_calls(&db, busy.tenant.id).await;
    let (answered, sent) = (
        answered.load(Ordering::SeqCst) as i64,
        sent.load(Ordering::SeqCst) as i64,
    );
    assert!(
        calls >= answered && calls <= sent,
        "api_calls counted {calls}, answered {answered}, sent {sent}"
    );
    assert_eq!(
        stored_api_calls(&db, held.tenant.id).await,
        held_sizes.len() as i64
    );
}

/// Requests sent to one tenant, and those answered with success.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    answered: AtomicU64,
}

impl Tally {
    fn sent(&self) {
        self.sent.fetch_add(1, Ordering::SeqCst);
    }

    fn answered(&self) {
        self.answered.fetch_add(1, Ordering::SeqCst);
    }
}

/// A request the test holds under way, and how it lets it go.
#[derive(Clone, Copy, Debug)]
enum Held {
    /// PATCH /projects/{id} of held tenant k's project j, waiting in the tenant's actor for the
    /// row lock.
    Rename(usize, usize),
    /// POST /analytics/events of held tenant k, waiting for its commit (the flush lock).
    Post(usize),
    /// GET /tenant/export, its response begun, its body waiting for a table lock.
    Export,
}

/// SIGTERM with two HTTP workers, while requests are under way on both: writes held in tenant
/// actors, analytics posts waiting for their commit, a tenant export streaming its body, a
/// WebSocket session, and clients of two more tenants posting and reading as fast as they can.
/// No worker may stop while any request is under way, whichever worker accepted it: every
/// request under way at the signal is answered with success, a request that arrives afterwards
/// on a connection kept alive gets 503 `shutting_down`, a new connection is refused; every
/// acknowledged event is stored, every answered call counted, and the process exits 0.
///
/// The held requests are let go one at a time, first those of one worker, then, a moment later,
/// the other's: the first worker then has no request of its own while the other's need its
/// tenant actors (each held tenant has a held request on either worker), which a shutdown that
/// stops each worker once its own connections are done cuts.
#[tokio::test]
async fn sigterm_with_two_workers_answers_every_request_under_way() {
    let db = test_db().await;
    let pools = db.pools();
    // Tenants are spread over the workers' threads by id: six make both hosts likely.
    let mut held = Vec::new();
    for k in 0..6 {
        held.push(provision_tenant(&db.config, &pools, &format!("held-{k}")).await);
    }
    let busy = [
        provision_tenant(&db.config, &pools, "busy-0").await,
        provision_tenant(&db.config, &pools, "busy-1").await,
    ];
    let exported = provision_tenant(&db.config, &pools, "exported").await;
    let tallies: Arc<HashMap<Uuid, Tally>> = Arc::new(
        held.iter()
            .chain(&busy)
            .chain([&exported])
            .map(|t| (t.tenant.id, Tally::default()))
            .collect(),
    );
    let mut server = Server::start_with(
        &db,
        2,
        &[
            // Only the shutdown writes the counts.
            ("API_CALLS_FLUSH_MS", "60000"),
            // The held statements wait for the test, not for a timeout.
            ("STATEMENT_TIMEOUT_MS", "600000"),
            // A connection per held write, however the tenants are spread over the hosts.
            ("APP_POOL_SIZE", "40"),
        ],
    )
    .await;
    let http = reqwest::Client::new();

    // Two projects per held tenant, which its held requests rename; events for the export.
    let mut projects = Vec::new();
    for t in &held {
        let mut pair = Vec::new();
        for j in 0..2 {
            tallies[&t.tenant.id].sent();
            let r = http
                .post(server.url("/projects"))
                .bearer_auth(&t.token)
                .json(&json!({"name": format!("before-{j}")}))
                .send()
                .await
                .expect("POST /projects");
            assert_eq!(r.status().as_u16(), 201);
            tallies[&t.tenant.id].answered();
            let body: Value = r.json().await.expect("project");
            let id: Uuid = body["id"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("id");
            pair.push(id);
        }
        projects.push(pair);
    }
    tallies[&exported.tenant.id].sent();
    let r = http
        .post(server.url("/analytics/events"))
        .bearer_auth(&exported.token)
        .json(&batch("exported", 3))
        .send()
        .await
        .expect("POST /analytics/events");
    assert_eq!(r.status().as_u16(), 202);
    tallies[&exported.tenant.id].answered();

    // A live socket: once upgraded it is not a request under way.
    tallies[&busy[0].tenant.id].sent();
    let mut socket_request = format!("ws://127.0.0.1:{}/ws/analytics", port(&server))
        .into_client_request()
        .expect("ws request");
    socket_request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", busy[0].token).parse().expect("header"),
    );
    let (socket, _) = tokio_tungstenite::connect_async(socket_request)
        .await
        .expect("websocket handshake");
    tallies[&busy[0].tenant.id].answered();

    // The held requests in the order their connections are accepted: the workers take new
    // connections in turn, so the even ones land on one worker and the odd ones on the other;
    // each held tenant's two renames land on both.
    let held_sizes = [3usize, 5, 7];
    let order: Vec<Held> = (0..held.len())
        .flat_map(|k| [Held::Rename(k, 0), Held::Rename(k, 1)])
        .chain((0..held_sizes.len()).map(Held::Post))
        .chain([Held::Export])
        .collect();
    let release: Vec<usize> = (0..order.len())
        .step_by(2)
        .chain((1..order.len()).step_by(2))
        .collect();

    // The locks: the flush locks, each unlocked alone; each project's row lock after a
    // savepoint of its own, taken in the reverse of the release order, so that rolling back to
    // a project's savepoint releases that project alone; the exported tenant's events table.
    let locks = db.superuser_db().await;
    for (t, _) in held.iter().zip(held_sizes) {
        locks
            .execute(
                "select pg_advisory_lock(hashtextextended($1, 0))",
                &[&flush_lock_key(t.tenant.id)],
            )
            .await
            .expect("hold the flush lock");
    }
    locks.batch_execute("begin").await.expect("begin");
    for i in release.iter().rev() {
        if let Held::Rename(k, j) = order[*i] {
            locks
                .batch_execute(&format!("savepoint project_{k}_{j}"))
                .await
                .expect("savepoint");
            let locked = locks
                .execute(
                    "select 1 from app.projects where tenant_id = $1 and id = $2 for update",
                    &[&held[k].tenant.id, &projects[k][j]],
                )
                .await
                .expect("lock the project");
            assert_eq!(locked, 1);
        }
    }
    let events_table = db.superuser_db().await;
    events_table
        .batch_execute(&format!(
            "begin; lock table {}.events in access exclusive mode",
            tenant_schema_name(exported.tenant.id)
        ))
        .await
        .expect("lock the exported tenant's events");

    // Each on a connection of its own, the next one sent once the server has taken this one.
    let mut under_way = Vec::new();
    let mut events = 0;
    for (i, request) in order.iter().enumerate() {
        let client = reqwest::Client::new();
        let task = match *request {
            Held::Rename(k, j) => {
                let t = &held[k];
                tallies[&t.tenant.id].sent();
                let request = client
                    .patch(server.url(&format!("/projects/{}", projects[k][j])))
                    .bearer_auth(&t.token)
                    .json(&json!({"name": format!("renamed-{k}-{j}")}));
                tokio::spawn(async move {
                    match reply(request.send().await).await {
                        Reply::Success(body) => body,
                        _ => panic!("held rename {k}-{j} turned away"),
                    }
                })
            }
            Held::Post(k) => {
                let t = &held[k];
                tallies[&t.tenant.id].sent();
                events += held_sizes[k] as i64;
                let request = client
                    .post(server.url("/analytics/events"))
                    .bearer_auth(&t.token)
                    .json(&batch(&format!("held-{k}"), held_sizes[k]));
                tokio::spawn(async move {
                    match reply(request.send().await).await {
                        Reply::Success(body) => body,
                        _ => panic!("held post {k} turned away"),
                    }
                })
            }
            Held::Export => {
                tallies[&exported.tenant.id].sent();
                let request = client
                    .get(server.url("/tenant/export"))
                    .bearer_auth(&exported.token);
                tokio::spawn(async move {
                    let response = request.send().await.expect("export answered");
                    assert_eq!(response.status().as_u16(), 200);
                    Value::String(response.text().await.expect("the whole export"))
                })
            }
        };
        under_way.push(Some(task));
        // Under way, with the metrics request that asks (the socket is not).
        let expected = (Some(i as i64 + 2), Some(events));
        let mut seen = (None, None);
        for _ in 0..1_000 {
            seen = (
                gauge(&http, &server, "tenantry_http_requests_in_flight").await,
                pending_events(&http, &server).await,
            );
            if seen == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            seen, expected,
            "(requests in flight, events pending) once {request:?} is under way"
        );
    }

    // The busy tenants: a poster and a reader each, until the server turns them away.
    let acked: Arc<Mutex<Vec<(Uuid, String, usize)>>> = Arc::default();
    let mut clients = Vec::new();
    for p in 0..4usize {
        let (http, base) = (reqwest::Client::new(), server.address.clone());
        let (tenant, token) = (busy[p / 2].tenant.id, busy[p / 2].token.clone());
        let (acked, tallies) = (acked.clone(), tallies.clone());
        clients.push(tokio::spawn(async move {
            let mut turned_away = false;
            for k in 0.. {
                tallies[&tenant].sent();
                let poster = p % 2 == 0;
                let (tag, n) = (format!("p{p}-{k}"), 1 + (p * 31 + k * 17) % 120);
                let request = if poster {
                    http.post(format!("{base}/analytics/events"))
                        .json(&batch(&tag, n))
                } else {
                    http.get(format!("{base}/tenant"))
                };
                match reply(request.bearer_auth(&token).send().await).await {
                    Reply::Success(body) => {
                        tallies[&tenant].answered();
                        if poster {
                            assert_eq!(body["accepted"], n, "{body}");
                            acked.lock().unwrap().push((tenant, tag, n));
                        }
                    }
                    Reply::ShuttingDown => turned_away = true,
                    Reply::Refused => return turned_away,
                }
            }
            unreachable!()
        }));
    }
    for _ in 0..1_000 {
        if acked.lock().unwrap().len() >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        acked.lock().unwrap().len() >= 20,
        "the busy tenants are ingesting"
    );

    server.terminate();
    assert!(
        connections_refused(&server).await,
        "the server still accepts connections after SIGTERM"
    );
    // Their connections stay open while the held requests are under way: each client's next
    // request on it is turned away, then it finds no server to connect to.
    for client in clients {
        assert!(
            client.await.expect("client"),
            "a client kept alive is answered 503 shutting_down"
        );
    }
    assert!(
        under_way.iter().flatten().all(|task| !task.is_finished()),
        "the held requests are still under way"
    );
    // The socket goes now, so that it keeps no worker's connections open.
    drop(socket);

    // One at a time, each answered before the next is let go; between the two workers' halves,
    // long enough for a worker stopped as soon as its own connections are done to have stopped
    // (actix looks at a stopping worker's connections every second).
    for (n, i) in release.into_iter().enumerate() {
        if n == order.len().div_ceil(2) {
            tokio::time::sleep(Duration::from_millis(1_500)).await;
        }
        let answer = under_way[i].take().expect("once");
        match order[i] {
            Held::Rename(k, j) => {
                locks
                    .batch_execute(&format!("rollback to savepoint project_{k}_{j}"))
                    .await
                    .expect("release the project");
                let body = answer.await.expect("held rename answered");
                assert_eq!(body["name"], format!("renamed-{k}-{j}"));
                tallies[&held[k].tenant.id].answered();
            }
            Held::Post(k) => {
                locks
                    .execute(
                        "select pg_advisory_unlock(hashtextextended($1, 0))",
                        &[&flush_lock_key(held[k].tenant.id)],
                    )
                    .await
                    .expect("release the flush lock");
                let body = answer.await.expect("held post answered");
                assert_eq!(body["accepted"], held_sizes[k], "held post {k}");
                tallies[&held[k].tenant.id].answered();
            }
            Held::Export => {
                events_table.batch_execute("commit").await.expect("commit");
                let export = answer.await.expect("export answered");
                let lines: Vec<Value> = export
                    .as_str()
                    .expect("text")
                    .lines()
                    .map(|l| serde_json::from_str(l).expect("an NDJSON line"))
                    .collect();
                assert!(lines.iter().all(|l| l["type"] != "error"), "{lines:?}");
                assert_eq!(
                    lines.iter().filter(|l| l["type"] == "events").count(),
                    3,
                    "the export ends with the events it waited for"
                );
                tallies[&exported.tenant.id].answered();
            }
        }
    }

    let status = server.exit_status().await;
    assert!(status.success(), "exit status {status}");

    for (k, n) in held_sizes.iter().enumerate() {
        let (per_batch, _, _) = stored(&db, held[k].tenant.id).await;
        assert_eq!(per_batch.get(&format!("held-{k}")), Some(&(*n as i64)));
    }
    let acked = acked.lock().unwrap().clone();
    for b in &busy {
        let (per_batch, raw, counted) = stored(&db, b.tenant.id).await;
        assert_eq!(counted, raw, "rollups match the raw events");
        for (_, tag, n) in acked.iter().filter(|(t, _, _)| *t == b.tenant.id) {
            assert_eq!(
                per_batch.get(tag),
                Some(&(*n as i64)),
                "acknowledged batch {tag}"
            );
        }
    }
    for (tenant, tally) in tallies.iter() {
        let calls = stored_api_calls(&db, *tenant).await;
        let (answered, sent) = (
            tally.answered.load(Ordering::SeqCst) as i64,
            tally.sent.load(Ordering::SeqCst) as i64,
        );
        assert!(
            calls >= answered && calls <= sent,
            "tenant {tenant}: api_calls counted {calls}, answered {answered}, sent {sent}"
        );
    }
}

async fn backend_pid(conn: &tenantry::db::PooledConn) -> i32 {
    conn.query_one("select pg_backend_pid()", &[])
        .await
        .expect("pg_backend_pid")
        .get(0)
}

/// Commands to a runtime of its own that takes connections from a pool, the way an HTTP worker
/// does: it opens two, gives one back at once and reports both backends; gives the other back
/// when told; stops (and with it the connections it drives) when told.
struct OtherRuntime {
    opened: std::sync::mpsc::Receiver<(i32, i32)>,
    give_back: Option<tokio::sync::oneshot::Sender<()>>,
    given_back: std::sync::mpsc::Receiver<()>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OtherRuntime {
    fn start(pool: tenantry::db::PgPool) -> OtherRuntime {
        let (opened_tx, opened) = std::sync::mpsc::channel();
        let (give_back, give_back_rx) = tokio::sync::oneshot::channel::<()>();
        let (given_back_tx, given_back) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let idle = pool.get().await.expect("first connection");
                let kept = pool.get().await.expect("second connection");
                let pids = (backend_pid(&idle).await, backend_pid(&kept).await);
                drop(idle);
                opened_tx.send(pids).expect("report");
                let _ = give_back_rx.await;
                drop(kept);
                given_back_tx.send(()).expect("report");
                let _ = stop_rx.await;
            });
            // Dropping the runtime drops the tasks driving its connections.
        });
        OtherRuntime {
            opened,
            give_back: Some(give_back),
            given_back,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn opened(&self) -> (i32, i32) {
        self.opened.recv().expect("connections opened")
    }

    fn give_back(&mut self) {
        if let Some(tx) = self.give_back.take() {
            let _ = tx.send(());
            self.given_back.recv().expect("given back");
        }
    }

    fn stop(&mut self) {
        self.give_back();
        let _ = self.stop.take().map(|tx| tx.send(()));
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the other runtime's thread");
        }
    }
}

/// The last writes of a shutdown run on the main runtime while the workers' runtimes stop, and
/// with them the connections they opened, which may still look open when taken from the pool.
/// Once confined, the pool hands out no connection of another runtime, idle or given back
/// later.
#[tokio::test]
async fn a_confined_pool_hands_out_no_connection_of_another_runtime() {
    let db = test_db().await;

    // Unconfined, the pool hands out a connection that dies with the runtime that opened it.
    let pool = tenantry::db::pool::app_pool(&db.config, 4).expect("pool");
    let mut other = OtherRuntime::start(pool.clone());
    let (idle, _) = other.opened();
    let conn = pool.get().await.expect("a connection");
    assert_eq!(backend_pid(&conn).await, idle, "the idle one is reused");
    other.stop();
    assert!(
        conn.query_one("select 1", &[]).await.is_err(),
        "its runtime gone, the connection is closed"
    );
    drop(conn);

    let pool = tenantry::db::pool::app_pool(&db.config, 4).expect("pool");
    let mut other = OtherRuntime::start(pool.clone());
    let (idle, kept) = other.opened();
    tenantry::db::pool::confine_to_current_runtime(&pool);
    other.give_back();
    // Both of the other runtime's connections are in the pool and still open.
    let (first, second) = (
        pool.get().await.expect("a connection"),
        pool.get().await.expect("another connection"),
    );
    let pids = [backend_pid(&first).await, backend_pid(&second).await];
    assert!(
        !pids.contains(&idle) && !pids.contains(&kept),
        "{pids:?} include one of {idle}, {kept}"
    );
    other.stop();
    for conn in [&first, &second] {
        conn.query_one("select 1", &[])
            .await
            .expect("a connection of this runtime outlives the other");
    }
}

#[tokio::test]
async fn every_background_task_has_its_restart_counter_in_metrics() {
    let app = spawn_app().await;
    let metrics = app.metrics_text().await;
    // The test server runs no purge or retention loop (purge_interval: None).
    for task in [
        "api_calls_flush",
        "cache_invalidations",
        "analytics_upkeep",
        "outbox_worker",
        "webhook_dispatcher",
    ] {
        let series = format!("tenantry_background_task_restarts_total{{task=\"{task}\"}} 0");
        assert!(
            metrics.contains(&series),
            "{series} missing from\n{metrics}"
        );
    }
}

/// A server embedded in a process stops through `Application::server_handle`: it stops
/// listening, its loops end and its connections close. The test harness stops every test's
/// server this way when the test ends; a server left running kept retrying against its
/// dropped database for the rest of the run.
#[tokio::test]
async fn an_embedded_server_stops_through_its_handle() {
    let mut app = spawn_app().await;
    app.create_tenant("stop-embedded").await;
    let db = app.superuser_db().await;
    let ours = "select count(*) from pg_stat_activity \
                where datname = current_database() and application_name = 'tenantry'";
    assert!(db.query_one(ours, &[]).await.unwrap().get::<_, i64>(0) > 0);
    app.stop();
    assert!(TcpStream::connect(("127.0.0.1", app.port)).is_err());
    // A backend notices its client's closed socket on its own schedule: polled, bounded.
    let mut left = -1;
    for _ in 0..100 {
        left = db.query_one(ours, &[]).await.unwrap().get::<_, i64>(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0, "the stopped server's connections are closed");
}
