//! One-off commands that set a deployment up: `certs`, `registry-user`,
//! `tunnel-url` and `hook install`.
//!
//! Owns the one-off commands; imports config and GitHub's client, never
//! the running service's parts.

pub mod certs;
pub mod hook;
pub mod registry_user;
pub mod tunnel;
