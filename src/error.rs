//! Error pieces every area shares. This module imports nothing of the crate, so any area may use
//! it without depending on another: each area's own error enum lives in that area, and the HTTP
//! answer to each one in `http::problem`.

use serde::Serialize;

/// One invalid input field and what is wrong with it (a 422's `errors[]`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        FieldError {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// `err` and every source under it, joined with ": ", for a log line or an operator's message:
/// the outer errors say what was being done, the innermost one what the other side answered.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("saving the tenant failed")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_chain_names_every_cause_once() {
        let err = Outer(std::io::Error::other("disk full"));
        assert_eq!(error_chain(&err), "saving the tenant failed: disk full");
    }
}
