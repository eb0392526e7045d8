//! The integration tests, as one binary (as zero-to-production and mini-redis
//! lay theirs out): each file here is a module, and a test is named by its
//! module, `publish::…`, `store::sqlite::…`. Select modules with filters:
//! `cargo test --test it -- publish:: results::`.
//!
//! These tests may restart the Slipway process they started, but never stop or
//! freeze one to see what another instance does, and nothing here needs the
//! machine to itself: those are in `tests/process/`, `tests/load.rs` and
//! `tests/stack.rs`. One binary links the crate and `tests/support/` once
//! instead of once per file.

#[path = "../support/mod.rs"]
mod support;

mod browser;
mod buildkit;
mod catch_up;
mod fuzz_parsers;
mod hooks;
mod hostile;
mod layers;
mod publish;
mod results;
mod signing;
mod store;
mod webhook;
