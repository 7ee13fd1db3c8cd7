//! Looks tenants up for the request path, through `app.resolve_tenant` (the app role reads no
//! tenant row outside its context). Deleted tenants do not resolve.

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

/// The app role sees no tenant row but its current tenant's, so resolution, which happens
/// before any context exists, goes through a SECURITY DEFINER function that returns the routing
/// data of one live tenant and nothing else (migration V5).
const RESOLVE_SQL: &str =
    "select id, slug, subdomain, plan, suspended from app.resolve_tenant($1, $2, $3)";

pub async fn lookup(
    pool: &PgPool,
    key: &TenantKey,
) -> Result<Option<ResolvedTenant>, TenancyError> {
    let (id, slug, subdomain): (Option<Uuid>, Option<&str>, Option<&str>) = match key {
        TenantKey::Id(id) => (Some(*id), None, None),
        TenantKey::IdOrSlug(raw) => match Uuid::parse_str(raw) {
            Ok(id) => (Some(id), None, None),
            Err(_) => (None, Some(raw.as_str()), None),
        },
        TenantKey::Subdomain(sub) => (None, None, Some(sub.as_str())),
    };
    let conn = pool.get().await?;
    let stmt = conn.prepare_cached(RESOLVE_SQL).await?;
    let row = conn.query_opt(&stmt, &[&id, &slug, &subdomain]).await?;
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
