//! Outgoing webhooks: the endpoints API (plan gate, roles, URL checks), signed deliveries
//! verified by the Standard Webhooks reference library, the retry schedule driven by a hand
//! clock (no sleeping), dead letters and replays, Retry-After, 410, redirects, a receiver that
//! hangs, disabling after 5 days, payloads over 1 MiB, the per-tenant rate limit shared by two
//! dispatchers, isolation between tenants, and the fan-out's hand-over to its server's
//! dispatcher (sent without a claim, within the limit, and claimed again once its lease ends
//! when it was lost before its send).
//!
//! The servers here run no outbox worker and no dispatcher of their own (JOB_WORKER=false): the
//! test drives the fan-out ([`Worker`] with [`FanOut`]) and the [`Dispatcher`] itself, with a
//! [`HandClock`], and a local receiver answers as each test scripts it.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use deadpool_postgres::Transaction;
use futures_util::future::BoxFuture;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};
use tenantry::auth::Role;
use tenantry::config::Config;
use tenantry::db::Pools;
use tenantry::jobs::{Job, JobError, JobHandler, Registry, Worker, WorkerOptions};
use tenantry::net::outbound::Outbound;
use tenantry::net::ssrf::Policy;
use tenantry::secrets::Keyring;
use tenantry::webhooks::delivery::{Limits, WebhookMetrics};
use tenantry::webhooks::{Clock, Dispatcher, DispatcherOptions, FanOut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::fixtures::{create_project, create_task, create_user, expect, id_of, token_for};
use crate::helpers::{assert_problem, spawn_app, spawn_app_with, test_config, TestApp, TestTenant};

/// Time as the test sets it.
struct HandClock(Mutex<DateTime<Utc>>);

impl HandClock {
    /// A minute ahead of the database, so what it queued with `now()` is due at once.
    fn new() -> Arc<HandClock> {
        Arc::new(HandClock(Mutex::new(Utc::now() + TimeDelta::minutes(1))))
    }

    fn advance(&self, by: TimeDelta) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for HandClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Reply {
    Status(u16),
    With(u16, Vec<(&'static str, String)>),
    Hang(Duration),
}

#[derive(Clone, Debug)]
pub(crate) struct Received {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// Answered at once (not by a reply that hangs first).
    pub answered_at_once: bool,
}

impl Received {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
}

/// A local HTTP receiver: records every request, answers with the scripted replies in order,
/// then with the default one.
#[derive(Clone)]
pub(crate) struct Receiver {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    default: Arc<Mutex<Reply>>,
}

impl Receiver {
    pub async fn start(default: Reply) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let receiver = Receiver {
            url,
            received: Default::default(),
            script: Default::default(),
            default: Arc::new(Mutex::new(default)),
        };
        let r = receiver.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let r = r.clone();
                tokio::spawn(async move {
                    let _ = r.serve(stream).await;
                });
            }
        });
        receiver
    }

    /// Replies given, in order, before the default one.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.lock().unwrap().extend(replies);
    }

    pub fn set_default(&self, reply: Reply) {
        *self.default.lock().unwrap() = reply;
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    pub fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// `n` requests received, each with a `webhook-id` of its own: no message sent twice.
    pub fn assert_each_sent_once(&self, n: usize) {
        let all = self.all();
        let ids: HashSet<String> = all.iter().map(|r| r.header("webhook-id")).collect();
        assert_eq!((all.len(), ids.len()), (n, n), "no message was sent twice");
    }

    async fn serve(&self, mut stream: tokio::net::TcpStream) -> std::io::Result<()> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut headers = HeaderMap::new();
        for line in head.lines().skip(1) {
            if let Some((name, value)) = line.split_once(':') {
                if let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.trim().as_bytes()),
                    HeaderValue::from_str(value.trim()),
                ) {
                    headers.append(name, value);
                }
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = buf[head_end..].to_vec();
        while body.len() < length {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        let reply = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| self.default.lock().unwrap().clone());
        self.received.lock().unwrap().push(Received {
            headers,
            body,
            answered_at_once: !matches!(reply, Reply::Hang(_)),
        });
        let (status, extra) = match reply {
            Reply::Status(s) => (s, Vec::new()),
            Reply::With(s, h) => (s, h),
            Reply::Hang(d) => {
                tokio::time::sleep(d).await;
                (200, Vec::new())
            }
        };
        let text = format!("answer {status}");
        let mut out = format!(
            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
            text.len()
        );
        for (name, value) in extra {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&text);
        stream.write_all(out.as_bytes()).await?;
        stream.shutdown().await
    }
}

/// A server without its own worker or dispatcher, the test's fan-out worker and dispatcher.
struct Rig {
    app: TestApp,
    worker: Worker,
    clock: Arc<HandClock>,
    dispatcher: Dispatcher,
}

fn limits(limit: Option<i64>) -> Limits {
    Arc::new(move |_tenant| Box::pin(async move { limit }))
}

fn dispatcher(
    config: &Config,
    pools: &Pools,
    clock: Arc<HandClock>,
    limit: Option<i64>,
) -> Dispatcher {
    dispatcher_with(config, pools, clock, limit, DispatcherOptions::default())
}

fn dispatcher_with(
    config: &Config,
    pools: &Pools,
    clock: Arc<HandClock>,
    limit: Option<i64>,
    options: DispatcherOptions,
) -> Dispatcher {
    let outbound = Outbound::builder(Policy::webhooks(true))
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    Dispatcher::new(
        pools.app.clone(),
        outbound,
        Keyring::from_config(config).unwrap(),
        clock,
        limits(limit),
        options,
        WebhookMetrics::new().unwrap(),
    )
}

