//! Integration tests of `tenantctl`: manifests, the local target against real Postgres, and the
//! binary's end-to-end flow.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "test code: an unexpected error should fail the test loudly"
)]

mod aws;
mod binary;
mod conventions;
mod doc_truth;
mod isolation;
mod local;
mod manifest;
mod observability;
mod runbooks;
