//! Flag evaluation: a pure function of a flag's definition, the tenant's override, the tenant's
//! plan and a targeting key. Nothing here reads the database or the clock, so the tenant actor's
//! config snapshot can hold the inputs ([`FlagInputs`]) and answer from memory.
//!
//! Resolution, the most specific first (docs/flags.md):
//! 1. the tenant's override, if any: always wins, rollout or not (`TARGETING_MATCH`, `override`);
//! 2. a rollout of 0 %: the default for everyone (`DISABLED`, `default`);
//! 3. the value of the tenant's plan, if the definition has one:
//!    - without a rollout: that value (`TARGETING_MATCH`, `plan`);
//!    - with a rollout of p %: that value when the targeting key's bucket is at most p, else the
//!      default (`SPLIT`, `plan` or `default`);
//! 4. the default: `STATIC` when the definition has no plan values and no rollout (nothing
//!    could ever change it), else `DEFAULT` (the rules did not apply to this tenant).
//!
//! Buckets are Unleash's: `murmur3_x86_32("{flag}:{targeting key}", seed 0) % 100 + 1`, so a
//! key stays in or out of a rollout for good (across evaluations, restarts and instances) and
//! raising the percentage only ever adds keys.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// A flag as its definition says, the input of [`evaluate`].
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct Definition {
    pub key: String,
    pub description: String,
    /// The global default: any JSON value but null.
    #[schema(value_type = Value)]
    #[serde(rename = "default")]
    pub default: Value,
    /// Values by plan name, of the default's JSON type.
    #[schema(value_type = Object)]
    pub plans: BTreeMap<String, Value>,
    /// 0..=100; absent: no rollout.
    pub rollout_percent: Option<u8>,
    /// Counts every change of the definition, from 1.
    pub version: i32,
    pub updated_at: DateTime<Utc>,
}

/// Why an evaluation gave its value: the OpenFeature resolution reasons OFREP carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Static,
    TargetingMatch,
    Split,
    Default,
    Disabled,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Static => "STATIC",
            Reason::TargetingMatch => "TARGETING_MATCH",
            Reason::Split => "SPLIT",
            Reason::Default => "DEFAULT",
            Reason::Disabled => "DISABLED",
        }
    }
}

/// Which of the definition's values was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Override,
    Plan,
    Default,
}

impl Variant {
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Override => "override",
            Variant::Plan => "plan",
            Variant::Default => "default",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation<'a> {
    pub value: &'a Value,
    pub reason: Reason,
    pub variant: Variant,
}

/// The rollout bucket of `targeting_key` for `flag`, 1..=100.
pub fn bucket(flag: &str, targeting_key: &str) -> u32 {
    let mut input = flag
        .as_bytes()
        .chain(&b":"[..])
        .chain(targeting_key.as_bytes());
    // Reading from byte slices cannot fail, so the error arm is never taken.
    let hash = murmur3::murmur3_32(&mut input, 0).unwrap_or_default();
    hash % 100 + 1
}

/// Evaluates one flag for a tenant on `plan` with `override_value` (the tenant's override, if
/// any), for `targeting_key` (the user, or the tenant when no user is known).
pub fn evaluate<'a>(
    definition: &'a Definition,
    override_value: Option<&'a Value>,
    plan: &str,
    targeting_key: &str,
) -> Evaluation<'a> {
    if let Some(value) = override_value {
        return Evaluation {
            value,
            reason: Reason::TargetingMatch,
            variant: Variant::Override,
        };
    }
    let default = Evaluation {
        value: &definition.default,
        reason: Reason::Default,
        variant: Variant::Default,
    };
    if definition.rollout_percent == Some(0) {
        return Evaluation {
            reason: Reason::Disabled,
            ..default
        };
    }
    let Some(plan_value) = definition.plans.get(plan) else {
        let reason = if definition.plans.is_empty() && definition.rollout_percent.is_none() {
            Reason::Static
        } else {
            Reason::Default
        };
        return Evaluation { reason, ..default };
    };
    match definition.rollout_percent {
        None => Evaluation {
            value: plan_value,
            reason: Reason::TargetingMatch,
            variant: Variant::Plan,
        },
        Some(percent) if bucket(&definition.key, targeting_key) <= u32::from(percent) => {
            Evaluation {
                value: plan_value,
                reason: Reason::Split,
                variant: Variant::Plan,
            }
        }
        Some(_) => Evaluation {
            reason: Reason::Split,
            ..default
        },
    }
}

/// Everything evaluation needs for one tenant: the flag definitions and the tenant's
/// overrides. Today an operation loads them per request (`flags::ops`); the tenant actor's
/// config snapshot is meant to hold this value instead.
#[derive(Clone, Debug, Default)]
pub struct FlagInputs {
    /// By key, so a bulk evaluation lists flags in a stable order.
    pub definitions: BTreeMap<String, Definition>,
    /// The tenant's live overrides, by flag key.
    pub overrides: HashMap<String, Value>,
}

impl FlagInputs {
    /// One flag; None when no such flag is defined.
    pub fn evaluate(
        &self,
        key: &str,
        plan: &str,
        targeting_key: &str,
    ) -> Option<(&Definition, Evaluation<'_>)> {
        let definition = self.definitions.get(key)?;
        Some((
            definition,
            evaluate(definition, self.overrides.get(key), plan, targeting_key),
        ))
    }

