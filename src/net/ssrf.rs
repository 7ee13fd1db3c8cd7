//! Server-side request forgery checks: whether a URL a tenant gives (a logo, a webhook target)
//! points at the public internet, and not back at this server, its private network or a cloud
//! metadata service.
//!
//! The host is read the way a client will read it: by the WHATWG URL parser (the `url` crate),
//! which turns every spelling of an IPv4 address into the address (`2130706433`, `0x7f000001`,
//! `017700000001`, `0177.0.0.1`, `127.1` are all 127.0.0.1). An IPv6 address that embeds an IPv4
//! one (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4
//! `2002::/16`) is judged by the IPv4 address too. A name is refused if it is one of the names of
//! this machine or of a metadata service, and otherwise resolved: every address it resolves to
//! must pass, and a name that does not resolve is refused (nothing can be said of it).
//!
//! A check at the time a URL is stored does not protect a later fetch of it from DNS
//! rebinding: a fetcher must check the address it connects to again and connect to that
//! address; [`crate::net::outbound`] does both for webhook deliveries.
//!
//! Names are resolved through a [`Lookup`]: the system resolver ([`SystemLookup`]) in the
//! server, a table ([`FixedLookup`]) in tests, so a test can have a name that resolves to
//! 127.0.0.1, or whose answer changes between registration and delivery, without DNS.
//!
//! Public API:
//! - [`check_url`] / [`check_url_with`]: parse and vet a URL (registration, logo URLs).
//! - [`check_target`]: the checks on a parsed URL that need no DNS (scheme, credentials,
//!   literal addresses, local and metadata names); run before every outbound request.
//! - [`vetted_addresses`]: resolve a name and keep only the addresses the policy permits (the
//!   connect-time check behind the outbound client's resolver).
//! - [`forbidden_ip`]: why an address is not public. [`Policy`], [`SsrfError`] (its `Display` is
//!   the 422 field message, [`SsrfError::reason`] a stable code).
//!
//! Cloud metadata addresses and names are refused even when [`Policy::allow_private`] is on:
//! a development setting left on in a cloud deployment must not hand out its credentials.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use thiserror::Error;
use url::{Host, Url};

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum SsrfError {
    #[error("is not a valid URL")]
    Malformed,
    #[error("must use {0}")]
    Scheme(&'static str),
    #[error("must not carry a user name or password")]
    Credentials,
    #[error("has no host")]
    NoHost,
    #[error("points at {0} ({1}), which is not a public address")]
    Forbidden(IpAddr, &'static str),
    #[error("names {0}, which is not a public host")]
    ForbiddenName(String),
    #[error("names {0}, which does not resolve")]
    Unresolvable(String),
}

impl SsrfError {
    /// A stable code for logs and delivery records; the `Display` text is for people.
    pub fn reason(&self) -> &'static str {
        match self {
            SsrfError::Malformed => "malformed",
            SsrfError::Scheme(_) => "scheme",
            SsrfError::Credentials => "credentials",
            SsrfError::NoHost => "no_host",
            SsrfError::Forbidden(..) => "forbidden_address",
            SsrfError::ForbiddenName(_) => "forbidden_name",
            SsrfError::Unresolvable(_) => "unresolvable",
        }
    }
}

/// What a URL may point at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// `http` as well as `https`.
    pub allow_http: bool,
    /// Skips the address checks but the cloud metadata ones (WEBHOOK_ALLOW_PRIVATE_TARGETS,
    /// for tests and development).
    pub allow_private: bool,
}

impl Policy {
    /// https, to a public address.
    pub const PUBLIC_HTTPS: Policy = Policy {
        allow_http: false,
        allow_private: false,
    };

    /// Webhook targets: https to public addresses; with WEBHOOK_ALLOW_PRIVATE_TARGETS, http
    /// too and private addresses.
    pub const fn webhooks(allow_private_targets: bool) -> Policy {
        Policy {
            allow_http: allow_private_targets,
            allow_private: allow_private_targets,
        }
    }
}

/// Names of this machine whatever DNS says.
const LOCAL_NAMES: &[&str] = &[
    "localhost",
    "localhost.localdomain",
    "ip6-localhost",
    "ip6-loopback",
];

/// Names of cloud metadata services whatever DNS says.
const METADATA_NAMES: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
];

