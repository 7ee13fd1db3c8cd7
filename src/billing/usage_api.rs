//! What billing reads of the usage area: billing periods, their anchor and each period's
//! totals. Until the usage area lands (branch `usage`, V8) this holds stand-ins of the same
//! signatures.
// TODO(merge usage): re-export crate::usage::{period::{Period, period_containing},
// period_anchor, period_totals} here, and drop the stand-ins below.

use std::collections::BTreeMap;

use chrono::{DateTime, Months, Utc};
use deadpool_postgres::GenericClient;
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Period {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

pub fn period_containing(anchor: DateTime<Utc>, at: DateTime<Utc>) -> Period {
    let nth = |n: u32| anchor.checked_add_months(Months::new(n)).unwrap_or(anchor);
    let mut n = 0;
    while nth(n + 1) <= at && n < 100_000 {
        n += 1;
    }
    Period {
        start: nth(n),
        end: nth(n + 1),
    }
}

pub async fn period_anchor<C: GenericClient + Sync>(
    client: &C,
    tenant: Uuid,
) -> Result<DateTime<Utc>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "select coalesce( \
               (select s.current_period_start from app.subscriptions s \
                 where s.tenant_id = $1 and s.deleted_at is null), \
               (select t.created_at from app.tenants t where t.id = $1))",
            &[&tenant],
        )
        .await?;
    Ok(row
        .and_then(|r| r.get::<_, Option<DateTime<Utc>>>(0))
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH))
}

pub async fn period_totals<C: GenericClient + Sync>(
    _client: &C,
    _tenant: Uuid,
    _period: &Period,
    _now: DateTime<Utc>,
) -> Result<BTreeMap<String, i64>, tokio_postgres::Error> {
    Ok(BTreeMap::new())
}
