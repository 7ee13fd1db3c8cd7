//! The request path's caches stay bounded whatever names clients send. These drive
//! `Caches::resolve_tenant`, the function the tenant resolver of every request calls
//! (`AppState::resolve_tenant`), on caches built as the server builds them.

use std::time::Duration;

use futures_util::{stream, StreamExt};
use tenantry::auth::Role;
use tenantry::cache::{Caches, EntryCounts};
use tenantry::tenancy::resolve::TenantKey;
use uuid::Uuid;

use crate::helpers::{provision_tenant, test_db};

/// Long enough that nothing expires during a test: what the counts show is the bounds.
const TTL: Duration = Duration::from_secs(600);

fn counts(caches: &Caches) -> EntryCounts {
    caches.run_pending_tasks();
    caches.entry_counts()
}

#[tokio::test]
async fn unknown_tenant_names_leave_the_caches_bounded() {
    let db = test_db().await;
    let pools = db.pools();
    let tenant = provision_tenant(&db.config, &pools, "bounded").await.tenant;
    let caches = Caches::new(TTL);
    let known = [
        TenantKey::Id(tenant.id),
        TenantKey::IdOrSlug(tenant.slug.clone()),
        TenantKey::Subdomain(tenant.subdomain.clone()),
    ];
    for key in &known {
        let resolved = caches.resolve_tenant(&pools.app, key).await.unwrap();
        assert_eq!(resolved.map(|t| t.id), Some(tenant.id), "{key:?}");
    }
    // The same tenant under other spellings of its id is the one entry already there.
    let spellings = [
        tenant.id.to_string().to_uppercase(),
        tenant.id.simple().to_string(),
        tenant.id.urn().to_string(),
    ];
    for spelling in spellings {
        let resolved = caches
            .resolve_tenant(&pools.app, &TenantKey::IdOrSlug(spelling))
            .await
            .unwrap();
        assert_eq!(resolved.map(|t| t.id), Some(tenant.id));
    }
    let before = counts(&caches);
    assert_eq!(
        (before.tenants, before.unknown_tenants),
        (3, 0),
        "one entry per way of naming the tenant"
    );

    // Names as a client may send them: header values, subdomains, and the tenant claims of
    // tokens nobody verified yet. Each is distinct and unknown.
    let names = (0..100_000u32).map(|i| match i % 3 {
        0 => TenantKey::IdOrSlug(format!("nobody-{i}")),
        1 => TenantKey::Subdomain(format!("nowhere-{i}")),
        _ => TenantKey::Id(Uuid::now_v7()),
    });
    let unknown = stream::iter(names)
        .map(|key| {
            let (caches, pool) = (&caches, &pools.app);
            async move { caches.resolve_tenant(pool, &key).await }
        })
        .buffer_unordered(16)
        .fold(0u32, |unknown, resolved| async move {
            match resolved.unwrap() {
                None => unknown + 1,
                Some(t) => panic!("{} resolved", t.slug),
            }
        })
        .await;
    assert_eq!(unknown, 100_000);

    let after = counts(&caches);
    let bounds = Caches::capacities();
    assert!(
        after.unknown_tenants <= bounds.unknown_tenants,
        "{} unknown names cached, over the bound of {}",
        after.unknown_tenants,
        bounds.unknown_tenants
    );
    assert!(
        after.unknown_tenants > 0,
        "unknown names are remembered as misses"
    );
    assert_eq!(after.tenants, 3, "the misses evicted no known tenant");
    assert_eq!((after.users, after.api_keys), (0, 0));

    // Names no tenant can have (a slug's shape is the tenants table's CHECK) are answered
    // without a lookup and kept nowhere, however long.
    let long = "x".repeat(8 * 1024);
    for key in [
        TenantKey::IdOrSlug(long.clone()),
        TenantKey::Subdomain(long),
        TenantKey::IdOrSlug("UPPER-case".into()),
        TenantKey::IdOrSlug("-dash".into()),
    ] {
        assert!(caches
            .resolve_tenant(&pools.app, &key)
            .await
            .unwrap()
            .is_none());
    }
    assert_eq!(counts(&caches).unknown_tenants, after.unknown_tenants);
}

#[tokio::test]
async fn a_zero_ttl_caches_nothing() {
    let db = test_db().await;
    let pools = db.pools();
    let provisioned = provision_tenant(&db.config, &pools, "uncached").await;
    let tenant = provisioned.tenant;
    let caches = Caches::new(Duration::ZERO);
    for key in [
        TenantKey::Id(tenant.id),
        TenantKey::IdOrSlug("nobody".into()),
    ] {
        caches.resolve_tenant(&pools.app, &key).await.unwrap();
    }
    let role = caches
        .live_role(&pools.app, tenant.id, provisioned.admin_id)
        .await
        .unwrap();
    assert_eq!(role, Some(Role::Admin));
    assert_eq!(counts(&caches), EntryCounts::default());
}
