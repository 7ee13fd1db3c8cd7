//! The tenant context of the running task (DESIGN.md "Context propagation"). It lives in a
//! `tokio::task_local!`, never in a thread-local: a task moves between worker threads at every
//! `.await`, and a thread-local would hand one tenant's context to another tenant's task.

use std::future::Future;

use uuid::Uuid;

tokio::task_local! {
    static CURRENT_TENANT: Uuid;
}

/// Runs `fut` with `tenant` as the current tenant of the task.
pub async fn scope<F: Future>(tenant: Uuid, fut: F) -> F::Output {
    CURRENT_TENANT.scope(tenant, fut).await
}

/// The tenant of the running task, if it runs inside [`scope`].
pub fn current_tenant() -> Option<Uuid> {
    CURRENT_TENANT.try_with(|t| *t).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scoped_per_task() {
        assert_eq!(current_tenant(), None);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let ta = tokio::spawn(scope(a, async { current_tenant() }));
        let tb = tokio::spawn(scope(b, async {
            tokio::task::yield_now().await;
            current_tenant()
        }));
        assert_eq!(ta.await.unwrap(), Some(a));
        assert_eq!(tb.await.unwrap(), Some(b));
        assert_eq!(current_tenant(), None);
    }
}
