//! `Stripe-Signature` verification, as Stripe documents it: the header is
//! `t=<unix seconds>,v1=<hex>[,v1=<hex>...]` (other schemes, such as `v0`, are ignored); the
//! signed payload is `<t>.<raw body>`, signed with HMAC-SHA256 under the endpoint's secret.
//! During a secret rotation Stripe sends one `v1` per live secret, and we may hold several
//! secrets ourselves: any (secret, signature) pair that matches is enough. The comparison is
//! `Mac::verify_slice`, constant time. A timestamp further than the tolerance from now, either
//! way, is refused, so a captured request cannot be replayed later.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use thiserror::Error;

/// Stripe's own libraries default to 300 s; API.md fixes it.
pub const TOLERANCE_SECONDS: i64 = 300;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("no Stripe-Signature header")]
    Missing,
    #[error("no timestamp (t=) in the header")]
    NoTimestamp,
    #[error("no v1 signature in the header")]
    NoSignature,
    #[error("the timestamp is more than {TOLERANCE_SECONDS} s away from now")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
}

/// Checks `header` for `payload` at `now` (unix seconds) against every secret.
pub fn verify(
    payload: &[u8],
    header: Option<&str>,
    secrets: &[SecretString],
    now: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp: Option<&str> = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        let Some((key, value)) = item.trim().split_once('=') else {
            continue;
        };
        match key {
            "t" => timestamp = Some(value),
            // A value that is not hex can match nothing; it is skipped, not an error, so one
            // bad entry does not hide a good one beside it.
            "v1" => {
                if let Ok(bytes) = hex::decode(value) {
                    signatures.push(bytes);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::NoTimestamp)?;
    let t: i64 = timestamp.parse().map_err(|_| SignatureError::NoTimestamp)?;
    if signatures.is_empty() {
        return Err(SignatureError::NoSignature);
    }
    if (now - t).abs() > TOLERANCE_SECONDS {
        return Err(SignatureError::Stale);
    }
    for secret in secrets {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes()) else {
            continue;
        };
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(payload);
        for signature in &signatures {
            if mac.clone().verify_slice(signature).is_ok() {
                return Ok(());
            }
        }
    }
    Err(SignatureError::Mismatch)
}

/// The header Stripe would send for `payload` signed at `t` under `secret` (tests, tools).
pub fn sign(payload: &[u8], secret: &str, t: i64) -> String {
    format!("t={t},v1={}", v1(payload, secret, t))
}

/// The hex `v1` signature of `payload` at `t` under `secret`.
pub fn v1(payload: &[u8], secret: &str, t: i64) -> String {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"id":"evt_1","type":"invoice.paid"}"#;
    const NOW: i64 = 1_800_000_000;

    fn secrets(list: &[&str]) -> Vec<SecretString> {
        list.iter()
            .map(|s| SecretString::from(s.to_string()))
            .collect()
    }

    #[test]
    fn a_good_signature_passes() {
        let header = sign(BODY, "whsec_a", NOW);
        assert_eq!(
            verify(BODY, Some(&header), &secrets(&["whsec_a"]), NOW + 10),
            Ok(())
        );
    }

    #[test]
    fn forged_tampered_and_stale_are_refused() {
        let header = sign(BODY, "whsec_other", NOW);
        assert_eq!(
            verify(BODY, Some(&header), &secrets(&["whsec_a"]), NOW),
            Err(SignatureError::Mismatch)
        );
        let header = sign(BODY, "whsec_a", NOW);
        assert_eq!(
            verify(b"{}", Some(&header), &secrets(&["whsec_a"]), NOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(BODY, Some(&header), &secrets(&["whsec_a"]), NOW + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(BODY, Some(&header), &secrets(&["whsec_a"]), NOW - 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(BODY, Some(&header), &secrets(&["whsec_a"]), NOW + 300),
            Ok(())
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        let s = secrets(&["whsec_a"]);
        assert_eq!(verify(BODY, None, &s, NOW), Err(SignatureError::Missing));
        assert_eq!(
            verify(BODY, Some("v1=00"), &s, NOW),
            Err(SignatureError::NoTimestamp)
        );
        assert_eq!(
            verify(BODY, Some("t=x,v1=00"), &s, NOW),
            Err(SignatureError::NoTimestamp)
        );
        assert_eq!(
            verify(BODY, Some(&format!("t={NOW},v0=00")), &s, NOW),
            Err(SignatureError::NoSignature)
        );
        assert_eq!(
            verify(BODY, Some(&format!("t={NOW},v1=zz")), &s, NOW),
            Err(SignatureError::NoSignature)
        );
        assert_eq!(
            verify(BODY, Some(&sign(BODY, "whsec_a", NOW)), &[], NOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn rotation_accepts_any_matching_pair() {
        // Stripe signs with the old and the new secret while both are live.
        let header = format!(
            "t={NOW},v1={},v1={}",
            v1(BODY, "whsec_old", NOW),
            v1(BODY, "whsec_new", NOW)
        );
        assert_eq!(
            verify(BODY, Some(&header), &secrets(&["whsec_new"]), NOW),
            Ok(())
        );
        assert_eq!(
            verify(BODY, Some(&header), &secrets(&["whsec_old"]), NOW),
            Ok(())
        );
        // We may hold both while Stripe already signs with the new one only.
        let header = sign(BODY, "whsec_new", NOW);
        assert_eq!(
            verify(
                BODY,
                Some(&header),
                &secrets(&["whsec_old", "whsec_new"]),
                NOW
            ),
            Ok(())
        );
    }
}
