//! The integration tests, as one binary (as zero-to-production and mini-redis
//! lay theirs out): each file here is a module, and a test is named by its
//! module, `publish::…`, `store::sqlite::…`. Select modules with filters:
//! `cargo test --test it -- publish:: results::`.
//!
//! Slipway runs as a child process of these tests (`support::Slipway`); some
//! kill and restart it to check what survives (`results::`, `catch_up::`,
//! `layers::`), which touches only that child. The tests that stop or freeze
//! one instance to see what the others do, and those that need the machine to
//! themselves, are elsewhere: `tests/process/`, `tests/load.rs`,
//! `tests/stack.rs`. One binary links the crate and `tests/support/` once
//! instead of once per file.

#[path = "../support/mod.rs"]
mod support;

mod browser;
mod buildkit;
mod cache;
mod catch_up;
mod forges;
mod fuzz_parsers;
mod github_app;
mod hooks;
mod hostile;
mod layers;
mod platforms;
mod publish;
mod registry_auth;
mod results;
mod retention;
mod signing;
mod store;
mod tags;
mod webhook;
