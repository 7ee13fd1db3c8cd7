pub mod health;
pub mod tenants;
