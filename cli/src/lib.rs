//! `tenantctl`: reads tenant manifests, plans and applies hard-isolated tenant resources, and runs the
//! local target. Depends on `runtime` for domain types, the secret store and the server; `runtime`
//! never depends on this crate.

pub mod args;
pub mod aws;
pub mod commands;
pub mod devidp;
pub mod exit;
pub mod isolation;
pub mod local;
pub mod manifest;
pub mod platform;
pub mod prices;
pub mod provision;
pub mod reference;
pub mod serve;
pub mod sql;
pub mod testing;
pub mod usage;
