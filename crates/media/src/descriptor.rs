//! The one-byte SFrame RTP payload descriptor.
//!
//! ```text
//!  0 1 2 3 4 5 6 7
//! +-+-+-+-+-+-+-+-+
//! |S|E|  reserved |
//! +-+-+-+-+-+-+-+-+
//! ```
//! S: this packet carries the first byte of the SFrame ciphertext. E: it carries the last.
//! Reserved bits are sent as zero and a receiver rejects a descriptor with any of them set.

use crate::error::DepacketizeError;

/// The payload descriptor of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// First packet of the frame.
    pub start: bool,
    /// Last packet of the frame.
    pub end: bool,
}

impl Descriptor {
    /// Length of the descriptor on the wire.
    pub const LEN: usize = 1;
    const START: u8 = 0x80;
    const END: u8 = 0x40;
    const RESERVED: u8 = 0x3f;

    /// The wire byte.
    pub fn to_byte(self) -> u8 {
        (if self.start { Self::START } else { 0 }) | (if self.end { Self::END } else { 0 })
    }

    /// Parses the wire byte.
    pub fn from_byte(byte: u8) -> Result<Self, DepacketizeError> {
        if byte & Self::RESERVED != 0 {
            return Err(DepacketizeError::ReservedBits { byte });
        }
        Ok(Self {
            start: byte & Self::START != 0,
            end: byte & Self::END != 0,
        })
    }

    /// Splits an RTP payload into its descriptor and frame bytes.
    pub fn split(payload: &[u8]) -> Result<(Self, &[u8]), DepacketizeError> {
        match payload {
            [byte, data @ ..] if !data.is_empty() => Ok((Self::from_byte(*byte)?, data)),
            _ => Err(DepacketizeError::TooShort { len: payload.len() }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // covers: MT-PKT-1
    #[test]
    fn every_valid_byte_round_trips_and_reserved_bits_are_rejected() {
        for byte in 0..=u8::MAX {
            match Descriptor::from_byte(byte) {
                Ok(d) => assert_eq!(d.to_byte(), byte),
                Err(e) => {
                    assert_ne!(byte & 0x3f, 0);
                    assert_eq!(e, DepacketizeError::ReservedBits { byte });
                }
            }
        }
        assert!(Descriptor::split(&[]).is_err());
        assert!(Descriptor::split(&[0xc0]).is_err());
        let (d, data) = Descriptor::split(&[0xc0, 7]).unwrap();
        assert!(d.start && d.end);
        assert_eq!(data, &[7]);
    }
}
