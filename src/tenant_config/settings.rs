//! A tenant's settings and branding (API.md "Plans, settings, branding, feature flags"):
//! `PATCH /settings` merges known members into the stored settings, `PUT /settings/branding`
//! replaces the branding. Both are validated whole before anything is written (422 with the path
//! of every bad field, e.g. `branding.primary_color`), and each change writes, in one
//! transaction, the settings, a numbered row of `app.settings_versions` (the history, before and
//! after) and an audit row. Reads come from the tenant's snapshot, not from here.
//!
//! Decisions:
//! - `PATCH /settings` is a JSON merge (RFC 7396) restricted to the members below: an unknown
//!   member is 422, never stored. `null` is only allowed for `branding.logo_url` (no logo); the
//!   other members always have a value.
//! - `timezone` is an IANA name as the tz database spells it (`Europe/Paris`, `UTC`); `locale` a
//!   BCP 47 tag valid against the IANA subtag registry (`en`, `fr-CA`), stored in its canonical
//!   case; colours are `#rrggbb`, stored lowercase; `logo_url` is an https URL whose host passes
//!   the SSRF check (`net::ssrf`), at most 2,048 characters.
//! - A change that changes nothing writes nothing (no version, no audit row).
//! - Members stored by a newer version of tenantry are kept as they are.

use std::str::FromStr;

use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::snapshot::{Branding, Settings};
use super::{checked, printable, ConfigError};
use crate::actors::TenantOp;
use crate::audit::{self, AuditAction};
use crate::auth::Caller;
use crate::db::TenantTx;
use crate::error::FieldError;
use crate::net::ssrf::{self, Policy};

pub const MAX_LOGO_URL: usize = 2_048;

/// `GET /settings`: the settings and the number of their last change.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SettingsView {
    #[serde(flatten)]
    pub settings: Settings,
    /// The number of the last change (0: never changed); each change adds one.
    pub version: i32,
}

/// A validated `PATCH /settings` body: the members to change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SettingsPatch {
    pub timezone: Option<String>,
    pub locale: Option<String>,
    /// `Some(None)`: remove the logo.
    pub logo_url: Option<Option<String>>,
    pub primary_color: Option<String>,
    pub accent_color: Option<String>,
}

impl SettingsPatch {
    fn apply(&self, mut settings: Settings) -> Settings {
        if let Some(tz) = &self.timezone {
            settings.timezone = tz.clone();
        }
        if let Some(locale) = &self.locale {
            settings.locale = locale.clone();
        }
        if let Some(logo) = &self.logo_url {
            settings.branding.logo_url = logo.clone();
        }
        if let Some(color) = &self.primary_color {
            settings.branding.primary_color = color.clone();
        }
        if let Some(color) = &self.accent_color {
            settings.branding.accent_color = color.clone();
        }
        settings
    }
}

fn unknown(field: &str, errors: &mut Vec<FieldError>) {
    errors.push(FieldError::new(field, "unknown setting"));
}

fn string<'v>(field: &str, value: &'v Value, errors: &mut Vec<FieldError>) -> Option<&'v str> {
    match value {
        Value::String(s) if printable(s) => Some(s.as_str()),
        Value::String(_) => {
            errors.push(FieldError::new(
                field,
                "must not contain control characters",
            ));
            None
        }
        Value::Null => {
            errors.push(FieldError::new(field, "must not be null"));
            None
        }
        _ => {
            errors.push(FieldError::new(field, "must be a string"));
            None
        }
    }
}

/// An IANA time zone name.
pub fn timezone(field: &str, value: &Value, errors: &mut Vec<FieldError>) -> Option<String> {
    let name = string(field, value, errors)?.trim();
    match chrono_tz::Tz::from_str(name) {
        Ok(tz) => Some(tz.name().to_string()),
        Err(_) => {
            errors.push(FieldError::new(
                field,
                "must be an IANA time zone name such as Europe/Paris or UTC",
            ));
            None
        }
    }
}

