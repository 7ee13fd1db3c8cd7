//! HTTPS served by tenantry itself (TLS_CERT_FILE, TLS_KEY_FILE; docs/security.md): rustls with
//! the ring provider, TLS 1.3 and 1.2 only, HTTP/1.1 over it.
//!
//! The certificate is chosen per handshake by [`ReloadingCert`], which holds it in an
//! `ArcSwap`: SIGHUP reads the files again and swaps the new certificate in. Connections already
//! open keep the certificate they were made with; none is dropped. A reload that fails (a file
//! half written, a key that does not match) is logged and the old certificate stays.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

/// `Strict-Transport-Security` on every response served over TLS: a year, this host only (the
/// tenants' subdomains may be served by other front ends).
pub const HSTS: &str = "max-age=31536000";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read PEM from {path}")]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("the key in {path} is not usable for TLS, or does not match the certificate")]
    Key {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot build the TLS configuration")]
    Config(#[source] rustls::Error),
}

/// rustls 0.23.48 deprecates its ring provider for lacking post-quantum key exchange, which
/// only its aws-lc-rs provider offers; that one needs cmake and a C build, and everything else
/// here (the HTTP clients, JWT) is on ring. X25519 with TLS 1.3 remains the default exchange.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the certificate chain and its key, and checks that they belong together.
pub fn load(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let pem_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Pem { path, source }
    };
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(pem_error(&files.cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error(&files.cert))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.cert.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(pem_error(&files.key))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|source| TlsError::Key {
        path: files.key.clone(),
        source,
    })
}

/// The server's certificate, replaceable while connections are being made.
pub struct ReloadingCert {
    files: TlsFiles,
    current: ArcSwap<CertifiedKey>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    pub fn load(files: TlsFiles) -> Result<Arc<ReloadingCert>, TlsError> {
        let current = ArcSwap::from_pointee(load(&files)?);
        Ok(Arc::new(ReloadingCert { files, current }))
    }

    /// Reads the files again; on error the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.current.store(Arc::new(load(&self.files)?));
        Ok(())
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// TLS 1.3 and 1.2 (rustls has nothing older), HTTP/1.1 announced by ALPN (the server is built
/// without HTTP/2).
pub fn server_config(cert: Arc<ReloadingCert>) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Reloads the certificate on each SIGHUP until stopped (a background loop of the server).
pub async fn reload_on_sighup(
    cert: Arc<ReloadingCert>,
    stop: CancellationToken,
) -> crate::supervise::TaskResult {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                got = hangups.recv() => if got.is_none() { return Ok(()) },
            }
            match cert.reload() {
                Ok(()) => {
                    tracing::info!(file = %cert.files.cert.display(), "TLS certificate reloaded")
                }
                Err(err) => tracing::error!(
                    error = %crate::error::error_chain(&err),
                    "TLS certificate not reloaded; the previous one stays in use"
                ),
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = cert;
        stop.cancelled().await;
        Ok(())
    }
}
