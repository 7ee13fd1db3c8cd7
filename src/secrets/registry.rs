//! Every column that holds a sealed secret, so `tenantry secrets rotate` finds them all. An area
//! that stores a secret adds one line here (and a test in tests/api/secrets.rs checks that each
//! entry matches the migrated schema).

/// A sealed value stored as two columns of one table: the key id (`text`) and the nonce with the
/// ciphertext (`bytea`), in a table of the `app` schema (the admin role, which rotation uses,
/// may update those).
#[derive(Clone, Copy, Debug)]
pub struct EncryptedColumn {
    /// Schema-qualified: `app.webhook_endpoints`.
    pub table: &'static str,
    /// The columns of the primary key, tenant_id first.
    pub key_columns: &'static [&'static str],
    /// `bytea`: nonce followed by ciphertext and tag (`Sealed::ciphertext`).
    pub ciphertext: &'static str,
    /// `text`: `Sealed::key_id`.
    pub key_id: &'static str,
}

pub const ENCRYPTED_COLUMNS: &[EncryptedColumn] = &[
    // Webhook signing secrets (`webhooks::secret`): the current one and, for 24 hours after a
    // rotation, the previous one.
    EncryptedColumn {
        table: "app.webhooks",
        key_columns: &["tenant_id", "id"],
        ciphertext: "secret_ciphertext",
        key_id: "secret_key_id",
    },
    EncryptedColumn {
        table: "app.webhooks",
        key_columns: &["tenant_id", "id"],
        ciphertext: "previous_secret_ciphertext",
        key_id: "previous_secret_key_id",
    },
];
