//! Authorization: who is asking ([`Caller`]) and the guards an operation checks before it acts.
//!
//! A guard proves one thing about the caller and returns what it proved (the user's id), or an
//! [`AccessError`] naming what is missing. It never builds an HTTP answer: each area wraps
//! `AccessError` in its own error enum (`#[from]`), and the HTTP edge (`http::problem`) gives
//! every variant one body wherever it comes from:
//!
//! | variant           | status | `code`          | members                       |
//! |-------------------|--------|-----------------|-------------------------------|
//! | `Unauthenticated` | 401    | `unauthorized`  |                               |
//! | `RoleRequired`    | 403    | `forbidden`     | `required_role`               |
//! | `PlanRequired`    | 403    | `plan_required` | `feature`, `required_plan`    |
//! | `PlanLimit`       | 402    | `plan_limit`    | `resource`, `limit`, `current` |
//!
//! Role gates need only the caller, so they are methods of [`Caller`] below. Plan gates need
//! the plan's features and limits, which are data (`app.plans`) held in memory by the tenant's
//! config snapshot: [`PlanGate`] answers them from it, without a query, with `PlanRequired`
//! (naming the cheapest plan that has the feature) or `PlanLimit`. An operation gates with
//! `caller.plan().require_feature(feature::WEBHOOKS)?` or
//! `caller.plan().require_within(Limit::MaxUsers, current)?`. A new gate is a new method (or
//! variant) here, mapped once at the edge, never a status code chosen by the area.

use std::sync::Arc;

use thiserror::Error;
use uuid::Uuid;

use super::Role;
use crate::tenant_config::snapshot::{Limit, TenantSnapshot};

/// Who is asking, in which tenant. Built by the tenant resolver from a verified credential;
/// handlers never build one from request input.
#[derive(Clone, Debug)]
pub struct Caller {
    pub tenant_id: Uuid,
    pub tenant_slug: String,
    /// The tenant's configuration as its actor held it when the request was resolved: the
    /// plan, settings and branding this request is answered with, from start to end.
    pub config: Arc<TenantSnapshot>,
    /// None for unauthenticated requests that only name a tenant (e.g. GET /branding).
    pub user_id: Option<Uuid>,
    pub role: Option<Role>,
    pub request_id: String,
}

/// Why a guard refused the caller.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AccessError {
    #[error("credentials are required")]
    Unauthenticated,
    #[error("this requires the {} role", required.as_str())]
    RoleRequired { required: Role },
    /// `required_plan` is the cheapest plan that has the feature, if any has it.
    #[error("{feature} is not part of the {plan} plan")]
    PlanRequired {
        feature: String,
        plan: String,
        required_plan: Option<String>,
    },
    #[error("the plan allows {limit} {resource}; the tenant has {current}")]
    PlanLimit {
        resource: &'static str,
        limit: i64,
        current: i64,
    },
}

impl Caller {
    /// The authenticated user.
    pub fn user(&self) -> Result<Uuid, AccessError> {
        self.user_id.ok_or(AccessError::Unauthenticated)
    }

    /// The authenticated user, if their role includes `required` (an admin may do what a
    /// member may).
    pub fn require_role(&self, required: Role) -> Result<Uuid, AccessError> {
        let user = self.user()?;
        let allowed = match required {
            Role::Member => self.role.is_some(),
            Role::Admin => self.role == Some(Role::Admin),
        };
        if allowed {
            Ok(user)
        } else {
            Err(AccessError::RoleRequired { required })
        }
    }

    /// The authenticated user if they are a tenant admin.
    pub fn admin(&self) -> Result<Uuid, AccessError> {
        self.require_role(Role::Admin)
    }

    pub fn is_admin(&self) -> bool {
        self.role == Some(Role::Admin)
    }

    /// The plan gates of the caller's tenant.
    pub fn plan(&self) -> PlanGate<'_> {
        PlanGate(&self.config)
    }
}

/// The plan gates, answered from a tenant's config snapshot.
#[derive(Clone, Copy)]
pub struct PlanGate<'a>(pub &'a TenantSnapshot);

impl PlanGate<'_> {
    /// `PlanRequired` unless the tenant's plan has `feature`.
    pub fn require_feature(self, feature: &str) -> Result<(), AccessError> {
        if self.0.plan.has(feature) {
            return Ok(());
        }
        Err(AccessError::PlanRequired {
            feature: feature.to_string(),
            plan: self.0.plan.name.clone(),
            required_plan: self.0.cheapest_plan_with(feature).map(str::to_string),
        })
    }

    /// `PlanLimit` unless one more fits under `limit`, the tenant using `current` now (a
    /// plan without the limit fits anything).
    pub fn require_within(self, limit: Limit, current: i64) -> Result<(), AccessError> {
        match self.0.plan.limit(limit) {
            Some(max) if current >= max => Err(AccessError::PlanLimit {
                resource: limit.resource(),
                limit: max,
                current,
            }),
            _ => Ok(()),
        }
    }

    /// The plan's value of `limit`; None is unlimited.
    pub fn limit(self, limit: Limit) -> Option<i64> {
        self.0.plan.limit(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(user: Option<Uuid>, role: Option<Role>) -> Caller {
        Caller {
            tenant_id: Uuid::nil(),
            tenant_slug: "t".into(),
            config: Arc::new(TenantSnapshot::bare(Uuid::nil(), "t", "free")),
            user_id: user,
            role,
            request_id: "r".into(),
        }
    }

    #[test]
    fn roles() {
        let id = Uuid::now_v7();
        let anonymous = caller(None, None);
        assert_eq!(anonymous.user(), Err(AccessError::Unauthenticated));
        assert_eq!(anonymous.admin(), Err(AccessError::Unauthenticated));

        let member = caller(Some(id), Some(Role::Member));
        assert_eq!(member.user(), Ok(id));
        assert_eq!(member.require_role(Role::Member), Ok(id));
        assert_eq!(
            member.admin(),
            Err(AccessError::RoleRequired {
                required: Role::Admin
            })
        );

        let admin = caller(Some(id), Some(Role::Admin));
        assert_eq!(admin.admin(), Ok(id));
        assert_eq!(admin.require_role(Role::Member), Ok(id));
        assert!(admin.is_admin() && !member.is_admin());
    }

    #[test]
    fn plan_gates() {
        let mut config = TenantSnapshot::bare(Uuid::nil(), "t", "free");
        config.plan.features.insert("api_access".into(), false);
        config.plan.features.insert("webhooks".into(), true);
        config.plan.limits.max_users = Some(2);
        config.plan.limits.api_calls_per_month = None;
        config
            .cheapest_with
            .insert("api_access".into(), "pro".into());
        let gate = PlanGate(&config);
        assert_eq!(gate.require_feature("webhooks"), Ok(()));
        assert_eq!(
            gate.require_feature("api_access"),
            Err(AccessError::PlanRequired {
                feature: "api_access".into(),
                plan: "free".into(),
                required_plan: Some("pro".into()),
            })
        );
        assert!(matches!(
            gate.require_feature("teleport"),
            Err(AccessError::PlanRequired {
                required_plan: None,
                ..
            })
        ));
        assert_eq!(gate.require_within(Limit::MaxUsers, 1), Ok(()));
        assert_eq!(
            gate.require_within(Limit::MaxUsers, 2),
            Err(AccessError::PlanLimit {
                resource: "users",
                limit: 2,
                current: 2
            })
        );
        assert_eq!(
            gate.require_within(Limit::ApiCallsPerMonth, i64::MAX),
            Ok(())
        );
    }
}
