//! RTP sequence number extension (16-bit wrap-around to a 64-bit index).

/// Extends 16-bit RTP sequence numbers to a monotonic 64-bit index, per RFC 3550 §A.1 logic:
/// a number is placed in the 2^16 cycle that puts it closest to the highest seen so far.
#[derive(Debug, Clone, Default)]
pub struct SeqExtender {
    highest: Option<u64>,
}

impl SeqExtender {
    /// Starts with no packet seen.
    pub fn new() -> Self {
        Self::default()
    }

    /// The extended index of `seq`; advances the highest seen index when it is newer.
    pub fn extend(&mut self, seq: u16) -> u64 {
        // Start far from zero so that packets reordered before the first one do not underflow.
        const BASE: u64 = 1 << 32;
        let Some(highest) = self.highest else {
            let ext = BASE + u64::from(seq);
            self.highest = Some(ext);
            return ext;
        };
        let cycle = highest & !0xffff;
        let candidates = [
            cycle.wrapping_sub(1 << 16) | u64::from(seq),
            cycle | u64::from(seq),
            (cycle + (1 << 16)) | u64::from(seq),
        ];
        let ext = candidates
            .into_iter()
            .min_by_key(|c| c.abs_diff(highest))
            .unwrap_or(cycle | u64::from(seq)); // ok: the array is never empty
        if ext > highest {
            self.highest = Some(ext);
        }
        ext
    }

    /// The highest extended index seen, if any.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_forward_and_tolerates_reordering_across_the_wrap() {
        let mut s = SeqExtender::new();
        let a = s.extend(65534);
        let b = s.extend(65535);
        let c = s.extend(1);
        let d = s.extend(0); // late, across the wrap
        let e = s.extend(65533); // late, before the wrap
        assert_eq!(b, a + 1);
        assert_eq!(c, a + 3);
        assert_eq!(d, a + 2);
        assert_eq!(e, a - 1);
        assert_eq!(s.highest(), Some(c));
    }
}
