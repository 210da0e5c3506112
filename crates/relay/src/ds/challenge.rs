//! Resume challenges: a fresh, never repeated, unpredictable value per admitted connection.
//!
//! The DS reads no OS randomness: the shell gives it a secret seed ([`ChallengeSeed`], drawn
//! from the OS at start, or fixed in tests) and the DS derives the n-th challenge as
//! `HMAC-SHA256(seed, "blindcall relay challenge v1" || uint64 n)`. The counter never repeats
//! within a DS, so neither does a challenge; without the seed, none can be predicted.

use blindcall_proto::RESUME_CHALLENGE_LEN;
use ring::hmac;
use zeroize::{Zeroize, ZeroizeOnDrop};

const LABEL: &[u8] = b"blindcall relay challenge v1";

/// The secret seed of a DS's resume challenges (32 bytes). Zeroized on drop, never printed.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct ChallengeSeed([u8; 32]);

impl ChallengeSeed {
    /// A seed from 32 secret bytes (the shell draws them from the OS; tests fix them).
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl std::fmt::Debug for ChallengeSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChallengeSeed(<redacted>)")
    }
}

/// The challenge counter; the key is derived from the seed for each challenge, so no
/// long-lived key state outlives the zeroized seed.
#[derive(Debug, Default)]
pub(crate) struct Challenges {
    next: u64,
}

impl Challenges {
    /// The next challenge under `seed`.
    pub fn next(&mut self, seed: &ChallengeSeed) -> [u8; RESUME_CHALLENGE_LEN] {
        let n = self.next;
        // 2^64 admissions are out of reach; saturating keeps the type total.
        self.next = self.next.saturating_add(1);
        let key = hmac::Key::new(hmac::HMAC_SHA256, &seed.0);
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(LABEL);
        ctx.update(&n.to_be_bytes());
        let tag = ctx.sign();
        let mut out = [0u8; RESUME_CHALLENGE_LEN];
        // ok: HMAC-SHA256 tags are exactly 32 bytes, the challenge's length.
        out.copy_from_slice(&tag.as_ref()[..RESUME_CHALLENGE_LEN]);
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    // covers: DS-RES-1
    #[test]
    fn challenges_never_repeat_and_depend_on_the_seed() {
        let (one, two) = (ChallengeSeed::new([1; 32]), ChallengeSeed::new([2; 32]));
        let (mut a, mut b, mut c) = (
            Challenges::default(),
            Challenges::default(),
            Challenges::default(),
        );
        let mut seen = HashSet::new();
        for _ in 0..1000 {
            let x = a.next(&one);
            assert!(seen.insert(x), "a challenge repeated");
            // Deterministic for a seed (tests), different under another seed.
            assert_eq!(b.next(&one), x);
            assert_ne!(c.next(&two), x);
        }
        assert_eq!(
            format!("{:?}", ChallengeSeed::new([7; 32])),
            "ChallengeSeed(<redacted>)"
        );
    }
}
