//! Per-KID anti-replay window over the CTR (RFC 9605 §9.3, after RFC 3711 §3.3.2).
//!
//! Tracks the highest accepted counter `top` and a bitmap of accepted counters in
//! `(top - window, top]`. Checking is separate from recording so the receiver can record
//! only after the frame authenticated.

/// Largest replay window a receiver accepts; larger configured values are clamped to it.
pub const MAX_REPLAY_WINDOW: u64 = 1 << 16;

/// Why the window refused a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Already accepted.
    Replay,
    /// Left of the window.
    TooOld,
}

#[derive(Debug)]
pub(crate) struct ReplayWindow {
    /// Highest accepted counter, `None` before the first accepted frame.
    top: Option<u64>,
    /// Window size W in frames (1..=MAX_REPLAY_WINDOW).
    window: u64,
    /// Bit `c & mask` is set if counter `c` (within the window) was accepted.
    bits: Box<[u64]>,
    /// `64 * bits.len() - 1`; `bits.len()` is a power of two so slots need no division.
    mask: u64,
}

impl ReplayWindow {
    /// A window of `window` frames, clamped to `1..=MAX_REPLAY_WINDOW`.
    pub(crate) fn new(window: u64) -> Self {
        let window = window.clamp(1, MAX_REPLAY_WINDOW);
        // ok: window <= 2^16, so the word count fits usize.
        let words = usize::try_from(window.div_ceil(64))
            .unwrap_or(1)
            .next_power_of_two();
        Self {
            top: None,
            window,
            bits: vec![0u64; words].into_boxed_slice(),
            mask: 64 * words as u64 - 1,
        }
    }

    /// The highest accepted counter, `None` before the first accepted frame.
    #[inline]
    pub(crate) fn top(&self) -> Option<u64> {
        self.top
    }

    /// Forgets every accepted counter.
    pub(crate) fn reset(&mut self) {
        self.top = None;
        self.bits.fill(0);
    }

    #[inline]
    fn slot(&self, ctr: u64) -> (usize, u64) {
        let i = ctr & self.mask;
        // ok: i <= mask < 2^17, fits usize.
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    /// Whether `ctr` would be accepted; changes nothing.
    #[inline]
    pub(crate) fn check(&self, ctr: u64) -> Result<(), Refused> {
        let Some(top) = self.top else {
            return Ok(());
        };
        if ctr > top {
            return Ok(());
        }
        if top - ctr >= self.window {
            return Err(Refused::TooOld);
        }
        let (w, m) = self.slot(ctr);
        if self.bits[w] & m != 0 {
            Err(Refused::Replay)
        } else {
            Ok(())
        }
    }

    /// Records `ctr` as accepted. Call only after `check(ctr)` passed and the frame verified.
    /// True if `ctr` became the highest accepted counter.
    #[inline]
    pub(crate) fn record(&mut self, ctr: u64) -> bool {
        let raised = self.top.is_none_or(|top| ctr > top);
        match self.top {
            Some(top) if ctr <= top => {}
            Some(top) => {
                let advance = ctr - top;
                if advance > self.mask {
                    self.bits.fill(0);
                } else {
                    // Slots for top+1..=ctr held counters now out of the window.
                    for c in top + 1..=ctr {
                        let (w, m) = self.slot(c);
                        self.bits[w] &= !m;
                    }
                }
                self.top = Some(ctr);
            }
            None => self.top = Some(ctr),
        }
        let (w, m) = self.slot(ctr);
        self.bits[w] |= m;
        raised
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn accept(w: &mut ReplayWindow, c: u64) -> Result<(), Refused> {
        w.check(c)?;
        w.record(c);
        Ok(())
    }

    // covers: SF-RX-11, SF-RX-15
    #[test]
    fn record_reports_a_new_top_and_reset_forgets() {
        let mut w = ReplayWindow::new(128);
        assert_eq!(w.top(), None);
        assert!(w.record(10));
        assert!(!w.record(5));
        assert!(w.record(11));
        assert_eq!(w.top(), Some(11));
        w.reset();
        assert_eq!(w.top(), None);
        assert_eq!(w.check(5), Ok(()));
        assert_eq!(w.check(11), Ok(()));
    }

    // covers: SF-RX-4, SF-RX-5, SF-RX-6
    #[test]
    fn window_semantics() {
        let mut w = ReplayWindow::new(128);
        assert_eq!(accept(&mut w, 10), Ok(()));
        assert_eq!(accept(&mut w, 10), Err(Refused::Replay));
        assert_eq!(accept(&mut w, 5), Ok(()));
        assert_eq!(accept(&mut w, 200), Ok(()));
        assert_eq!(accept(&mut w, 73), Ok(())); // 200 - 73 = 127 < 128
        assert_eq!(accept(&mut w, 72), Err(Refused::TooOld));
        assert_eq!(accept(&mut w, 73), Err(Refused::Replay));
        assert_eq!(accept(&mut w, 199), Ok(()));
        assert_eq!(accept(&mut w, u64::MAX), Ok(()));
        assert_eq!(accept(&mut w, 199), Err(Refused::TooOld));
        assert_eq!(accept(&mut w, u64::MAX - 127), Ok(()));
        assert_eq!(accept(&mut w, u64::MAX - 128), Err(Refused::TooOld));
        assert_eq!(accept(&mut w, u64::MAX), Err(Refused::Replay));
    }

    // covers: SF-RX-7
    #[test]
    fn window_size_clamped_and_unaligned() {
        let mut w = ReplayWindow::new(0);
        assert_eq!(accept(&mut w, 3), Ok(()));
        assert_eq!(accept(&mut w, 2), Err(Refused::TooOld));
        assert_eq!(accept(&mut w, 3), Err(Refused::Replay));
        assert_eq!(accept(&mut w, 4), Ok(()));
        let w = ReplayWindow::new(u64::MAX);
        assert_eq!(w.window, MAX_REPLAY_WINDOW);
        // A 100-frame window uses a 128-bit map but still refuses at distance 100.
        let mut w = ReplayWindow::new(100);
        assert_eq!(accept(&mut w, 1000), Ok(()));
        assert_eq!(accept(&mut w, 900), Err(Refused::TooOld));
        assert_eq!(accept(&mut w, 901), Ok(()));
        // Slots reused after advancing are clear again.
        assert_eq!(accept(&mut w, 1128), Ok(()));
        assert_eq!(accept(&mut w, 1100), Ok(()));
    }
}