/// How long a name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// The answer of a [`Lookup`].
pub type LookupFuture = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;

/// Resolves a host name to addresses: the seam that lets tests answer for DNS.
pub trait Lookup: Send + Sync + 'static {
    fn lookup(&self, host: &str) -> LookupFuture;
}

/// The system resolver (getaddrinfo on tokio's blocking pool).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: &str) -> LookupFuture {
        let host = host.to_owned();
        Box::pin(async move {
            let addresses = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addresses.map(|a| a.ip()).collect())
        })
    }
}

/// Answers from a table that may change while it is in use (tests: a name that resolves to
/// loopback, a name rebound between registration and delivery). Unknown names do not resolve.
#[derive(Clone, Debug, Default)]
pub struct FixedLookup {
    answers: Arc<RwLock<HashMap<String, Vec<IpAddr>>>>,
}

impl FixedLookup {
    pub fn new() -> Self {
        Self::default()
    }

    /// `host` resolves to `addresses` from now on (an empty list: it resolves to nothing).
    pub fn set(&self, host: &str, addresses: &[IpAddr]) -> &Self {
        self.answers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(host.to_ascii_lowercase(), addresses.to_vec());
        self
    }
}

impl Lookup for FixedLookup {
    fn lookup(&self, host: &str) -> LookupFuture {
        let answer = self
            .answers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&host.trim_end_matches('.').to_ascii_lowercase())
            .cloned();
        Box::pin(async move {
            answer.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such name"))
        })
    }
}

/// Parses `raw` and checks it against `policy` with the system resolver; the parsed URL on
/// success.
pub async fn check_url(raw: &str, policy: Policy) -> Result<Url, SsrfError> {
    check_url_with(raw, policy, &SystemLookup).await
}

/// Parses `raw` and checks it against `policy`, resolving a name through `lookup`: refused if
/// ANY address the name resolves to is forbidden (a later connection may pick any of them).
/// With [`Policy::allow_private`] names are not resolved (the connect-time check still refuses
/// metadata addresses).
pub async fn check_url_with(
    raw: &str,
    policy: Policy,
    lookup: &dyn Lookup,
) -> Result<Url, SsrfError> {
    let url = Url::parse(raw).map_err(|_| SsrfError::Malformed)?;
    check_target(&url, policy)?;
    if let Some(Host::Domain(name)) = url.host() {
        if !policy.allow_private {
            let name = normal_name(name);
            for ip in resolve(&name, lookup).await? {
                check_ip(ip, policy)?;
            }
        }
    }
    Ok(url)
}

/// The checks on a parsed URL that need no DNS: scheme, user name or password, a literal
/// address, a name of this machine or of a metadata service. An outbound request must pass
/// it before it is sent: the HTTP client does not ask its resolver about literal addresses.
pub fn check_target(url: &Url, policy: Policy) -> Result<(), SsrfError> {
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_http => {}
        _ if policy.allow_http => return Err(SsrfError::Scheme("http or https")),
        _ => return Err(SsrfError::Scheme("https")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(SsrfError::Credentials);
    }
    match url.host().ok_or(SsrfError::NoHost)? {
        Host::Ipv4(ip) => check_ip(IpAddr::V4(ip), policy),
        Host::Ipv6(ip) => check_ip(IpAddr::V6(ip), policy),
        Host::Domain(name) => check_name(&normal_name(name), policy),
    }
}

/// Resolves `host` through `lookup` and keeps the addresses `policy` permits, for a connection
/// to go to one of them. Refused when none is left: [`SsrfError::Forbidden`] names one of the
/// forbidden answers.
pub async fn vetted_addresses(
    host: &str,
    policy: Policy,
    lookup: &dyn Lookup,
) -> Result<Vec<IpAddr>, SsrfError> {
    let name = normal_name(host);
    check_name(&name, policy)?;
    let mut refused = None;
    let mut vetted = Vec::new();
    for ip in resolve(&name, lookup).await? {
        match check_ip(ip, policy) {
            Ok(()) => vetted.push(ip),
            Err(err) => refused = Some(err),
        }
    }
    match refused {
        Some(err) if vetted.is_empty() => Err(err),
        _ => Ok(vetted),
    }
}

