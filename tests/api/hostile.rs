//! No input a client can send gives a 5xx: a 5xx is the server's own failure (API.md
//! "Errors"). Two halves:
//!
//! - `hostile_inputs_found_by_hand`: the concrete inputs that once reached PostgreSQL and came
//!   back as 500 (a NUL character in text, a date outside PostgreSQL's range, ...) and their
//!   neighbours, each with the answer it must get now.
//! - the property tests: arbitrary strings, numbers, dates, cursors, ids and header bytes, put in
//!   every place of every route family that a client controls, against a real server, real
//!   PostgreSQL and Redis: no answer is a 5xx. `PROPTEST_CASES` sets the cases per family
//!   (default [`DEFAULT_CASES`]), e.g. `PROPTEST_CASES=5000` for a long local run.

use std::future::Future;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::fixtures::{create_project, create_task, create_user, id_of};
use crate::helpers::{spawn_app, TestApp, TestTenant, OPERATOR_TOKEN};

/// Cases per route family in CI; each is one HTTP request.
const DEFAULT_CASES: u32 = 128;

struct Fixture {
    app: TestApp,
    /// A connection per request: a refusal sent before the body was read may close the
    /// connection, and a pooled one would then fail the next request on the client's side.
    http: reqwest::Client,
    tenant: TestTenant,
    project: Uuid,
    task: Uuid,
    member: Uuid,
}

async fn fixture() -> Fixture {
    let app = spawn_app().await;
    // Pro: API keys need a plan with API access.
    let tenant = app.create_tenant_on_plan("hostile", "pro").await;
    let project = id_of(&create_project(&app, &tenant.token, "Hostile").await);
    let task = id_of(&create_task(&app, &tenant.token, project, "First").await);
    let member =
        id_of(&create_user(&app, &tenant.token, "member@hostile.example.com", "member").await);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("http client");
    Fixture {
        app,
        http,
        tenant,
        project,
        task,
        member,
    }
}

impl Fixture {
    /// A tenant user's request (the admin's token).
    fn user(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, self.app.url(path))
            .bearer_auth(&self.tenant.token)
    }

    fn operator(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, self.app.url(path))
            .bearer_auth(OPERATOR_TOKEN)
    }

    /// A request naming the tenant by header, with no credentials (login).
    fn public(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, self.app.url(path))
            .header("x-tenant-id", &self.tenant.slug)
    }
}

/// Whose credentials a request carries.
#[derive(Clone, Copy, Debug)]
enum Who {
    /// The tenant admin's token.
    User,
    /// The platform operator's token.
    Operator,
    /// None: the tenant is named by `X-Tenant-ID`.
    Public,
}

impl Fixture {
    fn request(&self, who: Who, method: Method, path: &str) -> RequestBuilder {
        match who {
            Who::User => self.user(method, path),
            Who::Operator => self.operator(method, path),
            Who::Public => self.public(method, path),
        }
    }
}

/// What a hostile request must get.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// This status; for a 422, the first field error names this field.
    Exactly(u16, Option<&'static str>),
    /// Any 4xx: the answer is the client's fault, whatever the exact refusal.
    Refused,
    /// Anything but a 5xx (the input may well be acceptable).
    NoServerError,
}

struct Case {
    name: String,
    request: RequestBuilder,
    answer: Answer,
}

fn case(name: impl Into<String>, request: RequestBuilder, answer: Answer) -> Case {
    Case {
        name: name.into(),
        request,
        answer,
    }
}

const NUL: &str = "nul\u{0}inside";

