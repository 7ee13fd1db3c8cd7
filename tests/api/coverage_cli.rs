//! CLI paths the other tests leave out: `tenantry demo` (run by scripts/run.sh) and the
//! configuration error every subcommand shares.

use tenantry::auth::password;
use tenantry::cli::{DEMO_EMAIL, DEMO_SLUG};

use crate::cli::tenantry_with;
use crate::helpers::{test_db, TestDb};

/// The password `tenantry demo` printed on its `password:` line.
fn printed_password(stdout: &[u8]) -> String {
    let text = String::from_utf8_lossy(stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("password:"))
        .map(|p| p.trim().to_string())
        .unwrap_or_else(|| panic!("no password line in {text}"))
}

async fn demo_admin_hash(db: &TestDb) -> String {
    db.superuser_db()
        .await
        .query_one(
            "select u.password_hash from app.users u join app.tenants t on t.id = u.tenant_id \
             where t.slug = $1 and u.email = $2",
            &[&DEMO_SLUG, &DEMO_EMAIL],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn demo_creates_the_tenant_once_and_gives_its_admin_a_fresh_password_each_run() {
    let db = test_db().await;

    let first = tenantry_with(&db, &["demo"], &[]).await;
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let stdout = String::from_utf8_lossy(&first.stdout).to_string();
    assert!(stdout.contains("demo tenant ready"), "{stdout}");
    assert!(stdout.contains(DEMO_EMAIL), "{stdout}");
    assert!(stdout.contains("plan pro"), "{stdout}");
    let first_password = printed_password(&first.stdout);
    assert!(password::verify(
        &first_password,
        &demo_admin_hash(&db).await
    ));

    // Again: the same tenant, a new password that replaces the old one.
    let second = tenantry_with(&db, &["demo"], &[]).await;
    assert!(second.status.success());
    let second_password = printed_password(&second.stdout);
    assert_ne!(first_password, second_password);
    let hash = demo_admin_hash(&db).await;
    assert!(password::verify(&second_password, &hash));
    assert!(!password::verify(&first_password, &hash));
    let tenants: i64 = db
        .superuser_db()
        .await
        .query_one(
            "select count(*) from app.tenants where slug = $1",
            &[&DEMO_SLUG],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tenants, 1);

    // A deleted demo tenant is not resurrected behind the operator's back.
    let deleted = tenantry_with(&db, &["tenants", "delete", DEMO_SLUG], &[]).await;
    assert!(deleted.status.success());
    let refused = tenantry_with(&db, &["demo"], &[]).await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("tenants restore demo"), "{stderr}");
}

#[tokio::test]
async fn a_configuration_error_exits_with_status_2_before_any_command_runs() {
    let db = test_db().await;
    let out = tenantry_with(&db, &["tenants", "list"], &[("JWT_SECRET", "short")]).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("configuration error"), "{stderr}");
}
