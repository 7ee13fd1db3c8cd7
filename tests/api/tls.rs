//! TLS in transit (issue 15 item 1), with certificates made here by rcgen: HTTPS served by
//! `tenantry serve` (HSTS, nothing older than TLS 1.2, a new certificate served after SIGHUP
//! while a connection made before it keeps working), and PostgreSQL over TLS.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use secrecy::ExposeSecret;

use crate::cli::tenantry_with;
use crate::helpers::{test_db, Server};

/// A CA of its own, so that a client trusting one CA refuses the other's certificates.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("tenantry test CA {name}"));
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa {
            issuer: Issuer::new(params, key),
            pem: cert.pem(),
        }
    }

    /// A server certificate for 127.0.0.1 written to `dir`: (cert file, key file).
    fn issue_into(&self, dir: &Path) -> (String, String) {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
        // Written beside and renamed into place, as a certificate manager does, so a reload never
        // reads half a file.
        for (path, pem) in [(&cert_file, cert.pem()), (&key_file, key.serialize_pem())] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, pem).expect("write PEM");
            std::fs::rename(&tmp, path).expect("rename PEM");
        }
        (
            cert_file.display().to_string(),
            key_file.display().to_string(),
        )
    }

    /// A client that trusts this CA only.
    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.pem.as_bytes()).expect("CA pem"),
            )
            .build()
            .expect("https client")
    }
}

fn scratch_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tenantry-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A TLS 1.1 ClientHello (no supported_versions extension) on a raw socket: the first bytes
/// the server answers.
fn answer_to_tls11_hello(port: u16) -> Vec<u8> {
    let mut hello = vec![0x03, 0x02]; // client_version TLS 1.1
    hello.extend_from_slice(&[0x42; 32]); // random
    hello.push(0); // no session id
    hello.extend_from_slice(&[0x00, 0x04, 0xc0, 0x14, 0x00, 0x2f]); // two TLS 1.1 suites
    hello.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut handshake = vec![0x01, 0x00];
    handshake.extend_from_slice(&(hello.len() as u16).to_be_bytes());
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x02];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);

    let mut socket = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    socket.write_all(&record).expect("send hello");
    let mut answer = vec![0; 64];
    let n = socket.read(&mut answer).unwrap_or(0);
    answer.truncate(n);
    answer
}

