//! End-to-end tests over real HTTP against real Postgres, and tidy checks over the repository.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "test code: an unexpected error should fail the test loudly"
)]

mod api;
mod auth;
mod aws_flow;
mod aws_runbooks;
mod cloudformation;
mod console;
mod deploy_mocked;
mod fleet_mocked;
mod gateway;
mod injection;
mod interop;
mod issuers;
mod jwks;
mod lambda;
mod meta;
mod objects;
mod providers;
mod rds_iam;
mod secrets_aws;
mod tidy;
mod tiers;