async fn rig(limit: Option<i64>) -> Rig {
    rig_with(limit, |_| {}).await
}

async fn rig_with(limit: Option<i64>, configure: impl FnOnce(&mut Config)) -> Rig {
    let (mut config, database) = test_config().await;
    configure(&mut config);
    config.job_worker = false;
    config.webhook_allow_private_targets = true;
    let app = spawn_app_with(config, database).await;
    let pools = Pools::new(&app.config).unwrap();
    let worker = Worker::new(
        pools.app.clone(),
        Registry::new().with(FanOut::new()),
        WorkerOptions {
            batch_size: 50,
            backoff_base: Duration::ZERO,
            ..WorkerOptions::default()
        },
    );
    let clock = HandClock::new();
    let dispatcher = dispatcher(&app.config, &pools, clock.clone(), limit);
    Rig {
        app,
        worker,
        clock,
        dispatcher,
    }
}

impl Rig {
    /// Runs the outbox until it is empty: every event fanned out.
    async fn fan_out(&self) {
        for _ in 0..100 {
            if self.worker.run_once().await.unwrap() == 0 {
                return;
            }
        }
        panic!("the outbox did not drain");
    }

    async fn deliver(&self) -> usize {
        self.fan_out().await;
        self.dispatcher.run_once().await.unwrap()
    }

    async fn tenant(&self, slug: &str) -> TestTenant {
        let t = self.app.create_tenant_on_plan(slug, "pro").await;
        // The provisioning's own events are not what the tests count.
        self.fan_out().await;
        t
    }

    async fn webhook(&self, token: &str, url: &str, events: &[&str]) -> Value {
        let r = self
            .app
            .post("/webhooks", token)
            .json(&json!({"url": url, "events": events, "description": "test receiver"}))
            .send()
            .await
            .unwrap();
        expect(r, 201).await
    }

    async fn deliveries(&self, token: &str, webhook: Uuid, query: &str) -> Vec<Value> {
        let r = self
            .app
            .get(&format!("/webhooks/{webhook}/deliveries{query}"), token)
            .send()
            .await
            .unwrap();
        expect(r, 200).await["items"].as_array().unwrap().clone()
    }

    async fn webhook_status(&self, token: &str, webhook: Uuid) -> Value {
        let r = self
            .app
            .get(&format!("/webhooks/{webhook}"), token)
            .send()
            .await
            .unwrap();
        expect(r, 200).await
    }

    async fn outbox_events(&self, tenant: Uuid, event_type: &str) -> i64 {
        self.app
            .superuser_db()
            .await
            .query_one(
                "select count(*) from app.outbox where tenant_id = $1 and event_type = $2",
                &[&tenant, &event_type],
            )
            .await
            .unwrap()
            .get(0)
    }
}

fn at(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .expect("timestamp")
        .parse()
        .expect("RFC 3339")
}