#[tokio::test]
async fn https_with_hsts_tls12_and_up_and_a_certificate_reloaded_on_sighup() {
    let db = test_db().await;
    let dir = scratch_dir();
    let (first_ca, second_ca) = (TestCa::new("one"), TestCa::new("two"));
    let (cert, key) = first_ca.issue_into(&dir);
    let first = first_ca.client();
    let server = Server::start_https(
        &db,
        &[("TLS_CERT_FILE", &cert), ("TLS_KEY_FILE", &key)],
        &first,
    )
    .await;
    assert!(server.address.starts_with("https://"));

    // HTTPS answers, with HSTS.
    let r = first
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("https");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(
        r.headers()
            .get("strict-transport-security")
            .and_then(|v| v.to_str().ok()),
        Some("max-age=31536000")
    );
    // On errors too.
    let r = first
        .get(server.url("/no-such-route"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(r.headers().contains_key("strict-transport-security"));

    // Plain HTTP on the TLS port gets no answer of HTTP.
    let plain = reqwest::Client::new()
        .get(server.url("/healthz").replacen("https", "http", 1))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");

    // TLS 1.1: refused with an alert, never a ServerHello.
    let port: u16 = server
        .address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let answer = answer_to_tls11_hello(port);
    assert!(
        answer.first() == Some(&0x15) || answer.is_empty(),
        "TLS 1.1 hello answered with {answer:02x?}"
    );
    if answer.len() >= 7 {
        // protocol_version (70) or handshake_failure (40)
        assert!([70, 40].contains(&answer[6]), "alert {answer:02x?}");
    }

    // A client of the second CA does not trust the first certificate.
    let second = second_ca.client();
    assert!(second.get(server.url("/healthz")).send().await.is_err());

    // New files, then SIGHUP: new connections get the new certificate, while the first
    // client's connection, made before and kept busy throughout, goes on answering. A new
    // connection of that client would now be refused (it trusts only the first CA), so its
    // answers come from the connection the reload did not drop.
    second_ca.issue_into(&dir);
    server.hang_up();
    let mut reloaded = false;
    for _ in 0..200 {
        let r = first.get(server.url("/healthz")).send().await;
        assert_eq!(
            r.map(|r| r.status().as_u16()).ok(),
            Some(200),
            "the connection made before the reload was dropped"
        );
        if let Ok(r) = second.get(server.url("/healthz")).send().await {
            assert_eq!(r.status().as_u16(), 200);
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        reloaded,
        "the certificate of the second CA was never served"
    );
    let r = first.get(server.url("/healthz")).send().await;
    assert_eq!(r.map(|r| r.status().as_u16()).ok(), Some(200));
    let fresh = TestCa::client(&first_ca);
    assert!(fresh.get(server.url("/healthz")).send().await.is_err());

    // A broken file on SIGHUP leaves the served certificate as it was.
    std::fs::write(Path::new(&cert), "not a certificate").expect("write");
    server.hang_up();
    for _ in 0..10 {
        let r = second_ca.client().get(server.url("/healthz")).send().await;
        assert_eq!(r.map(|r| r.status().as_u16()).ok(), Some(200));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TLS-terminating proxy to a local server: for PostgreSQL it first answers the client's
/// SSLRequest with `S`; then it completes the handshake with `cert` and relays in plain TCP.
/// Counts the sessions it relayed and the PostgreSQL clients that started without TLS (refused).
struct TlsProxy {
    port: u16,
    relayed: Arc<AtomicUsize>,
    plaintext: Arc<AtomicUsize>,
}

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

impl TlsProxy {
    async fn start(cert_file: &str, key_file: &str, upstream: &str) -> TlsProxy {
        // Redis (6379) speaks TLS from the first byte; PostgreSQL asks for it first.
        let postgres = !upstream.ends_with(":6379");
        let upstream = upstream.to_string();
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let chain = CertificateDer::pem_file_iter(cert_file)
            .expect("cert")
            .collect::<Result<Vec<_>, _>>()
            .expect("cert pem");
        let key = PrivateKeyDer::from_pem_file(key_file).expect("key");
        let config = rustls::ServerConfig::builder_with_provider(tenantry::http::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (relayed, plaintext) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (r, p) = (relayed.clone(), plaintext.clone());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (acceptor, relayed, plaintext) = (acceptor.clone(), r.clone(), p.clone());
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if postgres {
                        let mut first = [0u8; 8];
                        if socket.read_exact(&mut first).await.is_err() {
                            return;
                        }
                        if first != SSL_REQUEST {
                            plaintext.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        if socket.write_all(b"S").await.is_err() {
                            return;
                        }
                    }
                    let Ok(mut tls) = acceptor.accept(socket).await else {
                        return;
                    };
                    let Ok(mut upstream) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    relayed.fetch_add(1, Ordering::SeqCst);
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                });
            }
        });
        TlsProxy {
            port,
            relayed,
            plaintext,
        }
    }
}

/// `sslmode=require`: the connection is TLS, verified against PGSSLROOTCERT (host name
/// included), through the real binary; a server whose certificate is not trusted is refused,
/// never used in plain TCP.
#[tokio::test]
async fn database_connections_with_sslmode_require_are_tls_and_verified() {
    let db = test_db().await;
    let dir = scratch_dir();
    let ca = TestCa::new("db");
    let (cert, key) = ca.issue_into(&dir);
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).expect("write CA");
    // The database the tests use (5432 here; a Citus coordinator's port under citus-check).
    let (host, port) = crate::helpers::host_port(db.config.database_url.expose_secret());
    let server = format!("{host}:{port}");
    let proxy = TlsProxy::start(&cert, &key, &server).await;

    let through_proxy = |url: &str| {
        let url = url.replacen(&server, &format!("127.0.0.1:{}", proxy.port), 1);
        format!("{url}?sslmode=require")
    };
    let database = through_proxy(db.config.database_url.expose_secret());
    let app = through_proxy(db.config.app_database_url.expose_secret());
    let admin = through_proxy(db.config.admin_database_url.expose_secret());
    let ca_path = ca_file.display().to_string();
    let env = [
        ("DATABASE_URL", database.as_str()),
        ("APP_DATABASE_URL", app.as_str()),
        ("ADMIN_DATABASE_URL", admin.as_str()),
        ("PGSSLROOTCERT", ca_path.as_str()),
    ];
    let out = tenantry_with(&db, &["tenants", "list", "--json"], &env).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        proxy.relayed.load(Ordering::SeqCst) > 0,
        "nothing went through TLS"
    );
    assert_eq!(proxy.plaintext.load(Ordering::SeqCst), 0);

    // Without the CA the proxy's certificate is not trusted: refused, not sent in plain TCP.
    let before = proxy.relayed.load(Ordering::SeqCst);
    let out = tenantry_with(&db, &["tenants", "list", "--json"], &env[..3]).await;
    assert!(
        !out.status.success(),
        "an untrusted database certificate was accepted"
    );
    assert_eq!(proxy.relayed.load(Ordering::SeqCst), before);
    assert_eq!(proxy.plaintext.load(Ordering::SeqCst), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `rediss://`: the server reaches Redis over TLS, trusting the system roots and SSL_CERT_FILE
/// (`/readyz` pings Redis); with a certificate it does not trust, Redis is unreachable.
#[tokio::test]
async fn redis_over_tls_with_a_rediss_url() {
    let db = test_db().await;
    let dir = scratch_dir();
    let ca = TestCa::new("redis");
    let (cert, key) = ca.issue_into(&dir);
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).expect("write CA");
    let proxy = TlsProxy::start(&cert, &key, "127.0.0.1:6379").await;
    let url = format!("rediss://127.0.0.1:{}", proxy.port);
    let ca_path = ca_file.display().to_string();

    let server = Server::start_with(
        &db,
        1,
        &[
            ("REDIS_URL", url.as_str()),
            ("SSL_CERT_FILE", ca_path.as_str()),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..100 {
        let r = http
            .get(server.url("/readyz"))
            .send()
            .await
            .expect("readyz");
        if r.status().is_success() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "Redis over TLS never answered /readyz");
    assert!(proxy.relayed.load(Ordering::SeqCst) > 0);
    drop(server);

    // The system roots do not include the test CA: the handshake fails, Redis is not ready.
    let untrusting = Server::start_with(&db, 1, &[("REDIS_URL", url.as_str())]).await;
    let r = http
        .get(untrusting.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(r.status().as_u16(), 503);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A certificate that cannot be used stops `serve` at start with a message naming the file; a
/// key of another certificate too.
#[tokio::test]
async fn unusable_tls_files_stop_the_server_at_start() {
    let db = test_db().await;
    let dir = scratch_dir();
    let ca = TestCa::new("start");
    let (cert, _key) = ca.issue_into(&dir);
    let other = scratch_dir();
    let (_, other_key) = ca.issue_into(&other);
    let garbage = dir.join("garbage.pem").display().to_string();
    std::fs::write(&garbage, "not a certificate").expect("write");
    for (cert_file, key_file, named) in [
        (garbage.as_str(), other_key.as_str(), garbage.as_str()),
        (cert.as_str(), other_key.as_str(), other_key.as_str()),
    ] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tenantry"))
            .arg("serve")
            .env("DATABASE_URL", db.config.database_url.expose_secret())
            .env("JWT_SECRET", db.config.jwt_secret.expose_secret())
            .env("BIND", "127.0.0.1:0")
            .env("TLS_CERT_FILE", cert_file)
            .env("TLS_KEY_FILE", key_file)
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start tenantry serve");
        let mut status = None;
        for _ in 0..600 {
            if let Some(s) = child.try_wait().expect("try_wait") {
                status = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let Some(status) = status else {
            let _ = child.kill();
            panic!("serve started with {cert_file} and {key_file}");
        };
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        assert!(!status.success());
        assert!(
            stderr.contains("HTTPS") && stderr.contains(named),
            "{stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other);
}

/// Without TLS there is no HSTS: a browser must not pin plain HTTP.
#[tokio::test]
async fn plain_http_sends_no_hsts() {
    let app = crate::helpers::spawn_app().await;
    let r = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(!r.headers().contains_key("strict-transport-security"));
}
