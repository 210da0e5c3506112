//! The SFrame header (RFC 9605 §4.3): a config byte, then the KID and CTR in compact form.
//!
//! ```text
//!  0 1 2 3 4 5 6 7
//! +-+-+-+-+-+-+-+-+---------------------+---------------------+
//! |X|  K  |Y|  C  | KID (K+1 B, if X=1) | CTR (C+1 B, if Y=1) |
//! +-+-+-+-+-+-+-+-+---------------------+---------------------+
//! ```

use crate::error::{HeaderError, HeaderField};

/// Key identifier (RFC 9605 §4.3), any u64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kid(pub u64);

/// Frame counter (RFC 9605 §4.3), any u64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Counter(pub u64);

/// An SFrame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Key identifier.
    pub kid: Kid,
    /// Frame counter.
    pub ctr: Counter,
}

/// Bytes needed after the config byte for `v` (0 if it fits the 3-bit inline field).
#[inline]
const fn field_len(v: u64) -> usize {
    if v < 8 {
        0
    } else {
        // 1..=8 bytes; leading_zeros() is at most 60 here.
        8 - (v.leading_zeros() / 8) as usize
    }
}

/// The config-byte nibble for a value: `0vvv` inline or `1lll` (length − 1).
#[inline]
fn nibble(v: u64, len: usize) -> u8 {
    match len {
        // ok: v < 8 so the low 3 bits hold it exactly.
        0 => (v & 0x7) as u8,
        // ok: len is 1..=8, so len - 1 fits 3 bits.
        n => 0x8 | ((n - 1) & 0x7) as u8,
    }
}

/// Writes the low `out.len()` bytes of `v` big-endian (byte loop: no memcpy call for 0..=8 bytes).
#[inline]
fn write_be(v: u64, out: &mut [u8]) {
    let n = out.len();
    for (i, b) in out.iter_mut().enumerate() {
        // ok: truncation to the addressed byte is intended.
        *b = (v >> (8 * (n - 1 - i))) as u8;
    }
}

/// Reads an extended (`len` bytes) big-endian field and checks it is minimal.
#[inline]
fn read_be(bytes: &[u8], field: HeaderField) -> Result<u64, HeaderError> {
    let v = bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    if field_len(v) != bytes.len() {
        return Err(HeaderError::NonMinimal(field));
    }
    Ok(v)
}

impl Header {
    /// Longest encoded header: config byte + 8-byte KID + 8-byte CTR.
    pub const MAX_LEN: usize = 17;

    /// A header for `kid` and `ctr`.
    pub const fn new(kid: Kid, ctr: Counter) -> Self {
        Self { kid, ctr }
    }

    /// Length of the minimal encoding of this header (1..=17 bytes).
    #[inline]
    pub fn encoded_len(&self) -> usize {
        1 + field_len(self.kid.0) + field_len(self.ctr.0)
    }