/// Runs every case and reports all mismatches at once.
async fn check_all(cases: Vec<Case>) {
    let mut wrong = Vec::new();
    for Case {
        name,
        request,
        answer,
    } in cases
    {
        let response = match request.send().await {
            Ok(r) => r,
            Err(err) => {
                wrong.push(format!("{name}: no answer ({err})"));
                continue;
            }
        };
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let ok = match answer {
            Answer::Exactly(expected, field) => {
                status == expected
                    && field.is_none_or(|field| {
                        serde_json::from_str::<Value>(&text)
                            .ok()
                            .and_then(|b| b["errors"][0]["field"].as_str().map(str::to_string))
                            .as_deref()
                            == Some(field)
                    })
            }
            Answer::Refused => (400..500).contains(&status),
            Answer::NoServerError => status < 500,
        };
        if !ok {
            let text: String = text.chars().take(300).collect();
            wrong.push(format!("{name}: got {status}, want {answer:?}: {text}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

fn invalid(field: &'static str) -> Answer {
    Answer::Exactly(422, Some(field))
}

#[tokio::test]
async fn hostile_inputs_found_by_hand() {
    let f = fixture().await;
    let (project, task, member) = (f.project, f.task, f.member);
    let tenant_body = |field: &str, value: Value| {
        let mut body = json!({
            "name": "Hostile Co", "slug": "hostile-co", "admin_email": "admin@hostile-co.example.com",
            "admin_password": "correct-horse-battery",
        });
        body[field] = value;
        body
    };
    let mut cases = vec![
        // Provisioning (operator).
        case(
            "POST /tenants name with NUL",
            f.operator(Method::POST, "/tenants").json(&tenant_body("name", json!(NUL))),
            invalid("name"),
        ),
        case(
            "POST /tenants admin_email with NUL",
            f.operator(Method::POST, "/tenants")
                .json(&tenant_body("admin_email", json!("a\u{0}b@hostile-co.example.com"))),
            invalid("admin_email"),
        ),
        case(
            "POST /tenants admin_password with NUL",
            f.operator(Method::POST, "/tenants")
                .json(&tenant_body("admin_password", json!("correct-horse\u{0}battery"))),
            invalid("admin_password"),
        ),
        case(
            "POST /tenants slug with NUL",
            f.operator(Method::POST, "/tenants").json(&tenant_body("slug", json!(NUL))),
            invalid("slug"),
        ),
        case(
            "POST /tenants subdomain with NUL",
            f.operator(Method::POST, "/tenants").json(&tenant_body("subdomain", json!(NUL))),
            invalid("subdomain"),
        ),
        case(
            "POST /tenants plan with NUL",
            f.operator(Method::POST, "/tenants").json(&tenant_body("plan", json!(NUL))),
            invalid("plan"),
        ),
        case(
            "POST /tenants name of 100,000 characters",
            f.operator(Method::POST, "/tenants")
                .json(&tenant_body("name", json!("n".repeat(100_000)))),
            invalid("name"),
        ),
        case(
            "GET /admin/tenants?cursor=%00",
            f.operator(Method::GET, "/admin/tenants?cursor=%00"),
            Answer::Refused,
        ),
        case(
            "GET /admin/tenants?limit=-9223372036854775808",
            f.operator(Method::GET, "/admin/tenants?limit=-9223372036854775808"),
            Answer::NoServerError,
        ),
        case(
            "POST /admin/tenants/%00/suspend",
            f.operator(Method::POST, "/admin/tenants/%00/suspend"),
            Answer::Exactly(404, None),
        ),
        case(
            "GET /admin/tasks?tenant_id=%00",
            f.operator(Method::GET, "/admin/tasks?tenant_id=%00"),
            Answer::Exactly(422, Some("tenant_id")),
        ),
        case(
            "GET /admin/tasks?cursor=%00",
            f.operator(Method::GET, "/admin/tasks?cursor=%00"),
            Answer::Refused,
        ),
        // Login and API keys.
        case(
            "POST /auth/login email with NUL",
            f.public(Method::POST, "/auth/login")
                .json(&json!({"email": "admin\u{0}@hostile.example.com", "password": "whatever-it-is"})),
            invalid("email"),
        ),
        case(
            "POST /auth/login password with NUL",
            f.public(Method::POST, "/auth/login")
                .json(&json!({"email": "admin@hostile.example.com", "password": NUL})),
            invalid("password"),
        ),
        case(
            "POST /auth/login email of 100,000 characters",
            f.public(Method::POST, "/auth/login")
                .json(&json!({"email": "e".repeat(100_000), "password": "whatever-it-is"})),
            Answer::Refused,
        ),
        case(
            "POST /api-keys name with NUL",
            f.user(Method::POST, "/api-keys").json(&json!({"name": NUL})),
            invalid("name"),
        ),
        case(
            "POST /api-keys with a body that is not an object",
            f.user(Method::POST, "/api-keys").json(&json!([1, 2])),
            Answer::Exactly(422, None),
        ),
        // Users.
        case(
            "POST /users email with NUL",
            f.user(Method::POST, "/users")
                .json(&json!({"email": "x\u{0}@hostile.example.com", "name": "X"})),
            invalid("email"),
        ),
        case(
            "POST /users name with NUL",
            f.user(Method::POST, "/users")
                .json(&json!({"email": "x@hostile.example.com", "name": NUL})),
            invalid("name"),
        ),
        case(
            "POST /users password with NUL",
            f.user(Method::POST, "/users").json(
                &json!({"email": "x@hostile.example.com", "name": "X", "password": "long-enough\u{0}password"}),
            ),
            invalid("password"),
        ),
        case(
            "PATCH /users/{id} name with NUL",
            f.user(Method::PATCH, &format!("/users/{member}")).json(&json!({"name": NUL})),
            invalid("name"),
        ),
        case(
            "PATCH /users/{id} email with NUL",
            f.user(Method::PATCH, &format!("/users/{member}"))
                .json(&json!({"email": "y\u{0}@hostile.example.com"})),
            invalid("email"),
        ),
        case(
            "GET /users/%00",
            f.user(Method::GET, "/users/%00"),
            Answer::Exactly(404, None),
        ),
        case(
            "GET /users/%FF (not UTF-8)",
            f.user(Method::GET, "/users/%FF"),
            Answer::Exactly(404, None),
        ),
        // Projects and members.
        case(
            "POST /projects name with NUL",
            f.user(Method::POST, "/projects").json(&json!({"name": NUL})),
            invalid("name"),
        ),
        case(
            "POST /projects description with NUL",
            f.user(Method::POST, "/projects")
                .json(&json!({"name": "Fine", "description": NUL})),
            invalid("description"),
        ),
        case(
            "PATCH /projects/{id} name with NUL",
            f.user(Method::PATCH, &format!("/projects/{project}")).json(&json!({"name": NUL})),
            invalid("name"),
        ),
        case(
            "PATCH /projects/{id} description with NUL",
            f.user(Method::PATCH, &format!("/projects/{project}"))
                .json(&json!({"description": NUL})),
            invalid("description"),
        ),
        case(
            "POST /projects/{id}/members user_id with NUL",
            f.user(Method::POST, &format!("/projects/{project}/members"))
                .json(&json!({"user_id": NUL})),
            invalid("user_id"),
        ),
        case(
            "DELETE /projects/{id}/members/%00",
            f.user(Method::DELETE, &format!("/projects/{project}/members/%00")),
            Answer::Exactly(404, None),
        ),
        // Tasks.
        case(
            "POST /tasks title with NUL",
            f.user(Method::POST, "/tasks")
                .json(&json!({"project_id": project, "title": NUL})),
            invalid("title"),
        ),
        case(
            "POST /tasks description with NUL",
            f.user(Method::POST, "/tasks")
                .json(&json!({"project_id": project, "title": "T", "description": NUL})),
            invalid("description"),
        ),
        case(
            "POST /tasks due_date before PostgreSQL's first date",
            f.user(Method::POST, "/tasks")
                .json(&json!({"project_id": project, "title": "Old", "due_date": "-5000-01-01"})),
            invalid("due_date"),
        ),
        case(
            "POST /tasks due_date with a six-digit year",
            f.user(Method::POST, "/tasks").json(
                &json!({"project_id": project, "title": "Far", "due_date": "+262143-12-31"}),
            ),
            invalid("due_date"),
        ),
        case(
            "POST /tasks due_date not a date",
            f.user(Method::POST, "/tasks").json(
                &json!({"project_id": project, "title": "Never", "due_date": "2024-02-30"}),
            ),
            invalid("due_date"),
        ),
        case(
            "PATCH /tasks/{id} title with NUL",
            f.user(Method::PATCH, &format!("/tasks/{task}")).json(&json!({"title": NUL})),
            invalid("title"),
        ),
        case(
            "PATCH /tasks/{id} due_date before PostgreSQL's first date",
            f.user(Method::PATCH, &format!("/tasks/{task}"))
                .json(&json!({"due_date": "-4714-01-01"})),
            invalid("due_date"),
        ),
        case(
            "GET /tasks?status=%00",
            f.user(Method::GET, "/tasks?status=%00"),
            invalid("status"),
        ),
        case(
            "GET /tasks?project_id=%00",
            f.user(Method::GET, "/tasks?project_id=%00"),
            invalid("project_id"),
        ),
        case(
            "GET /tasks?limit=99999999999999999999",
            f.user(Method::GET, "/tasks?limit=99999999999999999999"),
            invalid("limit"),
        ),
        case(
            "GET /tasks?limit=-1",
            f.user(Method::GET, "/tasks?limit=-1"),
            invalid("limit"),
        ),
        case(
            "GET /tasks?cursor=<random base64>",
            f.user(Method::GET, "/tasks?cursor=djEuLTk5OTk5OTk5OTk5OTk5OTk5OTkuMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDA"),
            Answer::Exactly(422, Some("cursor")),
        ),
        case(
            "GET /tasks?cursor=<a cursor edited to the year 5000 BC>",
            f.user(Method::GET, "/tasks?cursor=djEuLTIyMDAwMDAwMDAwMDAwMDAwMC4wMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMA"),
            Answer::Refused,
        ),
        case(
            "GET /audit-logs?cursor=<a cursor edited to the year 200,000 BC>",
            f.user(Method::GET, "/audit-logs?cursor=djEuLTY0MDAwMDAwMDAwMDAwMDAwMDAuMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDA"),
            Answer::Refused,
        ),
        case(
            "GET /tasks/%C3%28 (not UTF-8)",
            f.user(Method::GET, "/tasks/%C3%28"),
            Answer::Exactly(404, None),
        ),
        // Audit log filters.
        case(
            "GET /audit-logs?resource=%00",
            f.user(Method::GET, "/audit-logs?resource=%00"),
            invalid("resource"),
        ),
        case(
            "GET /audit-logs?action=x%00y",
            f.user(Method::GET, "/audit-logs?action=x%00y"),
            invalid("action"),
        ),
        case(
            "GET /audit-logs?resource=%FF (not UTF-8)",
            f.user(Method::GET, "/audit-logs?resource=%FF"),
            Answer::NoServerError,
        ),
        // Analytics.
        case(
            "POST /analytics/events metadata key with NUL",
            f.user(Method::POST, "/analytics/events")
                .json(&json!({"event_type": "e", "metadata": {"k\u{0}": 1}})),
            invalid("metadata"),
        ),
        case(
            "POST /analytics/events metadata nested NUL in a batch",
            f.user(Method::POST, "/analytics/events").json(
                &json!({"events": [{"event_type": "e"}, {"event_type": "e", "metadata": {"a": [{"b": NUL}]}}]}),
            ),
            invalid("events[1].metadata"),
        ),
        case(
            "POST /analytics/events event_type with NUL",
            f.user(Method::POST, "/analytics/events").json(&json!({"event_type": NUL})),
            invalid("event_type"),
        ),
        case(
            "POST /analytics/events feature with NUL",
            f.user(Method::POST, "/analytics/events")
                .json(&json!({"event_type": "e", "feature": NUL})),
            invalid("feature"),
        ),
        case(
            "POST /analytics/events user_id with NUL",
            f.user(Method::POST, "/analytics/events")
                .json(&json!({"event_type": "e", "user_id": NUL})),
            invalid("user_id"),
        ),
        case(
            "GET /analytics/timeseries?event_type=%00",
            f.user(Method::GET, "/analytics/timeseries?event_type=%00"),
            invalid("event_type"),
        ),
        case(
            "GET /analytics/timeseries?metric=%00",
            f.user(Method::GET, "/analytics/timeseries?metric=%00"),
            invalid("metric"),
        ),
        case(
            "GET /analytics/summary at year 0",
            f.user(Method::GET, "/analytics/summary?from=0000-01-01T00:00:00Z&to=0000-01-02T00:00:00Z"),
            Answer::NoServerError,
        ),
        case(
            "GET /analytics/summary to year 0, from its default",
            f.user(Method::GET, "/analytics/summary?to=0000-01-01T00:00:00Z"),
            Answer::NoServerError,
        ),
        case(
            "GET /analytics/summary at year 9999",
            f.user(Method::GET, "/analytics/summary?from=9999-12-01T00:00:00Z&to=9999-12-31T23:59:59Z"),
            Answer::NoServerError,
        ),
        case(
            "GET /analytics/timeseries to year 0, from its default",
            f.user(Method::GET, "/analytics/timeseries?to=0000-01-01T00:00:00Z"),
            Answer::NoServerError,
        ),
        case(
            "GET /analytics/timeseries at year 9999 by day",
            f.user(Method::GET, "/analytics/timeseries?interval=day&from=9999-12-01T00:00:00Z&to=9999-12-31T23:59:59Z"),
            Answer::NoServerError,
        ),
        case(
            "GET /analytics/summary?from=%FF",
            f.user(Method::GET, "/analytics/summary?from=%FF"),
            invalid("from"),
        ),
        case(
            "GET /ws/analytics?token=%00",
            f.public(Method::GET, "/ws/analytics?token=%00"),
            Answer::Exactly(401, None),
        ),
        // Headers.
        case(
            "X-Tenant-ID not UTF-8",
            f.http
                .get(f.app.url("/tasks"))
                .header("x-tenant-id", HeaderValue::from_bytes(b"\xff\xfe").unwrap()),
            Answer::Exactly(400, None),
        ),
        case(
            "X-Tenant-ID of 6,000 characters",
            f.http
                .get(f.app.url("/tasks"))
                .header("x-tenant-id", "t".repeat(6_000)),
            Answer::Exactly(404, None),
        ),
        case(
            "X-Tenant-ID %00",
            f.http.get(f.app.url("/tasks")).header("x-tenant-id", "%00"),
            Answer::Exactly(404, None),
        ),
        case(
            "Host not UTF-8",
            f.http
                .get(f.app.url("/tasks"))
                .header(HOST, HeaderValue::from_bytes(b"\xffa.localhost").unwrap()),
            Answer::Exactly(400, None),
        ),
        case(
            "Authorization not UTF-8",
            f.public(Method::GET, "/tasks")
                .header(AUTHORIZATION, HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap()),
            Answer::Exactly(401, None),
        ),
        case(
            "Authorization not UTF-8, on a POST whose body is never read",
            f.public(Method::POST, "/tasks")
                .header(
                    AUTHORIZATION,
                    HeaderValue::from_bytes(b"Bearer :#\xf0\x9e\xb9\x8d\xe1\x8b\xb4\xe0\xa6\xa0")
                        .unwrap(),
                )
                .json(&json!({"title": "t"})),
            Answer::Exactly(401, None),
        ),
        // The shape of bodies.
        case(
            "JSON nested 100,000 deep",
            f.user(Method::POST, "/tasks")
                .header(CONTENT_TYPE, "application/json")
                .body("[".repeat(100_000)),
            Answer::Refused,
        ),
        case(
            "JSON nested 100,000 deep in analytics",
            f.user(Method::POST, "/analytics/events")
                .header(CONTENT_TYPE, "application/json")
                .body(format!("{{\"event_type\": \"e\", \"metadata\": {}", "{\"a\":".repeat(100_000))),
            Answer::Exactly(400, None),
        ),
        case(
            "body not UTF-8",
            f.user(Method::POST, "/projects")
                .header(CONTENT_TYPE, "application/json")
                .body(b"{\"name\": \"\xff\xfe\"}".to_vec()),
            Answer::Refused,
        ),
        case(
            "lone surrogate in a string",
            f.user(Method::POST, "/projects")
                .header(CONTENT_TYPE, "application/json")
                .body(r#"{"name": "\ud800"}"#),
            Answer::Refused,
        ),
        case(
            "number too large for a float",
            f.user(Method::POST, "/analytics/events")
                .header(CONTENT_TYPE, "application/json")
                .body(r#"{"event_type": "e", "metadata": {"n": 1e400}}"#),
            Answer::Refused,
        ),
        case(
            "body over 1 MiB",
            f.user(Method::POST, "/projects")
                .json(&json!({"name": "x", "description": "d".repeat(1_100_000)})),
            Answer::Exactly(413, None),
        ),
        case(
            "body with a wrong content type",
            f.user(Method::POST, "/projects")
                .header(CONTENT_TYPE, "text/plain")
                .body(r#"{"name": "x"}"#),
            Answer::Exactly(415, None),
        ),
    ];
    // Unknown or mistyped members are named too.
    cases.push(case(
        "POST /tasks with a smuggled tenant_id",
        f.user(Method::POST, "/tasks")
            .json(&json!({"project_id": project, "title": "T", "tenant_id": Uuid::nil()})),
        invalid("tenant_id"),
    ));
    cases.push(case(
        "POST /tasks status a number",
        f.user(Method::POST, "/tasks")
            .json(&json!({"project_id": project, "title": "T", "status": 5})),
        invalid("status"),
    ));
    cases.push(case(
        "POST /api-keys role a boolean",
        f.user(Method::POST, "/api-keys")
            .json(&json!({"name": "k", "role": true})),
        invalid("role"),
    ));
    cases.push(case(
        "POST /api-keys with no body takes the defaults",
        f.user(Method::POST, "/api-keys"),
        Answer::Exactly(201, None),
    ));
    cases.push(case(
        "GET /analytics/summary with offsets past year 9999 and before year 0",
        f.user(
            Method::GET,
            "/analytics/summary?from=0000-01-01T00:00:00%2B23:59&to=9999-12-31T23:59:59-23:59",
        ),
        Answer::NoServerError,
    ));
    cases.push(case(
        "GET /analytics/timeseries with offsets past year 9999",
        f.user(Method::GET, "/analytics/timeseries?interval=day&from=9999-12-01T00:00:00-23:59&to=9999-12-31T23:59:59-23:59"),
        Answer::NoServerError,
    ));
    cases.push(case(
        "POST /analytics/events timestamp at year 0",
        f.user(Method::POST, "/analytics/events")
            .json(&json!({"event_type": "e", "timestamp": "0000-01-01T00:00:00+23:59"})),
        invalid("timestamp"),
    ));
    cases.push(case(
        "POST /analytics/events timestamp past year 9999",
        f.user(Method::POST, "/analytics/events")
            .json(&json!({"event_type": "e", "timestamp": "9999-12-31T23:59:59-23:59"})),
        invalid("timestamp"),
    ));
    cases.push(case(
        "POST /tasks title a number",
        f.user(Method::POST, "/tasks")
            .json(&json!({"project_id": project, "title": 5})),
        invalid("title"),
    ));
    check_all(cases).await;
}

/// Percent-encodes every byte: arbitrary bytes, invalid UTF-8 included, in a query or a path.
fn pct(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

/// Strings a client might send to break something: anything, control characters, a NUL
/// somewhere, very long runs, and the edges of what PostgreSQL and JSON accept.
fn hostile_text() -> impl Strategy<Value = String> {
    hostile_text_of(60_000)
}

/// [`hostile_text`] with runs of at most `longest` characters (a URL holds less than a body).
fn hostile_text_of(longest: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<String>(),
        2 => "[\\x00-\\x1f\\x7f]{0,8}",
        2 => (any::<String>(), any::<String>()).prop_map(|(a, b)| format!("{a}\u{0}{b}")),
        1 => (any::<char>(), 0..longest).prop_map(|(c, n)| c.to_string().repeat(n)),
        1 => prop::sample::select(vec![
            String::new(),
            " ".into(),
            "\u{feff}".into(),
            "\u{fffd}".into(),
            "\u{10ffff}".into(),
            "a\u{0301}".into(),
            "😀".repeat(1_000),
            "İ".repeat(600),
            "0000-01-01".into(),
            "-4714-11-23".into(),
            "+275760-09-13T00:00:00Z".into(),
            "9999-12-31T23:59:59.999999999Z".into(),
            "-1".into(),
            "9223372036854775808".into(),
            "NaN".into(),
            "infinity".into(),
            "null".into(),
            Uuid::nil().to_string(),
            "00000000-0000-0000-0000-00000000000g".into(),
            "admin".into(),
            "in_progress".into(),
        ]),
    ]
}

/// Any JSON a client might put where one value is expected: hostile strings, numbers of every
/// size, and the wrong types.
fn hostile_json() -> impl Strategy<Value = Value> {
    hostile_json_of(60_000)
}

/// [`hostile_json`] with strings of runs of at most `longest` characters.
fn hostile_json_of(longest: usize) -> impl Strategy<Value = Value> {
    let text = move || hostile_text_of(longest);
    prop_oneof![
        4 => text().prop_map(Value::String),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(|n| serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)),
        1 => any::<u64>().prop_map(Value::from),
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => text().prop_map(|s| json!({ s.clone(): [s] })),
        1 => prop::collection::vec(text(), 0..4).prop_map(|v| json!(v)),
    ]
}

/// Bytes a client might put in a query value, a path segment or a cursor.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..64),
        2 => hostile_text_of(1_500).prop_map(String::into_bytes),
        // Something shaped like a cursor: base64 of random bytes.
        2 => prop::collection::vec(any::<u8>(), 0..96).prop_map(|raw| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw).into_bytes()
        }),
        1 => (any::<i128>()).prop_map(|n| n.to_string().into_bytes()),
    ]
}

/// Runs `cases` requests built by `request` from `strategy`'s values; any 5xx fails, and
/// proptest then shrinks the input to a smallest one that still fails.
fn no_server_error<S, F, Fut>(runtime: &tokio::runtime::Runtime, strategy: S, request: F)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
    F: Fn(S::Value) -> Fut,
    Fut: Future<Output = Result<reqwest::Response, reqwest::Error>>,
{
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        // Each shrinking step is a request too: a failure is reported in seconds, not minutes.
        max_shrink_iters: 256,
        ..Config::default()
    });
    let result = runner.run(&strategy, |value| {
        let response = runtime
            .block_on(request(value))
            .map_err(|err| TestCaseError::fail(format!("no answer: {err}")))?;
        let status = response.status();
        if status.is_server_error() {
            let body = runtime.block_on(response.text()).unwrap_or_default();
            return Err(TestCaseError::fail(format!("{status}: {body}")));
        }
        Ok(())
    });
    if let Err(err) = result {
        panic!("{err}");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Every text, id, number and date member of every JSON body.
#[test]
fn no_body_member_gives_a_5xx() {
    let rt = runtime();
    let f = rt.block_on(fixture());
    let (project, task, member) = (f.project, f.task, f.member);
    // (method, path, a valid body, the members to replace)
    let templates: Vec<(Method, String, Value, Who)> = vec![
        (
            Method::POST,
            "/tenants".into(),
            json!({"name": "P", "slug": "prop", "subdomain": "prop", "plan": "free",
                   "admin_email": "a@prop.example.com", "admin_password": "correct-horse-battery"}),
            Who::Operator,
        ),
        (
            Method::POST,
            "/auth/login".into(),
            json!({"email": "admin@hostile.example.com", "password": "correct-horse-battery"}),
            Who::Public,
        ),
        (
            Method::POST,
            "/api-keys".into(),
            json!({"name": "k", "role": "member"}),
            Who::User,
        ),
        (
            Method::POST,
            "/users".into(),
            json!({"email": "p@hostile.example.com", "name": "P", "role": "member",
                   "password": "correct-horse-battery"}),
            Who::User,
        ),
        (
            Method::PATCH,
            format!("/users/{member}"),
            json!({"email": "member@hostile.example.com", "name": "M", "role": "member",
                   "password": "correct-horse-battery"}),
            Who::User,
        ),
        (
            Method::POST,
            "/projects".into(),
            json!({"name": "P", "description": "d"}),
            Who::User,
        ),
        (
            Method::PATCH,
            format!("/projects/{project}"),
            json!({"name": "Hostile", "description": "d"}),
            Who::User,
        ),
        (
            Method::POST,
            format!("/projects/{project}/members"),
            json!({"user_id": member}),
            Who::User,
        ),
        (
            Method::POST,
            "/tasks".into(),
            json!({"project_id": project, "title": "T", "description": "d", "status": "todo",
                   "assignee_id": member, "due_date": "2030-01-01"}),
            Who::User,
        ),
        (
            Method::PATCH,
            format!("/tasks/{task}"),
            json!({"project_id": project, "title": "First", "description": "d",
                   "status": "done", "assignee_id": null, "due_date": null}),
            Who::User,
        ),
        (
            Method::POST,
            "/analytics/events".into(),
            json!({"event_type": "e", "user_id": member, "feature": "f",
                   "metadata": {"k": "v"}, "timestamp": null}),
            Who::User,
        ),
    ];
    let slots: Vec<(usize, String)> = templates
        .iter()
        .enumerate()
        .flat_map(|(i, (_, _, body, _))| {
            body.as_object()
                .unwrap()
                .keys()
                .map(move |k| (i, k.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let strategy = (prop::sample::select(slots), hostile_json(), any::<bool>());
    no_server_error(&rt, strategy, |((template, member), value, batch)| {
        let (method, path, body, who) = &templates[template];
        let mut body = body.clone();
        body[member.as_str()] = value;
        // Analytics takes one event or a batch; both paths are tried.
        if path == "/analytics/events" && batch {
            body = json!({ "events": [{"event_type": "fine"}, body] });
        }
        f.request(*who, method.clone(), path).json(&body).send()
    });
}

/// Credentials shaped like the real ones, naming `tenant` or another, with anything in their
/// claims and a signature that cannot verify: they pass the unverified reading that names the
/// tenant, then must be refused (401), never fail. Their claims stay short: a request head over
/// actix's 128 KiB is answered 431 before any route, and the connection closed under the
/// client still sending it.
fn credential(tenant: Uuid) -> impl Strategy<Value = Vec<u8>> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let tenant_id = prop_oneof![
        Just(json!(tenant)),
        any::<u128>().prop_map(|id| json!(Uuid::from_u128(id))),
        hostile_json_of(200),
    ];
    let number = prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|n| serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)),
        hostile_json_of(200),
    ];
    let jwt = (
        prop::sample::select(vec!["HS256", "none", "RS256", "HS512", ""]),
        tenant_id,
        any::<u128>(),
        hostile_json_of(200),
        (number.clone(), number.clone(), number),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(alg, tenant_id, sub, role, (iat, exp, nbf), signature)| {
            let header = json!({"alg": alg, "typ": "JWT"});
            let claims = json!({"tenant_id": tenant_id, "sub": Uuid::from_u128(sub), "role": role,
                "iss": "tenantry", "iat": iat, "exp": exp, "nbf": nbf});
            format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string()),
                URL_SAFE_NO_PAD.encode(signature)
            )
            .into_bytes()
        });
    let api_key = (any::<bool>(), any::<u128>(), "[A-Za-z0-9_]{0,60}").prop_map(
        move |(own, other, secret)| {
            let named = if own { tenant } else { Uuid::from_u128(other) };
            format!("tk_{}_{secret}", named.simple()).into_bytes()
        },
    );
    prop_oneof![jwt, api_key]
}

/// Every query parameter of every list and read, with arbitrary bytes.
#[test]
fn no_query_parameter_gives_a_5xx() {
    let rt = runtime();
    let f = rt.block_on(fixture());
    let project = f.project;
    let params: Vec<(Who, String, &str)> = vec![
        (Who::User, "/users".into(), "limit"),
        (Who::User, "/users".into(), "cursor"),
        (Who::User, "/projects".into(), "limit"),
        (Who::User, "/projects".into(), "cursor"),
        (Who::User, format!("/projects/{project}/members"), "limit"),
        (Who::User, format!("/projects/{project}/members"), "cursor"),
        (Who::User, "/tasks".into(), "project_id"),
        (Who::User, "/tasks".into(), "status"),
        (Who::User, "/tasks".into(), "assignee_id"),
        (Who::User, "/tasks".into(), "limit"),
        (Who::User, "/tasks".into(), "cursor"),
        (Who::User, "/audit-logs".into(), "resource"),
        (Who::User, "/audit-logs".into(), "action"),
        (Who::User, "/audit-logs".into(), "limit"),
        (Who::User, "/audit-logs".into(), "cursor"),
        (Who::User, "/api-keys".into(), "limit"),
        (Who::User, "/api-keys".into(), "cursor"),
        (Who::User, "/analytics/summary".into(), "from"),
        (Who::User, "/analytics/summary".into(), "to"),
        (Who::User, "/analytics/timeseries".into(), "metric"),
        (Who::User, "/analytics/timeseries".into(), "event_type"),
        (Who::User, "/analytics/timeseries".into(), "interval"),
        (Who::User, "/analytics/timeseries".into(), "from"),
        (Who::User, "/analytics/timeseries".into(), "to"),
        (Who::Operator, "/admin/tenants".into(), "include_deleted"),
        (Who::Operator, "/admin/tenants".into(), "limit"),
        (Who::Operator, "/admin/tenants".into(), "cursor"),
        (Who::Operator, "/admin/tasks".into(), "tenant_id"),
        (Who::Operator, "/admin/tasks".into(), "limit"),
        (Who::Operator, "/admin/tasks".into(), "cursor"),
        (Who::Public, "/ws/analytics".into(), "token"),
        (Who::Public, "/auth/login".into(), "x"),
    ];
    let strategy = (
        prop::sample::select(params),
        hostile_bytes(),
        // A second parameter, sometimes the same one again.
        prop::option::of((
            prop::sample::select(vec!["limit", "from", "to", "status", "x"]),
            hostile_bytes(),
        )),
    );
    no_server_error(&rt, strategy, |((who, path, name), value, extra)| {
        let mut url = format!("{path}?{name}={}", pct(&value));
        if let Some((other, value)) = extra {
            url.push_str(&format!("&{other}={}", pct(&value)));
        }
        f.request(who, Method::GET, &url).send()
    });
}

/// Every list's `?cursor=`: random bytes, random base64, cursors of the old shape with any
/// instant and id, and real cursors with one character changed.
#[test]
fn no_cursor_gives_a_5xx() {
    let rt = runtime();
    let f = rt.block_on(fixture());
    let project = f.project;
    let lists: Vec<(Who, String)> = vec![
        (Who::User, "/users".into()),
        (Who::User, "/projects".into()),
        (Who::User, format!("/projects/{project}/members")),
        (Who::User, "/tasks".into()),
        (Who::User, "/audit-logs".into()),
        (Who::User, "/api-keys".into()),
        (Who::Operator, "/admin/tenants".into()),
        (Who::Operator, "/admin/tasks".into()),
    ];
    // Real cursors to edit: the users and the audit log have more than one row.
    let real: Vec<String> = ["/users?limit=1", "/audit-logs?limit=1"]
        .iter()
        .map(|path| {
            rt.block_on(async {
                let page: Value = f
                    .user(Method::GET, path)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                page["next_cursor"]
                    .as_str()
                    .expect("a next page")
                    .to_string()
            })
        })
        .collect();
    let edited = (
        prop::sample::select(real),
        any::<prop::sample::Index>(),
        any::<u8>(),
    )
        .prop_map(|(cursor, at, byte)| {
            let mut bytes = cursor.into_bytes();
            let i = at.index(bytes.len());
            bytes[i] = byte;
            bytes
        });
    let cursor = prop_oneof![
        2 => hostile_bytes(),
        2 => edited,
        1 => (any::<i64>(), any::<u128>()).prop_map(|(micros, id)| {
            use base64::Engine;
            let raw = format!("v1.{micros}.{}", Uuid::from_u128(id).simple());
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw).into_bytes()
        }),
    ];
    let strategy = (prop::sample::select(lists), cursor);
    no_server_error(&rt, strategy, |((who, path), cursor)| {
        let url = format!("{path}?cursor={}", pct(&cursor));
        f.request(who, Method::GET, &url).send()
    });
}

