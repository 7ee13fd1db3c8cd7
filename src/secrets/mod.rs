//! Secrets the server must read back (webhook signing secrets, Stripe identifiers that are
//! secrets) are stored encrypted with AES-256-GCM under `SECRETS_KEY` (docs/security.md).
//! Passwords and API keys are hashed instead, never encrypted: nothing needs them back.
//!
//! Each stored value carries the id of the key that sealed it, so a keyring of the current key
//! and the previous ones (SECRETS_KEY_PREVIOUS) opens values sealed before a rotation while new
//! values are sealed under the current key; `tenantry secrets rotate` ([`rotate`]) re-seals the
//! columns listed in [`registry::ENCRYPTED_COLUMNS`].

pub mod registry;
pub mod rotate;

use std::fmt;
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use sha2::{Digest, Sha256};

use crate::config::{Config, ConfigError};

pub const KEY_BYTES: usize = 32;
/// GCM's 96-bit nonce, random per value. Random nonces stay safe for about 2^32 values under one
/// key, far above the secrets a deployment stores between rotations.
const NONCE_BYTES: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// Sealed under a key that is neither SECRETS_KEY nor one of SECRETS_KEY_PREVIOUS.
    #[error("no key with id {0} in the keyring (SECRETS_KEY, SECRETS_KEY_PREVIOUS)")]
    UnknownKey(String),
    /// The authentication tag does not match: the value was altered or truncated.
    #[error("the value sealed under key {key_id} does not decrypt: altered or truncated")]
    Corrupt { key_id: String },
    #[error("AES-256-GCM refused to encrypt")]
    Seal,
}

/// One AES-256 key and its id: the first 8 hex digits of the SHA-256 of the key, which names
/// the key in stored values and logs without revealing it.
pub struct SecretKey {
    id: String,
    cipher: Aes256Gcm,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey").field("id", &self.id).finish()
    }
}

impl SecretKey {
    pub fn from_bytes(bytes: &[u8; KEY_BYTES]) -> SecretKey {
        let digest = Sha256::digest(bytes);
        SecretKey {
            id: hex::encode(&digest[..4]),
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(bytes)),
        }
    }

    /// Standard base64 of exactly 32 bytes (`openssl rand -base64 32`).
    pub fn from_base64(text: &str) -> Option<SecretKey> {
        let bytes = secrecy::zeroize::Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .ok()?,
        );
        let bytes: &[u8; KEY_BYTES] = bytes.as_slice().try_into().ok()?;
        Some(SecretKey::from_bytes(bytes))
    }

    /// A fresh random key, as base64 (what SECRETS_KEY holds).
    pub fn generate_base64() -> SecretString {
        let bytes = secrecy::zeroize::Zeroizing::new(rand::random::<[u8; KEY_BYTES]>());
        base64::engine::general_purpose::STANDARD
            .encode(bytes.as_slice())
            .into()
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// A stored secret: the id of the key that sealed it, and the nonce followed by the ciphertext
/// and its tag. Stored as two columns (`text`, `bytea`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub ciphertext: Vec<u8>,
}

/// The current key, which seals, and the previous ones, which only open. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Keyring {
    current: Arc<SecretKey>,
    previous: Arc<[SecretKey]>,
}

impl Keyring {
    /// Two keys with one id cannot be told apart in stored values: refused.
    pub fn new(current: SecretKey, previous: Vec<SecretKey>) -> Result<Keyring, ConfigError> {
        let mut ids = vec![current.id.as_str()];
        for key in &previous {
            if ids.contains(&key.id.as_str()) {
                return Err(ConfigError::Invalid {
                    name: "SECRETS_KEY_PREVIOUS",
                    reason: format!(
                        "key id {} appears twice (the same key given twice?)",
                        key.id
                    ),
                });
            }
            ids.push(&key.id);
        }
        Ok(Keyring {
            current: Arc::new(current),
            previous: previous.into(),
        })
    }