/// A BCP 47 language tag, valid against the IANA subtag registry, in its canonical case.
pub fn locale(field: &str, value: &Value, errors: &mut Vec<FieldError>) -> Option<String> {
    let raw = string(field, value, errors)?.trim();
    let tag = (raw.len() <= 35)
        .then(|| language_tags::LanguageTag::parse(raw).ok())
        .flatten()
        .filter(|tag| tag.is_valid() && tag.private_use().is_none());
    match tag {
        Some(tag) => Some(tag.as_str().to_string()),
        None => {
            errors.push(FieldError::new(
                field,
                "must be a BCP 47 language tag such as en, fr-CA or zh-Hant-TW",
            ));
            None
        }
    }
}

/// `#rrggbb`, lowercased.
pub fn color(field: &str, value: &Value, errors: &mut Vec<FieldError>) -> Option<String> {
    let raw = string(field, value, errors)?;
    let hex = raw.strip_prefix('#').unwrap_or("");
    if hex.len() == 6 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Some(raw.to_ascii_lowercase())
    } else {
        errors.push(FieldError::new(field, "must be a colour written #rrggbb"));
        None
    }
}

/// Null, or an https URL to a public host. `Some(None)` is null.
pub async fn logo_url(
    field: &str,
    value: &Value,
    errors: &mut Vec<FieldError>,
) -> Option<Option<String>> {
    let raw = match value {
        Value::Null => return Some(None),
        Value::String(s) if printable(s) && s.len() <= MAX_LOGO_URL => s.trim(),
        Value::String(_) => {
            errors.push(FieldError::new(
                field,
                format!("must be at most {MAX_LOGO_URL} characters, without control characters"),
            ));
            return None;
        }
        _ => {
            errors.push(FieldError::new(field, "must be an https URL or null"));
            return None;
        }
    };
    match ssrf::check_url(raw, Policy::PUBLIC_HTTPS).await {
        Ok(url) => Some(Some(url.to_string())),
        Err(err) => {
            errors.push(FieldError::new(field, err.to_string()));
            None
        }
    }
}

/// A `PATCH /settings` body.
pub async fn parse_patch(body: &Value) -> Result<SettingsPatch, ConfigError> {
    let Some(object) = body.as_object() else {
        return Err(ConfigError::invalid(
            "body",
            "must be an object of settings",
        ));
    };
    let mut errors = Vec::new();
    let mut patch = SettingsPatch::default();
    for (key, value) in object {
        match key.as_str() {
            "timezone" => patch.timezone = timezone("timezone", value, &mut errors),
            "locale" => patch.locale = locale("locale", value, &mut errors),
            "branding" => {
                let Some(branding) = value.as_object() else {
                    errors.push(FieldError::new("branding", "must be an object"));
                    continue;
                };
                for (key, value) in branding {
                    let field = format!("branding.{key}");
                    match key.as_str() {
                        "logo_url" => patch.logo_url = logo_url(&field, value, &mut errors).await,
                        "primary_color" => patch.primary_color = color(&field, value, &mut errors),
                        "accent_color" => patch.accent_color = color(&field, value, &mut errors),
                        _ => unknown(&field, &mut errors),
                    }
                }
            }
            _ => unknown(key, &mut errors),
        }
    }
    if errors.is_empty() && patch == SettingsPatch::default() {
        errors.push(FieldError::new("body", "nothing to change"));
    }
    checked(patch, errors)
}

/// A `PUT /settings/branding` body: all three members (`logo_url` may be null).
pub async fn parse_branding(body: &Value) -> Result<Branding, ConfigError> {
    let Some(object) = body.as_object() else {
        return Err(ConfigError::invalid("body", "must be a branding object"));
    };
    let mut errors = Vec::new();
    for key in object.keys() {
        if !["logo_url", "primary_color", "accent_color"].contains(&key.as_str()) {
            unknown(key, &mut errors);
        }
    }
    let member = |key: &str, errors: &mut Vec<FieldError>| -> Option<Value> {
        let value = object.get(key).cloned();
        if value.is_none() {
            errors.push(FieldError::new(key, "is required"));
        }
        value
    };
    let logo = member("logo_url", &mut errors);
    let primary = member("primary_color", &mut errors);
    let accent = member("accent_color", &mut errors);
    let logo_url = match logo {
        Some(v) => logo_url("logo_url", &v, &mut errors).await,
        None => None,
    };
    let primary_color = primary.and_then(|v| color("primary_color", &v, &mut errors));
    let accent_color = accent.and_then(|v| color("accent_color", &v, &mut errors));
    match (logo_url, primary_color, accent_color) {
        (Some(logo_url), Some(primary_color), Some(accent_color)) if errors.is_empty() => {
            Ok(Branding {
                logo_url,
                primary_color,
                accent_color,
            })
        }
        // Every part left out has pushed its error.
        _ => Err(ConfigError::Validation(errors)),
    }
}

