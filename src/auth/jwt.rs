//! HS256 tokens with the claims of API.md. Validation pins the algorithm, so `alg: none` and
//! algorithm-confusion tokens are refused before the signature is even considered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::AuthError;

pub const ISSUER: &str = "tenantry";

/// Seconds a token is still accepted past its `exp`, and already accepted before its `nbf`.
pub const LEEWAY_SECONDS: u64 = 5;

/// Tokens whose verification [`JwtKeys`] remembers. A client keeps using its token until it
/// expires, so the live tokens of a deployment are about its active sessions; past this bound
/// the cache starts over, which costs verifications, never correctness. An entry is a token
/// and its claims, a few hundred bytes: a few MB at most.
const VERIFIED_TOKENS: usize = 10_000;

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: Uuid,
    pub tenant_id: Uuid,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
}

/// The `tenant_id` claim of a token, unverified: the signature, the expiry and every other
/// claim are checked by [`JwtKeys::verify`], which must follow before anything trusts it.
pub fn claimed_tenant(token: &str) -> Option<Uuid> {
    #[derive(Deserialize)]
    struct TenantClaim {
        tenant_id: Uuid,
    }
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let json = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<TenantClaim>(&json)
        .ok()
        .map(|claim| claim.tenant_id)
}

#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: chrono::Duration,
    /// Shared by the clones: one cache per key, so a token is only ever found by the key that
    /// verified it.
    verified: Arc<VerifiedTokens>,
}

/// Tokens this key verified, with their claims: the signature, the algorithm, the issuer and
/// the required claims of a token are facts of its bytes, checked once; what changes with
/// time is checked again on every use (`exp`; `nbf` only ever becomes true). Only successes
/// are kept, so a refused token is verified (and refused) every time; a revoked user or a
/// suspended tenant is refused after verification, by checks this does not replace.
///
/// A token is looked up by its own bytes in a `HashMap` with a random hash key: an attacker
/// cannot choose which entries its guesses are compared with, and it learns nothing it could
/// not learn by sending the token itself.
#[derive(Default)]
struct VerifiedTokens {
    tokens: Mutex<HashMap<Box<str>, Claims>>,
}

impl VerifiedTokens {
    /// The claims of `token` if it was verified and has not expired at `now` (Unix seconds).
    fn get(&self, token: &str, now: u64) -> Option<Claims> {
        let tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        tokens.get(token).filter(|c| !expired(c, now)).cloned()
    }

    fn keep(&self, token: &str, claims: &Claims, now: u64) {
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        if tokens.len() >= VERIFIED_TOKENS {
            tokens.retain(|_, c| !expired(c, now));
            if tokens.len() >= VERIFIED_TOKENS {
                tokens.clear();
            }
        }
        tokens.insert(token.into(), claims.clone());
    }
}

/// `exp` as jsonwebtoken's validation reads it: expired once `exp < now - leeway`.
fn expired(claims: &Claims, now: u64) -> bool {
    let oldest = i64::try_from(now.saturating_sub(LEEWAY_SECONDS)).unwrap_or(i64::MAX);
    claims.exp < oldest
}

