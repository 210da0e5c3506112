//! One virtual clock for the whole simulation: the relay reads it as a [`Timestamp`], the
//! clients as an [`Instant`], and both are fixed offsets of one [`SimTime`]. Nothing reads a
//! real clock after the run starts: the `Instant` base is taken once and only differences of
//! it ever matter.

use std::time::{Duration, Instant};

use blindcall_relay::Timestamp;

/// The relay's wall clock at the start of every run (ms since the Unix epoch): 2027-01-15.
/// Capability tokens are minted against it, so a run never depends on today's date.
pub const START_UNIX_MS: u64 = 1_800_000_000_000;

/// Virtual time since the start of a run, in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SimTime(pub u64);

impl SimTime {
    /// Zero.
    pub const ZERO: Self = Self(0);

    /// `ms` milliseconds after the start.
    pub fn from_millis(ms: u64) -> Self {
        Self(ms.saturating_mul(1_000_000))
    }

    /// Whole milliseconds since the start.
    pub fn as_millis(self) -> u64 {
        self.0 / 1_000_000
    }

    /// `self + d`, saturating.
    pub fn plus(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }

    /// `self + ms` milliseconds, saturating.
    pub fn plus_millis(self, ms: u64) -> Self {
        Self(self.0.saturating_add(ms.saturating_mul(1_000_000)))
    }
}

impl std::fmt::Display for SimTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{:06}s",
            self.0 / 1_000_000_000,
            (self.0 / 1_000) % 1_000_000
        )
    }
}

/// The run's clock: where `now` is, and how it looks to each core.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
    now: SimTime,
}

impl Clock {
    /// A clock at zero; `base` is the `Instant` the clients see at zero.
    pub fn new(base: Instant) -> Self {
        Self {
            base,
            now: SimTime::ZERO,
        }
    }

    /// The current virtual time.
    pub fn now(&self) -> SimTime {
        self.now
    }

    /// Moves the clock forward to `t` (never backwards).
    pub fn advance_to(&mut self, t: SimTime) {
        self.now = self.now.max(t);
    }

    /// `now` as the clients see it.
    pub fn instant(&self) -> Instant {
        self.base + Duration::from_nanos(self.now.0)
    }

    /// `now` as the relay sees it.
    pub fn timestamp(&self) -> Timestamp {
        Timestamp(START_UNIX_MS + self.now.as_millis())
    }

    /// A client deadline as virtual time (deadlines before the start count as the start).
    pub fn from_instant(&self, t: Instant) -> SimTime {
        let d = t.saturating_duration_since(self.base);
        SimTime(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// A relay deadline as virtual time.
    pub fn from_timestamp(&self, t: Timestamp) -> SimTime {
        SimTime::from_millis(t.0.saturating_sub(START_UNIX_MS))
    }
}
