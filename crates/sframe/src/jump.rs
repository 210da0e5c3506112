//! Bounded counter jump: how far one authenticated frame may move a KID's replay window.
//!
//! Every member of an SFrame group holds the group's key material, so any member can seal a
//! frame under another member's KID. Without a bound, one such frame with a counter near
//! 2^64 moves the window so far that the real sender's frames are all `TooOld` until its key
//! changes. A [`JumpLimit`] refuses frames whose counter runs further ahead of the highest
//! accepted one than the real sender could have got in the time since.

use std::time::Duration;

/// Largest counter advance a receiver accepts over a KID's highest accepted counter.
///
/// A frame with counter `ctr` for a KID whose highest accepted counter is `top` is refused
/// when `ctr - top > base + per_second × elapsed`, where `elapsed` is the time since `top`
/// was accepted. All arithmetic saturates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct JumpLimit {
    /// Advance always allowed, in frames, however little time passed.
    pub base: u64,
    /// Further advance allowed per second since the highest counter was accepted.
    pub per_second: u64,
}

impl JumpLimit {
    /// 64 frames plus 256 frames per second.
    ///
    /// `base` = 64 is below the default 128-frame replay window, so one forged frame seen
    /// right after a genuine frame with counter `n` moves the window at most to `n + 64` (to
    /// `n + 127` if it comes 249 ms later), and the genuine `n + 1` is still inside it. A
    /// forgery after a longer pause can push the sender out of the window, but only until
    /// its counter catches up: for a time bounded by the pause, not for the whole key. 256 frames/s is above any real per-frame rate
    /// (50 fps audio, 30–60 fps video), so an honest gap — a network outage while the sender
    /// keeps sealing, e.g. 6 s of 50 fps audio = 300 frames — is let through (64 + 256 × 6 =
    /// 1,600), and a gap refused at first is accepted once the limit has grown past it.
    pub const DEFAULT: JumpLimit = JumpLimit {
        base: 64,
        per_second: 256,
    };

    /// The largest advance accepted `elapsed` after the highest counter was accepted.
    #[inline]
    pub fn allowance(&self, elapsed: Duration) -> u64 {
        let grown = u128::from(self.per_second).saturating_mul(elapsed.as_nanos()) / 1_000_000_000;
        self.base
            .saturating_add(u64::try_from(grown).unwrap_or(u64::MAX))
    }

    /// Whether a frame with counter `ctr` is within the limit, given the highest accepted
    /// counter `top` and the time `elapsed` since it was accepted.
    ///
    /// `elapsed` is only evaluated when `ctr` runs more than `base` ahead of `top`.
    #[inline]
    pub(crate) fn allows(&self, top: u64, ctr: u64, elapsed: impl FnOnce() -> Duration) -> bool {
        let advance = ctr.saturating_sub(top);
        advance <= self.base || advance <= self.allowance(elapsed())
    }
}

impl Default for JumpLimit {
    /// [`JumpLimit::DEFAULT`].
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_TIME: fn() -> Duration = || Duration::ZERO;

    // covers: SF-RX-13, SF-RX-16
    #[test]
    fn allowance_grows_with_time_and_saturates() {
        let l = JumpLimit::DEFAULT;
        assert_eq!(l.allowance(Duration::ZERO), 64);
        assert_eq!(l.allowance(Duration::from_millis(500)), 64 + 128);
        assert_eq!(l.allowance(Duration::from_secs(6)), 64 + 1_536);
        assert_eq!(l.allowance(Duration::from_nanos(3_906_249)), 64); // < 1/256 s
        assert_eq!(l.allowance(Duration::from_nanos(3_906_250)), 65);
        assert_eq!(l.allowance(Duration::MAX), u64::MAX);
        let big = JumpLimit {
            base: u64::MAX - 1,
            per_second: u64::MAX,
        };
        assert_eq!(big.allowance(Duration::from_secs(1)), u64::MAX);
        assert_eq!(big.allowance(Duration::MAX), u64::MAX);
        let zero = JumpLimit {
            base: 0,
            per_second: 0,
        };
        assert_eq!(zero.allowance(Duration::MAX), 0);
    }

    // covers: SF-RX-12, SF-RX-14, SF-RX-16
    #[test]
    fn allows_bounds_the_advance_over_top() {
        let l = JumpLimit::DEFAULT;
        assert!(l.allows(10, 74, NO_TIME));
        assert!(!l.allows(10, 75, NO_TIME));
        // At or below top the limit has nothing to say (the replay window decides).
        assert!(l.allows(10, 0, NO_TIME));
        assert!(l.allows(u64::MAX, u64::MAX, NO_TIME));
        assert!(l.allows(u64::MAX - 64, u64::MAX, NO_TIME));
        assert!(!l.allows(u64::MAX - 65, u64::MAX, NO_TIME));
        assert!(!l.allows(0, u64::MAX, || Duration::from_secs(3600)));
        assert!(l.allows(0, u64::MAX, || Duration::MAX));
        assert!(l.allows(10, 75, || Duration::from_millis(4)));
        // Time is not consulted for advances within `base`.
        assert!(l.allows(10, 74, || unreachable!("elapsed evaluated")));
    }
}
