//! Checks on the network addresses tenants give the server (logo URLs, webhook targets), and
//! the outbound HTTP client that only reaches the addresses those checks permit.

pub mod outbound;
pub mod ssrf;
