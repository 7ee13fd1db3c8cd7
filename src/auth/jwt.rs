//! HS256 tokens with the claims of API.md. Validation pins the algorithm, so `alg: none` and
//! algorithm-confusion tokens are refused before the signature is even considered.

use chrono::{DateTime, Utc};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::AuthError;

pub const ISSUER: &str = "tenantry";

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

#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: chrono::Duration,
}

impl JwtKeys {
    pub fn hs256(secret: &str, ttl: std::time::Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "sub"]);
        validation.leeway = 5;
        JwtKeys {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            ttl: chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(1)),
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

    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| AuthError::InvalidToken(e.to_string()))
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
