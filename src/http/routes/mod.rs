pub mod analytics;
pub mod current_tenant;
pub mod health;
pub mod tenants;