    /// Writes the minimal encoding into `out`; returns the bytes written.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, HeaderError> {
        let klen = field_len(self.kid.0);
        let clen = field_len(self.ctr.0);
        let needed = 1 + klen + clen;
        let Some(out) = out.get_mut(..needed) else {
            return Err(HeaderError::BufferTooSmall {
                needed,
                got: out.len(),
            });
        };
        out[0] = (nibble(self.kid.0, klen) << 4) | nibble(self.ctr.0, clen);
        let (kid_out, ctr_out) = out[1..].split_at_mut(klen);
        write_be(self.kid.0, kid_out);
        write_be(self.ctr.0, ctr_out);
        Ok(needed)
    }

    /// Parses a header at the start of `bytes`; returns it and the bytes it used.
    ///
    /// Rejects truncated input and non-minimal field encodings; never panics.
    pub fn decode(bytes: &[u8]) -> Result<(Header, usize), HeaderError> {
        let Some(&config) = bytes.first() else {
            return Err(HeaderError::Truncated { needed: 1, got: 0 });
        };
        let k = usize::from((config >> 4) & 0x7);
        let c = usize::from(config & 0x7);
        let klen = if config & 0x80 != 0 { k + 1 } else { 0 };
        let clen = if config & 0x08 != 0 { c + 1 } else { 0 };
        let needed = 1 + klen + clen;
        let Some(fields) = bytes.get(1..needed) else {
            return Err(HeaderError::Truncated {
                needed,
                got: bytes.len(),
            });
        };
        let (kid_bytes, ctr_bytes) = fields.split_at(klen);
        let kid = if klen == 0 {
            k as u64
        } else {
            read_be(kid_bytes, HeaderField::Kid)?
        };
        let ctr = if clen == 0 {
            c as u64
        } else {
            read_be(ctr_bytes, HeaderField::Ctr)?
        };
        Ok((Header::new(Kid(kid), Counter(ctr)), needed))
    }

    /// Encodes into a stack array; returns it and the used length.
    #[cfg(test)]
    pub(crate) fn to_array(self) -> ([u8; Self::MAX_LEN], usize) {
        let mut buf = [0u8; Self::MAX_LEN];
        let n = self.encode(&mut buf).unwrap_or(0);
        (buf, n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    // covers: SF-HDR-1, SF-HDR-2
    #[test]
    fn inline_and_extended_forms() {
        let h = Header::new(Kid(3), Counter(5));
        let mut b = [0u8; 17];
        assert_eq!(h.encode(&mut b).unwrap(), 1);
        assert_eq!(b[0], 0x35);
        let h = Header::new(Kid(0x123), Counter(0x4567));
        assert_eq!(h.encode(&mut b).unwrap(), 5);
        assert_eq!(&b[..5], &[0x99, 0x01, 0x23, 0x45, 0x67]);
        let h = Header::new(Kid(u64::MAX), Counter(u64::MAX));
        assert_eq!(h.encode(&mut b).unwrap(), 17);
        assert_eq!(b[0], 0xff);
        assert_eq!(Header::decode(&b).unwrap(), (h, 17));
    }

    // covers: SF-HDR-3
    #[test]
    fn truncated_and_small_buffer() {
        assert_eq!(
            Header::decode(&[]),
            Err(HeaderError::Truncated { needed: 1, got: 0 })
        );
        assert_eq!(
            Header::decode(&[0x99, 0x01, 0x23, 0x45]),
            Err(HeaderError::Truncated { needed: 5, got: 4 })
        );
        let h = Header::new(Kid(0x123), Counter(0));
        assert_eq!(
            h.encode(&mut [0u8; 2]),
            Err(HeaderError::BufferTooSmall { needed: 3, got: 2 })
        );
    }

    // covers: SF-HDR-4
    #[test]
    fn non_minimal_rejected() {
        // KID 5 in extended one-byte form.
        assert_eq!(
            Header::decode(&[0x80, 0x05]),
            Err(HeaderError::NonMinimal(HeaderField::Kid))
        );
        // CTR 0x10 in two bytes.
        assert_eq!(
            Header::decode(&[0x09, 0x00, 0x10]),
            Err(HeaderError::NonMinimal(HeaderField::Ctr))
        );
        // Minimal one-byte CTR 8 is fine.
        assert_eq!(
            Header::decode(&[0x08, 0x08]).unwrap(),
            (Header::new(Kid(0), Counter(8)), 2)
        );
    }

    // covers: SF-HDR-2
    #[test]
    fn lengths_at_byte_boundaries() {
        for shift in 0..64u32 {
            let v = 1u64 << shift;
            for val in [v - 1, v, v | (v >> 1)] {
                let h = Header::new(Kid(val), Counter(val));
                let (buf, n) = h.to_array();
                assert_eq!(n, h.encoded_len());
                assert_eq!(Header::decode(&buf[..n]).unwrap(), (h, n));
            }
        }
    }
}
