//! Seeded randomness: every choice the simulation makes (the scenario, each link's latency and
//! losses) comes from a [`Rng`] derived from the run's seed, never from the OS.

use blindcall_media::SeededRng;

/// A small deterministic generator (SplitMix64) with the helpers the simulation needs.
#[derive(Debug, Clone)]
pub struct Rng(SeededRng);

impl Rng {
    /// A generator fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self(SeededRng::new(seed))
    }

    /// An independent generator for stream `stream` of `seed` (e.g. one per participant), so
    /// that removing one participant's actions leaves the others' randomness unchanged.
    pub fn derive(seed: u64, stream: u64) -> Self {
        let mut r = SeededRng::new(seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        // Decorrelate neighbouring streams.
        let mixed = r.next_u64();
        Self(SeededRng::new(mixed ^ stream))
    }

    /// 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// True with probability `per_mille`/1000.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        self.0.next_u64() % 1000 < u64::from(per_mille)
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.0.below(hi - lo + 1)
    }

    /// An index below `n` (0 when `n` is 0).
    pub fn index(&mut self, n: usize) -> usize {
        usize::try_from(self.0.below(n as u64)).unwrap_or(0)
    }
}
