//! A local fake of Stripe's API for the billing tests: it records every request (method, path,
//! form-encoded parameters, `Idempotency-Key`, `Authorization`) and answers with Stripe's own
//! fixture objects (tests/fixtures/stripe, from stripe-mock) given fresh ids, so async-stripe
//! parses what a real Stripe would send. Like Stripe, a request repeating an `Idempotency-Key`
//! gets the first answer back and creates nothing. `fail_next(n)` makes the next `n` requests
//! answer 500 before doing anything (an outage in front of the API: nothing is saved under
//! their keys).

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};
use uuid::Uuid;

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub form: Vec<(String, String)>,
    pub idempotency_key: Option<String>,
    pub authorization: Option<String>,
    /// A 500 of `fail_next`, or an idempotent replay.
    pub failed: bool,
    pub replayed: bool,
}

impl Recorded {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    answered: HashMap<String, Value>,
    fail_next: usize,
}

#[derive(Clone)]
pub struct FakeStripe {
    pub base: String,
    state: Arc<Mutex<State>>,
}

fn fixtures() -> &'static Value {
    static FIXTURES: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    FIXTURES.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/stripe/fixtures.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).expect("read stripe fixtures"))
            .expect("stripe fixtures are JSON")
    })
}

fn fixture(name: &str) -> Value {
    fixtures()[name].clone()
}

fn fresh_id(prefix: &str) -> String {
    format!("{prefix}_{}", Uuid::new_v4().simple())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl FakeStripe {
    pub async fn start() -> FakeStripe {
        let state = Arc::new(Mutex::new(State::default()));
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = state.clone();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(web::Data::new(shared.clone()))
                        .default_service(web::to(answer))
                })
                .workers(1)
                .bind("127.0.0.1:0")
                .expect("bind fake stripe");
                let port = server.addrs()[0].port();
                tx.send(port).expect("send port");
                let _ = server.run().await;
            })
        });
        let port = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(10)))
            .await
            .expect("join")
            .expect("fake stripe did not start");
        FakeStripe {
            base: format!("http://127.0.0.1:{port}/"),
            state,
        }
    }

    pub fn fail_next(&self, n: usize) {
        self.state.lock().unwrap().fail_next = n;
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests to `path` that Stripe acted on (not failed, not replayed).
    pub fn acted(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path && !r.failed && !r.replayed)
            .collect()
    }

    pub fn to(&self, prefix: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with(prefix))
            .collect()
    }

    /// Waits (polling; no fixed sleep decides the outcome) until `check` holds.
    pub async fn wait_for(&self, what: &str, check: impl Fn(&FakeStripe) -> bool) {
        for _ in 0..300 {
            if check(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "fake Stripe: timed out waiting for {what}; got {:#?}",
            self.requests()
        );
    }
}

fn form_value(form: &[(String, String)], key: &str) -> Option<String> {
    form.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

fn metadata(form: &[(String, String)]) -> Value {
    let mut map = serde_json::Map::new();
    for (k, v) in form {
        if let Some(key) = k
            .strip_prefix("metadata[")
            .and_then(|k| k.strip_suffix(']'))
        {
            map.insert(key.to_string(), json!(v));
        }
    }
    Value::Object(map)
}

fn respond(path: &str, form: &[(String, String)]) -> Option<Value> {
    let now = now();
    if path == "/v1/customers" {
        let mut c = fixture("customer");
        c["id"] = json!(fresh_id("cus"));
        c["created"] = json!(now);
        c["name"] = json!(form_value(form, "name"));
        c["metadata"] = metadata(form);
        return Some(c);
    }
    if path == "/v1/subscriptions" {
        let mut s = fixture("subscription");
        let id = fresh_id("sub");
        s["id"] = json!(id);
        s["created"] = json!(now);
        s["start_date"] = json!(now);
        s["status"] = json!("active");
        s["customer"] = json!(form_value(form, "customer"));
        s["metadata"] = metadata(form);
        let item = &mut s["items"]["data"][0];
        item["id"] = json!(fresh_id("si"));
        item["subscription"] = json!(id);
        item["price"]["id"] = json!(form_value(form, "items[0][price]"));
        item["current_period_start"] = json!(now);
        item["current_period_end"] = json!(now + 30 * 86_400);
        // async-stripe rc.10 pins API version 2026-09-30, whose subscriptions always carry
        // `billing_schedules`; the fixture (2025-11) predates the member.
        if s.get("billing_schedules").is_none() {
            s["billing_schedules"] = json!([]);
        }
        return Some(s);
    }
    if let Some(item_id) = path.strip_prefix("/v1/subscription_items/") {
        let mut i = fixture("subscription_item");
        i["id"] = json!(item_id);
        i["price"]["id"] = json!(form_value(form, "price"));
        return Some(i);
    }
    if path == "/v1/billing/meter_events" {
        let mut e = fixture("billing.meter_event");
        e["created"] = json!(now);
        e["event_name"] = json!(form_value(form, "event_name"));
        e["identifier"] = json!(form_value(form, "identifier"));
        e["timestamp"] = json!(form_value(form, "timestamp").and_then(|t| t.parse::<i64>().ok()));
        e["payload"] = json!({
            "stripe_customer_id": form_value(form, "payload[stripe_customer_id]"),
            "value": form_value(form, "payload[value]"),
        });
        return Some(e);
    }
    None
}

fn stripe_error(kind: &str, message: &str) -> Value {
    json!({"error": {"type": kind, "message": message}})
}

async fn answer(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Arc<Mutex<State>>>,
) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let mut recorded = Recorded {
        method: req.method().to_string(),
        path: req.path().to_string(),
        form: form.clone(),
        idempotency_key: header("idempotency-key"),
        authorization: header("authorization"),
        failed: false,
        replayed: false,
    };
    let mut state = state.lock().unwrap();
    if state.fail_next > 0 {
        state.fail_next -= 1;
        recorded.failed = true;
        state.requests.push(recorded);
        return HttpResponse::InternalServerError()
            .json(stripe_error("api_error", "the fake Stripe is down"));
    }
    let cache_key = recorded
        .idempotency_key
        .as_ref()
        .map(|k| format!("{} {k}", recorded.path));
    if let Some(previous) = cache_key.as_ref().and_then(|k| state.answered.get(k)) {
        let previous = previous.clone();
        recorded.replayed = true;
        state.requests.push(recorded);
        return HttpResponse::Ok()
            .insert_header(("Idempotent-Replayed", "true"))
            .json(previous);
    }
    let Some(object) = respond(&recorded.path, &form) else {
        state.requests.push(recorded);
        return HttpResponse::NotFound().json(stripe_error(
            "invalid_request_error",
            "unrecognized request URL",
        ));
    };
    if let Some(key) = cache_key {
        state.answered.insert(key, object.clone());
    }
    state.requests.push(recorded);
    HttpResponse::Ok().json(object)
}
