//! Input rules for tenants. The database has CHECK constraints for the same shapes; these give
//! field-level 422s before a transaction is opened.

use crate::error::FieldError;

/// Names that would collide with the platform's own hosts and paths.
pub const RESERVED_SLUGS: &[&str] = &[
    "www",
    "api",
    "admin",
    "app",
    "auth",
    "billing",
    "dashboard",
    "docs",
    "help",
    "internal",
    "login",
    "mail",
    "metrics",
    "root",
    "static",
    "status",
    "support",
    "system",
    "tenant",
    "tenants",
    "test",
    "webhooks",
    "ws",
];

pub const PLANS: &[&str] = &["free", "pro", "enterprise"];

/// The shape of slugs and subdomains, as the CHECK constraints of `app.tenants` have it: 1 to
/// 63 lowercase letters, digits and dashes, not starting or ending with a dash.
pub fn is_slug_shaped(value: &str) -> bool {
    (1..=63).contains(&value.len())
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}

pub fn slug(field: &str, value: &str, errors: &mut Vec<FieldError>) {
    if !is_slug_shaped(value) {
        errors.push(FieldError::new(
            field,
            "use 1 to 63 lowercase letters, digits and dashes, not starting or ending with a dash",
        ));
    } else if RESERVED_SLUGS.contains(&value) {
        errors.push(FieldError::new(field, format!("{value:?} is reserved")));
    }
}

/// A pragmatic address check: one @, a non-empty local part, a dotted domain, no spaces.
pub fn email(field: &str, value: &str, errors: &mut Vec<FieldError>) {
    let ok = value.len() <= 320
        && !value.chars().any(char::is_whitespace)
        && match value.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            }
            None => false,
        };
    if !ok {
        errors.push(FieldError::new(field, "must be an email address"));
    }
}

pub fn password(field: &str, value: &str, errors: &mut Vec<FieldError>) {
    if value.chars().count() < 10 {
        errors.push(FieldError::new(field, "use at least 10 characters"));
    } else if value.len() > 1024 {
        errors.push(FieldError::new(field, "use at most 1024 bytes"));
    }
}

pub fn name(field: &str, value: &str, errors: &mut Vec<FieldError>) {
    let trimmed = value.trim();
    if trimmed.is_empty() || trimmed.chars().count() > 200 {
        errors.push(FieldError::new(field, "use 1 to 200 characters"));
    }
}

pub fn plan(field: &str, value: &str, errors: &mut Vec<FieldError>) {
    if !PLANS.contains(&value) {
        errors.push(FieldError::new(
            field,
            "must be one of free, pro, enterprise",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(f: impl Fn(&mut Vec<FieldError>)) -> usize {
        let mut e = Vec::new();
        f(&mut e);
        e.len()
    }

    #[test]
    fn slugs() {
        assert_eq!(errs(|e| slug("slug", "acme-co", e)), 0);
        assert_eq!(errs(|e| slug("slug", "a", e)), 0);
        for bad in [
            "",
            "Acme",
            "-acme",
            "acme-",
            "ac me",
            "www",
            "admin",
            "api",
            &"a".repeat(64),
        ] {
            assert_eq!(errs(|e| slug("slug", bad, e)), 1, "{bad}");
        }
    }

    #[test]
    fn emails() {
        assert_eq!(errs(|e| email("email", "a@b.co", e)), 0);
        for bad in ["", "a", "a@b", "@b.co", "a@@b.co", "a b@c.co", "a@.co"] {
            assert_eq!(errs(|e| email("email", bad, e)), 1, "{bad}");
        }
    }
}