#[tokio::test]
async fn endpoints_need_the_plan_an_admin_and_a_public_url() {
    // A server with the default policy: https to public addresses only.
    let app = spawn_app().await;
    let free = app.create_tenant("wh-free").await;
    let r = app
        .post("/webhooks", &free.token)
        .json(&json!({"url": "https://93.184.215.14/hook", "events": ["task.created"]}))
        .send()
        .await
        .unwrap();
    let body = assert_problem(r, 403, "plan_required").await;
    assert_eq!(body["required_plan"], "pro");
    for path in ["/webhooks", &format!("/webhooks/{}", Uuid::now_v7())] {
        let r = app.get(path, &free.token).send().await.unwrap();
        assert_problem(r, 403, "plan_required").await;
    }

    let pro = app.create_tenant_on_plan("wh-pro", "pro").await;
    for url in [
        "http://93.184.215.14/hook",
        "https://127.0.0.1/hook",
        "https://2130706433/hook",
        "https://10.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::ffff:127.0.0.1]/hook",
        "https://good@93.184.215.14/hook",
        "https://localhost/hook",
        "https://metadata.google.internal/",
        "ftp://93.184.215.14/",
        "not a url",
    ] {
        let r = app
            .post("/webhooks", &pro.token)
            .json(&json!({"url": url, "events": ["task.created"]}))
            .send()
            .await
            .unwrap();
        let body = assert_problem(r, 422, "validation_failed").await;
        assert_eq!(body["errors"][0]["field"], "url", "{url}: {body}");
    }
    for events in [
        json!([]),
        json!(["nope.*"]),
        json!(["task"]),
        json!(["Task.created"]),
    ] {
        let r = app
            .post("/webhooks", &pro.token)
            .json(&json!({"url": "https://93.184.215.14/hook", "events": events}))
            .send()
            .await
            .unwrap();
        assert_problem(r, 422, "validation_failed").await;
    }
    // Unknown members are refused, a smuggled tenant_id included.
    let r = app
        .post("/webhooks", &pro.token)
        .json(&json!({"url": "https://93.184.215.14/hook", "events": ["task.*"], "tenant_id": free.id}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);

    let created = expect(
        app.post("/webhooks", &pro.token)
            .json(&json!({"url": "https://93.184.215.14/hook", "events": ["task.*", "project.created"]}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    let id = id_of(&created);
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{secret}");
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD
        .decode(&secret["whsec_".len()..])
        .unwrap();
    assert_eq!(key.len(), 32);
    assert_eq!(created["status"], "enabled");
    assert_eq!(created["events"], json!(["task.*", "project.created"]));

    // The secret is shown once.
    let got = expect(
        app.get(&format!("/webhooks/{id}"), &pro.token)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert!(got.get("secret").is_none(), "{got}");
    let list = expect(app.get("/webhooks", &pro.token).send().await.unwrap(), 200).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(list["items"][0].get("secret").is_none());

    // At rest the secret is sealed under SECRETS_KEY: neither it nor its key bytes are stored.
    let row = app
        .superuser_db()
        .await
        .query_one(
            "select secret_ciphertext, secret_key_id from app.webhooks where id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let (stored, key_id): (Vec<u8>, String) = (row.get(0), row.get(1));
    let keyring = Keyring::from_config(&app.config).unwrap();
    assert_eq!(key_id, keyring.current_key_id());
    for plain in [secret.as_bytes(), &key[..]] {
        assert!(!stored.windows(plain.len()).any(|w| w == plain));
    }

    // Members may do nothing here.
    let member = create_user(&app, &pro.token, "member@wh-pro.example.com", "member").await;
    let member_token = token_for(&app, pro.id, id_of(&member), Role::Member);
    for r in [
        app.get("/webhooks", &member_token).send().await.unwrap(),
        app.get(&format!("/webhooks/{id}"), &member_token)
            .send()
            .await
            .unwrap(),
        app.post("/webhooks", &member_token)
            .json(&json!({"url": "https://93.184.215.14/x", "events": ["task.*"]}))
            .send()
            .await
            .unwrap(),
        app.post(&format!("/webhooks/{id}/rotate-secret"), &member_token)
            .send()
            .await
            .unwrap(),
        app.delete(&format!("/webhooks/{id}"), &member_token)
            .send()
            .await
            .unwrap(),
    ] {
        assert_problem(r, 403, "forbidden").await;
    }

    // PATCH: a private URL is refused there too; events and status change.
    let r = app
        .patch(&format!("/webhooks/{id}"), &pro.token)
        .json(&json!({"url": "https://192.168.1.1/"}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 422, "validation_failed").await;
    let patched = expect(
        app.patch(&format!("/webhooks/{id}"), &pro.token)
            .json(&json!({"events": ["user.*"], "status": "disabled"}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(patched["events"], json!(["user.*"]));
    assert_eq!(patched["status"], "disabled");
    assert_eq!(patched["url"], created["url"]);

    let r = app
        .delete(&format!("/webhooks/{id}"), &pro.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let r = app
        .get(&format!("/webhooks/{id}"), &pro.token)
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "not_found").await;

    // The queue and the outcomes are in /metrics.
    let metrics = app.metrics_text().await;
    for name in [
        "tenantry_webhook_attempts_in_flight",
        "tenantry_webhook_due_tenants",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
}

#[tokio::test]
async fn deliveries_are_signed_as_standard_webhooks_and_rotation_signs_with_both() {
    let rig = rig(None).await;
    let t = rig.tenant("wh-sign").await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    let created = rig.webhook(&t.token, &receiver.url, &["task.*"]).await;
    let id = id_of(&created);
    let secret = created["secret"].as_str().unwrap().to_string();

    let project = create_project(&rig.app, &t.token, "Signed").await;
    let task = create_task(&rig.app, &t.token, id_of(&project), "Sign me").await;
    assert_eq!(rig.deliver().await, 1, "the project is not subscribed to");
    let got = receiver.all();
    assert_eq!(got.len(), 1);
    let delivery = &got[0];
    standardwebhooks::Webhook::new(&secret)
        .unwrap()
        .verify(&delivery.body, &delivery.headers)
        .expect("the reference library verifies the delivery");
    let body = delivery.json();
    assert_eq!(body["type"], "task.created");
    assert_eq!(body["data"]["id"], task["id"]);
    assert_eq!(body["data"]["title"], "Sign me");
    at(&body["timestamp"]);
    assert_eq!(delivery.header("content-type"), "application/json");

    let log = rig.deliveries(&t.token, id, "").await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["status"], "succeeded");
    assert_eq!(log[0]["response_code"], 200);
    assert_eq!(log[0]["response_body"], "answer 200");
    assert_eq!(log[0]["attempt"], 1);
    let message = log[0]["message_id"]
        .as_str()
        .unwrap()
        .parse::<Uuid>()
        .unwrap();
    assert_eq!(
        delivery.header("webhook-id"),
        format!("msg_{}", message.simple())
    );

    // The outbox delivers at least once: fanning the same events out again adds no message.
    let db = rig.app.superuser_db().await;
    db.execute(
        "update app.outbox set processed_at = null, attempts = 0, next_attempt_at = now() \
         where tenant_id = $1",
        &[&t.id],
    )
    .await
    .unwrap();
    assert_eq!(rig.deliver().await, 0);
    let messages: i64 = db
        .query_one(
            "select count(*) from app.webhook_messages where tenant_id = $1",
            &[&t.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(messages, 1);

    // Rotation: the new secret and the old one both sign for a day.
    let rotated = expect(
        rig.app
            .post(&format!("/webhooks/{id}/rotate-secret"), &t.token)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let new_secret = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, secret);
    let expires = at(&rotated["previous_secret_expires_at"]);
    assert!(expires > Utc::now() + TimeDelta::hours(23));
    let queued = expect(
        rig.app
            .post(&format!("/webhooks/{id}/test"), &t.token)
            .send()
            .await
            .unwrap(),
        202,
    )
    .await;
    assert_eq!(queued["message_ids"].as_array().unwrap().len(), 1);
    assert_eq!(rig.deliver().await, 1);
    let test = receiver.all().pop().unwrap();
    assert_eq!(test.json()["type"], "webhook.test");
    assert_eq!(test.header("webhook-signature").split(' ').count(), 2);
    for key in [&secret, &new_secret] {
        standardwebhooks::Webhook::new(key)
            .unwrap()
            .verify(&test.body, &test.headers)
            .expect("either secret verifies during the overlap");
    }
    // A forged body fails the reference verification.
    let mut forged = test.body.clone();
    forged.push(b' ');
    assert!(standardwebhooks::Webhook::new(&new_secret)
        .unwrap()
        .verify(&forged, &test.headers)
        .is_err());
}

/// The published test vector of the Standard Webhooks libraries, signed by the reference crate
/// and by ours.
#[test]
fn the_reference_crate_and_ours_agree_on_the_published_vector() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (msg_id, timestamp, body) = (
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330i64,
        br#"{"test": 2432232314}"#,
    );
    let expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    let reference = standardwebhooks::Webhook::new(secret)
        .unwrap()
        .sign(msg_id, timestamp, body)
        .unwrap();
    assert_eq!(reference, expected);
    assert_eq!(
        tenantry::webhooks::signing::sign(secret, msg_id, timestamp, body).unwrap(),
        expected
    );
}

#[tokio::test]
async fn failures_follow_the_schedule_then_dead_letter_and_are_replayed() {
    let rig = rig(None).await;
    let t = rig.tenant("wh-retry").await;
    let receiver = Receiver::start(Reply::Status(500)).await;
    let id = id_of(&rig.webhook(&t.token, &receiver.url, &["project.*"]).await);

    create_project(&rig.app, &t.token, "Doomed").await;
    assert_eq!(rig.deliver().await, 1);
    for (retry, secs) in [1i64, 5, 30, 300, 3600].into_iter().enumerate() {
        let log = rig.deliveries(&t.token, id, "").await;
        assert_eq!(log.len(), retry + 1);
        assert_eq!(log[0]["status"], "failed");
        assert_eq!(log[0]["response_code"], 500);
        let wait = at(&log[0]["next_retry_at"]) - at(&log[0]["created_at"]);
        let (low, high) = (
            TimeDelta::seconds(secs),
            TimeDelta::milliseconds(secs * 1100) + TimeDelta::milliseconds(1),
        );
        assert!(wait >= low && wait <= high, "retry {retry}: {wait}");
        // Not due yet: nothing is sent.
        rig.clock.advance(low - TimeDelta::milliseconds(1));
        assert_eq!(
            rig.dispatcher.run_once().await.unwrap(),
            0,
            "retry {retry} too early"
        );
        rig.clock.advance(high - low + TimeDelta::milliseconds(2));
        assert_eq!(rig.dispatcher.run_once().await.unwrap(), 1, "retry {retry}");
    }
    // Six attempts, one message id: then a dead letter, and nothing more is sent.
    let got = receiver.all();
    assert_eq!(got.len(), 6);
    let ids: HashSet<String> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), 1);
    rig.clock.advance(TimeDelta::days(1));
    assert_eq!(rig.dispatcher.run_once().await.unwrap(), 0);
    let dead = rig.deliveries(&t.token, id, "?status=dead").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["attempt"], 6);
    assert!(dead[0]["next_retry_at"].is_null());

    // Replay one dead letter once the receiver is fixed.
    receiver.set_default(Reply::Status(204));
    let delivery = id_of(&dead[0]);
    let queued = expect(
        rig.app
            .post(
                &format!("/webhooks/{id}/deliveries/{delivery}/retry"),
                &t.token,
            )
            .send()
            .await
            .unwrap(),
        202,
    )
    .await;
    assert_eq!(queued["message_ids"][0], dead[0]["message_id"]);
    assert_eq!(rig.dispatcher.run_once().await.unwrap(), 1);
    assert_eq!(
        receiver.all().pop().unwrap().header("webhook-id"),
        got[0].header("webhook-id")
    );
    let log = rig.deliveries(&t.token, id, "?status=succeeded").await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["attempt"], 7);

    // Bulk replay: two more dead letters, replayed together.
    receiver.set_default(Reply::Status(500));
    create_project(&rig.app, &t.token, "Doomed 2").await;
    create_project(&rig.app, &t.token, "Doomed 3").await;
    rig.fan_out().await;
    for _ in 0..6 {
        assert_eq!(rig.dispatcher.run_once().await.unwrap(), 2);
        rig.clock.advance(TimeDelta::hours(2));
    }
    assert_eq!(rig.dispatcher.run_once().await.unwrap(), 0);
    assert_eq!(rig.deliveries(&t.token, id, "?status=dead").await.len(), 3);
    receiver.set_default(Reply::Status(200));
    let replayed = expect(
        rig.app
            .post(&format!("/webhooks/{id}/replay-dead"), &t.token)
            .send()
            .await
            .unwrap(),
        202,
    )
    .await;
    assert_eq!(replayed["message_ids"].as_array().unwrap().len(), 2);
    assert_eq!(rig.dispatcher.run_once().await.unwrap(), 2);
    assert_eq!(
        rig.deliveries(&t.token, id, "?status=succeeded")
            .await
            .len(),
        3
    );
    // Nothing left to replay.
    let again = expect(
        rig.app
            .post(&format!("/webhooks/{id}/replay-dead"), &t.token)
            .send()
            .await
            .unwrap(),
        202,
    )
    .await;
    assert_eq!(again["message_ids"], json!([]));
}

#[tokio::test]
async fn retry_after_gone_redirects_and_hanging_receivers() {
    let rig = rig(None).await;
    let t = rig.tenant("wh-answers").await;
    let busy = Receiver::start(Reply::With(503, vec![("retry-after", "120".into())])).await;
    let target = Receiver::start(Reply::Status(200)).await;
    let redirecting =
        Receiver::start(Reply::With(307, vec![("location", target.url.clone())])).await;
    let hanging = Receiver::start(Reply::Hang(Duration::from_secs(3))).await;
    let gone = Receiver::start(Reply::Status(410)).await;
    let busy_id = id_of(&rig.webhook(&t.token, &busy.url, &["project.*"]).await);
    let redirect_id = id_of(
        &rig.webhook(&t.token, &redirecting.url, &["project.*"])
            .await,
    );
    let hang_id = id_of(&rig.webhook(&t.token, &hanging.url, &["project.*"]).await);
    let gone_id = id_of(&rig.webhook(&t.token, &gone.url, &["project.*"]).await);

    create_project(&rig.app, &t.token, "Answers").await;
    assert_eq!(rig.deliver().await, 4);

    // Retry-After is honoured over the 1 s of the schedule.
    let log = rig.deliveries(&t.token, busy_id, "").await;
    assert_eq!(log[0]["response_code"], 503);
    let wait = at(&log[0]["next_retry_at"]) - at(&log[0]["created_at"]);
    assert!(wait >= TimeDelta::seconds(120), "{wait}");
    rig.clock.advance(TimeDelta::seconds(60));
    assert_eq!(
        rig.dispatcher.run_once().await.unwrap(),
        2,
        "only the 1 s retries"
    );
    assert_eq!(busy.count(), 1);

    // A redirect is the receiver's answer, never followed.
    let log = rig.deliveries(&t.token, redirect_id, "").await;
    assert_eq!(log[0]["response_code"], 307);
    assert_eq!(log[0]["status"], "failed");
    assert_eq!(target.count(), 0);

    // A receiver that hangs past the timeout is a failed attempt.
    let log = rig.deliveries(&t.token, hang_id, "").await;
    assert!(log[0]["response_code"].is_null());
    assert!(
        log[0]["error"].as_str().unwrap().starts_with("timeout"),
        "{}",
        log[0]
    );

    // 410 Gone disables the endpoint and records the event; its message is a dead letter.
    let log = rig.deliveries(&t.token, gone_id, "").await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["status"], "dead");
    let endpoint = rig.webhook_status(&t.token, gone_id).await;
    assert_eq!(endpoint["status"], "disabled");
    assert!(endpoint["disabled_reason"]
        .as_str()
        .unwrap()
        .contains("410"));
    assert_eq!(
        rig.outbox_events(t.id, "webhook.endpoint_disabled").await,
        1
    );
    create_project(&rig.app, &t.token, "After gone").await;
    rig.clock.advance(TimeDelta::hours(3));
    rig.deliver().await;
    assert_eq!(gone.count(), 1, "a disabled endpoint gets nothing");
}

#[tokio::test]
async fn an_endpoint_failing_for_five_days_is_disabled() {
    let rig = rig(None).await;
    let t = rig.tenant("wh-five-days").await;
    let receiver = Receiver::start(Reply::Status(500)).await;
    let id = id_of(&rig.webhook(&t.token, &receiver.url, &["project.*"]).await);
    create_project(&rig.app, &t.token, "Failing").await;
    assert_eq!(rig.deliver().await, 1);
    rig.clock.advance(TimeDelta::days(4));
    assert_eq!(rig.dispatcher.run_once().await.unwrap(), 1);
    assert_eq!(rig.webhook_status(&t.token, id).await["status"], "enabled");
    rig.clock.advance(TimeDelta::days(1));
    assert_eq!(rig.dispatcher.run_once().await.unwrap(), 1);
    let endpoint = rig.webhook_status(&t.token, id).await;
    assert_eq!(endpoint["status"], "disabled");
    assert!(endpoint["disabled_reason"]
        .as_str()
        .unwrap()
        .contains("5 days"));
    assert_eq!(
        rig.outbox_events(t.id, "webhook.endpoint_disabled").await,
        1
    );
    rig.clock.advance(TimeDelta::days(1));
    assert_eq!(rig.dispatcher.run_once().await.unwrap(), 0);

    // Enabled again by an admin, its queue resumes.
    receiver.set_default(Reply::Status(200));
    expect(
        rig.app
            .patch(&format!("/webhooks/{id}"), &t.token)
            .json(&json!({"status": "enabled"}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(rig.dispatcher.run_once().await.unwrap(), 1);
    assert_eq!(
        rig.deliveries(&t.token, id, "?status=succeeded")
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn payloads_over_one_mib_are_refused_at_enqueue() {
    let rig = rig(None).await;
    let t = rig.tenant("wh-big").await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    let id = id_of(&rig.webhook(&t.token, &receiver.url, &["task.*"]).await);
    let huge = "x".repeat(1024 * 1024 + 1);
    rig.app
        .superuser_db()
        .await
        .execute(
            "insert into app.outbox (tenant_id, id, event_type, payload) \
             values ($1, $2, 'task.created', jsonb_build_object('title', $3::text))",
            &[&t.id, &Uuid::now_v7(), &huge],
        )
        .await
        .unwrap();
    assert_eq!(rig.deliver().await, 0);
    assert_eq!(receiver.count(), 0);
    let log = rig.deliveries(&t.token, id, "").await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["status"], "refused");
    assert!(log[0]["error"].as_str().unwrap().contains("over the limit"));
    let delivery = id_of(&log[0]);
    let r = rig
        .app
        .post(
            &format!("/webhooks/{id}/deliveries/{delivery}/retry"),
            &t.token,
        )
        .send()
        .await
        .unwrap();
    assert_problem(r, 422, "validation_failed").await;
}

#[tokio::test]
async fn two_dispatchers_share_the_rate_limit_and_never_send_an_attempt_twice() {
    let rig = rig(Some(5)).await;
    let t = rig.tenant("wh-limit").await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    rig.webhook(&t.token, &receiver.url, &["project.*"]).await;
    for i in 0..12 {
        create_project(&rig.app, &t.token, &format!("P{i}")).await;
    }
    rig.fan_out().await;
    // A second instance: its own pool and dispatcher, the same clock.
    let other_pools = Pools::new(&rig.app.config).unwrap();
    let other = dispatcher(&rig.app.config, &other_pools, rig.clock.clone(), Some(5));
    let mut sent = Vec::new();
    for _minute in 0..3 {
        let mut this_minute = 0;
        for _ in 0..3 {
            let (a, b) = tokio::join!(rig.dispatcher.run_once(), other.run_once());
            this_minute += a.unwrap() + b.unwrap();
        }
        sent.push(this_minute);
        rig.clock.advance(TimeDelta::minutes(1));
    }
    assert_eq!(
        sent,
        vec![5, 5, 2],
        "at most 5 a minute over both instances"
    );
    receiver.assert_each_sent_once(12);
}

/// The limit holds over any 60 s, not per calendar minute: a tenant that used its budget just
/// before a minute ends gets nothing more just after it (a calendar-minute window would have
/// let it send twice its limit within 20 s).
#[tokio::test]
async fn the_rate_limit_holds_across_a_minute_boundary() {
    let rig = rig(Some(5)).await;
    let t = rig.tenant("wh-boundary").await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    rig.webhook(&t.token, &receiver.url, &["project.*"]).await;
    for i in 0..12 {
        create_project(&rig.app, &t.token, &format!("P{i}")).await;
    }
    rig.fan_out().await;
    // Ten seconds before the end of a calendar minute.
    let now = rig.clock.now();
    let into_minute = now - now.duration_trunc(TimeDelta::minutes(1)).unwrap();
    let mut to_50s = TimeDelta::seconds(50) - into_minute;
    if to_50s < TimeDelta::zero() {
        to_50s += TimeDelta::minutes(1);
    }
    rig.clock.advance(to_50s);
    let mut sent = vec![rig.dispatcher.run_once().await.unwrap()];
    for step in [20, 39, 1, 30, 30] {
        rig.clock.advance(TimeDelta::seconds(step));
        sent.push(rig.dispatcher.run_once().await.unwrap());
    }
    assert_eq!(
        sent,
        vec![5, 0, 0, 5, 0, 2],
        "5 at :50, none until 60 s later, then 5, then the rest 60 s after that"
    );
    receiver.assert_each_sent_once(12);
}

#[tokio::test]
async fn tenants_never_see_or_touch_each_others_webhooks() {
    let rig = rig(None).await;
    let a = rig.tenant("wh-a").await;
    let b = rig.tenant("wh-b").await;
    let receiver = Receiver::start(Reply::Status(500)).await;
    let a_hook = rig.webhook(&a.token, &receiver.url, &["project.*"]).await;
    let a_id = id_of(&a_hook);
    let b_id = id_of(&rig.webhook(&b.token, &receiver.url, &["task.*"]).await);
    create_project(&rig.app, &a.token, "A's").await;
    assert_eq!(rig.deliver().await, 1);
    let a_delivery = id_of(&rig.deliveries(&a.token, a_id, "").await[0]);

    let app = &rig.app;
    let tries = [
        app.get(&format!("/webhooks/{a_id}"), &b.token),
        app.patch(&format!("/webhooks/{a_id}"), &b.token)
            .json(&json!({"url": "http://127.0.0.1:9/stolen"})),
        app.delete(&format!("/webhooks/{a_id}"), &b.token),
        app.post(&format!("/webhooks/{a_id}/test"), &b.token),
        app.post(&format!("/webhooks/{a_id}/rotate-secret"), &b.token),
        app.get(&format!("/webhooks/{a_id}/deliveries"), &b.token),
        app.get(
            &format!("/webhooks/{a_id}/deliveries?status=dead"),
            &b.token,
        ),
        app.post(
            &format!("/webhooks/{a_id}/deliveries/{a_delivery}/retry"),
            &b.token,
        ),
        // A's delivery under B's own endpoint.
        app.post(
            &format!("/webhooks/{b_id}/deliveries/{a_delivery}/retry"),
            &b.token,
        ),
        app.post(&format!("/webhooks/{a_id}/replay-dead"), &b.token),
    ];
    for request in tries {
        let r = request.send().await.unwrap();
        assert_problem(r, 404, "not_found").await;
    }
    let b_list = expect(app.get("/webhooks", &b.token).send().await.unwrap(), 200).await;
    let listed: Vec<Uuid> = b_list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(listed, vec![b_id]);
    // A's endpoint is as it was, still signing with its own secret, and nothing was queued.
    let after = rig.webhook_status(&a.token, a_id).await;
    assert_eq!(after["url"], a_hook["url"]);
    assert_eq!(after["status"], "enabled");
    rig.clock.advance(TimeDelta::seconds(2));
    assert_eq!(rig.deliver().await, 1, "only the scheduled retry");
    standardwebhooks::Webhook::new(a_hook["secret"].as_str().unwrap())
        .unwrap()
        .verify(
            &receiver.all().pop().unwrap().body,
            &receiver.all().pop().unwrap().headers,
        )
        .expect("A's secret was not rotated by B");
}

/// tests/clients/verify_webhooks.py verifies real deliveries with the PyPI `standardwebhooks`
/// package, from the venv scripts/test.sh prepares (target/webhooks-venv); under CI a missing
/// venv fails, a local run without it skips with a message.
#[tokio::test]
async fn the_python_reference_library_verifies_real_deliveries() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("target/webhooks-venv/bin/python");
    if !python.exists() {
        assert!(
            !ci,
            "target/webhooks-venv is missing: scripts/test.sh prepares it"
        );
        eprintln!("SKIPPED the_python_reference_library_verifies_real_deliveries: run scripts/test.sh (or python3 -m venv target/webhooks-venv && target/webhooks-venv/bin/pip install -r tests/clients/requirements.txt)");
        return;
    }
    let rig = rig(None).await;
    let t = rig.tenant("wh-python").await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    let created = rig
        .webhook(&t.token, &receiver.url, &["project.*", "task.*"])
        .await;
    let id = id_of(&created);
    let first = created["secret"].as_str().unwrap().to_string();
    let project = create_project(&rig.app, &t.token, "Python").await;
    create_task(&rig.app, &t.token, id_of(&project), "Verified in Python").await;
    assert_eq!(rig.deliver().await, 2);
    let rotated = expect(
        rig.app
            .post(&format!("/webhooks/{id}/rotate-secret"), &t.token)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let second = rotated["secret"].as_str().unwrap().to_string();
    create_project(&rig.app, &t.token, "Python after rotation").await;
    assert_eq!(rig.deliver().await, 1);
    let deliveries: Vec<Value> = receiver
        .all()
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let secrets = if i < 2 {
                vec![first.clone()]
            } else {
                vec![first.clone(), second.clone()]
            };
            let headers: serde_json::Map<String, Value> =
                ["webhook-id", "webhook-timestamp", "webhook-signature"]
                    .iter()
                    .map(|h| (h.to_string(), Value::String(r.header(h))))
                    .collect();
            json!({"secrets": secrets, "headers": headers,
                   "body": String::from_utf8(r.body.clone()).unwrap()})
        })
        .collect();
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("webhook-deliveries-{}.json", Uuid::now_v7()));
    std::fs::write(&file, serde_json::to_vec(&deliveries).unwrap()).unwrap();
    let script = root.join("tests/clients/verify_webhooks.py");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .arg(&file)
            .output()
    })
    .await
    .unwrap()
    .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "verify_webhooks.py failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.contains("verified")).count(),
        3,
        "{stdout}"
    );
}

/// A worker whose fan-out hands what it writes to `dispatcher` (as the server's does), with
/// `also` after it.
fn handing_worker(rig: &Rig, dispatcher: &Dispatcher, also: Option<Fails>) -> Worker {
    let pools = Pools::new(&rig.app.config).unwrap();
    let mut registry = Registry::new().with(FanOut::handing_to(dispatcher.clone()));
    if let Some(fails) = also {
        registry = registry.with(fails);
    }
    Worker::new(
        pools.app.clone(),
        registry,
        WorkerOptions {
            batch_size: 50,
            backoff_base: Duration::ZERO,
            max_attempts: 2,
            ..WorkerOptions::default()
        },
    )
}

/// Fails every event after the fan-out ran in the same transaction.
struct Fails;

impl JobHandler for Fails {
    fn name(&self) -> &'static str {
        "fails"
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type.starts_with("project.")
    }

    fn handle<'a>(
        &'a self,
        _tx: &'a Transaction<'a>,
        _job: &'a Job,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async {
            Err(JobError::Handler {
                handler: "fails",
                reason: "on purpose".into(),
            })
        })
    }
}

