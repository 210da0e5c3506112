//! A fixed-size latency histogram (1 ms buckets) for detection and signature-wait times.

use std::time::Duration;

/// Buckets of 1 ms from 0 to `BUCKETS - 1` ms; longer samples go to an overflow bucket.
const BUCKETS: usize = 4096;

/// Durations in 1 ms buckets up to 4.095 s (longer ones in one overflow bucket), with the
/// exact maximum. Constant memory (16 KiB), so it can run for a whole call.
#[derive(Clone)]
pub struct LatencyHistogram {
    buckets: Box<[u32]>,
    overflow: u64,
    count: u64,
    max: Duration,
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("count", &self.count)
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .field("max", &self.max)
            .finish()
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: vec![0; BUCKETS].into_boxed_slice(),
            overflow: 0,
            count: 0,
            max: Duration::ZERO,
        }
    }
}

impl LatencyHistogram {
    /// Adds one sample.
    pub fn record(&mut self, d: Duration) {
        self.count += 1;
        self.max = self.max.max(d);
        let ms = usize::try_from(d.as_millis()).unwrap_or(usize::MAX);
        match self.buckets.get_mut(ms) {
            Some(b) => *b = b.saturating_add(1),
            None => self.overflow += 1,
        }
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Largest sample.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The `q`-quantile (0.0..=1.0) rounded down to the millisecond, the maximum for samples
    /// past the last bucket; `None` without samples.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
        // ok: the product is in 0..=count, a u64; float to int casts saturate.
        let rank = ((q * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (ms, n) in self.buckets.iter().enumerate() {
            seen += u64::from(*n);
            if seen >= rank {
                return Some(Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX)));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // covers: MA-OBS-2
    #[test]
    fn quantiles_of_known_samples() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms) + Duration::from_micros(300));
        }
        h.record(Duration::from_secs(9));
        assert_eq!(h.count(), 101);
        assert_eq!(h.quantile(0.5), Some(Duration::from_millis(51)));
        assert_eq!(h.quantile(0.99), Some(Duration::from_millis(100)));
        assert_eq!(h.quantile(1.0), Some(Duration::from_secs(9)));
        assert_eq!(h.quantile(0.0), Some(Duration::from_millis(1)));
        assert_eq!(h.quantile(f64::NAN), Some(Duration::from_millis(1)));
        assert_eq!(h.max(), Duration::from_secs(9));
    }
}
