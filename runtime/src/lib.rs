//! The tenant API runtime: one axum app, served locally and on AWS Lambda.
//!
//! Request path: `auth` verifies the bearer token and binds it to a tenant -> `routes` (one table of
//! routes and permissions) -> a domain function (`chat`, `ledger`) -> `models::ModelRouter` for model
//! calls and `tenancy::TenantTx` for tenant data. `tenantctl` (the `cli` crate) depends on this crate,
//! never the reverse.

pub mod auth;
pub mod db;
pub mod domain;
pub mod http;
pub mod metering;
pub mod models;
pub mod registry;
pub mod schema;
pub mod secrets;
pub mod service;
pub mod state;
pub mod tenancy;

pub use http::app;
pub use state::{AppState, RuntimeConfig};
