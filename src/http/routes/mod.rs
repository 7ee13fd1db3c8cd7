pub mod audit_logs;
pub mod current_tenant;
pub mod health;
pub mod projects;
pub mod tasks;
pub mod tenants;
pub mod users;