    /// Every flag, ordered by key.
    pub fn evaluate_all<'a>(
        &'a self,
        plan: &'a str,
        targeting_key: &'a str,
    ) -> impl Iterator<Item = (&'a Definition, Evaluation<'a>)> + 'a {
        self.definitions.values().map(move |definition| {
            (
                definition,
                evaluate(
                    definition,
                    self.overrides.get(&definition.key),
                    plan,
                    targeting_key,
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn flag(key: &str, default: Value, plans: Value, rollout: Option<u8>) -> Definition {
        Definition {
            key: key.into(),
            description: String::new(),
            default,
            plans: serde_json::from_value(plans).unwrap(),
            rollout_percent: rollout,
            version: 1,
            updated_at: DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    /// Unleash's client specification, 10-flexible-rollout-strategy.json: the group id is the
    /// flag name and the stickiness value the user id.
    #[test]
    fn buckets_match_the_unleash_client_specification() {
        let ten = flag(
            "Feature.flexibleRollout.10",
            json!(false),
            json!({"free": true}),
            Some(10),
        );
        let on =
            |def: &Definition, user: &str| *evaluate(def, None, "free", user).value == json!(true);
        assert!(bucket("Feature.flexibleRollout.10", "174") <= 10);
        assert!(bucket("Feature.flexibleRollout.10", "499") > 10);
        assert!(on(&ten, "174"));
        assert!(!on(&ten, "499"));
        let fifty_five = flag(
            "Feature.flexibleRollout.userId.55",
            json!(false),
            json!({"free": true}),
            Some(55),
        );
        assert!(on(&fifty_five, "25"));
        let forty_two = flag(
            "Feature.flexibleRollout.sessionId.42",
            json!(false),
            json!({"free": true}),
            Some(42),
        );
        assert!(on(&forty_two, "147"));
        let hundred = flag(
            "Feature.flexibleRollout.100",
            json!(false),
            json!({"free": true}),
            Some(100),
        );
        assert!(on(&hundred, ""));
    }

    #[test]
    fn buckets_are_sticky_and_spread() {
        let mut counts = [0u32; 100];
        for i in 0..10_000 {
            let key = format!("user-{i}");
            let b = bucket("new-dashboard", &key);
            assert_eq!(b, bucket("new-dashboard", &key));
            assert!((1..=100).contains(&b));
            counts[(b - 1) as usize] += 1;
        }
        // 100 per bucket on average; a broken hash piles keys into a few buckets.
        assert!(
            counts.iter().all(|&c| (40..=180).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn the_most_specific_value_wins() {
        let def = flag(
            "limits",
            json!({"rows": 10}),
            json!({"pro": {"rows": 100}}),
            None,
        );
        let over = json!({"rows": 1000});
        let e = evaluate(&def, Some(&over), "pro", "u");
        assert_eq!(
            (e.value, e.reason, e.variant),
            (&over, Reason::TargetingMatch, Variant::Override)
        );
        let e = evaluate(&def, None, "pro", "u");
        assert_eq!(
            (e.value, e.reason, e.variant),
            (&json!({"rows": 100}), Reason::TargetingMatch, Variant::Plan)
        );
        let e = evaluate(&def, None, "free", "u");
        assert_eq!(
            (e.value, e.reason, e.variant),
            (&json!({"rows": 10}), Reason::Default, Variant::Default)
        );
        let plain = flag("banner", json!("hello"), json!({}), None);
        assert_eq!(evaluate(&plain, None, "free", "u").reason, Reason::Static);
    }

    #[test]
    fn a_rollout_gates_the_plan_value_and_never_an_override() {
        let def = flag(
            "Feature.flexibleRollout.10",
            json!(1),
            json!({"pro": 2}),
            Some(10),
        );
        let e = evaluate(&def, None, "pro", "174");
        assert_eq!(
            (e.value, e.reason, e.variant),
            (&json!(2), Reason::Split, Variant::Plan)
        );
        let e = evaluate(&def, None, "pro", "499");
        assert_eq!(
            (e.value, e.reason, e.variant),
            (&json!(1), Reason::Split, Variant::Default)
        );
        // No plan value: nothing to roll out.
        let e = evaluate(&def, None, "free", "174");
        assert_eq!((e.value, e.reason), (&json!(1), Reason::Default));
        let over = json!(3);
        assert_eq!(evaluate(&def, Some(&over), "pro", "499").value, &over);
        let off = flag("off", json!(1), json!({"pro": 2}), Some(0));
        let e = evaluate(&off, None, "pro", "174");
        assert_eq!((e.value, e.reason), (&json!(1), Reason::Disabled));
        assert_eq!(
            evaluate(&off, Some(&over), "pro", "174").reason,
            Reason::TargetingMatch
        );
    }

    #[test]
    fn inputs_evaluate_by_key_in_order() {
        let mut inputs = FlagInputs::default();
        for key in ["b", "a"] {
            inputs
                .definitions
                .insert(key.into(), flag(key, json!(false), json!({}), None));
        }
        inputs.overrides.insert("b".into(), json!(true));
        let all: Vec<_> = inputs
            .evaluate_all("free", "t")
            .map(|(d, e)| (d.key.as_str(), e.value.clone()))
            .collect();
        assert_eq!(all, vec![("a", json!(false)), ("b", json!(true))]);
        assert!(inputs.evaluate("c", "free", "t").is_none());
    }
}
