//! Standard Webhooks signatures (https://www.standardwebhooks.com): the signed content is
//! `{webhook-id}.{webhook-timestamp}.{body}`, the signature `v1,` + base64 of its HMAC-SHA256
//! under the secret's key bytes. Several secrets (during a rotation) give several signatures,
//! space-separated in one `webhook-signature` header; a receiver accepts any that verifies.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::secret::{key_bytes, SecretError};

type HmacSha256 = Hmac<Sha256>;

/// `v1,<base64>` for one secret.
pub fn sign(
    secret: &str,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SecretError> {
    let key = key_bytes(secret)?;
    // HMAC takes keys of any length.
    let mut mac = HmacSha256::new_from_slice(&key).map_err(|_| SecretError::Malformed)?;
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// The `webhook-signature` header value for every secret in `secrets`.
pub fn signature_header<'a>(
    secrets: impl IntoIterator<Item = &'a str>,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SecretError> {
    let mut out = Vec::new();
    for secret in secrets {
        out.push(sign(secret, msg_id, timestamp, body)?);
    }
    Ok(out.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector published with the Standard Webhooks specification and its reference
    /// libraries.
    #[test]
    fn the_published_test_vector() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let msg_id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let timestamp = 1614265330;
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(secret, msg_id, timestamp, body).unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        let both = signature_header([secret, secret], msg_id, timestamp, body).unwrap();
        assert_eq!(both.split(' ').count(), 2);
    }
}
