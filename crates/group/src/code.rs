//! Codes people compare out of band: the call's security code (from the MLS epoch
//! authenticator) and the pairwise verification code of two identity keys.

use std::fmt;

/// Domain-separation label hashed before the epoch authenticator.
pub const SECURITY_CODE_LABEL: &[u8] = b"blindcall security code v1";
/// Largest number of 5-digit groups (SHA-256 gives 32 bytes, 5 bytes per group).
pub const MAX_GROUPS: u8 = 6;
/// Default number of 5-digit groups.
pub const DEFAULT_GROUPS: u8 = 6;
/// Fewest 5-digit groups a code may have. A relay in the middle that runs two groups can make
/// commits until both show one code; each attempt costs it one key-schedule evaluation (about
/// a microsecond), and with both sides free that is a birthday search: 2^(b/2) attempts for
/// b bits. Five groups are 10^25 ≈ 2^83 values, ≈ 2^41.5 attempts, months of computing while
/// people read the code aloud; four groups (2^33 attempts, hours) or fewer are refused.
pub const MIN_GROUPS: u8 = 5;
/// Domain-separation label of the pairwise verification code.
pub const PAIRWISE_CODE_LABEL: &[u8] = b"blindcall pairwise code v1";

/// Digits shown on every member's screen; equal codes mean the same group and the same keys.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SecurityCode {
    groups: Vec<u32>,
}

impl SecurityCode {
    /// Derives the code from an epoch authenticator with `groups` groups (clamped to
    /// [`MIN_GROUPS`]..=[`MAX_GROUPS`]).
    ///
    /// `digest = SHA-256(SECURITY_CODE_LABEL || epoch_authenticator)`; group `i` is the
    /// big-endian integer of `digest[5i..5i+5]` mod 100000, written as 5 digits.
    pub fn from_epoch_authenticator(epoch_authenticator: &[u8], groups: u8) -> Self {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(SECURITY_CODE_LABEL);
        ctx.update(epoch_authenticator);
        Self::from_digest(ctx.finish().as_ref(), groups)
    }

    /// The pairwise verification code of two identity (signature) keys: the same whichever
    /// side computes it, stable across calls and epochs. Two people who compare it once out of
    /// band know each other's key; a later call with another key for a known name shows
    /// another code.
    ///
    /// `digest = SHA-256(PAIRWISE_CODE_LABEL || u16 len(lo) || lo || u16 len(hi) || hi)` where
    /// `lo`/`hi` are the two keys in byte order; then six groups as for the security code.
    pub fn pairwise(key_a: &[u8], key_b: &[u8]) -> Self {
        let (lo, hi) = if key_a <= key_b {
            (key_a, key_b)
        } else {
            (key_b, key_a)
        };
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(PAIRWISE_CODE_LABEL);
        for key in [lo, hi] {
            // Keys are at most a few hundred bytes; longer ones are truncated in the length
            // field only, which keeps the encoding injective for any real key.
            ctx.update(&u16::try_from(key.len()).unwrap_or(u16::MAX).to_be_bytes());
            ctx.update(key);
        }
        Self::from_digest(ctx.finish().as_ref(), MAX_GROUPS)
    }

    /// `groups` (raised to [`MIN_GROUPS`], capped at [`MAX_GROUPS`]) 5-digit groups of a
    /// SHA-256 digest: group `i` is the big-endian integer of `digest[5i..5i+5]` mod 100000.
    fn from_digest(digest: &[u8], groups: u8) -> Self {
        let groups = groups.clamp(MIN_GROUPS, MAX_GROUPS);
        let groups = digest
            .chunks_exact(5)
            .take(usize::from(groups))
            .map(|chunk| {
                let v = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
                // The remainder is below 100000, so the conversion cannot fail.
                u32::try_from(v % 100_000).unwrap_or(0)
            })
            .collect();
        Self { groups }
    }

    /// The 5-digit groups as numbers (each < 100000).
    pub fn groups(&self) -> &[u32] {
        &self.groups
    }
}

impl fmt::Display for SecurityCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.groups.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{g:05}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for SecurityCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecurityCode({self})")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    // covers: GRP-CODE-1
    #[test]
    fn code_follows_the_definition() {
        let auth = [7u8; 32];
        let code = SecurityCode::from_epoch_authenticator(&auth, 6);
        let mut input = SECURITY_CODE_LABEL.to_vec();
        input.extend_from_slice(&auth);
        let d = ring::digest::digest(&ring::digest::SHA256, &input);
        let d = d.as_ref();
        let first = (u64::from(d[0]) << 32)
            | (u64::from(d[1]) << 24)
            | (u64::from(d[2]) << 16)
            | (u64::from(d[3]) << 8)
            | u64::from(d[4]);
        assert_eq!(u64::from(code.groups()[0]), first % 100_000);
        assert_eq!(code.groups().len(), 6);
        let shown = code.to_string();
        assert_eq!(shown.len(), 6 * 5 + 5);
        assert!(
            shown
                .split(' ')
                .all(|g| g.len() == 5 && g.bytes().all(|b| b.is_ascii_digit()))
        );
        assert_eq!(
            SecurityCode::from_epoch_authenticator(&auth, 0)
                .groups()
                .len(),
            usize::from(MIN_GROUPS),
            "no code below the floor"
        );
        assert_eq!(
            SecurityCode::from_epoch_authenticator(&auth, 1).groups(),
            &code.groups()[..5]
        );
        assert_eq!(
            SecurityCode::from_epoch_authenticator(&auth, 9)
                .groups()
                .len(),
            6
        );
        assert_ne!(code, SecurityCode::from_epoch_authenticator(&[8u8; 32], 6));
    }

    // covers: GRP-CODE-3
    #[test]
    fn pairwise_code_is_order_independent_and_key_specific() {
        let (a, b, c) = ([1u8; 32], [2u8; 32], [3u8; 33]);
        let ab = SecurityCode::pairwise(&a, &b);
        assert_eq!(ab, SecurityCode::pairwise(&b, &a));
        assert_eq!(ab.groups().len(), 6);
        assert_ne!(ab, SecurityCode::pairwise(&a, &c));
        assert_ne!(ab, SecurityCode::pairwise(&a, &a));
        // Follows the definition.
        let mut input = PAIRWISE_CODE_LABEL.to_vec();
        for k in [&a[..], &b[..]] {
            input.extend_from_slice(&(k.len() as u16).to_be_bytes());
            input.extend_from_slice(k);
        }
        let d = ring::digest::digest(&ring::digest::SHA256, &input);
        let d = d.as_ref();
        let first = d[..5]
            .iter()
            .fold(0u64, |acc, x| (acc << 8) | u64::from(*x));
        assert_eq!(u64::from(ab.groups()[0]), first % 100_000);
        // Length-prefixed: moving a byte between the keys changes the code.
        assert_ne!(
            SecurityCode::pairwise(&[1, 2], &[3]),
            SecurityCode::pairwise(&[1], &[2, 3])
        );
    }
}
