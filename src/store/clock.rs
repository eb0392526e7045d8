//! The time a store reads leases against. Slipway runs on the store's own
//! clock: this machine's for SQLite (one instance, one machine), the database
//! server's for PostgreSQL (the one clock all instances share). Tests set the
//! time by hand instead, as River's driver suite passes `now`, so a lease runs
//! out when the test says so, not after a sleep.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Whose time leases are taken, renewed and found expired at.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The store's own: `SystemTime::now()` for SQLite, `now()` on the
    /// PostgreSQL server.
    #[default]
    Store,
    /// A time that moves only when told to (tests).
    Manual(ManualClock),
}

impl Clock {
    /// The time set by hand, in milliseconds since the epoch; `None` on the
    /// store's own clock.
    pub(crate) fn manual_ms(&self) -> Option<i64> {
        match self {
            Clock::Store => None,
            Clock::Manual(clock) => Some(clock.now_ms()),
        }
    }

    /// Milliseconds since the epoch: the time set by hand, else this machine's.
    pub(crate) fn now_ms(&self) -> i64 {
        self.manual_ms().unwrap_or_else(system_ms)
    }
}

/// A clock for tests: starts at this machine's time, then moves only by
/// [`ManualClock::advance`]. Clones share one time, so the stores of several
/// "instances" in one test see the same now.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new() -> Self {
        Self(Arc::new(AtomicI64::new(system_ms())))
    }

    /// Moves the time forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(millis(by), Ordering::SeqCst);
    }

    /// Milliseconds since the epoch.
    pub fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl From<ManualClock> for Clock {
    fn from(clock: ManualClock) -> Self {
        Clock::Manual(clock)
    }
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn system_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}
