//! Checks on the network addresses tenants give the server (logo URLs, webhook targets).

pub mod ssrf;
