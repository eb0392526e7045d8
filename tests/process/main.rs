//! The process-level tests, one binary: Slipway killed (SIGKILL) mid-push, its
//! disk filled, several instances sharing one PostgreSQL with one of them
//! stopped, frozen (SIGSTOP) or cut off from the database. Their timing leans
//! on leases and on the processes they stop, so they stay out of `tests/it/`,
//! whose tests run beside each other. Select with `cargo test --test process
//! -- faults::` or `-- instances::`.

// These tests use part of the shared harness; tests/it/ uses all of it.
#[allow(dead_code, unused_imports)]
#[path = "../support/mod.rs"]
mod support;

mod faults;
mod instances;
mod partition;