fn normal_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The addresses of `name`; a name that does not resolve (or not in time) is refused, since
/// nothing can be said of it.
async fn resolve(name: &str, lookup: &dyn Lookup) -> Result<Vec<IpAddr>, SsrfError> {
    let addresses = match tokio::time::timeout(RESOLVE_TIMEOUT, lookup.lookup(name)).await {
        Ok(Ok(addresses)) => addresses,
        Ok(Err(_)) | Err(_) => Vec::new(),
    };
    if addresses.is_empty() {
        return Err(SsrfError::Unresolvable(name.to_owned()));
    }
    Ok(addresses)
}

fn check_name(name: &str, policy: Policy) -> Result<(), SsrfError> {
    // RFC 6761: every name under .localhost is loopback.
    let local = LOCAL_NAMES.contains(&name) || name.ends_with(".localhost");
    if METADATA_NAMES.contains(&name) || (local && !policy.allow_private) {
        return Err(SsrfError::ForbiddenName(name.to_owned()));
    }
    Ok(())
}

fn check_ip(ip: IpAddr, policy: Policy) -> Result<(), SsrfError> {
    let why = if policy.allow_private {
        is_metadata(ip).then_some(METADATA)
    } else {
        forbidden_ip(ip)
    };
    match why {
        Some(why) => Err(SsrfError::Forbidden(ip, why)),
        None => Ok(()),
    }
}

const METADATA: &str = "cloud metadata";

/// Cloud metadata services: AWS, GCP, Azure (169.254.169.254, and AWS's IPv6 fd00:ec2::254),
/// ECS task metadata (169.254.170.2), Alibaba (100.100.100.200), the forms that embed them.
fn is_metadata(ip: IpAddr) -> bool {
    let v4 = match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) if v6 == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) => {
            return true
        }
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => v4,
            None => return false,
        },
    };
    v4 == Ipv4Addr::new(169, 254, 169, 254)
        || v4 == Ipv4Addr::new(169, 254, 170, 2)
        || v4 == Ipv4Addr::new(100, 100, 100, 200)
}

