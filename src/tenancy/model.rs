use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::Row;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    Active,
    Suspended,
    Deleted,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub subdomain: String,
    pub plan: String,
    pub status: TenantStatus,
    #[schema(value_type = Object)]
    pub settings: Value,
    pub schema_version: i32,
    pub created_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// The column list every tenant query selects, in the order `Tenant::from_row` reads.
pub const TENANT_COLUMNS: &str =
    "id, name, slug, subdomain, plan, status, settings, schema_version, created_at, deleted_at";

impl Tenant {
    pub fn from_row(row: &Row) -> Tenant {
        let deleted_at: Option<DateTime<Utc>> = row.get(9);
        let status: &str = row.get(5);
        Tenant {
            id: row.get(0),
            name: row.get(1),
            slug: row.get(2),
            subdomain: row.get(3),
            plan: row.get(4),
            status: match (deleted_at.is_some(), status) {
                (true, _) => TenantStatus::Deleted,
                (false, "suspended") => TenantStatus::Suspended,
                _ => TenantStatus::Active,
            },
            settings: row.get(6),
            schema_version: row.get(7),
            created_at: row.get(8),
            deleted_at,
        }
    }
}

/// Settings every new tenant starts with; PATCH /settings validates against this shape.
pub fn default_settings() -> Value {
    serde_json::json!({
        "timezone": "UTC",
        "locale": "en",
        "branding": {
            "logo_url": null,
            "primary_color": "#2563eb",
            "accent_color": "#f59e0b"
        }
    })
}
