pub mod auth;
pub mod current_tenant;
pub mod faults;
pub mod health;
pub mod operations;
pub mod tenants;