/// Every path segment that names something, with arbitrary bytes.
#[test]
fn no_path_segment_gives_a_5xx() {
    let rt = runtime();
    let f = rt.block_on(fixture());
    let project = f.project;
    let routes: Vec<(Who, Method, String)> = vec![
        (Who::User, Method::GET, "/users/{}".into()),
        (Who::User, Method::PATCH, "/users/{}".into()),
        (Who::User, Method::DELETE, "/users/{}".into()),
        (Who::User, Method::GET, "/projects/{}".into()),
        (Who::User, Method::DELETE, "/projects/{}".into()),
        (Who::User, Method::GET, "/projects/{}/members".into()),
        (
            Who::User,
            Method::DELETE,
            format!("/projects/{project}/members/{{}}"),
        ),
        (Who::User, Method::GET, "/tasks/{}".into()),
        (Who::User, Method::PATCH, "/tasks/{}".into()),
        (Who::User, Method::DELETE, "/tasks/{}".into()),
        (Who::User, Method::DELETE, "/api-keys/{}".into()),
        (Who::Operator, Method::GET, "/admin/tenants/{}".into()),
        (
            Who::Operator,
            Method::POST,
            "/admin/tenants/{}/suspend".into(),
        ),
        (
            Who::Operator,
            Method::POST,
            "/admin/tenants/{}/resume".into(),
        ),
        (
            Who::Operator,
            Method::POST,
            "/admin/tenants/{}/restore".into(),
        ),
    ];
    let strategy = (prop::sample::select(routes), hostile_bytes());
    no_server_error(&rt, strategy, |((who, method, path), segment)| {
        let path = path.replace("{}", &pct(&segment));
        let request = f.request(who, method, &path);
        // PATCH routes need a body to reach their path's use.
        request.json(&json!({"name": "n"})).send()
    });
}

