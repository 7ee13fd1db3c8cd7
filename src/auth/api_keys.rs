//! API keys: `tk_<tenant id hex>_<secret>`. The tenant part lets the key be looked up under
//! that tenant's row-level security (no cross-tenant lookup by hash is ever needed); only a
//! SHA-256 of the whole key is stored.

use sha2::{Digest, Sha256};
use uuid::Uuid;

pub const PREFIX: &str = "tk_";

pub struct NewKey {
    pub key: String,
    pub hash: String,
    /// Enough of the key to recognise it in a listing, never enough to use it.
    pub display_prefix: String,
}

pub fn generate(tenant: Uuid) -> NewKey {
    let key = format!("{PREFIX}{}_{}", tenant.simple(), super::random_token(40));
    let display_prefix = key.chars().take(PREFIX.len() + 32 + 5).collect();
    NewKey {
        hash: hash(&key),
        key,
        display_prefix,
    }
}

pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The tenant a key claims to belong to; the claim is only trusted once the hash is found in
/// that tenant's rows.
pub fn tenant_of(key: &str) -> Option<Uuid> {
    let rest = key.strip_prefix(PREFIX)?;
    let (tenant_hex, secret) = rest.split_once('_')?;
    if tenant_hex.len() != 32 || secret.len() < 20 {
        return None;
    }
    Uuid::try_parse(tenant_hex).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_tenant() {
        let tenant = Uuid::now_v7();
        let k = generate(tenant);
        assert_eq!(tenant_of(&k.key), Some(tenant));
        assert_eq!(hash(&k.key), k.hash);
        assert!(k.key.starts_with(&k.display_prefix));
        assert_eq!(tenant_of("tk_nothex_secretsecretsecretsecret"), None);
        assert_eq!(tenant_of("eyJhbGciOi"), None);
    }
}
