//! The SSRF guard of outbound requests (src/net/ssrf.rs, src/net/outbound.rs): the forms of a
//! target refused at registration, the checks again at delivery (literal addresses, DNS
//! rebinding), the connection pinned to the vetted address, redirects not followed. DNS is
//! answered by a `FixedLookup` table; the receiver is a local TCP listener.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tenantry::net::outbound::{body_prefix, Outbound, OutboundError};
use tenantry::net::ssrf::{vetted_addresses, FixedLookup, Policy, SsrfError};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use url::Url;

const PUBLIC_V4: &str = "93.184.216.34";
const PUBLIC_V6: &str = "2606:2800:220:1:248:1893:25c8:1946";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The names the tests resolve, the way a hostile DNS zone would answer.
fn zone() -> FixedLookup {
    let lookup = FixedLookup::new();
    lookup
        .set("hooks.example.com", &[ip(PUBLIC_V4), ip(PUBLIC_V6)])
        .set("xn--bcher-kva.example", &[ip(PUBLIC_V4)])
        .set("loopback.test", &[ip("127.0.0.1")])
        .set("loopback6.test", &[ip("::1")])
        .set("private.test", &[ip("10.1.2.3")])
        .set("mapped.test", &[ip("::ffff:192.168.0.1")])
        .set("metadata-alias.test", &[ip("169.254.169.254")])
        .set("mixed.test", &[ip(PUBLIC_V4), ip("10.0.0.5")]);
    lookup
}

fn outbound(policy: Policy, lookup: &FixedLookup) -> Outbound {
    Outbound::builder(policy)
        .lookup(Arc::new(lookup.clone()))
        .build()
        .unwrap()
}

/// A receiver on 127.0.0.1: records each request's line and Host header, answers with what
/// `answer` gives for the path, or holds the connection open without answering (None).
struct Receiver {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    async fn start(answer: fn(&str) -> Option<String>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut read = BufReader::new(read);
                    let mut request_line = String::new();
                    read.read_line(&mut request_line).await.ok()?;
                    let (mut host, mut length) = (String::new(), 0usize);
                    loop {
                        let mut line = String::new();
                        read.read_line(&mut line).await.ok()?;
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        let (name, value) = line.split_once(':')?;
                        match name.to_ascii_lowercase().as_str() {
                            "host" => host = value.trim().to_owned(),
                            "content-length" => length = value.trim().parse().ok()?,
                            _ => {}
                        }
                    }
                    let mut body = vec![0; length];
                    read.read_exact(&mut body).await.ok()?;
                    let path = request_line.split(' ').nth(1)?.to_owned();
                    log.lock()
                        .unwrap()
                        .push(format!("{} {host}", request_line.trim_end()));
                    match answer(&path) {
                        Some(response) => write.write_all(response.as_bytes()).await.ok()?,
                        None => tokio::time::sleep(Duration::from_secs(60)).await,
                    }
                    write.shutdown().await.ok()
                });
            }
        });
        Receiver { port, seen }
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn ok(body: &str) -> Option<String> {
    Some(format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ))
}

