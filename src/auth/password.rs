//! Argon2id password hashes. Hashing is deliberately slow, so callers run it on the blocking
//! thread pool, never on an async worker.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use super::AuthError;

pub fn hash(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(AuthError::Hashing)
}

/// [`hash`] on the blocking thread pool. The work starts at once; await the result where the
/// hash is needed, so other work can run meanwhile.
pub fn hash_blocking(
    password: String,
) -> impl std::future::Future<Output = Result<String, AuthError>> {
    let task = tokio::task::spawn_blocking(move || hash(&password));
    async move { task.await.map_err(AuthError::HashingTask)? }
}

pub fn verify(password: &str, stored_hash: &str) -> bool {
    match PasswordHash::new(stored_hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A password for an account created without one; shown once to the caller.
pub fn generate() -> String {
    super::random_token(24)
}

#[cfg(test)]
mod tests {
    #[test]
    fn hash_and_verify() {
        let h = super::hash("correct horse").unwrap();
        assert!(super::verify("correct horse", &h));
        assert!(!super::verify("wrong", &h));
        assert!(!super::verify("x", "not a hash"));
    }
}
