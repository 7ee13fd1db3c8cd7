//! What an erasure writes in place of the subject, and the patterns that find them. The
//! rewriting itself runs in PostgreSQL (`regexp_replace`, case-insensitive) so no row travels to
//! the server and back; what cannot be said as a pattern (a person's name beside their id in a
//! JSON document) is done here on the parsed document.

use serde_json::Value;
use uuid::Uuid;

/// What an erased name becomes.
pub const ERASED_NAME: &str = "[erased]";

/// Members of a JSON object describing the subject that hold personal data besides the email
/// (which the patterns replace wherever it appears).
const PERSONAL_MEMBERS: &[&str] = &["name"];

/// One thing to find (a PostgreSQL ARE matching it literally) and what replaces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needle {
    pub pattern: String,
    pub replacement: String,
}

/// The email's stand-in: says what happened and which erasure, names nobody.
pub fn erased_email(pseudonym: Uuid) -> String {
    format!("erased:{pseudonym}")
}

/// The patterns of one subject: every id becomes the pseudonym (so a uuid column or member stays
/// a uuid), every email `erased:<pseudonym>`. `json` adds the spelling an email takes inside a
/// JSON string (`"` and `\` escaped), for the jsonb columns.
pub fn needles(ids: &[Uuid], emails: &[String], pseudonym: Uuid, json: bool) -> Vec<Needle> {
    let mut out: Vec<Needle> = ids
        .iter()
        .map(|id| Needle {
            pattern: literal_pattern(&id.to_string()),
            replacement: pseudonym.to_string(),
        })
        .collect();
    for email in emails {
        let mut spellings = vec![email.clone()];
        if json {
            let escaped = json_string_content(email);
            if escaped != *email {
                spellings.push(escaped);
            }
        }
        for spelling in spellings {
            let needle = Needle {
                pattern: literal_pattern(&spelling),
                replacement: erased_email(pseudonym),
            };
            if !out.contains(&needle) {
                out.push(needle);
            }
        }
    }
    out
}

/// A PostgreSQL advanced regular expression matching `text` literally: in an ARE a backslash
/// before a character that is not alphanumeric makes it literal, so every ASCII character but
/// letters and digits is escaped; other characters stand for themselves.
pub fn literal_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if c.is_ascii() && !c.is_ascii_alphanumeric() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `text` as it appears between the quotes of a JSON string.
fn json_string_content(text: &str) -> String {
    let quoted = Value::String(text.to_string()).to_string();
    quoted
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(&quoted)
        .to_string()
}

/// Replaces the personal members (the name) of every object in `value` that describes the
/// subject, i.e. whose `id` is already the pseudonym. True when something changed.
pub fn scrub_names(value: &mut Value, pseudonym: &str) -> bool {
    match value {
        Value::Object(members) => {
            let mut changed = false;
            let is_subject = members.get("id").and_then(Value::as_str) == Some(pseudonym);
            for (key, member) in members.iter_mut() {
                if is_subject && PERSONAL_MEMBERS.contains(&key.as_str()) {
                    if member.as_str() != Some(ERASED_NAME) && !member.is_null() {
                        *member = Value::String(ERASED_NAME.to_string());
                        changed = true;
                    }
                } else {
                    changed |= scrub_names(member, pseudonym);
                }
            }
            changed
        }
        Value::Array(items) => items.iter_mut().fold(false, |changed, item| {
            scrub_names(item, pseudonym) | changed
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn literal_patterns_escape_every_ascii_symbol() {
        assert_eq!(literal_pattern("a.b+c@x-y.io"), r"a\.b\+c\@x\-y\.io");
        assert_eq!(literal_pattern("é(1)"), r"é\(1\)");
    }

    #[test]
    fn json_spelling_of_an_email_is_added_only_when_it_differs() {
        let p = Uuid::nil();
        let plain = needles(&[], &["a@b.io".into()], p, true);
        assert_eq!(plain.len(), 1);
        let quoted = needles(&[], &["a\"q@b.io".into()], p, true);
        assert_eq!(quoted.len(), 2);
        assert_eq!(quoted[1].pattern, literal_pattern("a\\\"q@b.io"));
        assert!(quoted.iter().all(|n| n.replacement == erased_email(p)));
    }

    #[test]
    fn ids_become_the_pseudonym() {
        let id = Uuid::now_v7();
        let p = Uuid::new_v4();
        let n = needles(&[id], &[], p, false);
        assert_eq!(n[0].replacement, p.to_string());
    }

    #[test]
    fn names_of_the_subject_only_are_erased() {
        let p = "11111111-1111-1111-1111-111111111111";
        let mut doc = json!({
            "before": {"id": p, "name": "Ada Lovelace", "email": "x"},
            "after": null,
            "others": [{"id": "someone-else", "name": "Grace"}],
        });
        assert!(scrub_names(&mut doc, p));
        assert_eq!(doc["before"]["name"], ERASED_NAME);
        assert_eq!(doc["others"][0]["name"], "Grace");
        assert!(!scrub_names(&mut doc, p), "a second pass changes nothing");
    }
}