/// (status, attempts, leased) of each of the tenant's messages.
async fn messages(rig: &Rig, tenant: Uuid) -> Vec<(String, i32, bool)> {
    rig.app
        .superuser_db()
        .await
        .query(
            "select status, attempts, locked_until is not null from app.webhook_messages \
             where tenant_id = $1 order by id",
            &[&tenant],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// Waits (up to 10 s) until `done` holds of the tenant's messages.
async fn wait_for_messages(
    rig: &Rig,
    tenant: Uuid,
    done: impl Fn(&[(String, i32, bool)]) -> bool,
) -> Vec<(String, i32, bool)> {
    for _ in 0..200 {
        let now = messages(rig, tenant).await;
        if done(&now) {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "messages never got there: {:?}",
        messages(rig, tenant).await
    );
}

/// The fan-out writes what the limit admits leased to its server's dispatcher and hands it
/// over: sent with no claim (no run of the dispatcher), the rest written due for the claims,
/// and the limit holds over both.
#[tokio::test]
async fn the_fan_out_hands_over_what_the_limit_admits_and_leaves_the_rest_due() {
    let rig = rig(Some(5)).await;
    let t = rig.tenant("wh-handover").await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    rig.webhook(&t.token, &receiver.url, &["project.*"]).await;
    for i in 0..8 {
        create_project(&rig.app, &t.token, &format!("P{i}")).await;
    }
    let worker = handing_worker(&rig, &rig.dispatcher, None);
    while worker.run_once().await.unwrap() > 0 {}
    let after = wait_for_messages(&rig, t.id, |m| {
        m.iter()
            .filter(|(status, ..)| status == "succeeded")
            .count()
            == 5
    })
    .await;
    assert_eq!(
        receiver.count(),
        5,
        "the limit's 5 were sent without a claim"
    );
    let due: Vec<_> = after.iter().filter(|(s, ..)| s == "pending").collect();
    assert_eq!(due.len(), 3);
    assert!(
        due.iter()
            .all(|(_, attempts, leased)| *attempts == 0 && !leased),
        "the rest is due, not leased: {due:?}"
    );
    assert!(
        after
            .iter()
            .filter(|(s, ..)| s == "succeeded")
            .all(|(_, attempts, leased)| *attempts == 1 && !leased),
        "each sent once, recorded and its lease released: {after:?}"
    );
    assert_eq!(
        rig.dispatcher.run_once().await.unwrap(),
        0,
        "the window is spent"
    );
    rig.clock.advance(TimeDelta::minutes(1));
    assert_eq!(rig.dispatcher.run_once().await.unwrap(), 3);
    receiver.assert_each_sent_once(8);
}

/// Messages handed over and lost before their send (the process died after the fan-out's
/// commit) stay leased until the lease ends, and are then claimed and sent once.
#[tokio::test]
async fn handed_over_messages_lost_before_their_send_are_claimed_once_the_lease_ends() {
    let rig = rig(None).await;
    let t = rig.tenant("wh-handover-lost").await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    rig.webhook(&t.token, &receiver.url, &["project.*"]).await;
    for i in 0..3 {
        create_project(&rig.app, &t.token, &format!("P{i}")).await;
    }
    // A dispatcher whose lease is too short for any send to start within it: it takes the
    // hand-over and sends nothing, as one that died would.
    let pools = Pools::new(&rig.app.config).unwrap();
    let lost = dispatcher_with(
        &rig.app.config,
        &pools,
        rig.clock.clone(),
        None,
        DispatcherOptions {
            lease: Duration::from_secs(1),
            ..DispatcherOptions::default()
        },
    );
    let worker = handing_worker(&rig, &lost, None);
    while worker.run_once().await.unwrap() > 0 {}
    let leased = messages(&rig, t.id).await;
    assert_eq!(leased.len(), 3);
    assert!(
        leased
            .iter()
            .all(|(s, attempts, leased)| s == "pending" && *attempts == 1 && *leased),
        "written leased, the attempt counted: {leased:?}"
    );
    assert_eq!(
        rig.dispatcher.run_once().await.unwrap(),
        0,
        "no other claim takes them while the lease runs"
    );
    assert_eq!(receiver.count(), 0);
    rig.clock.advance(TimeDelta::seconds(2));
    assert_eq!(rig.dispatcher.run_once().await.unwrap(), 3);
    receiver.assert_each_sent_once(3);
    assert!(messages(&rig, t.id)
        .await
        .iter()
        .all(|(s, attempts, _)| s == "succeeded" && *attempts == 2));
}

/// A batch rolled back after its fan-out (another handler failed) hands nothing over: its
/// leases and messages are gone with the transaction, and nothing is sent.
#[tokio::test]
async fn a_rolled_back_batch_hands_nothing_over() {
    let rig = rig(None).await;
    let t = rig.tenant("wh-handover-rollback").await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    rig.webhook(&t.token, &receiver.url, &["project.*"]).await;
    create_project(&rig.app, &t.token, "P").await;
    let worker = handing_worker(&rig, &rig.dispatcher, Some(Fails));
    // The whole batch, then the event alone (retried once, then dead-lettered).
    for _ in 0..3 {
        worker.run_once().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.count(), 0);
    assert_eq!(messages(&rig, t.id).await, Vec::new());
    assert_eq!(rig.dispatcher.run_once().await.unwrap(), 0);
}

/// A fan-out never waits for a rate-window row another transaction holds (a claim, another
/// instance's fan-out): it leases nothing, writes its messages due, and the claims send them
/// once the row is free.
#[tokio::test]
async fn a_fan_out_leaves_its_messages_due_when_the_window_row_is_held() {
    // A statement that waited for the row would wait far longer than the test allows.
    let rig = rig_with(Some(5), |config| {
        config.statement_timeout = Duration::from_secs(120);
    })
    .await;
    let t = rig.tenant("wh-handover-busy").await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    rig.webhook(&t.token, &receiver.url, &["project.*"]).await;
    create_project(&rig.app, &t.token, "P").await;
    let mut holder = rig.app.superuser_db().await;
    holder
        .execute(
            "insert into app.webhook_rate_windows (tenant_id, window_start) values ($1, now())",
            &[&t.id],
        )
        .await
        .unwrap();
    let held = holder.transaction().await.unwrap();
    held.execute(
        "select 1 from app.webhook_rate_windows where tenant_id = $1 for update",
        &[&t.id],
    )
    .await
    .unwrap();
    let worker = handing_worker(&rig, &rig.dispatcher, None);
    let ran = tokio::time::timeout(Duration::from_secs(30), async {
        while worker.run_once().await.unwrap() > 0 {}
    })
    .await;
    assert!(ran.is_ok(), "the fan-out waited for the held window row");
    assert_eq!(
        messages(&rig, t.id).await,
        vec![("pending".to_string(), 0, false)],
        "written due, not leased"
    );
    assert_eq!(receiver.count(), 0);
    held.commit().await.unwrap();
    assert_eq!(rig.dispatcher.run_once().await.unwrap(), 1);
    assert_eq!(receiver.count(), 1);
}

/// The dispatcher's claims and records commit without waiting for the WAL flush (a lost one is
/// a message sent again), but only inside their own transactions: the connection goes back to
/// the pool waiting for flushes again, so the next user's commits (a domain write's 201) are
/// durable. One connection in the pool, so the one checked is the one the dispatcher used.
#[tokio::test]
async fn the_dispatchers_commit_setting_stays_in_its_transactions() {
    let rig = rig(None).await;
    let t = rig.tenant("wh-sync").await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    rig.webhook(&t.token, &receiver.url, &["project.*"]).await;
    create_project(&rig.app, &t.token, "P").await;
    rig.fan_out().await;
    let mut config = rig.app.config.clone();
    config.app_pool_size = 1;
    let one = Pools::new(&config).unwrap();
    let sender = dispatcher(&config, &one, rig.clock.clone(), None);
    assert_eq!(sender.run_once().await.unwrap(), 1);
    receiver.assert_each_sent_once(1);
    let conn = one.app.get().await.unwrap();
    let row = conn
        .query_one("show synchronous_commit", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "on");
}
