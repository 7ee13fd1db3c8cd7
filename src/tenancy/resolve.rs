//! Looks tenants up for the request path, through `app.resolve_tenant` (the app role reads no
//! tenant row outside its context). Deleted tenants do not resolve. The request path asks
//! through `cache::Caches::resolve_tenant`, which remembers answers, known and unknown.

use uuid::Uuid;

use super::{validate, TenancyError};
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

impl TenantKey {
    /// The one key under which a name is looked up and cached, or None when it names no tenant
    /// whatever the database holds: an id in any spelling is `Id`, and a slug or subdomain
    /// must have the shape the tenants table allows. Caches keyed by it hold at most three
    /// keys for a tenant, and none longer than a slug for a name that is not one.
    pub fn canonical(&self) -> Option<TenantKey> {
        match self {
            TenantKey::Id(id) => Some(TenantKey::Id(*id)),
            TenantKey::IdOrSlug(raw) => match Uuid::parse_str(raw) {
                Ok(id) => Some(TenantKey::Id(id)),
                Err(_) => validate::is_slug_shaped(raw).then(|| self.clone()),
            },
            TenantKey::Subdomain(sub) => validate::is_slug_shaped(sub).then(|| self.clone()),
        }
    }
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
    if prefix.is_empty() || prefix.contains('.') || validate::RESERVED_SLUGS.contains(&prefix) {
        return None;
    }
    Some(prefix.to_string())
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::{subdomain_of, TenantKey};

    #[test]
    fn ids_in_any_spelling_are_one_key_and_impossible_names_none() {
        let id = Uuid::now_v7();
        assert_eq!(
            TenantKey::IdOrSlug(id.simple().to_string().to_uppercase()).canonical(),
            Some(TenantKey::Id(id))
        );
        assert_eq!(
            TenantKey::IdOrSlug("acme".into()).canonical(),
            Some(TenantKey::IdOrSlug("acme".into()))
        );
        for raw in ["Acme", "-acme", "acme-", "", "a_b", &"a".repeat(64)] {
            assert_eq!(TenantKey::IdOrSlug(raw.into()).canonical(), None, "{raw:?}");
            assert_eq!(
                TenantKey::Subdomain(raw.into()).canonical(),
                None,
                "{raw:?}"
            );
        }
    }

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