#[tokio::test]
async fn ssrf_forms_are_refused_at_registration() {
    // http is allowed here so that each form is refused for its address, not its scheme.
    let http_public = Policy {
        allow_http: true,
        allow_private: false,
    };
    let lookup = zone();
    let vetting = outbound(http_public, &lookup);
    let strict = outbound(Policy::webhooks(false), &lookup);
    let cases: &[(&str, &str)] = &[
        ("https://good@127.0.0.1/", "credentials"),
        ("https://good:secret@hooks.example.com/", "credentials"),
        ("https://hooks.example.com@127.0.0.1/", "credentials"),
        ("http://127.0.0.1/", "forbidden_address"),
        ("http://127.1/", "forbidden_address"),
        ("http://2130706433/", "forbidden_address"),
        ("http://0x7f.1/", "forbidden_address"),
        ("http://0x7f000001/", "forbidden_address"),
        ("http://017700000001/", "forbidden_address"),
        ("http://0177.0.0.1/", "forbidden_address"),
        ("http://0/", "forbidden_address"),
        ("http://0.0.0.0/", "forbidden_address"),
        ("http://[::]/", "forbidden_address"),
        ("http://[::1]/", "forbidden_address"),
        ("http://[::ffff:127.0.0.1]/", "forbidden_address"),
        ("http://[::ffff:7f00:1]/", "forbidden_address"),
        ("http://[::ffff:10.0.0.1]/", "forbidden_address"),
        ("http://[64:ff9b::7f00:1]/", "forbidden_address"),
        ("http://[64:ff9b::a9fe:a9fe]/", "forbidden_address"),
        ("http://[2002:7f00:1::]/", "forbidden_address"),
        ("http://10.0.0.1/", "forbidden_address"),
        ("http://172.16.5.4/", "forbidden_address"),
        ("http://192.168.0.1/", "forbidden_address"),
        ("http://[fc00::1]/", "forbidden_address"),
        ("http://100.64.0.1/", "forbidden_address"),
        ("http://169.254.1.1/", "forbidden_address"),
        ("http://[fe80::1]/", "forbidden_address"),
        ("http://224.0.0.1/", "forbidden_address"),
        ("http://[ff02::1]/", "forbidden_address"),
        ("http://255.255.255.255/", "forbidden_address"),
        ("http://240.0.0.1/", "forbidden_address"),
        ("http://192.0.2.1/", "forbidden_address"),
        (
            "http://169.254.169.254/latest/meta-data/",
            "forbidden_address",
        ),
        ("http://[::ffff:169.254.169.254]/", "forbidden_address"),
        ("http://[fd00:ec2::254]/", "forbidden_address"),
        ("http://100.100.100.200/", "forbidden_address"),
        ("http://metadata.google.internal/", "forbidden_name"),
        ("http://METADATA.google.internal./", "forbidden_name"),
        ("http://localhost/", "forbidden_name"),
        ("http://hooks.localhost/", "forbidden_name"),
        ("http://loopback.test/", "forbidden_address"),
        ("http://loopback6.test/", "forbidden_address"),
        ("http://private.test/", "forbidden_address"),
        ("http://mapped.test/", "forbidden_address"),
        ("http://metadata-alias.test/", "forbidden_address"),
        // One forbidden answer is enough: a later connection may pick any of them.
        ("http://mixed.test/", "forbidden_address"),
        ("http://unknown.test/", "unresolvable"),
        ("ftp://hooks.example.com/", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("not a url", "malformed"),
    ];
    assert!(cases.len() >= 25);
    for (url, reason) in cases {
        let err = vetting.vet(url).await.expect_err(url);
        assert_eq!(err.reason(), *reason, "{url}: {err}");
        assert!(!err.to_string().is_empty());
        // The webhook policy (https only) refuses them all as well.
        let https = url.replacen("http://", "https://", 1);
        assert!(strict.vet(&https).await.is_err(), "{https}");
    }
}

#[tokio::test]
async fn public_targets_are_accepted() {
    let lookup = zone();
    let strict = outbound(Policy::webhooks(false), &lookup);
    for url in [
        "https://hooks.example.com/webhooks",
        "https://hooks.example.com:8443/in?source=tenantry",
        "https://HOOKS.example.com./x",
        "https://bücher.example/hook",
        &format!("https://{PUBLIC_V4}/hook"),
        &format!("https://[{PUBLIC_V6}]/hook"),
    ] {
        let vetted = strict.vet(url).await;
        assert!(vetted.is_ok(), "{url}: {vetted:?}");
    }
    assert_eq!(
        strict
            .vet("http://hooks.example.com/")
            .await
            .unwrap_err()
            .reason(),
        "scheme"
    );
    // WEBHOOK_ALLOW_PRIVATE_TARGETS: http and loopback for tests and development, metadata never.
    let lenient = outbound(Policy::webhooks(true), &lookup);
    assert!(lenient.vet("http://127.0.0.1:9000/hook").await.is_ok());
    assert!(lenient.vet("http://localhost:9000/hook").await.is_ok());
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://metadata.google.internal/",
    ] {
        assert!(lenient.vet(url).await.is_err(), "{url}");
    }
}

#[tokio::test]
async fn the_resolver_keeps_only_vetted_addresses() {
    let lookup = zone();
    let strict = Policy::webhooks(false);
    assert_eq!(
        vetted_addresses("mixed.test", strict, &lookup).await,
        Ok(vec![ip(PUBLIC_V4)])
    );
    assert_eq!(
        vetted_addresses("loopback.test", strict, &lookup).await,
        Err(SsrfError::Forbidden(ip("127.0.0.1"), "loopback"))
    );
    assert_eq!(
        vetted_addresses("localhost", strict, &lookup)
            .await
            .unwrap_err()
            .reason(),
        "forbidden_name"
    );
    let lenient = Policy::webhooks(true);
    assert_eq!(
        vetted_addresses("loopback.test", lenient, &lookup).await,
        Ok(vec![ip("127.0.0.1")])
    );
    assert_eq!(
        vetted_addresses("metadata-alias.test", lenient, &lookup).await,
        Err(SsrfError::Forbidden(
            ip("169.254.169.254"),
            "cloud metadata"
        ))
    );
}

