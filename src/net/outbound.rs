//! The server's outbound HTTP client (webhook deliveries): every request goes only to an
//! address the SSRF policy permits, checked when the connection is made, and the connection
//! goes to exactly the address that was checked.
//!
//! How: reqwest with a DNS resolver of ours ([`PinnedResolver`], through reqwest's
//! `dns_resolver` hook) that resolves the name through a [`Lookup`], drops the forbidden
//! addresses and hands reqwest only the vetted ones, which it connects to. There is no second
//! lookup between the check and the connection, so a name rebound to 127.0.0.1 after its
//! registration (DNS rebinding) is caught at delivery. reqwest does not ask the resolver about
//! a literal address, nor for a proxied request: [`Outbound::send`] checks the URL itself
//! ([`ssrf::check_target`]) before every request, and the client is built with `no_proxy()`.
//! Redirects are not followed (a 3xx is the receiver's answer); 10 s total timeout.
//!
//! Public API:
//! - [`Outbound::new`] / [`Outbound::from_config`] (WEBHOOK_ALLOW_PRIVATE_TARGETS) /
//!   [`Outbound::builder`] (a [`Lookup`] for tests, another timeout); cheap to clone, build one
//!   per process.
//! - [`Outbound::vet`]: the registration check of a URL, with the same policy and resolver.
//! - [`Outbound::post`] / [`Outbound::request`]: a `reqwest::RequestBuilder` to fill in;
//!   [`Outbound::send`]: the only way out (checks the URL, then executes).
//! - [`body_prefix`]: at most N bytes of a response body (delivery logs keep 4 KiB).
//! - [`OutboundError`] with [`OutboundError::reason`], a stable code for delivery records.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{redirect, Method, Request, RequestBuilder, Response};
use thiserror::Error;
use url::Url;

use crate::config::Config;
use crate::net::ssrf::{self, Lookup, Policy, SsrfError, SystemLookup};

/// Total time of one request: connecting, sending, the answer's head and body.
pub const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum OutboundError {
    /// The target is not permitted (at registration, before sending, or at connect time).
    #[error("the target URL {0}")]
    Refused(#[source] SsrfError),
    #[error("the receiver did not answer in time")]
    Timeout(#[source] reqwest::Error),
    #[error("could not connect to the receiver")]
    Connect(#[source] reqwest::Error),
    #[error("the request failed")]
    Request(#[source] reqwest::Error),
    #[error("could not build the HTTP client")]
    Build(#[source] reqwest::Error),
}

impl OutboundError {
    /// A stable code for logs and delivery records.
    pub fn reason(&self) -> &'static str {
        match self {
            OutboundError::Refused(err) => err.reason(),
            OutboundError::Timeout(_) => "timeout",
            OutboundError::Connect(_) => "connect",
            OutboundError::Request(_) => "request",
            OutboundError::Build(_) => "build",
        }
    }

    fn from_reqwest(err: reqwest::Error) -> Self {
        // The resolver's refusal comes back wrapped in reqwest's and hyper's connect errors.
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
        while let Some(e) = source {
            if let Some(refused) = e.downcast_ref::<SsrfError>() {
                return OutboundError::Refused(refused.clone());
            }
            source = e.source();
        }
        if err.is_timeout() {
            OutboundError::Timeout(err)
        } else if err.is_connect() {
            OutboundError::Connect(err)
        } else {
            OutboundError::Request(err)
        }
    }
}

/// reqwest's resolver hook: vetted addresses only (see the module documentation).
pub struct PinnedResolver {
    policy: Policy,
    lookup: Arc<dyn Lookup>,
}

impl PinnedResolver {
    pub fn new(policy: Policy, lookup: Arc<dyn Lookup>) -> Self {
        PinnedResolver { policy, lookup }
    }
}

impl Resolve for PinnedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        let lookup = Arc::clone(&self.lookup);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let vetted = ssrf::vetted_addresses(&host, policy, &*lookup).await?;
            // Port 0: the connector puts the URL's port on every address.
            let addrs: Addrs = Box::new(vetted.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// Options of an [`Outbound`] other than its policy.
pub struct OutboundBuilder {
    policy: Policy,
    lookup: Arc<dyn Lookup>,
    timeout: Duration,
}

impl OutboundBuilder {
    /// Names are resolved through `lookup` (tests) instead of the system resolver.
    pub fn lookup(mut self, lookup: Arc<dyn Lookup>) -> Self {
        self.lookup = lookup;
        self
    }

    /// Total time of one request instead of [`TIMEOUT`] (tests of a receiver that hangs).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn build(self) -> Result<Outbound, OutboundError> {
        let resolver = PinnedResolver::new(self.policy, Arc::clone(&self.lookup));
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(redirect::Policy::none())
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .https_only(!self.policy.allow_http)
            .user_agent(concat!("tenantry/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(resolver))
            .build()
            .map_err(OutboundError::Build)?;
        Ok(Outbound {
            client,
            policy: self.policy,
            lookup: self.lookup,
        })
    }
}

/// The outbound HTTP client; clones share one connection pool.
#[derive(Clone)]
pub struct Outbound {
    client: reqwest::Client,
    policy: Policy,
    lookup: Arc<dyn Lookup>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Outbound {
    pub fn builder(policy: Policy) -> OutboundBuilder {
        OutboundBuilder {
            policy,
            lookup: Arc::new(SystemLookup),
            timeout: TIMEOUT,
        }
    }

    /// The system resolver, [`TIMEOUT`].
    pub fn new(policy: Policy) -> Result<Self, OutboundError> {
        Self::builder(policy).build()
    }

    /// The webhook policy WEBHOOK_ALLOW_PRIVATE_TARGETS asks for.
    pub fn from_config(config: &Config) -> Result<Self, OutboundError> {
        Self::new(Policy::webhooks(config.webhook_allow_private_targets))
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The registration check of a URL: parsed, its form checked, every address its name
    /// resolves to permitted. The `Display` of the error is the 422 field message.
    pub async fn vet(&self, raw: &str) -> Result<Url, SsrfError> {
        ssrf::check_url_with(raw, self.policy, &*self.lookup).await
    }

    /// A request to fill in (headers, body); send it with [`Outbound::send`].
    pub fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.client.request(method, url)
    }

    pub fn post(&self, url: Url) -> RequestBuilder {
        self.request(Method::POST, url)
    }

    /// Checks the request's URL and sends it; redirects are answers, not followed.
    pub async fn send(&self, request: RequestBuilder) -> Result<Response, OutboundError> {
        let request = request.build().map_err(OutboundError::Request)?;
        self.execute(request).await
    }

    /// [`Outbound::send`] for a built request.
    pub async fn execute(&self, request: Request) -> Result<Response, OutboundError> {
        ssrf::check_target(request.url(), self.policy).map_err(OutboundError::Refused)?;
        self.client
            .execute(request)
            .await
            .map_err(OutboundError::from_reqwest)
    }
}

/// The first `limit` bytes of `response`'s body; the rest is not read.
pub async fn body_prefix(mut response: Response, limit: usize) -> Result<Vec<u8>, OutboundError> {
    let mut body = Vec::new();
    while body.len() < limit {
        match response
            .chunk()
            .await
            .map_err(OutboundError::from_reqwest)?
        {
            Some(chunk) => {
                let room = limit - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            None => break,
        }
    }
    Ok(body)
}
