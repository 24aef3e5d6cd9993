//! Integration tests of the runtime crate that need no database: property tests ("fuzzing") of the
//! token and JWKS parsers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: an unexpected error should fail the test loudly"
)]

mod properties;
