//! SFrame cipher suites (RFC 9605 §4.5 and the IANA "SFrame Cipher Suites" registry).

use crate::error::KeyError;

/// SFrame cipher suite (IANA registry id), an integer newtype with named constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CipherSuite(u16);

/// How a suite encrypts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Aead {
    /// AES-128-GCM.
    Aes128Gcm,
    /// AES-256-GCM.
    Aes256Gcm,
    /// AES-128-CTR + HMAC-SHA256 (RFC 9605 §4.5.1).
    Aes128CtrHmacSha256,
    /// AES-256-CTR + HMAC-SHA512 (IANA registry, draft-barnes-sframe-iana-256).
    Aes256CtrHmacSha512,
}

impl CipherSuite {
    /// AES-128-CTR + HMAC-SHA256, 80-bit tag (0x0001).
    pub const AES_128_CTR_HMAC_SHA256_80: Self = Self(1);
    /// AES-128-CTR + HMAC-SHA256, 64-bit tag (0x0002).
    pub const AES_128_CTR_HMAC_SHA256_64: Self = Self(2);
    /// AES-128-CTR + HMAC-SHA256, 32-bit tag (0x0003).
    pub const AES_128_CTR_HMAC_SHA256_32: Self = Self(3);
    /// AES-128-GCM, SHA-256 key schedule (0x0004).
    pub const AES_128_GCM_SHA256_128: Self = Self(4);
    /// AES-256-GCM, SHA-512 key schedule (0x0005).
    pub const AES_256_GCM_SHA512_128: Self = Self(5);
    /// AES-256-CTR + HMAC-SHA512, 80-bit tag (0x0006).
    pub const AES_256_CTR_HMAC_SHA512_80: Self = Self(6);
    /// AES-256-CTR + HMAC-SHA512, 64-bit tag (0x0007).
    pub const AES_256_CTR_HMAC_SHA512_64: Self = Self(7);
    /// AES-256-CTR + HMAC-SHA512, 32-bit tag (0x0008).
    pub const AES_256_CTR_HMAC_SHA512_32: Self = Self(8);

    /// Every implemented suite, in id order.
    pub const ALL: [Self; 8] = [
        Self::AES_128_CTR_HMAC_SHA256_80,
        Self::AES_128_CTR_HMAC_SHA256_64,
        Self::AES_128_CTR_HMAC_SHA256_32,
        Self::AES_128_GCM_SHA256_128,
        Self::AES_256_GCM_SHA512_128,
        Self::AES_256_CTR_HMAC_SHA512_80,
        Self::AES_256_CTR_HMAC_SHA512_64,
        Self::AES_256_CTR_HMAC_SHA512_32,
    ];

    /// The suite with IANA id `id`, if implemented.
    pub fn from_id(id: u16) -> Result<Self, KeyError> {
        match id {
            1..=8 => Ok(Self(id)),
            _ => Err(KeyError::UnsupportedSuite(id)),
        }
    }

    /// The IANA id.
    pub fn id(self) -> u16 {
        self.0
    }

    /// The IANA name, e.g. `AES_128_GCM_SHA256_128`.
    pub fn name(self) -> &'static str {
        match self.0 {
            1 => "AES_128_CTR_HMAC_SHA256_80",
            2 => "AES_128_CTR_HMAC_SHA256_64",
            3 => "AES_128_CTR_HMAC_SHA256_32",
            4 => "AES_128_GCM_SHA256_128",
            5 => "AES_256_GCM_SHA512_128",
            6 => "AES_256_CTR_HMAC_SHA512_80",
            7 => "AES_256_CTR_HMAC_SHA512_64",
            _ => "AES_256_CTR_HMAC_SHA512_32",
        }
    }

    /// Hash output length Nh (32 for SHA-256 suites, 64 for SHA-512 suites).
    pub fn nh(self) -> usize {
        match self.0 {
            1..=4 => 32,
            _ => 64,
        }
    }

    /// AEAD key length Nk; also the base-key length an MLS exporter produces for this suite.
    pub fn nk(self) -> usize {
        match self.aead() {
            Aead::Aes128Gcm => 16,
            Aead::Aes256Gcm => 32,
            Aead::Aes128CtrHmacSha256 => 16 + 32,
            Aead::Aes256CtrHmacSha512 => 32 + 64,
        }
    }

    /// AES key length Nka of the CTR suites (the cipher part of the Nk-byte key).
    pub fn nka(self) -> usize {
        match self.aead() {
            Aead::Aes128Gcm | Aead::Aes128CtrHmacSha256 => 16,
            Aead::Aes256Gcm | Aead::Aes256CtrHmacSha512 => 32,
        }
    }

    /// Nonce length Nn (12 for every suite).
    pub fn nn(self) -> usize {
        12
    }

    /// Authentication tag length Nt.
    pub fn nt(self) -> usize {
        match self.0 {
            1 | 6 => 10,
            2 | 7 => 8,
            3 | 8 => 4,
            _ => 16,
        }
    }

    pub(crate) fn aead(self) -> Aead {
        match self.0 {
            1..=3 => Aead::Aes128CtrHmacSha256,
            4 => Aead::Aes128Gcm,
            5 => Aead::Aes256Gcm,
            _ => Aead::Aes256CtrHmacSha512,
        }
    }
}

impl std::fmt::Display for CipherSuite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:#06x})", self.name(), self.0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    // covers: SF-SUITE-1, SF-SUITE-2
    #[test]
    fn parameters_match_registry() {
        let expect: [(u16, usize, usize, usize, usize); 8] = [
            (1, 32, 48, 12, 10),
            (2, 32, 48, 12, 8),
            (3, 32, 48, 12, 4),
            (4, 32, 16, 12, 16),
            (5, 64, 32, 12, 16),
            (6, 64, 96, 12, 10),
            (7, 64, 96, 12, 8),
            (8, 64, 96, 12, 4),
        ];
        for (s, (id, nh, nk, nn, nt)) in CipherSuite::ALL.iter().zip(expect) {
            assert_eq!(*s, CipherSuite::from_id(id).unwrap());
            assert_eq!(
                (s.id(), s.nh(), s.nk(), s.nn(), s.nt()),
                (id, nh, nk, nn, nt)
            );
        }
        for bad in [0u16, 9, 0xF000, 0xFFFF] {
            assert_eq!(
                CipherSuite::from_id(bad),
                Err(KeyError::UnsupportedSuite(bad))
            );
        }
    }
}
