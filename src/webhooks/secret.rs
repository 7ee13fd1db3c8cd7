//! Signing secrets: `whsec_` + base64 of 32 random bytes (the Standard Webhooks form), and
//! how they are stored.
//!
//! Encryption at rest plugs in here and only here: [`seal`] turns the secret a client was shown
//! into the `(secret_ciphertext, secret_key_id)` columns, [`open`] turns them back. Until the
//! `SECRETS_KEY` encryption (the hardening area) is wired in, `seal` stores the bytes as they
//! are under the key id [`PLAIN_KEY_ID`], and `open` refuses any other key id rather than
//! guess; a row sealed by a later version is an error, never sent as something else.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use thiserror::Error;

pub const PREFIX: &str = "whsec_";
/// The key id of a secret stored without encryption.
pub const PLAIN_KEY_ID: &str = "plain";

#[derive(Debug, Error)]
pub enum SecretError {
    #[error("sealed under key {0:?}, which this version cannot open")]
    UnknownKey(String),
    #[error("the stored secret is not `whsec_` + base64")]
    Malformed,
}

/// A stored secret: what goes into the `*_ciphertext` and `*_key_id` columns.
#[derive(Clone, Debug)]
pub struct Sealed {
    pub ciphertext: Vec<u8>,
    pub key_id: String,
}

/// A fresh secret, as shown to the client once.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{PREFIX}{}", STANDARD.encode(bytes))
}

pub fn seal(plain: &str) -> Sealed {
    Sealed {
        ciphertext: plain.as_bytes().to_vec(),
        key_id: PLAIN_KEY_ID.to_string(),
    }
}

pub fn open(ciphertext: &[u8], key_id: &str) -> Result<String, SecretError> {
    if key_id != PLAIN_KEY_ID {
        return Err(SecretError::UnknownKey(key_id.to_string()));
    }
    String::from_utf8(ciphertext.to_vec()).map_err(|_| SecretError::Malformed)
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
        let sealed = seal(&secret);
        assert_eq!(open(&sealed.ciphertext, &sealed.key_id).unwrap(), secret);
        assert!(matches!(
            open(&sealed.ciphertext, "aes-gcm:1"),
            Err(SecretError::UnknownKey(_))
        ));
    }
}
