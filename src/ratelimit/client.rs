//! The client address a per-address limit counts: the peer of the TCP connection, unless that
//! peer is one of TRUSTED_PROXIES, in which case `X-Forwarded-For` is read from the right (the
//! hop the trusted proxy added) past every trusted hop. Anything left of the first untrusted
//! hop was written by the client itself and is never believed.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// `forwarded_for`: the `X-Forwarded-For` values in the order they arrived, each a
/// comma-separated list.
pub fn client_address<'a>(
    peer: Option<IpAddr>,
    forwarded_for: impl DoubleEndedIterator<Item = &'a str>,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let peer = peer.map(canonical)?;
    if !is_trusted(peer, trusted) {
        return Some(peer);
    }
    let mut client = peer;
    for value in forwarded_for.rev() {
        for hop in value.rsplit(',') {
            // A hop that does not parse ends what can be believed: the last good one stands.
            let Some(addr) = parse_hop(hop.trim()) else {
                return Some(client);
            };
            client = addr;
            if !is_trusted(addr, trusted) {
                return Some(client);
            }
        }
    }
    Some(client)
}

fn is_trusted(addr: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&addr))
}

/// `203.0.113.7`, `2001:db8::1`, and the forms with a port some proxies write
/// (`203.0.113.7:4711`, `[2001:db8::1]:4711`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(canonical)
}

/// An IPv4 client reaching an IPv6 socket shows as `::ffff:a.b.c.d`; it is the same client.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client() {
        let got = client_address(Some(ip("198.51.100.1")), ["203.0.113.9"].into_iter(), &[]);
        assert_eq!(got, Some(ip("198.51.100.1")));
        assert_eq!(client_address(None, std::iter::empty(), &[]), None);
        assert_eq!(
            client_address(Some(ip("::ffff:198.51.100.1")), std::iter::empty(), &[]),
            Some(ip("198.51.100.1"))
        );
    }

    #[test]
    fn an_untrusted_peer_cannot_forward() {
        let trusted = nets(&["10.0.0.0/8"]);
        let got = client_address(
            Some(ip("198.51.100.1")),
            ["203.0.113.9"].into_iter(),
            &trusted,
        );
        assert_eq!(got, Some(ip("198.51.100.1")));
    }

    #[test]
    fn a_trusted_peer_names_the_client_from_the_right() {
        let trusted = nets(&["10.0.0.0/8", "127.0.0.1/32"]);
        // The client wrote the first entry itself; the trusted proxies appended the rest.
        let got = client_address(
            Some(ip("127.0.0.1")),
            ["6.6.6.6, 203.0.113.9, 10.1.2.3"].into_iter(),
            &trusted,
        );
        assert_eq!(got, Some(ip("203.0.113.9")));
        // Several header lines are one list, in order.
        let got = client_address(
            Some(ip("10.0.0.1")),
            ["6.6.6.6", "203.0.113.9:4711", "10.1.2.3"].into_iter(),
            &trusted,
        );
        assert_eq!(got, Some(ip("203.0.113.9")));
        let got = client_address(
            Some(ip("10.0.0.1")),
            ["[2001:db8::7]:80"].into_iter(),
            &trusted,
        );
        assert_eq!(got, Some(ip("2001:db8::7")));
    }

    #[test]
    fn what_cannot_be_believed_is_not() {
        let trusted = nets(&["10.0.0.0/8"]);
        // Garbage right of the client: the last good hop (a trusted proxy) stands.
        let got = client_address(
            Some(ip("10.0.0.1")),
            ["203.0.113.9, unknown, 10.1.2.3"].into_iter(),
            &trusted,
        );
        assert_eq!(got, Some(ip("10.1.2.3")));
        // No header: the trusted peer itself.
        assert_eq!(
            client_address(Some(ip("10.0.0.1")), std::iter::empty(), &trusted),
            Some(ip("10.0.0.1"))
        );
        // Only trusted hops: the leftmost of them.
        let got = client_address(
            Some(ip("10.0.0.1")),
            ["10.9.9.9, 10.1.2.3"].into_iter(),
            &trusted,
        );
        assert_eq!(got, Some(ip("10.9.9.9")));
    }
}
