//! Metering: what a model call cost, written where finance can read it: the ledger (one row per
//! call, through the tenant's own `TenantTx`) and its writer (group or direct commit); budgets and
//! limits join it here.

pub mod idempotency;
pub mod ledger;
pub mod limits;
pub mod writer;
