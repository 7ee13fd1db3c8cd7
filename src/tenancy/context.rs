//! The tenant of the work in progress, carried in a `tokio::task_local!` (never a
//! thread-local: a task moves between threads at every await). Set around every tenant
//! operation and every background job; code deep in a call chain can ask for it, and must
//! still receive the tenant explicitly for anything it queries.

use std::future::Future;

use uuid::Uuid;

tokio::task_local! {
    static CURRENT_TENANT: Uuid;
}

/// Runs `fut` with `tenant` as the current tenant.
pub async fn scope<F: Future>(tenant: Uuid, fut: F) -> F::Output {
    CURRENT_TENANT.scope(tenant, fut).await
}

/// The current tenant, when inside `scope`.
pub fn current() -> Option<Uuid> {
    CURRENT_TENANT.try_with(|t| *t).ok()
}
