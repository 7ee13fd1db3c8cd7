//! What billing reads of the usage area (`crate::usage`): billing periods, their anchor and
//! each period's totals, in one place.

pub use crate::usage::period::{period_containing, Period};
pub use crate::usage::{period_anchor, period_totals};
