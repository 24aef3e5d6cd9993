//! The tenant API runtime: one axum app, served locally and on AWS Lambda.
//!
//! Request path: `http` (the only module that knows axum) asks `auth` to verify the bearer token and
//! bind it to a tenant, checks the route's permission in `http::routes::ROUTES`, and calls one
//! `service` function, which reaches models through `models::ModelRouter`, tenant data through
//! `tenancy::TenantTx`, and records cost through `metering`. Imports run one way, from the edge
//! inwards (docs/ARCHITECTURE.md; held by a tidy test). `tenantctl` (the `cli` crate) depends on this
//! crate, never the reverse.

pub mod audit;
pub mod auth;
pub mod db;
pub mod domain;
pub mod http;
pub mod metering;
pub mod models;
pub mod pricing;
pub mod reconcile;
pub mod registry;
pub mod schema;
pub mod secrets;
pub mod service;
pub mod state;
pub mod telemetry;
pub mod tenancy;

pub use http::app;
pub use state::{AppState, RuntimeConfig};