#[tokio::test]
async fn a_name_rebound_after_registration_is_refused_at_delivery() {
    let receiver = Receiver::start(|_| ok("reached")).await;
    let lookup = zone();
    lookup.set("rebind.test", &[ip(PUBLIC_V4)]);
    let strict = outbound(Policy::webhooks(false), &lookup);
    let url = strict
        .vet(&format!("https://rebind.test:{}/hook", receiver.port))
        .await
        .expect("public at registration");
    lookup.set("rebind.test", &[ip("127.0.0.1")]);
    let err = strict.send(strict.post(url).body("{}")).await.unwrap_err();
    assert!(
        matches!(
            err,
            OutboundError::Refused(SsrfError::Forbidden(addr, "loopback")) if addr == ip("127.0.0.1")
        ),
        "{err:?}"
    );
    assert_eq!(err.reason(), "forbidden_address");
    assert!(receiver.requests().is_empty());
}

#[tokio::test]
async fn literal_addresses_are_checked_before_sending() {
    let receiver = Receiver::start(|_| ok("reached")).await;
    let strict = outbound(Policy::webhooks(false), &zone());
    let port = receiver.port;
    // URLs that never went through registration: the client itself refuses them.
    for raw in [
        format!("https://127.0.0.1:{port}/"),
        format!("https://2130706433:{port}/"),
        format!("https://[::ffff:127.0.0.1]:{port}/"),
        format!("https://[64:ff9b::7f00:1]:{port}/"),
        format!("https://good@127.0.0.1:{port}/"),
        format!("http://hooks.example.com:{port}/"),
        format!("https://localhost:{port}/"),
    ] {
        let url = Url::parse(&raw).unwrap();
        let err = strict.send(strict.post(url)).await.unwrap_err();
        assert!(matches!(err, OutboundError::Refused(_)), "{raw}: {err:?}");
    }
    assert!(receiver.requests().is_empty());
}

#[tokio::test]
async fn the_connection_goes_to_the_vetted_address() {
    let receiver = Receiver::start(|_| ok("pinned")).await;
    let lookup = zone();
    // Only the table knows this name; the system resolver does not.
    lookup.set("receiver.test", &[ip("127.0.0.1")]);
    let lenient = outbound(Policy::webhooks(true), &lookup);
    let url = lenient
        .vet(&format!("http://receiver.test:{}/hook", receiver.port))
        .await
        .unwrap();
    let response = lenient.send(lenient.post(url).body("{}")).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(body_prefix(response, 4096).await.unwrap(), b"pinned");
    assert_eq!(
        receiver.requests(),
        vec![format!(
            "POST /hook HTTP/1.1 receiver.test:{}",
            receiver.port
        )]
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let receiver = Receiver::start(|path| match path {
        "/hook" => Some(
            "HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n"
                .to_owned(),
        ),
        _ => ok("followed"),
    })
    .await;
    let lenient = outbound(Policy::webhooks(true), &zone());
    let url = Url::parse(&format!("http://127.0.0.1:{}/hook", receiver.port)).unwrap();
    let response = lenient.send(lenient.post(url).body("{}")).await.unwrap();
    assert_eq!(response.status().as_u16(), 302);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
}

#[tokio::test]
async fn a_receiver_that_hangs_times_out_and_bodies_are_capped() {
    let receiver = Receiver::start(|path| match path {
        "/hang" => None,
        _ => ok(&"x".repeat(10_000)),
    })
    .await;
    let lenient = Outbound::builder(Policy::webhooks(true))
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{}", receiver.port);
    let hang = Url::parse(&format!("{base}/hang")).unwrap();
    let err = lenient.send(lenient.post(hang)).await.unwrap_err();
    assert!(matches!(err, OutboundError::Timeout(_)), "{err:?}");
    assert_eq!(err.reason(), "timeout");

    let big = Url::parse(&format!("{base}/big")).unwrap();
    let response = lenient.send(lenient.post(big)).await.unwrap();
    assert_eq!(body_prefix(response, 4096).await.unwrap().len(), 4096);
}

#[test]
fn the_policy_follows_webhook_allow_private_targets() {
    let mut config = tenantry::config::Config::from_vars(|_| None).unwrap();
    let strict = Outbound::from_config(&config).unwrap().policy();
    assert_eq!(strict, Policy::webhooks(false));
    assert!(!strict.allow_http && !strict.allow_private);
    config.webhook_allow_private_targets = true;
    let lenient = Outbound::from_config(&config).unwrap().policy();
    assert!(lenient.allow_http && lenient.allow_private);
}