/// What changes: members of the settings, or the whole branding.
#[derive(Clone, Debug)]
pub enum SettingsChange {
    Patch(SettingsPatch),
    Branding(Branding),
}

impl SettingsChange {
    fn apply(&self, settings: Settings) -> Settings {
        match self {
            SettingsChange::Patch(patch) => patch.apply(settings),
            SettingsChange::Branding(branding) => Settings {
                branding: branding.clone(),
                ..settings
            },
        }
    }

    fn name(&self) -> &'static str {
        match self {
            SettingsChange::Patch(_) => "settings",
            SettingsChange::Branding(_) => "branding",
        }
    }
}

/// Writes a validated change (tenant admins only) and returns the settings after it.
pub struct UpdateSettings(pub SettingsChange);

fn corrupt(err: serde_json::Error) -> ConfigError {
    ConfigError::Load(super::load::LoadError::CorruptRow {
        column: "tenants.settings",
        reason: err.to_string(),
    })
}

async fn update(
    tx: &TenantTx<'_>,
    caller: &Caller,
    UpdateSettings(change): UpdateSettings,
) -> Result<SettingsView, ConfigError> {
    caller.admin()?;
    let tenant = caller.tenant_id;
    // Locked: two changes at once apply one after the other and number their versions in
    // that order. The versions are filtered by the parameter, not by `t.id`: on Citus a
    // correlated subquery from the reference table into a distributed one cannot be planned.
    let stmt = tx
        .prepare_cached(
            "select t.settings, coalesce((select max(v.version) from app.settings_versions v \
             where v.tenant_id = $1), 0) from app.tenants t where t.id = $1 for update of t",
        )
        .await?;
    let row = tx
        .query_opt(&stmt, &[&tenant])
        .await?
        .ok_or(ConfigError::TenantNotFound)?;
    let stored: Value = row.get(0);
    let version: i32 = row.get(1);
    let before = Settings::from_stored(&stored).map_err(corrupt)?;
    let after = change.apply(before.clone());
    if after == before {
        return Ok(SettingsView {
            settings: after,
            version,
        });
    }
    // Members a newer version stored stay as they are.
    let mut new_stored = match stored {
        Value::Object(map) => map,
        _ => Default::default(),
    };
    if let Value::Object(known) = serde_json::to_value(&after).map_err(corrupt)? {
        new_stored.extend(known);
    }
    let new_stored = Value::Object(new_stored);
    let stmt = tx
        .prepare_cached("update app.tenants set settings = $2, updated_at = now() where id = $1")
        .await?;
    tx.execute(&stmt, &[&tenant, &new_stored]).await?;
    let previous = serde_json::to_value(&before).map_err(corrupt)?;
    let current = serde_json::to_value(&after).map_err(corrupt)?;
    let version = version + 1;
    let stmt = tx
        .prepare_cached(
            "insert into app.settings_versions \
             (tenant_id, version, settings, previous, change, user_id, request_id) \
             values ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &tenant,
            &version,
            &current,
            &previous,
            &change.name(),
            &caller.user_id,
            &caller.request_id,
        ],
    )
    .await?;
    let (before_json, after_json) = match &change {
        SettingsChange::Patch(_) => (previous, current),
        SettingsChange::Branding(_) => (json!(before.branding), json!(after.branding)),
    };
    let mut extra = serde_json::Map::new();
    extra.insert("version".into(), json!(version));
    audit::record(
        tx,
        caller,
        audit::Entry {
            action: AuditAction::Update,
            resource: change.name(),
            resource_id: tenant.to_string(),
            before: Some(before_json),
            after: Some(after_json),
            extra: Some(extra),
        },
    )
    .await?;
    Ok(SettingsView {
        settings: after,
        version,
    })
}