    /// The keyring of SECRETS_KEY and SECRETS_KEY_PREVIOUS (validated by `Config`).
    pub fn from_config(config: &Config) -> Result<Keyring, ConfigError> {
        let parse = |name: &'static str, text: &SecretString| {
            SecretKey::from_base64(text.expose_secret()).ok_or_else(|| ConfigError::Invalid {
                name,
                reason: "expected standard base64 of 32 bytes".into(),
            })
        };
        let current = parse("SECRETS_KEY", &config.secrets_key)?;
        let previous = config
            .secrets_key_previous
            .iter()
            .map(|text| parse("SECRETS_KEY_PREVIOUS", text))
            .collect::<Result<Vec<_>, _>>()?;
        Keyring::new(current, previous)
    }

    pub fn current_key_id(&self) -> &str {
        &self.current.id
    }

    pub fn seal(&self, plaintext: &[u8]) -> Result<Sealed, SecretsError> {
        let nonce_bytes = rand::random::<[u8; NONCE_BYTES]>();
        let sealed = self
            .current
            .cipher
            .encrypt(Nonce::from_slice(&nonce_bytes), plaintext)
            .map_err(|_| SecretsError::Seal)?;
        let mut ciphertext = Vec::with_capacity(NONCE_BYTES + sealed.len());
        ciphertext.extend_from_slice(&nonce_bytes);
        ciphertext.extend_from_slice(&sealed);
        Ok(Sealed {
            key_id: self.current.id.clone(),
            ciphertext,
        })
    }

    pub fn open(&self, sealed: &Sealed) -> Result<SecretSlice<u8>, SecretsError> {
        let key = std::iter::once(&*self.current)
            .chain(self.previous.iter())
            .find(|key| key.id == sealed.key_id)
            .ok_or_else(|| SecretsError::UnknownKey(sealed.key_id.clone()))?;
        let corrupt = || SecretsError::Corrupt {
            key_id: sealed.key_id.clone(),
        };
        if sealed.ciphertext.len() < NONCE_BYTES {
            return Err(corrupt());
        }
        let (nonce, body) = sealed.ciphertext.split_at(NONCE_BYTES);
        key.cipher
            .decrypt(Nonce::from_slice(nonce), body)
            .map(SecretSlice::from)
            .map_err(|_| corrupt())
    }

    /// Whether `sealed` is under an older key (what `tenantry secrets rotate` re-seals).
    pub fn is_stale(&self, sealed: &Sealed) -> bool {
        sealed.key_id != self.current.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SecretKey {
        SecretKey::from_bytes(&[byte; KEY_BYTES])
    }

    #[test]
    fn seals_and_opens() {
        let ring = Keyring::new(key(1), vec![]).unwrap();
        let sealed = ring.seal(b"whsec-payload").unwrap();
        assert_eq!(sealed.key_id, ring.current_key_id());
        assert_eq!(sealed.ciphertext.len(), NONCE_BYTES + 13 + 16);
        assert!(!sealed.ciphertext.windows(13).any(|w| w == b"whsec-payload"));
        assert_eq!(
            ring.open(&sealed).unwrap().expose_secret(),
            b"whsec-payload"
        );
        // A fresh nonce each time: the same secret never gives the same bytes.
        assert_ne!(ring.seal(b"whsec-payload").unwrap(), sealed);
    }

    #[test]
    fn the_key_id_is_the_start_of_the_keys_sha256() {
        let bytes = [7u8; KEY_BYTES];
        let expected = hex::encode(&Sha256::digest(bytes)[..4]);
        assert_eq!(SecretKey::from_bytes(&bytes).id(), expected);
        assert_eq!(expected.len(), 8);
        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
        assert_eq!(SecretKey::from_base64(&text).unwrap().id(), expected);
        assert!(!format!("{:?}", SecretKey::from_bytes(&bytes)).contains(&text));
    }

    #[test]
    fn keys_must_be_base64_of_32_bytes() {
        let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![1u8; n]);
        assert!(SecretKey::from_base64(&b64(32)).is_some());
        assert!(SecretKey::from_base64(&b64(31)).is_none());
        assert!(SecretKey::from_base64(&b64(33)).is_none());
        assert!(SecretKey::from_base64("not base64!").is_none());
        let generated = SecretKey::generate_base64();
        assert!(SecretKey::from_base64(generated.expose_secret()).is_some());
    }

    #[test]
    fn a_rotated_keyring_opens_old_values_and_seals_under_the_new_key() {
        let old = Keyring::new(key(1), vec![]).unwrap();
        let sealed = old.seal(b"secret").unwrap();
        let rotated = Keyring::new(key(2), vec![key(1)]).unwrap();
        assert!(rotated.is_stale(&sealed));
        assert_eq!(rotated.open(&sealed).unwrap().expose_secret(), b"secret");
        let resealed = rotated.seal(b"secret").unwrap();
        assert!(!rotated.is_stale(&resealed));
        // Without the previous key the old value is unreadable, and says which key it needs.
        let new_only = Keyring::new(key(2), vec![]).unwrap();
        match new_only.open(&sealed) {
            Err(SecretsError::UnknownKey(id)) => assert_eq!(id, old.current_key_id()),
            other => panic!("{other:?}"),
        }
        assert!(Keyring::new(key(2), vec![key(1), key(1)]).is_err());
        assert!(Keyring::new(key(2), vec![key(2)]).is_err());
    }

    #[test]
    fn altered_values_do_not_open() {
        let ring = Keyring::new(key(1), vec![]).unwrap();
        let sealed = ring.seal(b"secret").unwrap();
        for i in 0..sealed.ciphertext.len() {
            let mut altered = sealed.clone();
            altered.ciphertext[i] ^= 1;
            assert!(
                matches!(ring.open(&altered), Err(SecretsError::Corrupt { .. })),
                "byte {i}"
            );
        }
        let mut short = sealed.clone();
        short.ciphertext.truncate(5);
        assert!(matches!(
            ring.open(&short),
            Err(SecretsError::Corrupt { .. })
        ));
        // A value claiming another key's id is not opened with the current key.
        let mut relabelled = sealed;
        relabelled.key_id = "00000000".into();
        assert!(matches!(
            ring.open(&relabelled),
            Err(SecretsError::UnknownKey(_))
        ));
    }
}
