use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::Row;
use utoipa::ToSchema;
use uuid::Uuid;

use super::TenancyError;

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
    /// A stored status this version does not know is [`TenancyError::CorruptRow`], never read
    /// as `active`: a tenant suspended by a newer version must not come back to life here.
    pub fn from_row(row: &Row) -> Result<Tenant, TenancyError> {
        let deleted_at: Option<DateTime<Utc>> = row.get(9);
        let stored: &str = row.get(5);
        let status = match stored {
            "active" => TenantStatus::Active,
            "suspended" => TenantStatus::Suspended,
            _ => {
                return Err(TenancyError::CorruptRow {
                    column: "tenants.status",
                    value: stored.to_string(),
                })
            }
        };
        Ok(Tenant {
            id: row.get(0),
            name: row.get(1),
            slug: row.get(2),
            subdomain: row.get(3),
            plan: row.get(4),
            status: if deleted_at.is_some() {
                TenantStatus::Deleted
            } else {
                status
            },
            settings: row.get(6),
            schema_version: row.get(7),
            created_at: row.get(8),
            deleted_at,
        })
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
