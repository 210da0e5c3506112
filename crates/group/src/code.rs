//! The call's security code: digits derived from the MLS epoch authenticator.

use std::fmt;

/// Domain-separation label hashed before the epoch authenticator.
pub const SECURITY_CODE_LABEL: &[u8] = b"blindcall security code v1";
/// Largest number of 5-digit groups (SHA-256 gives 32 bytes, 5 bytes per group).
pub const MAX_GROUPS: u8 = 6;
/// Default number of 5-digit groups.
pub const DEFAULT_GROUPS: u8 = 6;

/// Digits shown on every member's screen; equal codes mean the same group and the same keys.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SecurityCode {
    groups: Vec<u32>,
}

impl SecurityCode {
    /// Derives the code from an epoch authenticator with `groups` groups (clamped to 1..=6).
    ///
    /// `digest = SHA-256(SECURITY_CODE_LABEL || epoch_authenticator)`; group `i` is the
    /// big-endian integer of `digest[5i..5i+5]` mod 100000, written as 5 digits.
    pub fn from_epoch_authenticator(epoch_authenticator: &[u8], groups: u8) -> Self {
        let groups = groups.clamp(1, MAX_GROUPS);
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(SECURITY_CODE_LABEL);
        ctx.update(epoch_authenticator);
        let digest = ctx.finish();
        let bytes = digest.as_ref();
        let groups = bytes
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
            1
        );
        assert_eq!(
            SecurityCode::from_epoch_authenticator(&auth, 9)
                .groups()
                .len(),
            6
        );
        assert_ne!(code, SecurityCode::from_epoch_authenticator(&[8u8; 32], 6));
    }
}
