//! The core's own deadlines (the group's, including the send barrier, and the media
//! pipeline's come from them directly).

use std::time::{Duration, Instant};

/// One of the core's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// The current join step must be answered by then.
    JoinStep = 0,
    /// Commit the relay's removal proposal if no other member did.
    ProposalFallback = 1,
    /// Publish counters and decrypt health.
    Stats = 2,
    /// Try to connect to the relay again.
    Reconnect = 3,
    /// Ping the relay; notice a silent connection.
    Ping = 4,
}

const COUNT: usize = 5;

/// When each timer fires, if armed.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct TimerTable([Option<Instant>; COUNT]);

impl TimerTable {
    pub(super) fn set(&mut self, timer: Timer, at: Instant) {
        self.0[timer as usize] = Some(at);
    }

    pub(super) fn stop(&mut self, timer: Timer) {
        self.0[timer as usize] = None;
    }

    /// Disarms `timer` and returns true if it was due at `now`.
    pub(super) fn expire(&mut self, timer: Timer, now: Instant) -> bool {
        let slot = &mut self.0[timer as usize];
        if slot.is_some_and(|t| t <= now) {
            *slot = None;
            return true;
        }
        false
    }

    /// The earliest armed timer.
    pub(super) fn next(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }
}

/// `now + d`, with `d` capped at a day (options are caller input; never overflow).
pub(crate) fn after(now: Instant, d: Duration) -> Instant {
    let d = d.min(Duration::from_secs(86_400));
    now.checked_add(d).unwrap_or(now)
}
