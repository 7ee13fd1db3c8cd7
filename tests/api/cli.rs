//! The operator's command line, run as the real binary against a test database.

use std::process::{Command, Output};

use secrecy::ExposeSecret;
use serde_json::Value;
use tenantry::auth::password;
use tenantry::db::tenant_schema_name;
use uuid::Uuid;

use crate::helpers::{test_db, TestDb};

async fn tenantry(db: &TestDb, args: &[&str]) -> Output {
    tenantry_with(db, args, &[]).await
}

/// With `env` added to the environment.
pub async fn tenantry_with(db: &TestDb, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tenantry"));
    command
        .args(args)
        .env("DATABASE_URL", db.config.database_url.expose_secret())
        .env(
            "APP_DATABASE_URL",
            db.config.app_database_url.expose_secret(),
        )
        .env(
            "ADMIN_DATABASE_URL",
            db.config.admin_database_url.expose_secret(),
        )
        .env("JWT_SECRET", db.config.jwt_secret.expose_secret())
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied());
    tokio::task::spawn_blocking(move || command.output().expect("run tenantry"))
        .await
        .unwrap()
}

/// Runs a command that must succeed and returns its standard output.
async fn ok(db: &TestDb, args: &[&str]) -> String {
    let out = tenantry(db, args).await;
    assert!(
        out.status.success(),
        "tenantry {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test]
async fn operator_commands_work_end_to_end() {
    let db = test_db().await;
    let su = db.superuser_db().await;

    let migrate: &[&str] = if crate::helpers::citus_workers().is_some() {
        &["migrate", "--citus", "--no-progress"]
    } else {
        &["migrate", "--no-progress"]
    };
    let out = ok(&db, migrate).await;
    assert!(out.contains("0 new migration(s)"), "{out}");

    // create: generated password printed once, hash stored.
    let out = ok(
        &db,
        &[
            "tenants",
            "create",
            "--name",
            "Cli Co",
            "--slug",
            "cli-co",
            "--admin-email",
            "admin@cli.example.com",
        ],
    )
    .await;
    let created: Value = serde_json::from_str(&out).unwrap();
    let id: Uuid = created["tenant"]["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(created["tenant"]["slug"], "cli-co");
    assert!(created["credentials"]["token"].is_string());
    let generated = created["credentials"]["password"].as_str().unwrap();
    let hash: String = su
        .query_one(
            "select password_hash from app.users where tenant_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(password::verify(generated, &hash));
    let other = ok(
        &db,
        &[
            "tenants",
            "create",
            "--name",
            "Other",
            "--slug",
            "cli-other",
            "--plan",
            "pro",
            "--admin-email",
            "admin@other.example.com",
            "--admin-password",
            "correct-horse-battery",
        ],
    )
    .await;
    let other: Value = serde_json::from_str(&other).unwrap();
    let other_id: Uuid = other["tenant"]["id"].as_str().unwrap().parse().unwrap();
    assert!(other["credentials"]["password"].is_null());

    // A duplicate slug and invalid input fail with a message, not a panic.
    let out = tenantry(
        &db,
        &[
            "tenants",
            "create",
            "--name",
            "Dup",
            "--slug",
            "cli-co",
            "--admin-email",
            "x@dup.example.com",
        ],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tenantry(
        &db,
        &[
            "tenants",
            "create",
            "--name",
            "Bad",
            "--slug",
            "www",
            "--admin-email",
            "x@bad.example.com",
        ],
    )
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("slug"));

    // list --json: one object a line.
    let listed = json_lines(&ok(&db, &["tenants", "list", "--json"]).await);
    let slugs: Vec<&str> = listed.iter().map(|t| t["slug"].as_str().unwrap()).collect();
    assert_eq!(slugs.len(), 2);
    assert!(slugs.contains(&"cli-co") && slugs.contains(&"cli-other"));

    // export: NDJSON, every line with a type, no password hash.
    su.execute(
        &format!(
            "insert into {}.events (tenant_id, id, event_type, occurred_at) values ($1, $2, 'login', now())",
            tenant_schema_name(id)
        ),
        &[&id, &Uuid::now_v7()],
    )
    .await
    .unwrap();
    let exported = ok(&db, &["tenants", "export", "cli-co"]).await;
    assert!(!exported.contains("password_hash") && !exported.contains("$argon2"));
    let lines = json_lines(&exported);
    assert!(lines.iter().all(|l| l["type"].is_string()), "{exported}");
    let mut types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    types.sort();
    types.dedup();
    for t in ["tenant", "user", "audit_log", "events"] {
        assert!(
            types.contains(&t),
            "{t} missing from export types {types:?}"
        );
    }
    assert!(
        lines
            .iter()
            .filter(|l| l["type"] != "tenant")
            .all(|l| l["tenant_id"] == id.to_string()),
        "another tenant's row in the export"
    );
    let file = std::env::temp_dir().join(format!("tenantry-export-{}.ndjson", Uuid::new_v4()));
    ok(
        &db,
        &[
            "tenants",
            "export",
            &id.to_string(),
            "-o",
            file.to_str().unwrap(),
        ],
    )
    .await;
    let from_file = std::fs::read_to_string(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    assert_eq!(json_lines(&from_file).len(), lines.len());

    // delete, list, restore.
    ok(&db, &["tenants", "delete", "cli-co"]).await;
    let live: i64 = su
        .query_one(
            "select count(*) from app.users where tenant_id = $1 and deleted_at is null",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(live, 0);
    assert_eq!(
        json_lines(&ok(&db, &["tenants", "list", "--json"]).await).len(),
        1
    );
    let all = json_lines(&ok(&db, &["tenants", "list", "--json", "--include-deleted"]).await);
    assert_eq!(all.len(), 2);
    assert!(all
        .iter()
        .any(|t| t["slug"] == "cli-co" && t["status"] == "deleted"));
    ok(&db, &["tenants", "restore", "cli-co"]).await;
    let deleted_at: Option<chrono::DateTime<chrono::Utc>> = su
        .query_one("select deleted_at from app.tenants where id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert!(deleted_at.is_none());
    assert!(!tenantry(&db, &["tenants", "restore", "cli-co"])
        .await
        .status
        .success());

    let shown: Value =
        serde_json::from_str(&ok(&db, &["tenants", "show", "cli-co"]).await).unwrap();
    assert_eq!(shown["id"], id.to_string());

    // suspend/resume by slug.
    assert!(ok(&db, &["tenants", "suspend", "cli-other"])
        .await
        .contains("suspended"));
    ok(&db, &["tenants", "resume", "cli-other"]).await;

    // purge --retention-days 0: the deleted tenant and its schema are gone, the other stays.
    ok(&db, &["tenants", "delete", &id.to_string()]).await;
    let out = ok(&db, &["tenants", "purge", "--retention-days", "0"]).await;
    assert!(out.contains("purged 1 tenant(s)"), "{out}");
    assert!(out.contains(&id.to_string()), "{out}");
    let left: i64 = su
        .query_one(
            "select (select count(*) from app.tenants where id = $1) \
                  + (select count(*) from app.users where tenant_id = $1) \
                  + (select count(*) from app.audit_logs where tenant_id = $1) \
                  + (select count(*) from pg_namespace where nspname = $2)",
            &[&id, &tenant_schema_name(id)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    let listed = json_lines(&ok(&db, &["tenants", "list", "--json", "--include-deleted"]).await);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], other_id.to_string());
    assert_eq!(listed[0]["status"], "active");

    // Every operator action went to the platform audit log.
    let actions: Vec<String> = su
        .query(
            "select distinct action from app.platform_audit_logs order by 1",
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    for a in [
        "tenant.create",
        "tenant.delete",
        "tenant.export",
        "tenant.list",
        "tenant.read",
        "tenant.purge",
        "tenant.restore",
        "tenant.resume",
        "tenant.suspend",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} not audited: {actions:?}"
        );
    }
}
