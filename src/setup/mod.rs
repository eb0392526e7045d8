//! One-off commands that set a deployment up: `certs`, `registry-user` and
//! `tunnel-url`. They share nothing with the service but the binary.

pub mod certs;
pub mod registry_user;
pub mod tunnel;