/// The headers that name a tenant or carry a credential, with arbitrary bytes a header may hold.
#[test]
fn no_tenant_or_credential_header_gives_a_5xx() {
    let rt = runtime();
    let f = rt.block_on(fixture());
    let header_bytes = prop_oneof![
        // What HTTP allows in a field value: visible ASCII, space, tab and obs-text.
        prop::collection::vec(
            prop_oneof![0x20u8..0x7f, 0x80u8..=0xff, Just(b'\t')],
            1..256
        ),
        hostile_text().prop_map(|s| s
            .bytes()
            .filter(|b| *b >= 0x20 && *b != 0x7f)
            .take(4_000)
            .collect::<Vec<u8>>()),
        credential(f.tenant.id),
    ];
    let strategy = (
        prop::sample::select(vec![
            "x-tenant-id",
            "host",
            "authorization",
            "bearer",
            "x-request-id",
        ]),
        header_bytes,
        prop::sample::select(vec![
            "/tasks",
            "/auth/login",
            "/tenant",
            "/ws/analytics",
            "/analytics/events",
        ]),
    );
    no_server_error(&rt, strategy, |(header, value, path)| {
        let mut value = value;
        if value.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            value[0] = b'x';
        }
        if value.last().is_some_and(|b| *b == b' ' || *b == b'\t') {
            *value.last_mut().unwrap() = b'x';
        }
        let mut request = f.http.post(f.app.url(path)).json(
            &json!({"event_type": "e", "email": "a@b.co", "password": "correct-horse-battery"}),
        );
        let value = |prefix: &[u8]| {
            let mut v = prefix.to_vec();
            v.extend_from_slice(&value);
            HeaderValue::from_bytes(&v).expect("a valid header value")
        };
        request = match header {
            "bearer" => request
                .header("x-tenant-id", &f.tenant.slug)
                .header(AUTHORIZATION, value(b"Bearer ")),
            "authorization" => request.header(AUTHORIZATION, value(b"")),
            "host" => request.header(HOST, value(b"")),
            other => request.header(other, value(b"")),
        };
        if path == "/ws/analytics" || path == "/tenant" {
            let built = request.build().expect("request");
            let mut get = f.http.get(built.url().clone());
            for (name, value) in built.headers() {
                get = get.header(name, value);
            }
            return get.send();
        }
        request.send()
    });
}