impl JwtKeys {
    pub fn hs256(secret: &str, ttl: std::time::Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "sub"]);
        // A token not valid yet (`nbf` in the future) is refused like an expired one.
        validation.validate_nbf = true;
        // Clock skew between the issuer and this server, applied to `exp` and `nbf` alike.
        validation.leeway = LEEWAY_SECONDS;
        JwtKeys {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            ttl: chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(1)),
            verified: Arc::default(),
        }
    }

    pub fn issue(
        &self,
        user: Uuid,
        tenant: Uuid,
        role: Role,
    ) -> Result<(String, DateTime<Utc>), AuthError> {
        let now = Utc::now();
        let expires_at = now + self.ttl;
        let claims = Claims {
            sub: user,
            tenant_id: tenant,
            role,
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
            iss: ISSUER.to_string(),
        };
        let token = encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(AuthError::Signing)?;
        Ok((token, expires_at))
    }

    /// The claims of a valid token: from memory when this key verified it before (its `exp`
    /// checked again now), else verified in full.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(claims) = self.verified.get(token, now) {
            return Ok(claims);
        }
        let claims = decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| AuthError::InvalidToken(e.to_string()))?;
        self.verified.keep(token, &claims, now);
        Ok(claims)
    }

    /// The claims of `token` if this key verified it before and it has not expired; None says
    /// nothing about the token ([`JwtKeys::verify`] decides).
    pub fn verified(&self, token: &str) -> Option<Claims> {
        self.verified
            .get(token, jsonwebtoken::get_current_timestamp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn keys() -> JwtKeys {
        JwtKeys::hs256(
            "0123456789abcdef0123456789abcdef",
            std::time::Duration::from_secs(60),
        )
    }

    #[test]
    fn round_trip() {
        let (user, tenant) = (Uuid::now_v7(), Uuid::now_v7());
        let (token, _) = keys().issue(user, tenant, Role::Admin).unwrap();
        let claims = keys().verify(&token).unwrap();
        assert_eq!(
            (claims.sub, claims.tenant_id, claims.role),
            (user, tenant, Role::Admin)
        );
    }

    fn signed(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap()
    }

    #[test]
    fn refuses_a_token_not_valid_yet() {
        let now = Utc::now().timestamp();
        let claims = |nbf: i64| {
            serde_json::json!({"sub": Uuid::now_v7(), "tenant_id": Uuid::now_v7(), "role": "admin",
                "iat": now, "exp": now + 600, "iss": ISSUER, "nbf": nbf})
        };
        let early = keys().verify(&signed(claims(now + 60))).unwrap_err();
        assert!(early.to_string().contains("ImmatureSignature"), "{early}");
        assert!(keys().verify(&signed(claims(now))).is_ok());
        // Within the leeway: clocks a little apart still agree.
        assert!(keys()
            .verify(&signed(claims(now + LEEWAY_SECONDS.cast_signed() - 1)))
            .is_ok());
    }

    #[test]
    fn refuses_an_unknown_role() {
        let now = Utc::now().timestamp();
        let token = signed(
            serde_json::json!({"sub": Uuid::now_v7(), "tenant_id": Uuid::now_v7(),
            "role": "superuser", "iat": now, "exp": now + 600, "iss": ISSUER}),
        );
        assert!(keys().verify(&token).is_err());
    }

    #[test]
    fn the_claimed_tenant_is_read_without_verifying() {
        let tenant = Uuid::now_v7();
        let (token, _) = keys().issue(Uuid::now_v7(), tenant, Role::Member).unwrap();
        assert_eq!(claimed_tenant(&token), Some(tenant));
        let other = JwtKeys::hs256(
            "another-secret-another-secret-xx",
            std::time::Duration::from_secs(60),
        );
        let (forged, _) = other.issue(Uuid::now_v7(), tenant, Role::Admin).unwrap();
        assert_eq!(claimed_tenant(&forged), Some(tenant));
        assert!(keys().verify(&forged).is_err());
        for garbage in ["", "not-a-token", "a.b.c", "a.e30.c", "a.b.c.d"] {
            assert_eq!(claimed_tenant(garbage), None, "{garbage}");
        }
    }

    #[test]
    fn a_verified_token_is_remembered_until_it_expires() {
        let keys = keys();
        let (token, _) = keys
            .issue(Uuid::now_v7(), Uuid::now_v7(), Role::Member)
            .unwrap();
        assert!(keys.verified(&token).is_none(), "not verified yet");
        let claims = keys.verify(&token).unwrap();
        assert_eq!(keys.verified(&token), Some(claims.clone()));
        // A clone shares what its key verified; another key starts empty and refuses what it
        // cannot verify.
        assert_eq!(keys.clone().verified(&token), Some(claims.clone()));
        let other = JwtKeys::hs256(
            "another-secret-another-secret-xx",
            std::time::Duration::from_secs(60),
        );
        assert!(other.verified(&token).is_none());
        assert!(other.verify(&token).is_err());
        // Past its exp (and the leeway) a remembered token is verified again, and refused.
        let now = u64::try_from(claims.exp).unwrap();
        assert!(keys.verified.get(&token, now + LEEWAY_SECONDS).is_some());
        assert!(keys
            .verified
            .get(&token, now + LEEWAY_SECONDS + 1)
            .is_none());
        let mut stale = claims;
        stale.exp = Utc::now().timestamp() - 60;
        keys.verified.keep(
            "expired.token.bytes",
            &stale,
            jsonwebtoken::get_current_timestamp(),
        );
        assert!(keys.verify("expired.token.bytes").is_err());
    }

    #[test]
    fn a_refused_token_is_not_remembered() {
        let keys = keys();
        let (token, _) = keys
            .issue(Uuid::now_v7(), Uuid::now_v7(), Role::Admin)
            .unwrap();
        keys.verify(&token).unwrap();
        // Another signature on the same header and claims: other bytes, verified (and refused)
        // on every use.
        let (head, _) = token.rsplit_once('.').unwrap();
        let forged = format!("{head}.{}", URL_SAFE_NO_PAD.encode([0u8; 32]));
        for _ in 0..2 {
            assert!(keys.verify(&forged).is_err());
            assert!(keys.verified(&forged).is_none());
        }
        let expired = signed(serde_json::json!({"sub": Uuid::now_v7(),
            "tenant_id": Uuid::now_v7(), "role": "admin", "iat": 0, "exp": 1, "iss": ISSUER}));
        assert!(keys.verify(&expired).is_err());
        assert!(keys.verified(&expired).is_none());
    }

    #[test]
    fn the_cache_stays_within_its_bound() {
        let keys = keys();
        let now = jsonwebtoken::get_current_timestamp();
        let (token, _) = keys
            .issue(Uuid::now_v7(), Uuid::now_v7(), Role::Admin)
            .unwrap();
        let claims = keys.verify(&token).unwrap();
        for i in 0..VERIFIED_TOKENS + 10 {
            keys.verified.keep(&format!("t{i}"), &claims, now);
        }
        let held = keys.verified.tokens.lock().unwrap().len();
        assert!(held <= VERIFIED_TOKENS, "{held}");
    }

    #[test]
    fn refuses_alg_none_and_wrong_key() {
        let (token, _) = keys()
            .issue(Uuid::now_v7(), Uuid::now_v7(), Role::Member)
            .unwrap();
        let payload = token.split('.').nth(1).unwrap();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let none_header = b64.encode(r#"{"alg":"none","typ":"JWT"}"#);
        assert!(keys().verify(&format!("{none_header}.{payload}.")).is_err());
        let other = JwtKeys::hs256(
            "another-secret-another-secret-xx",
            std::time::Duration::from_secs(60),
        );
        assert!(other.verify(&token).is_err());
    }
}
