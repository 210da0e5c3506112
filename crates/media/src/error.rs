//! Errors of the media layer, one enum per direction.

use thiserror::Error;

/// Why a frame could not be packetized (a caller error: nothing was emitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PacketizeError {
    /// An SFrame ciphertext is never empty.
    #[error("empty frame")]
    EmptyFrame,
    /// The frame needs more packets than the configured maximum.
    #[error("frame of {len} bytes needs {packets} packets, more than the limit of {max}")]
    FrameTooLarge {
        /// Frame length in bytes.
        len: usize,
        /// Packets it would need.
        packets: usize,
        /// Configured maximum packets per frame.
        max: usize,
    },
}

/// Why a received RTP payload was rejected (the peer's or the network's fault; counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DepacketizeError {
    /// The payload has no descriptor byte or no frame bytes after it.
    #[error("payload of {len} bytes is too short for a descriptor and data")]
    TooShort {
        /// Payload length in bytes.
        len: usize,
    },
    /// Reserved descriptor bits were set.
    #[error("reserved descriptor bits set: {byte:#04x}")]
    ReservedBits {
        /// The descriptor byte.
        byte: u8,
    },
}

/// Why a synthetic frame failed its end-to-end integrity check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum IntegrityError {
    /// Shorter than the fixed frame layout.
    #[error("frame of {len} bytes is shorter than the synthetic frame layout")]
    TooShort {
        /// Frame length in bytes.
        len: usize,
    },
    /// Not a synthetic frame (wrong magic).
    #[error("not a synthetic frame")]
    BadMagic,
    /// Unknown media kind byte.
    #[error("unknown media kind {0}")]
    BadKind(u8),
    /// The body length field disagrees with the frame length.
    #[error("length field says {declared} body bytes, frame has {actual}")]
    LengthMismatch {
        /// Declared body length.
        declared: usize,
        /// Actual body length.
        actual: usize,
    },
    /// The checksum does not match the content.
    #[error("checksum mismatch")]
    Checksum,
}
