//! Looks tenants up for the request path (app role: every tenant row is readable for
//! resolution, nothing else is). Deleted tenants do not resolve.

use uuid::Uuid;

use super::TenancyError;
use crate::db::PgPool;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedTenant {
    pub id: Uuid,
    pub slug: String,
    pub subdomain: String,
    pub plan: String,
    pub suspended: bool,
}

/// How the request named its tenant.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TenantKey {
    Id(Uuid),
    /// `X-Tenant-ID`: a tenant id or a slug.
    IdOrSlug(String),
    Subdomain(String),
}

const RESOLVE_COLUMNS: &str = "id, slug, subdomain, plan, status = 'suspended'";

pub async fn lookup(
    pool: &PgPool,
    key: &TenantKey,
) -> Result<Option<ResolvedTenant>, TenancyError> {
    let conn = pool.get().await?;
    let row = match key {
        TenantKey::Id(id) => {
            let stmt = conn
                .prepare_cached(&format!(
                    "select {RESOLVE_COLUMNS} from app.tenants where id = $1 and deleted_at is null"
                ))
                .await?;
            conn.query_opt(&stmt, &[id]).await?
        }
        TenantKey::IdOrSlug(raw) => match Uuid::parse_str(raw) {
            Ok(id) => return Box::pin(lookup(pool, &TenantKey::Id(id))).await,
            Err(_) => {
                let stmt = conn
                    .prepare_cached(&format!(
                        "select {RESOLVE_COLUMNS} from app.tenants where slug = $1 and deleted_at is null"
                    ))
                    .await?;
                conn.query_opt(&stmt, &[raw]).await?
            }
        },
        TenantKey::Subdomain(sub) => {
            let stmt = conn
                .prepare_cached(&format!(
                    "select {RESOLVE_COLUMNS} from app.tenants where subdomain = $1 and deleted_at is null"
                ))
                .await?;
            conn.query_opt(&stmt, &[sub]).await?
        }
    };
    Ok(row.map(|r| ResolvedTenant {
        id: r.get(0),
        slug: r.get(1),
        subdomain: r.get(2),
        plan: r.get(3),
        suspended: r.get(4),
    }))
}

/// `acme.example.com` under BASE_DOMAIN `example.com` names subdomain `acme`. Nested labels,
/// the bare base domain and reserved names (www, api, ...) name no tenant.
pub fn subdomain_of(host: &str, base_domain: &str) -> Option<String> {
    let host = host.trim().to_ascii_lowercase();
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h.to_string(),
        _ => host,
    };
    let prefix = host.strip_suffix(base_domain)?.strip_suffix('.')?;
    if prefix.is_empty()
        || prefix.contains('.')
        || super::validate::RESERVED_SLUGS.contains(&prefix)
    {
        return None;
    }
    Some(prefix.to_string())
}

#[cfg(test)]
mod tests {
    use super::subdomain_of;

    #[test]
    fn subdomains() {
        assert_eq!(
            subdomain_of("acme.localhost:8080", "localhost").as_deref(),
            Some("acme")
        );
        assert_eq!(
            subdomain_of("ACME.example.com", "example.com").as_deref(),
            Some("acme")
        );
        assert_eq!(subdomain_of("example.com", "example.com"), None);
        assert_eq!(subdomain_of("a.b.example.com", "example.com"), None);
        assert_eq!(subdomain_of("www.example.com", "example.com"), None);
        assert_eq!(subdomain_of("acme.other.com", "example.com"), None);
        assert_eq!(subdomain_of("xacme.example.comx", "example.com"), None);
    }
}