impl TenantOp for UpdateSettings {
    type Output = SettingsView;
    type Error = ConfigError;
    // Settings live in the shared schema only.
    const OPENS_TENANT_SCHEMA: bool = false;

    fn run<'a>(
        self,
        tx: &'a TenantTx<'a>,
        caller: &'a Caller,
    ) -> BoxFuture<'a, Result<SettingsView, ConfigError>> {
        Box::pin(update(tx, caller, self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(err: ConfigError) -> Vec<String> {
        match err {
            ConfigError::Validation(errors) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn values() {
        let mut e = Vec::new();
        assert_eq!(
            timezone("t", &json!("Europe/Paris"), &mut e).as_deref(),
            Some("Europe/Paris")
        );
        assert_eq!(timezone("t", &json!("UTC"), &mut e).as_deref(), Some("UTC"));
        assert_eq!(
            locale("l", &json!("fr-ca"), &mut e).as_deref(),
            Some("fr-CA")
        );
        assert_eq!(
            locale("l", &json!("zh-Hant-TW"), &mut e).as_deref(),
            Some("zh-Hant-TW")
        );
        assert_eq!(
            color("c", &json!("#A1B2C3"), &mut e).as_deref(),
            Some("#a1b2c3")
        );
        assert!(e.is_empty(), "{e:?}");
        for bad in [
            json!("Mars/Olympus"),
            json!(""),
            json!(5),
            json!(null),
            json!("Europe/Paris\u{0}"),
        ] {
            assert!(timezone("t", &bad, &mut e).is_none(), "{bad}");
        }
        for bad in [
            json!("english"),
            json!("en_US"),
            json!("x-private"),
            json!("en-u"),
            json!(""),
        ] {
            assert!(locale("l", &bad, &mut e).is_none(), "{bad}");
        }
        for bad in [
            json!("red"),
            json!("#fff"),
            json!("#12345g"),
            json!("123456"),
            json!("#1234567"),
        ] {
            assert!(color("c", &bad, &mut e).is_none(), "{bad}");
        }
    }

    #[tokio::test]
    async fn patches_name_every_bad_field() {
        let patch = parse_patch(&json!({"timezone": "Asia/Tokyo", "branding": {"logo_url": null}}))
            .await
            .unwrap();
        assert_eq!(patch.timezone.as_deref(), Some("Asia/Tokyo"));
        assert_eq!(patch.logo_url, Some(None));
        let err = parse_patch(&json!({
            "timezone": "Nowhere", "locale": 3, "colour": "red", "tenant_id": "x",
            "branding": {"primary_color": "blue", "logo_url": "http://93.184.216.34/l.png", "font": "x"}
        }))
        .await
        .unwrap_err();
        let mut got = fields(err);
        got.sort();
        assert_eq!(
            got,
            [
                "branding.font",
                "branding.logo_url",
                "branding.primary_color",
                "colour",
                "locale",
                "tenant_id",
                "timezone"
            ]
        );
        assert_eq!(fields(parse_patch(&json!({})).await.unwrap_err()), ["body"]);
        assert_eq!(
            fields(parse_patch(&json!("x")).await.unwrap_err()),
            ["body"]
        );
    }

    #[tokio::test]
    async fn branding_is_whole() {
        let b = parse_branding(
            &json!({"logo_url": null, "primary_color": "#000000", "accent_color": "#FFFFFF"}),
        )
        .await
        .unwrap();
        assert_eq!(b.accent_color, "#ffffff");
        let mut got = fields(
            parse_branding(&json!({"primary_color": "#000000", "accent_color": "x", "name": "n"}))
                .await
                .unwrap_err(),
        );
        got.sort();
        assert_eq!(got, ["accent_color", "logo_url", "name"]);
    }
}
