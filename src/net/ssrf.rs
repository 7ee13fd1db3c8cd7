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
//! rebinding: a fetcher must check the address it connects to again ([`forbidden_ip`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use thiserror::Error;
use url::{Host, Url};

#[derive(Debug, Error, PartialEq, Eq)]
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

/// What a URL may point at.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// `http` as well as `https`.
    pub allow_http: bool,
    /// Skips the address checks (WEBHOOK_ALLOW_PRIVATE_TARGETS, for tests and development).
    pub allow_private: bool,
}

impl Policy {
    /// https, to a public address.
    pub const PUBLIC_HTTPS: Policy = Policy {
        allow_http: false,
        allow_private: false,
    };
}

/// Names that are this machine or a cloud metadata service whatever DNS says.
const FORBIDDEN_NAMES: &[&str] = &[
    "localhost",
    "localhost.localdomain",
    "ip6-localhost",
    "ip6-loopback",
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
];

/// How long a name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Parses `raw` and checks it against `policy`; the parsed URL on success.
pub async fn check_url(raw: &str, policy: Policy) -> Result<Url, SsrfError> {
    let url = Url::parse(raw).map_err(|_| SsrfError::Malformed)?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_http => {}
        _ if policy.allow_http => return Err(SsrfError::Scheme("http or https")),
        _ => return Err(SsrfError::Scheme("https")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(SsrfError::Credentials);
    }
    let host = url.host().ok_or(SsrfError::NoHost)?;
    if policy.allow_private {
        return Ok(url);
    }
    match host {
        Host::Ipv4(ip) => check_ip(IpAddr::V4(ip))?,
        Host::Ipv6(ip) => check_ip(IpAddr::V6(ip))?,
        Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if forbidden_name(&name) {
                return Err(SsrfError::ForbiddenName(name));
            }
            let port = url.port_or_known_default().unwrap_or(443);
            let resolved = tokio::time::timeout(
                RESOLVE_TIMEOUT,
                tokio::net::lookup_host((name.clone(), port)),
            )
            .await;
            let addresses: Vec<IpAddr> = match resolved {
                Ok(Ok(addresses)) => addresses.map(|a| a.ip()).collect(),
                Ok(Err(_)) | Err(_) => Vec::new(),
            };
            if addresses.is_empty() {
                return Err(SsrfError::Unresolvable(name));
            }
            for ip in addresses {
                check_ip(ip)?;
            }
        }
    }
    Ok(url)
}

fn forbidden_name(name: &str) -> bool {
    // RFC 6761: every name under .localhost is loopback.
    FORBIDDEN_NAMES.contains(&name) || name.ends_with(".localhost")
}

fn check_ip(ip: IpAddr) -> Result<(), SsrfError> {
    match forbidden_ip(ip) {
        Some(why) => Err(SsrfError::Forbidden(ip, why)),
        None => Ok(()),
    }
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
    if ip == Ipv4Addr::new(169, 254, 169, 254)
        || ip == Ipv4Addr::new(169, 254, 170, 2)
        || ip == Ipv4Addr::new(100, 100, 100, 200)
    {
        return Some("cloud metadata");
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
        ([240, 0, 0, 0], 4, "reserved"),
    ];
    ranges
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, why)| *why)
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
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
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
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
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
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
        assert!(forbidden_ip("255.255.255.255".parse().unwrap()).is_some());
        assert!(forbidden_ip("2001:db8::1".parse().unwrap()).is_some());
    }
}
