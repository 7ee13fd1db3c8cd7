//! TLS to PostgreSQL (docs/security.md): a connection URL with `sslmode=require` is encrypted
//! with rustls and the server's certificate verified against Mozilla's roots and the PEM file
//! named by `PGSSLROOTCERT` (libpq's variable; a managed database's CA bundle goes there), host
//! name included: with rustls, `require` is what libpq calls `verify-full`. It never falls back
//! to plain TCP. Without `sslmode=require` connections stay plain, as before.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::DbError;

pub fn wanted(config: &tokio_postgres::Config) -> bool {
    config.get_ssl_mode() == SslMode::Require
}

/// The rustls connector, with the roots read now (PGSSLROOTCERT changes need a restart).
pub fn connector() -> Result<MakeRustlsConnect, DbError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = std::env::var_os("PGSSLROOTCERT") {
        let failed = |source: rustls::pki_types::pem::Error| DbError::Tls {
            detail: format!("PGSSLROOTCERT {}", path.to_string_lossy()),
            source: Arc::new(source),
        };
        for cert in CertificateDer::pem_file_iter(&path).map_err(failed)? {
            // A certificate rustls cannot use as a root is left out; the handshake then says so.
            let _ = roots.add(cert.map_err(failed)?);
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(crate::http::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| DbError::Tls {
            detail: "protocol versions".into(),
            source: Arc::new(source),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}
