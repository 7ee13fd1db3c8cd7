//! `tenantry migrate` over existing tenant schemas: no-op runs, a new template version,
//! resuming after a reset or a failure, the advisory lock between runners, divergent templates.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The built-in template's version, and the one a test template folder adds on top of it.
/// Kept in step with tenant_template/ (checked in `copy_of_embedded`).
const BASE: i32 = 6;
pub(crate) const NEXT: i32 = BASE + 1;

use tenantry::config::Config;
use tenantry::db::migrate::{migrate, migrate_citus, MigrateOptions, MigrateReport};
use tenantry::db::template::TenantTemplate;
use tenantry::db::{tenant_schema_name, DbError};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::catalog::catalog_violations;
use crate::helpers::{provision_tenant, provision_tenant_with, test_db, TestDb};

const LOCK_KEY: i64 = 0x7465_6e61_6e74_7279;

/// A copy of tenant_template/ in a folder of its own, removed on drop.
pub(crate) struct TemplateDir(pub PathBuf);

impl TemplateDir {
    fn copy_of_embedded() -> TemplateDir {
        let dir = std::env::temp_dir().join(format!("tenantry-template-{}", Uuid::new_v4()));
        assert_eq!(
            TenantTemplate::embedded().latest_version(),
            BASE,
            "a template migration was added: update BASE in tests/api/migrate.rs"
        );
        std::fs::create_dir_all(&dir).unwrap();
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tenant_template");
        for entry in std::fs::read_dir(source).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
        TemplateDir(dir)
    }

    pub(crate) fn with_v2() -> TemplateDir {
        let dir = TemplateDir::copy_of_embedded();
        dir.write(
            &format!("V{NEXT}__add_column.sql"),
            "ALTER TABLE events ADD COLUMN source text;\n\
             CREATE INDEX events_tenant_source_idx ON events (tenant_id, source);\n",
        );
        dir
    }

    fn write(&self, name: &str, sql: &str) {
        std::fs::write(self.0.join(name), sql).unwrap();
    }

    fn template(&self) -> Result<TenantTemplate, DbError> {
        TenantTemplate::from_dir(&self.0)
    }
}

impl Drop for TemplateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `tenantry migrate`, or `migrate --citus` when the tests run against a Citus cluster.
async fn run(config: &Config, template: TenantTemplate) -> Result<MigrateReport, DbError> {
    let options = MigrateOptions {
        jobs: 2,
        template,
        progress: false,
    };
    if crate::helpers::citus_workers().is_some() {
        migrate_citus(config, options).await
    } else {
        migrate(config, options).await
    }
}

