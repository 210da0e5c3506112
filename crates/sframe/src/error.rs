//! Error types, one enum per operation, holding facts (never key bytes).

use crate::header::{Counter, Kid};

/// Which header field an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HeaderField {
    /// The key identifier.
    Kid,
    /// The frame counter.
    Ctr,
}

/// Why an SFrame header could not be encoded or decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The input ends before the header does.
    #[error("truncated SFrame header: needed {needed} bytes, got {got}")]
    Truncated {
        /// Bytes the header needs.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// The output buffer is too small for the encoded header.
    #[error("buffer too small for SFrame header: needed {needed} bytes, got {got}")]
    BufferTooSmall {
        /// Bytes the header needs.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// A field uses more bytes than its value needs (RFC 9605 §4.3 requires the minimum).
    #[error("non-minimal encoding of the SFrame header {0:?} field")]
    NonMinimal(HeaderField),
}

/// Why a key could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The cipher suite id is not one this crate implements (1–8).
    #[error("unsupported SFrame cipher suite {0:#06x}")]
    UnsupportedSuite(u16),
    /// A key has the wrong length for its suite.
    #[error("bad key length: expected {expected} bytes, got {got}")]
    BadKeyLength {
        /// Required length.
        expected: usize,
        /// Given length.
        got: usize,
    },
    /// The base key is empty.
    #[error("empty SFrame base key")]
    EmptyBaseKey,
    /// A KID layout parameter is out of range (RFC 9605 §5.2).
    #[error("KID layout out of range: {0}")]
    KidLayout(&'static str),
    /// The crypto backend refused a key it should accept (a bug, not a caller error).
    #[error("crypto backend rejected a derived key")]
    Backend,
}

/// Why a frame could not be sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// Every counter value of this key has been used; a new key (KID) is needed.
    #[error("counter exhausted for KID {}", kid.0)]
    CounterExhausted {
        /// The exhausted key.
        kid: Kid,
    },
    /// The output buffer is too small.
    #[error("output buffer too small: needed {needed} bytes, got {got}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// The plaintext is longer than the cipher can encrypt under one nonce.
    #[error("frame too large to encrypt: {len} bytes")]
    FrameTooLarge {
        /// Plaintext length.
        len: usize,
    },
}

/// Why a frame was rejected by a [`crate::Receiver`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The header could not be parsed.
    #[error("malformed SFrame header: {0}")]
    Malformed(HeaderError),
    /// The frame has no room for the authentication tag.
    #[error("SFrame too short: needed at least {needed} bytes, got {got}")]
    TooShort {
        /// Minimum frame length (header + tag).
        needed: usize,
        /// Frame length.
        got: usize,
    },
    /// No key is installed for the frame's KID.
    #[error("unknown KID {}", kid.0)]
    UnknownKid {
        /// The frame's KID.
        kid: Kid,
    },
    /// Authentication failed (wrong key, or header, metadata or ciphertext modified).
    #[error("authentication failed for KID {} CTR {}", kid.0, ctr.0)]
    TagMismatch {
        /// The frame's KID.
        kid: Kid,
        /// The frame's counter.
        ctr: Counter,
    },
    /// This counter was already accepted for this KID.
    #[error("replayed frame: KID {} CTR {}", kid.0, ctr.0)]
    Replay {
        /// The frame's KID.
        kid: Kid,
        /// The frame's counter.
        ctr: Counter,
    },
    /// The counter is left of the replay window.
    #[error("frame too old for the replay window: KID {} CTR {}", kid.0, ctr.0)]
    TooOld {
        /// The frame's KID.
        kid: Kid,
        /// The frame's counter.
        ctr: Counter,
    },
    /// The counter runs further ahead of the KID's highest accepted counter than the
    /// receiver's jump limit allows.
    #[error("counter jump: KID {} CTR {} after highest {}", kid.0, ctr.0, highest.0)]
    CounterJump {
        /// The frame's KID.
        kid: Kid,
        /// The frame's counter.
        ctr: Counter,
        /// The KID's highest accepted counter.
        highest: Counter,
    },
}

impl OpenError {
    /// The KID of the rejected frame, if the header could be read.
    pub fn kid(&self) -> Option<Kid> {
        match *self {
            Self::Malformed(_) => None,
            Self::TooShort { .. } => None,
            Self::UnknownKid { kid }
            | Self::TagMismatch { kid, .. }
            | Self::Replay { kid, .. }
            | Self::TooOld { kid, .. }
            | Self::CounterJump { kid, .. } => Some(kid),
        }
    }

    /// The reason code, for per-sender drop counters.
    pub fn reason(&self) -> DropReason {
        match self {
            Self::Malformed(_) | Self::TooShort { .. } => DropReason::Malformed,
            Self::UnknownKid { .. } => DropReason::UnknownKid,
            Self::TagMismatch { .. } => DropReason::TagMismatch,
            Self::Replay { .. } => DropReason::Replay,
            Self::TooOld { .. } => DropReason::TooOld,
            Self::CounterJump { .. } => DropReason::CounterJump,
        }
    }
}

/// Why a frame was dropped, as a copyable code for counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Unparsable header or no room for the tag.
    Malformed,
    /// No key for the KID.
    UnknownKid,
    /// Authentication failed.
    TagMismatch,
    /// Counter already seen.
    Replay,
    /// Counter left of the replay window.
    TooOld,
    /// Counter too far ahead of the highest accepted one (jump limit).
    CounterJump,
}
