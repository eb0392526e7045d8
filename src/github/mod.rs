//! GitHub: the REST [`client`], the repository webhooks Slipway installs and
//! keeps pointed at it ([`hooks`]), the merges it missed ([`catch_up`]), and
//! the sticky comment on a merged pull request ([`comments`]).
//!
//! Owns GitHub's API; imports the intake's state for catch-up, never the
//! pipeline, the engine or the registry.

pub mod app;
pub mod catch_up;
pub mod checks;
pub mod client;
pub mod comments;
pub mod hook_keeper;
pub mod hooks;

pub use client::{CommitStatus, ForgeError, GitHub};