async fn versions(db: &Client) -> Vec<(Uuid, i32)> {
    db.query(
        "select id, schema_version from app.tenants order by id",
        &[],
    )
    .await
    .unwrap()
    .into_iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

async fn has_column(db: &Client, tenant: Uuid, column: &str) -> bool {
    db.query_opt(
        "select 1 from information_schema.columns where table_schema = $1 and table_name = 'events' and column_name = $2",
        &[&tenant_schema_name(tenant), &column],
    )
    .await
    .unwrap()
    .is_some()
}

async fn history_len(db: &Client, tenant: Uuid) -> i64 {
    db.query_one(
        &format!(
            "select count(*) from {}.refinery_schema_history",
            tenant_schema_name(tenant)
        ),
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

async fn three_tenants(db: &TestDb) -> Vec<Uuid> {
    let pools = db.pools();
    let mut ids = Vec::new();
    for slug in ["mig-a", "mig-b", "mig-c"] {
        ids.push(provision_tenant(&db.config, &pools, slug).await.tenant.id);
    }
    ids.sort();
    ids
}

#[tokio::test]
async fn a_second_migrate_is_a_no_op() {
    let db = test_db().await;
    three_tenants(&db).await;
    let su = db.superuser_db().await;
    let before = versions(&su).await;
    let report = run(&db.config, TenantTemplate::embedded()).await.unwrap();
    assert_eq!(report.shared_applied, 0, "{report}");
    assert_eq!(report.tenants_total, 3);
    assert_eq!(report.tenants_migrated, 0, "{report}");
    assert!(report.tenants_failed.is_empty(), "{report}");
    assert_eq!(versions(&su).await, before);
}

#[tokio::test]
async fn a_new_template_version_migrates_every_tenant_schema() {
    let db = test_db().await;
    let ids = three_tenants(&db).await;
    let su = db.superuser_db().await;
    let dir = TemplateDir::with_v2();
    let template = dir.template().unwrap();
    assert_eq!(template.latest_version(), NEXT);

    let report = run(&db.config, template.clone()).await.unwrap();
    assert_eq!(report.template_version, NEXT);
    assert_eq!(report.tenants_migrated, 3, "{report}");
    assert!(report.tenants_failed.is_empty(), "{report}");
    for (id, version) in versions(&su).await {
        assert_eq!(version, NEXT, "{id}");
        assert!(has_column(&su, id, "source").await);
        assert_eq!(history_len(&su, id).await, i64::from(NEXT));
        let index = su
            .query_opt(
                "select 1 from pg_indexes where schemaname = $1 and indexname = 'events_tenant_source_idx'",
                &[&tenant_schema_name(id)],
            )
            .await
            .unwrap();
        assert!(index.is_some(), "index missing in {id}");
    }
    // The migrated schemas still follow every data rule (grants re-applied, keys, RLS).
    let violations = catalog_violations(&su, &db.config.roles).await;
    assert!(violations.is_empty(), "{violations:#?}");
    // The app role can use the new column under RLS.
    let mut app = db.app_db().await;
    let tx = app.transaction().await.unwrap();
    tenantry::db::tenant_tx::set_tenant_in_tx(&tx, ids[0])
        .await
        .unwrap();
    tx.execute(
        &format!(
            "insert into {}.events (tenant_id, id, event_type, occurred_at, source) values ($1, $2, 'x', now(), 'api')",
            tenant_schema_name(ids[0])
        ),
        &[&ids[0], &Uuid::now_v7()],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // A tenant provisioned with the new template starts at v2; the next run has nothing to do.
    let pools = db.pools();
    let fresh = provision_tenant_with(&db.config, &pools, &template, "mig-new")
        .await
        .tenant
        .id;
    assert!(has_column(&su, fresh, "source").await);
    let report = run(&db.config, template).await.unwrap();
    assert_eq!(report.tenants_total, 4);
    assert_eq!(report.tenants_migrated, 0, "{report}");
    assert_eq!(
        versions(&su)
            .await
            .iter()
            .filter(|(_, v)| *v == NEXT)
            .count(),
        4
    );
}

#[tokio::test]
async fn migrate_resumes_after_a_reset_version_or_a_failed_tenant() {
    let db = test_db().await;
    let ids = three_tenants(&db).await;
    let su = db.superuser_db().await;
    let dir = TemplateDir::with_v2();

    // One schema was changed by hand so V2 fails there: the others still migrate, the failure
    // is reported, and the broken schema is left exactly at v1 (its transaction rolled back).
    let broken = ids[1];
    su.batch_execute(&format!(
        "ALTER TABLE {}.events ADD COLUMN source text",
        tenant_schema_name(broken)
    ))
    .await
    .unwrap();
    let report = run(&db.config, dir.template().unwrap()).await.unwrap();
    assert_eq!(report.tenants_migrated, 2, "{report}");
    assert_eq!(report.tenants_failed.len(), 1, "{report}");
    assert_eq!(report.tenants_failed[0].0, broken);
    assert!(
        report.tenants_failed[0]
            .1
            .contains("column \"source\" of relation \"events\" already exists"),
        "{:?}",
        report.tenants_failed
    );
    let v = versions(&su).await;
    assert_eq!(v, vec![(ids[0], NEXT), (ids[1], BASE), (ids[2], NEXT)]);
    assert_eq!(history_len(&su, broken).await, i64::from(BASE));

    // Once repaired, the next run picks up exactly that tenant.
    su.batch_execute(&format!(
        "ALTER TABLE {}.events DROP COLUMN source",
        tenant_schema_name(broken)
    ))
    .await
    .unwrap();
    let report = run(&db.config, dir.template().unwrap()).await.unwrap();
    assert_eq!(report.tenants_migrated, 1, "{report}");
    assert!(report.tenants_failed.is_empty(), "{report}");
    assert!(versions(&su).await.iter().all(|(_, v)| *v == NEXT));
    assert_eq!(history_len(&su, broken).await, i64::from(NEXT));

    // A tenant whose recorded version was lost (reset) is taken up again; its schema already
    // has V2 in its own history, so nothing is applied twice.
    su.execute(
        "update app.tenants set schema_version = 0 where id = $1",
        &[&ids[2]],
    )
    .await
    .unwrap();
    let report = run(&db.config, dir.template().unwrap()).await.unwrap();
    assert_eq!(report.tenants_migrated, 1, "{report}");
    assert!(report.tenants_failed.is_empty(), "{report}");
    assert!(versions(&su).await.iter().all(|(_, v)| *v == NEXT));
    assert_eq!(history_len(&su, ids[2]).await, i64::from(NEXT));
}

#[tokio::test]
async fn a_second_runner_waits_for_the_advisory_lock() {
    let db = test_db().await;
    three_tenants(&db).await;
    let holder = db.superuser_db().await;
    holder
        .execute("select pg_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .unwrap();
    let dir = TemplateDir::with_v2();
    let config = db.config.clone();
    let template = dir.template().unwrap();
    let runner = tokio::spawn(async move { run(&config, template).await });

    // Wait until the runner is queued on the lock (seen in pg_locks), not for some time.
    let observer = db.superuser_db().await;
    let waiting = async {
        loop {
            let n: i64 = observer
                .query_one(
                    "select count(*) from pg_locks where locktype = 'advisory' and not granted \
                     and database = (select oid from pg_database where datname = current_database()) \
                     and classid::bigint = ($1::bigint >> 32) and objid::bigint = ($1::bigint & 4294967295) and objsubid = 1",
                    &[&LOCK_KEY],
                )
                .await
                .unwrap()
                .get(0);
            if n > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), waiting)
        .await
        .expect("the second runner never queued on the migration lock");
    assert!(
        !runner.is_finished(),
        "migrate finished while the lock was held"
    );
    let su = db.superuser_db().await;
    assert!(
        versions(&su).await.iter().all(|(_, v)| *v == BASE),
        "a tenant was migrated while the lock was held"
    );

    holder
        .execute("select pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await
        .unwrap();
    let report = tokio::time::timeout(Duration::from_secs(120), runner)
        .await
        .expect("migrate did not finish after the lock was released")
        .unwrap()
        .unwrap();
    assert_eq!(report.tenants_migrated, 3, "{report}");
    assert!(versions(&su).await.iter().all(|(_, v)| *v == NEXT));
}

#[tokio::test]
async fn a_divergent_template_is_refused() {
    let db = test_db().await;
    let ids = three_tenants(&db).await;
    let su = db.superuser_db().await;

    // An edited V1 in a template folder, with or without a new migration beside it.
    let dir = TemplateDir::copy_of_embedded();
    let v1 = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("V1__"))
        .unwrap();
    let edited = std::fs::read_to_string(&v1).unwrap().replace(
        "event_type  text NOT NULL",
        "event_type  varchar(100) NOT NULL",
    );
    std::fs::write(&v1, edited).unwrap();
    let err = dir.template().err().expect("edited V1 accepted");
    assert!(err.to_string().contains("diverge"), "{err}");
    dir.write(
        &format!("V{NEXT}__add_column.sql"),
        "ALTER TABLE events ADD COLUMN source text;",
    );
    let err = dir
        .template()
        .err()
        .expect("edited V1 accepted beside a V2");
    assert!(err.to_string().contains("diverge"), "{err}");

    // The schemas' own history disagreeing with the template (V1 was edited after these tenants
    // were provisioned) refuses the whole run before any schema is touched, even when no
    // tenant is behind.
    su.batch_execute(&format!(
        "UPDATE {}.refinery_schema_history SET checksum = '12345' WHERE version = 1",
        tenant_schema_name(ids[0])
    ))
    .await
    .unwrap();
    let err = run(&db.config, TenantTemplate::embedded())
        .await
        .expect_err("divergent history accepted");
    assert!(err.to_string().contains("diverge"), "{err}");
    let v2 = TemplateDir::with_v2();
    let err = run(&db.config, v2.template().unwrap())
        .await
        .expect_err("divergent history accepted");
    assert!(err.to_string().contains("diverge"), "{err}");
    assert!(
        versions(&su).await.iter().all(|(_, v)| *v == BASE),
        "a schema was migrated by a refused run"
    );
    for id in &ids {
        assert!(!has_column(&su, *id, "source").await);
    }
}

#[tokio::test]
async fn two_runners_started_together_migrate_each_schema_once() {
    let db = test_db().await;
    three_tenants(&db).await;
    let su = db.superuser_db().await;
    let dir = TemplateDir::with_v2();
    let (first, second) = tokio::join!(
        run(&db.config, dir.template().unwrap()),
        run(&db.config, dir.template().unwrap())
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    assert!(first.tenants_failed.is_empty() && second.tenants_failed.is_empty());
    assert_eq!(
        first.tenants_migrated + second.tenants_migrated,
        3,
        "{first} / {second}"
    );
    for (id, version) in versions(&su).await {
        assert_eq!(version, NEXT);
        assert_eq!(history_len(&su, id).await, i64::from(NEXT));
    }
}
