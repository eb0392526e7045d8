//! One-off commands that set a deployment up: `certs`, `registry-user`,
//! `tunnel-url` and `hook install`.

pub mod certs;
pub mod hook;
pub mod registry_user;
pub mod tunnel;
