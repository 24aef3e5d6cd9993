//! Metering: what a model call cost, written where finance can read it. Today the ledger (one row per
//! call, through the tenant's own `TenantTx`); budgets and limits join it here.

pub mod ledger;
