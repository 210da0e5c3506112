//! Codec errors: facts about the bytes, never strings.

use thiserror::Error;

/// Why bytes did not decode into a [`ControlMessage`](crate::ControlMessage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended inside a field.
    #[error("truncated message")]
    Truncated,
    /// Bytes remain after the message.
    #[error("trailing bytes after the message")]
    TrailingData,
    /// The message's protocol version is not one this implementation speaks.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u16),
    /// The message type is not defined by this protocol version.
    #[error("unknown message type {0}")]
    UnknownMessageType(u16),
    /// A vector length prefix is invalid (non-minimal or too large).
    #[error("invalid vector length")]
    InvalidLength,
    /// A field holds a value its type does not allow (e.g. an optional flag other than 0 or 1).
    #[error("invalid field value")]
    InvalidValue,
}

impl From<tls_codec::Error> for DecodeError {
    fn from(e: tls_codec::Error) -> Self {
        match e {
            tls_codec::Error::EndOfStream => Self::Truncated,
            tls_codec::Error::TrailingData => Self::TrailingData,
            tls_codec::Error::InvalidVectorLength => Self::InvalidLength,
            // tls_codec reports a short `<V>` read as a decoding error; an invalid
            // optional flag, unknown enum value or bad varint is a bad value.
            tls_codec::Error::DecodingError(_) | tls_codec::Error::InvalidInput => {
                Self::InvalidValue
            }
            _ => Self::InvalidValue,
        }
    }
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A vector is longer than its length prefix can express.
    #[error("a field is too long to encode")]
    FieldTooLong,
    /// The encoded message exceeds the frame limit.
    #[error("message of {len} bytes exceeds the frame limit of {max}")]
    FrameTooLarge {
        /// Encoded length.
        len: usize,
        /// The limit.
        max: u32,
    },
}

impl From<tls_codec::Error> for EncodeError {
    fn from(_: tls_codec::Error) -> Self {
        // Serializing our own in-memory structs fails only when a vector exceeds
        // what its length prefix can express.
        Self::FieldTooLong
    }
}
