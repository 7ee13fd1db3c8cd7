//! No secret in the repository or the binary (issue 15 item 2): every file git tracks and the
//! built `tenantry` binary are searched for well-known credential shapes, after the rules of
//! gitleaks. A match fails the test unless its file is allow-listed below, with the reason.

use std::path::Path;
use std::process::Command;

use regex::bytes::{Regex, RegexSet};

/// (name, pattern). Patterns that need a body (a PEM key, a token's full length) so that the
/// bare prefixes parsers and docs mention do not match.
const RULES: &[(&str, &str)] = &[
    (
        "aws-access-key-id",
        r"\b(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}\b",
    ),
    (
        "aws-secret-access-key",
        r#"(?i)aws.{0,20}secret.{0,20}['"=:\s][0-9a-zA-Z/+]{40}\b"#,
    ),
    (
        "stripe-secret-key",
        r"\b[sr]k_(?:live|test)_[0-9a-zA-Z]{16,}",
    ),
    // Stripe's and tenantry's webhook secrets: whsec_ and base64 of 32 bytes.
    ("webhook-signing-secret", r"\bwhsec_[A-Za-z0-9+/_-]{32,}"),
    (
        "private-key-pem",
        r"-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----[A-Za-z0-9+/=\s:,-]{64,}",
    ),
    (
        "github-token",
        r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36}\b",
    ),
    (
        "github-fine-grained-token",
        r"\bgithub_pat_[A-Za-z0-9_]{82}",
    ),
    ("slack-token", r"\bxox[baprs]-[0-9A-Za-z-]{10,}"),
    ("google-api-key", r"\bAIza[0-9A-Za-z_-]{35}\b"),
    (
        "jwt",
        r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}",
    ),
    // tenantry's own API keys (`tk_` and 32 bytes of base64url).
    ("tenantry-api-key", r"\btk_[A-Za-z0-9_-]{40,}"),
];

/// Files allowed to match a rule, each with why. Keep it short: a real fixture only.
const ALLOWED: &[(&str, &str, &str)] = &[
    (
        "src/webhooks/signing.rs",
        "webhook-signing-secret",
        "the Standard Webhooks specification's published test vector, checked in a unit test",
    ),
    (
        "tests/api/webhooks.rs",
        "webhook-signing-secret",
        "the same published test vector, checked against the reference crate",
    ),
];

fn rules() -> (RegexSet, Vec<Regex>) {
    // ASCII semantics (`\b`, `(?i)`): Unicode word boundaries make the regex engine give up its
    // DFA on the binary's non-ASCII bytes, which turns a second's scan into minutes.
    let patterns: Vec<String> = RULES.iter().map(|(_, p)| format!("(?-u){p}")).collect();
    let set = RegexSet::new(&patterns).expect("rules compile");
    let each = patterns
        .iter()
        .map(|p| Regex::new(p).expect("rule compiles"))
        .collect();
    (set, each)
}

/// (rule, excerpt) of every match in `bytes`.
fn findings(bytes: &[u8], set: &RegexSet, each: &[Regex]) -> Vec<(&'static str, String)> {
    set.matches(bytes)
        .into_iter()
        .flat_map(|i| {
            each[i].find_iter(bytes).map(move |m| {
                let shown = &m.as_bytes()[..m.len().min(24)];
                (RULES[i].0, format!("{}…", String::from_utf8_lossy(shown)))
            })
        })
        .collect()
}

#[test]
fn the_rules_catch_what_they_are_for() {
    let (set, each) = rules();
    // Built at run time, so that this file holds none of them.
    let samples = [
        ("aws-access-key-id", format!("AKIA{}", "IOSFODNN7EXAMPLE")),
        (
            "aws-secret-access-key",
            format!(
                "aws_secret_access_key = \"{}\"",
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
            ),
        ),
        (
            "stripe-secret-key",
            format!("sk_{}_{}", "live", "4eC39HqLyjWDarjtT1zdp7dc"),
        ),
        (
            "webhook-signing-secret",
            format!("whsec_{}", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ),
        (
            "private-key-pem",
            format!(
                "-----BEGIN {}-----\n{}\n",
                "RSA PRIVATE KEY",
                "MIIEpAIBAAKCAQEA".repeat(8)
            ),
        ),
        ("github-token", format!("ghp_{}", "a".repeat(36))),
        ("slack-token", format!("xoxb-{}", "1234567890-abcdef")),
        ("google-api-key", format!("AIza{}", "b".repeat(35))),
        (
            "jwt",
            format!(
                "eyJ{}.eyJ{}.{}",
                "hbGciOiJIUzI1", "zdWIiOiIxMjM0", "c2lnbmF0dXJlXzEy"
            ),
        ),
        ("tenantry-api-key", format!("tk_{}", "c".repeat(43))),
    ];
    for (rule, sample) in &samples {
        let found = findings(sample.as_bytes(), &set, &each);
        assert!(
            found.iter().any(|(r, _)| r == rule),
            "{rule} does not catch its sample: {found:?}"
        );
    }
    // What must not match: the prefixes alone, as parsers and API.md mention them.
    for innocent in [
        "-----BEGIN PRIVATE KEY-----",
        "`secret` is `whsec_` + base64",
        "sk_live_",
        "Bearer tk_...",
    ] {
        assert!(
            findings(innocent.as_bytes(), &set, &each).is_empty(),
            "{innocent}"
        );
    }
}

#[test]
fn no_secret_in_the_tracked_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let listed = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root)
        .output()
        .expect("git ls-files (the test needs git and a clone)");
    assert!(listed.status.success(), "git ls-files failed");
    let files: Vec<String> = listed
        .stdout
        .split(|b| *b == 0)
        .filter(|name| !name.is_empty())
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .collect();
    assert!(files.len() > 50, "git lists only {} files", files.len());
    let (set, each) = rules();
    let mut found = Vec::new();
    for file in &files {
        let Ok(bytes) = std::fs::read(root.join(file)) else {
            // Listed but deleted in the work tree.
            continue;
        };
        for (rule, excerpt) in findings(&bytes, &set, &each) {
            let allowed = ALLOWED.iter().any(|(f, r, _)| f == file && *r == rule);
            if !allowed {
                found.push(format!("{file}: {rule}: {excerpt}"));
            }
        }
    }
    assert!(
        found.is_empty(),
        "secrets in the tree:\n{}",
        found.join("\n")
    );
}

#[test]
fn no_secret_in_the_binary() {
    let bytes = std::fs::read(env!("CARGO_BIN_EXE_tenantry")).expect("read the tenantry binary");
    let (set, each) = rules();
    let found = findings(&bytes, &set, &each);
    assert!(found.is_empty(), "secrets in the binary: {found:?}");
}
