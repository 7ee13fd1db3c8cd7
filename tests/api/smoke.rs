use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let r = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn provisioning_returns_a_working_admin_token() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("acme").await;
    let r = app.get("/tenant", &tenant.token).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["slug"], "acme");
    assert_eq!(body["status"], "active");

    let r = app
        .create_tenant_raw(&json!({"name": "x", "slug": "acme", "admin_email": "a@b.co"}))
        .await;
    assert_problem(r, 409, "conflict").await;
}

/// Tenant tables are granted through per-schema default privileges set before the template
/// runs (not `GRANT .. ON ALL TABLES IN SCHEMA`, which scans all of pg_class), so a table that a
/// later template version adds must come out granted exactly like the first ones.
#[tokio::test]
async fn a_table_added_by_a_later_template_version_is_granted_like_the_first() {
    use tenantry::db::migrate::{migrate, migrate_citus, MigrateOptions};
    use tenantry::db::template::TenantTemplate;
    use tenantry::db::tenant_schema_name;

    let app = spawn_app().await;
    let tenant = app.create_tenant("grants").await;

    let dir = std::env::temp_dir().join(format!("tenantry-grants-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tenant_template");
    for entry in std::fs::read_dir(source).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    let next = TenantTemplate::embedded().latest_version() + 1;
    let policy =
        "tenant_id = (select nullif(current_setting('app.current_tenant', true), '')::uuid)";
    std::fs::write(
        dir.join(format!("V{next}__notes.sql")),
        format!(
            "CREATE TABLE notes (tenant_id uuid NOT NULL, id uuid NOT NULL, body text NOT NULL, \
             PRIMARY KEY (tenant_id, id));\n\
             ALTER TABLE notes ENABLE ROW LEVEL SECURITY;\n\
             ALTER TABLE notes FORCE ROW LEVEL SECURITY;\n\
             CREATE POLICY notes_tenant ON notes USING ({policy}) WITH CHECK ({policy});\n"
        ),
    )
    .unwrap();
    let template = TenantTemplate::from_dir(&dir).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let options = MigrateOptions {
        jobs: 2,
        template,
        progress: false,
    };
    let report = if crate::helpers::citus_workers().is_some() {
        migrate_citus(&app.config, options).await
    } else {
        migrate(&app.config, options).await
    }
    .unwrap();
    assert_eq!(report.tenants_migrated, 1, "{report}");

    let su = app.superuser_db().await;
    let schema = tenant_schema_name(tenant.id);
    let roles = &app.config.roles;
    let has = |role: &str, table: &str, privilege: &str| {
        let (role, table, privilege) = (
            role.to_string(),
            format!("{schema}.{table}"),
            privilege.to_string(),
        );
        let su = &su;
        async move {
            su.query_one(
                "select has_table_privilege($1, $2, $3)",
                &[&role, &table, &privilege],
            )
            .await
            .unwrap()
            .get::<_, bool>(0)
        }
    };
    for table in ["events", "notes"] {
        for privilege in ["SELECT", "INSERT", "UPDATE", "DELETE"] {
            assert!(
                has(&roles.app, table, privilege).await,
                "app {privilege} {table}"
            );
        }
        for privilege in ["TRUNCATE", "REFERENCES", "TRIGGER"] {
            assert!(
                !has(&roles.app, table, privilege).await,
                "app {privilege} {table}"
            );
        }
        assert!(
            has(&roles.admin, table, "SELECT").await,
            "admin SELECT {table}"
        );
        assert!(
            !has(&roles.admin, table, "INSERT").await,
            "admin INSERT {table}"
        );
    }
    for privilege in ["SELECT", "INSERT", "UPDATE", "DELETE"] {
        assert!(
            !has(&roles.app, "refinery_schema_history", privilege).await,
            "app {privilege} on the history table"
        );
    }

    // The app role uses the new table under RLS, for its own tenant only.
    let mut db = app.app_db().await;
    let tx = db.transaction().await.unwrap();
    tenantry::db::tenant_tx::set_tenant_in_tx(&tx, tenant.id)
        .await
        .unwrap();
    tx.execute(
        &format!("insert into {schema}.notes (tenant_id, id, body) values ($1, $2, 'hello')"),
        &[&tenant.id, &uuid::Uuid::now_v7()],
    )
    .await
    .unwrap();
    let seen: i64 = tx
        .query_one(
            &format!("select count(*) from {schema}.notes where tenant_id = $1"),
            &[&tenant.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 1);
    tx.commit().await.unwrap();
}
