//! Signing secrets: `whsec_` + base64 of 32 random bytes (the Standard Webhooks form), and
//! how they are stored.
//!
//! Encryption at rest happens here and only here: [`new_secret`] seals the secret a client is
//! shown with the server's keyring (AES-256-GCM under `SECRETS_KEY`, `crate::secrets`) into the
//! `(secret_ciphertext, secret_key_id)` columns, [`open`] turns them back. Both columns are in
//! `secrets::registry::ENCRYPTED_COLUMNS`, so `tenantry secrets rotate` re-seals them.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use secrecy::ExposeSecret;
use thiserror::Error;

use crate::secrets::{Keyring, Sealed, SecretsError};

pub const PREFIX: &str = "whsec_";

#[derive(Debug, Error)]
pub enum SecretError {
    #[error(transparent)]
    Sealing(#[from] SecretsError),
    #[error("the stored secret is not `whsec_` + base64")]
    Malformed,
}

/// A secret just made: shown to the client once, stored sealed.
pub struct NewSecret {
    pub plain: String,
    pub sealed: Sealed,
}

/// A fresh secret, as shown to the client once.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{PREFIX}{}", STANDARD.encode(bytes))
}

/// A fresh secret, sealed under the keyring's current key.
pub fn new_secret(keyring: &Keyring) -> Result<NewSecret, SecretError> {
    let plain = generate();
    let sealed = keyring.seal(plain.as_bytes())?;
    Ok(NewSecret { plain, sealed })
}

/// The secret stored as `(ciphertext, key_id)`.
pub fn open(keyring: &Keyring, ciphertext: &[u8], key_id: &str) -> Result<String, SecretError> {
    let plain = keyring.open(&Sealed {
        key_id: key_id.to_string(),
        ciphertext: ciphertext.to_vec(),
    })?;
    String::from_utf8(plain.expose_secret().to_vec()).map_err(|_| SecretError::Malformed)
}

/// The HMAC key of a secret: the base64-decoded bytes after `whsec_`.
pub fn key_bytes(secret: &str) -> Result<Vec<u8>, SecretError> {
    let encoded = secret.strip_prefix(PREFIX).unwrap_or(secret);
    STANDARD.decode(encoded).map_err(|_| SecretError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_have_the_standard_form_and_round_trip() {
        let secret = generate();
        assert!(secret.starts_with(PREFIX));
        assert_eq!(key_bytes(&secret).unwrap().len(), 32);
        assert_ne!(secret, generate());
        let keyring =
            Keyring::new(crate::secrets::SecretKey::from_bytes(&[7; 32]), vec![]).unwrap();
        let new = new_secret(&keyring).unwrap();
        assert!(!new
            .sealed
            .ciphertext
            .windows(new.plain.len())
            .any(|w| w == new.plain.as_bytes()));
        assert_eq!(
            open(&keyring, &new.sealed.ciphertext, &new.sealed.key_id).unwrap(),
            new.plain
        );
        assert!(matches!(
            open(&keyring, &new.sealed.ciphertext, "00000000"),
            Err(SecretError::Sealing(SecretsError::UnknownKey(_)))
        ));
    }
}
