//! N `tenantry serve` processes on one database and one Redis: the deployment of
//! docs/operations.md ("Running N instances behind a load balancer") inside a test.
//!
//! Separate processes, not several in-process apps: nothing can pass from one instance to
//! another through memory (a process-wide static, a shared runtime), only through PostgreSQL
//! and Redis, as in production. Each instance is a [`Server`] (killed when the cluster is
//! dropped, before its database is dropped).

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::helpers::{
    create_tenant_at, eventually, test_db, Server, TestDb, TestTenant, OPERATOR_TOKEN,
};

pub struct Cluster {
    /// Declared before `db`: fields drop in order, so every server is killed before the
    /// database goes.
    pub servers: Vec<Server>,
    pub db: TestDb,
    pub http: reqwest::Client,
}

impl Cluster {
    /// `n` instances on a fresh migrated database, operator routes on.
    pub async fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &[]).await
    }

    /// With `env` added to every instance's environment (over the defaults below).
    pub async fn start_with(n: usize, env: &[(&str, &str)]) -> Cluster {
        let db = test_db().await;
        let mut env_all = vec![
            ("PLATFORM_ADMIN_TOKEN", OPERATOR_TOKEN),
            // Every request of a test comes from 127.0.0.1, and `listening` polls a public
            // endpoint; the per-address limits have their own tests (the login limit stays).
            ("PUBLIC_REQUESTS_PER_MINUTE", "100000"),
        ];
        env_all.extend_from_slice(env);
        let servers = join_all((0..n).map(|_| Server::start_with(&db, 1, &env_all))).await;
        Cluster {
            servers,
            db,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("http client"),
        }
    }

    /// `path` on instance `i`.
    pub fn url(&self, i: usize, path: &str) -> String {
        self.servers[i].url(path)
    }

    pub fn get(&self, i: usize, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(i, path)).bearer_auth(token)
    }

    pub fn post(&self, i: usize, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http.post(self.url(i, path)).bearer_auth(token)
    }

    pub fn patch(&self, i: usize, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http.patch(self.url(i, path)).bearer_auth(token)
    }

    pub fn delete(&self, i: usize, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http.delete(self.url(i, path)).bearer_auth(token)
    }

    /// An operator request (`PLATFORM_ADMIN_TOKEN`) to instance `i`.
    pub fn operator(
        &self,
        i: usize,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(i, path))
            .bearer_auth(OPERATOR_TOKEN)
    }

    /// Provisions a tenant on `plan` through instance `via` (`POST /tenants`), then waits until
    /// every instance holds its config snapshot and hears the changes announced over Redis
    /// (see [`Cluster::listening`]).
    pub async fn create_tenant(&self, via: usize, slug: &str, plan: &str) -> TestTenant {
        let tenant = create_tenant_at(&self.http, &self.servers[via].address, slug, plan).await;
        self.listening(&tenant).await;
        tenant
    }

    /// `POST /auth/login` through instance `via`, the tenant named by `X-Tenant-ID`.
    pub async fn login(
        &self,
        via: usize,
        slug: &str,
        email: &str,
        password: &str,
    ) -> reqwest::Response {
        self.http
            .post(self.url(via, "/auth/login"))
            .header("X-Tenant-ID", slug)
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .expect("POST /auth/login")
    }

    /// The token of a successful login through instance `via`.
    pub async fn token(&self, via: usize, slug: &str, email: &str, password: &str) -> String {
        let r = self.login(via, slug, email, password).await;
        assert_eq!(r.status().as_u16(), 200, "login of {email} through {via}");
        let body: Value = r.json().await.expect("login json");
        body["token"].as_str().expect("a token").to_string()
    }

    /// `GET /branding` of `tenant` through instance `i`: its primary color.
    pub async fn primary_color(&self, i: usize, tenant: &TestTenant) -> String {
        let body: Value = self
            .http
            .get(self.url(i, "/branding"))
            .header("X-Tenant-ID", tenant.slug.as_str())
            .send()
            .await
            .expect("GET /branding")
            .json()
            .await
            .expect("branding json");
        body["primary_color"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until every instance has `tenant` active and listens for announcements: a change
    /// of its branding through the first instance is seen by all. An instance that has just
    /// started may not have subscribed to Redis yet (it drops everything it cached when it
    /// does, so nothing stale outlives that moment); this gives it time to spare (ten
    /// seconds), so that the tests' one-second bounds measure the announcement alone.
    pub async fn listening(&self, tenant: &TestTenant) {
        for i in 0..self.servers.len() {
            self.primary_color(i, tenant).await;
        }
        let color = format!("#{:06x}", rand_color(tenant));
        let r = self
            .patch(0, "/settings", &tenant.token)
            .json(&json!({"branding": {"primary_color": color}}))
            .send()
            .await
            .expect("PATCH /settings");
        assert_eq!(r.status().as_u16(), 200, "PATCH /settings");
        for i in 0..self.servers.len() {
            assert!(
                eventually(
                    tokio::time::Instant::now(),
                    Duration::from_secs(10),
                    || async { self.primary_color(i, tenant).await == color }
                )
                .await,
                "instance {i} never saw a change announced by instance 0"
            );
        }
    }
}

/// A color of the tenant's own, not its default one.
fn rand_color(tenant: &TestTenant) -> u32 {
    u32::try_from(tenant.id.as_u128() & 0x00ff_fffe).unwrap_or(0) | 1
}
