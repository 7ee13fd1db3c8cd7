//! Secrets at rest (issue 15 item 2): `tenantry secrets rotate` re-seals a registered column
//! under the new key, through the admin role, without touching values it cannot open.

use base64::Engine;
use secrecy::ExposeSecret;
use tenantry::secrets::registry::{EncryptedColumn, ENCRYPTED_COLUMNS};
use tenantry::secrets::rotate::{rotate_all, rotate_column, RotateError};
use tenantry::secrets::{Keyring, Sealed, SecretKey, SecretsError};
use uuid::Uuid;

use crate::cli::tenantry_with;
use crate::helpers::{test_db, TestDb};

const TABLE: EncryptedColumn = EncryptedColumn {
    table: "app.test_sealed",
    key_columns: &["tenant_id", "id"],
    ciphertext: "secret_ciphertext",
    key_id: "secret_key_id",
};

fn key(byte: u8) -> SecretKey {
    SecretKey::from_bytes(&[byte; 32])
}

fn key_base64(byte: u8) -> String {
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

/// A tenant table like the ones that will hold secrets: RLS forced with no policy, so only a
/// role that bypasses RLS (the admin role) sees a row.
async fn sealed_table(db: &TestDb) {
    let su = db.superuser_db().await;
    su.batch_execute(&format!(
        "create table app.test_sealed (
             tenant_id uuid not null,
             id uuid not null,
             secret_ciphertext bytea not null,
             secret_key_id text not null,
             primary key (tenant_id, id));
         alter table app.test_sealed enable row level security;
         alter table app.test_sealed force row level security;
         grant select, insert, update, delete on app.test_sealed to {admin};",
        admin = db.config.roles.admin
    ))
    .await
    .expect("create app.test_sealed");
}

/// Inserts `count` rows per tenant sealed by `ring`; returns (tenant, id, plaintext) of each.
async fn insert(
    db: &TestDb,
    ring: &Keyring,
    tenants: &[Uuid],
    count: usize,
) -> Vec<(Uuid, Uuid, String)> {
    let su = db.superuser_db().await;
    let mut rows = Vec::new();
    for tenant in tenants {
        for i in 0..count {
            let (id, plain) = (Uuid::now_v7(), format!("whsec-test-{tenant}-{i}"));
            let sealed = ring.seal(plain.as_bytes()).expect("seal");
            su.execute(
                "insert into app.test_sealed values ($1, $2, $3, $4)",
                &[tenant, &id, &sealed.ciphertext, &sealed.key_id],
            )
            .await
            .expect("insert");
            rows.push((*tenant, id, plain));
        }
    }
    rows
}

async fn stored(db: &TestDb) -> Vec<(Uuid, Uuid, Sealed)> {
    db.superuser_db()
        .await
        .query(
            "select tenant_id, id, secret_ciphertext, secret_key_id from app.test_sealed",
            &[],
        )
        .await
        .expect("select")
        .into_iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                Sealed {
                    ciphertext: r.get(2),
                    key_id: r.get(3),
                },
            )
        })
        .collect()
}

#[tokio::test]
async fn rotate_reseals_every_row_under_the_new_key_in_batches() {
    let db = test_db().await;
    sealed_table(&db).await;
    let old = Keyring::new(key(1), vec![]).unwrap();
    let tenants = [Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()];
    let mut rows = insert(&db, &old, &tenants, 40).await;
    // During a rotation servers already seal under the new key: those rows are left alone.
    let rotated = Keyring::new(key(2), vec![key(1)]).unwrap();
    rows.extend(insert(&db, &rotated, &tenants[..1], 5).await);

    let pools = db.pools();
    let count = rotate_column(&pools.admin, &rotated, &TABLE, 7)
        .await
        .expect("rotate");
    assert_eq!(count, 120);

    let new_only = Keyring::new(key(2), vec![]).unwrap();
    let after = stored(&db).await;
    assert_eq!(after.len(), rows.len());
    for (tenant, id, sealed) in &after {
        assert_eq!(sealed.key_id, new_only.current_key_id());
        let (_, _, plain) = rows
            .iter()
            .find(|(t, i, _)| t == tenant && i == id)
            .expect("row");
        let opened = new_only.open(sealed).expect("opens with the new key alone");
        assert_eq!(opened.expose_secret(), plain.as_bytes());
    }
    // A second run finds nothing left to do.
    assert_eq!(
        rotate_column(&pools.admin, &rotated, &TABLE, 7)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn rotate_stops_at_a_value_it_cannot_open_and_names_it() {
    let db = test_db().await;
    sealed_table(&db).await;
    let stranger = Keyring::new(key(9), vec![]).unwrap();
    let tenant = Uuid::now_v7();
    let rows = insert(&db, &stranger, &[tenant], 1).await;
    let ring = Keyring::new(key(2), vec![key(1)]).unwrap();
    match rotate_column(&db.pools().admin, &ring, &TABLE, 10).await {
        Err(RotateError::Open {
            key,
            source: SecretsError::UnknownKey(id),
            ..
        }) => {
            assert_eq!(id, stranger.current_key_id());
            assert!(key.contains(&rows[0].1.to_string()), "{key}");
        }
        other => panic!("{other:?}"),
    }
    // Untouched.
    assert_eq!(stored(&db).await[0].2.key_id, stranger.current_key_id());

    // A registry entry that does not match the schema is refused before any row is read.
    let wrong = EncryptedColumn {
        ciphertext: "secret_key_id",
        ..TABLE
    };
    assert!(matches!(
        rotate_column(&db.pools().admin, &ring, &wrong, 10).await,
        Err(RotateError::Column { .. })
    ));
    let unsafe_name = EncryptedColumn {
        table: "app.test_sealed; drop table app.tenants",
        ..TABLE
    };
    assert!(matches!(
        rotate_column(&db.pools().admin, &ring, &unsafe_name, 10).await,
        Err(RotateError::Identifier { .. })
    ));
}

/// Every registered column exists in the migrated schema with the types rotation expects.
#[tokio::test]
async fn every_registered_column_matches_the_schema() {
    let db = test_db().await;
    let ring = Keyring::new(key(2), vec![]).unwrap();
    let done = rotate_all(&db.pools().admin, &ring, ENCRYPTED_COLUMNS, 100)
        .await
        .expect("the registry matches the migrated schema");
    assert_eq!(done.len(), ENCRYPTED_COLUMNS.len());
}

#[tokio::test]
async fn the_rotate_command_needs_a_key_and_runs_over_the_registry() {
    let db = test_db().await;
    let out = tenantry_with(&db, &["secrets", "rotate"], &[]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SECRETS_KEY is not set"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (new, old) = (key_base64(2), key_base64(1));
    let out = tenantry_with(
        &db,
        &["secrets", "rotate", "--batch", "50"],
        &[("SECRETS_KEY", &new), ("SECRETS_KEY_PREVIOUS", &old)],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("under key {}", key(2).id())),
        "{stdout}"
    );
}