/// Why `ip` is not a public address, or None when it is.
pub fn forbidden_ip(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    // Cloud metadata first, for the better message; they are link-local or shared anyway.
    if is_metadata(IpAddr::V4(ip)) {
        return Some(METADATA);
    }
    let ranges: &[([u8; 4], u32, &'static str)] = &[
        ([0, 0, 0, 0], 8, "unspecified"),
        ([10, 0, 0, 0], 8, "private"),
        ([100, 64, 0, 0], 10, "shared address space (CGNAT)"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([169, 254, 0, 0], 16, "link-local"),
        ([172, 16, 0, 0], 12, "private"),
        ([192, 0, 0, 0], 24, "IETF protocol assignments"),
        ([192, 0, 2, 0], 24, "documentation"),
        ([192, 88, 99, 0], 24, "6to4 relay anycast"),
        ([192, 168, 0, 0], 16, "private"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([198, 51, 100, 0], 24, "documentation"),
        ([203, 0, 113, 0], 24, "documentation"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([255, 255, 255, 255], 32, "broadcast"),
        ([240, 0, 0, 0], 4, "reserved"),
    ];
    ranges
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, why)| *why)
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if is_metadata(IpAddr::V6(ip)) {
        return Some(METADATA);
    }
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    if let Some(v4) = embedded_v4(ip) {
        return forbidden_v4(v4);
    }
    let s = ip.segments();
    let ranges: &[(u16, u16, &'static str)] = &[
        // (first segment, mask of the first segment, why)
        (0xfc00, 0xfe00, "unique local (private)"),
        (0xfe80, 0xffc0, "link-local"),
        (0xfec0, 0xffc0, "site-local"),
        (0xff00, 0xff00, "multicast"),
    ];
    if let Some((_, _, why)) = ranges.iter().find(|(net, mask, _)| s[0] & mask == *net) {
        return Some(why);
    }
    // 2001:db8::/32 documentation; 2001::/32 Teredo, whose client address is obfuscated.
    if s[0] == 0x2001 && s[1] == 0x0db8 {
        return Some("documentation");
    }
    if s[0] == 0x2001 && s[1] == 0 {
        return Some("Teredo");
    }
    // 100::/64: discard-only.
    if s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0 {
        return Some("discard-only");
    }
    // Anything outside global unicast (2000::/3) is not a public address.
    if s[0] & 0xe000 != 0x2000 {
        return Some("not global unicast");
    }
    None
}

/// The IPv4 address an IPv6 address carries, for the forms that route to it.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let o = ip.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible; :: and ::1 are handled before).
    if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) {
        return Some(tail);
    }
    // 64:ff9b::/96 (NAT64) and 64:ff9b:1::/48 (local-use NAT64).
    if s[0] == 0x0064 && s[1] == 0xff9b {
        return Some(tail);
    }
    // 2002:a.b.c.d::/48 (6to4).
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn refused(url: &str) -> SsrfError {
        check_url(url, Policy::PUBLIC_HTTPS).await.expect_err(url)
    }

    #[tokio::test]
    async fn every_spelling_of_a_private_address_is_refused() {
        for url in [
            "https://127.0.0.1/logo.png",
            "https://127.1/",
            "https://2130706433/",
            "https://0x7f000001/",
            "https://017700000001/",
            "https://0177.0.0.1/",
            "https://0x7f.0.0.1/",
            "https://10.1.2.3/",
            "https://172.16.0.1/",
            "https://172.31.255.255/",
            "https://192.168.1.1/",
            "https://169.254.169.254/latest/meta-data/",
            "https://100.64.0.1/",
            "https://100.100.100.200/",
            "https://0.0.0.0/",
            "https://224.0.0.1/",
            "https://[::1]/",
            "https://[::]/",
            "https://[::ffff:127.0.0.1]/",
            "https://[::ffff:7f00:1]/",
            "https://[::ffff:169.254.169.254]/",
            "https://[::127.0.0.1]/",
            "https://[64:ff9b::a00:1]/",
            "https://[2002:7f00:1::]/",
            "https://[fd00:ec2::254]/",
            "https://[fe80::1]/",
            "https://[ff02::1]/",
            "https://localhost/",
            "https://LOCALHOST./",
            "https://app.localhost/",
            "https://metadata.google.internal/computeMetadata/v1/",
        ] {
            let err = refused(url).await;
            assert!(
                matches!(err, SsrfError::Forbidden(..) | SsrfError::ForbiddenName(_)),
                "{url}: {err:?}"
            );
        }
    }

    #[tokio::test]
    async fn the_form_of_the_url_is_checked() {
        assert_eq!(
            refused("http://93.184.216.34/").await,
            SsrfError::Scheme("https")
        );
        assert_eq!(
            refused("javascript:alert(1)").await,
            SsrfError::Scheme("https")
        );
        assert_eq!(refused("not a url").await, SsrfError::Malformed);
        assert_eq!(
            refused("https://user:pw@93.184.216.34/").await,
            SsrfError::Credentials
        );
        assert!(matches!(
            refused("https://no-such-host.invalid/").await,
            SsrfError::Unresolvable(_)
        ));
    }

    #[tokio::test]
    async fn public_addresses_pass() {
        for url in [
            "https://93.184.216.34/logo.png",
            "https://[2606:2800:220:1:248:1893:25c8:1946]/logo.png",
            "https://1.1.1.1:8443/x",
        ] {
            assert!(check_url(url, Policy::PUBLIC_HTTPS).await.is_ok(), "{url}");
        }
        let lenient = Policy {
            allow_http: true,
            allow_private: true,
        };
        assert!(check_url("http://127.0.0.1:9000/hook", lenient)
            .await
            .is_ok());
    }

    #[test]
    fn ranges() {
        assert_eq!(forbidden_ip("8.8.8.8".parse().unwrap()), None);
        assert_eq!(forbidden_ip("172.32.0.1".parse().unwrap()), None);
        assert_eq!(forbidden_ip("100.128.0.1".parse().unwrap()), None);
        assert_eq!(forbidden_ip("2a00:1450:4007::1".parse().unwrap()), None);
        assert_eq!(
            forbidden_ip("255.255.255.255".parse().unwrap()),
            Some("broadcast")
        );
        assert_eq!(
            forbidden_ip("fd00:ec2::254".parse().unwrap()),
            Some("cloud metadata")
        );
        assert!(forbidden_ip("2001:db8::1".parse().unwrap()).is_some());
    }
}
