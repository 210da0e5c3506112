//! The sending side: one KID, its prebuilt key, and its counter.

use crate::error::{KeyError, SealError};
use crate::header::{Counter, Header, Kid};
use crate::key::{BaseKey, FrameKey, TooLong};
use crate::suite::CipherSuite;

/// Encrypts frames for one KID; owns that key's counter; never reuses a nonce.
pub struct Sender {
    suite: CipherSuite,
    kid: Kid,
    key: FrameKey,
    /// Next counter to use; `None` once `u64::MAX` has been used.
    next: Option<u64>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("suite", &self.suite)
            .field("kid", &self.kid)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// A sender for `kid` whose first frame uses counter 0.
    pub fn new(suite: CipherSuite, kid: Kid, base_key: &BaseKey) -> Result<Sender, KeyError> {
        Self::with_counter(suite, kid, base_key, Counter(0))
    }

    /// A sender for `kid` whose first frame uses counter `next` (e.g. restored from storage).
    pub fn with_counter(
        suite: CipherSuite,
        kid: Kid,
        base_key: &BaseKey,
        next: Counter,
    ) -> Result<Sender, KeyError> {
        Ok(Sender {
            suite,
            kid,
            key: FrameKey::new(suite, kid, base_key)?,
            next: Some(next.0),
        })
    }

    /// The key identifier written into every header.
    pub fn kid(&self) -> Kid {
        self.kid
    }

    /// The cipher suite.
    pub fn suite(&self) -> CipherSuite {
        self.suite
    }

    /// The counter the next frame will use; `None` once exhausted.
    pub fn next_counter(&self) -> Option<Counter> {
        self.next.map(Counter)
    }

    /// Header length of the next frame (for [`Sender::seal_in_place`]).
    pub fn header_len(&self) -> usize {
        Header::new(self.kid, Counter(self.next.unwrap_or(u64::MAX))).encoded_len()
    }

    /// Exact length of the next seal's output for `plaintext_len` bytes of plaintext
    /// (saturating; once exhausted, the length a `u64::MAX` counter would give).
    pub fn sealed_len(&self, plaintext_len: usize) -> usize {
        self.header_len()
            .saturating_add(plaintext_len)
            .saturating_add(self.suite.nt())
    }

    /// Reserves the next counter, checking `out_len` against the frame length.
    #[inline]
    fn take_counter(
        &mut self,
        pt_len: usize,
        out_len: usize,
    ) -> Result<(Header, usize, usize), SealError> {
        let ctr = self
            .next
            .ok_or(SealError::CounterExhausted { kid: self.kid })?;
        let header = Header::new(self.kid, Counter(ctr));
        let hlen = header.encoded_len();
        let needed = hlen
            .checked_add(pt_len)
            .and_then(|n| n.checked_add(self.suite.nt()))
            .ok_or(SealError::FrameTooLarge { len: pt_len })?;
        if out_len < needed {
            return Err(SealError::BufferTooSmall {
                needed,
                got: out_len,
            });
        }
        // The counter is consumed before the nonce is used: a failure below never leads to reuse.
        self.next = ctr.checked_add(1);
        Ok((header, hlen, needed))
    }

    /// Seals `buf[header_len()..header_len() + plaintext_len]` in place, writing the header
    /// before it and the tag after it; returns the frame length. No allocation, no copy.
    ///
    /// `buf` must hold at least [`Sender::sealed_len`]`(plaintext_len)` bytes.
    pub fn seal_in_place(
        &mut self,
        metadata: &[u8],
        buf: &mut [u8],
        plaintext_len: usize,
    ) -> Result<usize, SealError> {
        let (header, hlen, needed) = self.take_counter(plaintext_len, buf.len())?;
        let frame = &mut buf[..needed];
        let (hdr, body) = frame.split_at_mut(hlen);
        header.encode(hdr).map_err(|_| SealError::BufferTooSmall {
            needed,
            got: needed,
        })?;
        let (pt, tag) = body.split_at_mut(plaintext_len);
        self.key
            .seal(self.key.nonce(header.ctr), hdr, metadata, pt, tag)
            .map_err(|TooLong| SealError::FrameTooLarge { len: plaintext_len })?;
        Ok(needed)
    }

    /// Zero-allocation seal: writes `header || ciphertext || tag` into `out`; returns bytes written.
    pub fn seal_into(
        &mut self,
        metadata: &[u8],
        plaintext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, SealError> {
        let (header, hlen, needed) = self.take_counter(plaintext.len(), out.len())?;
        let frame = &mut out[..needed];
        let (hdr, body) = frame.split_at_mut(hlen);
        header.encode(hdr).map_err(|_| SealError::BufferTooSmall {
            needed,
            got: needed,
        })?;
        let (ct, tag) = body.split_at_mut(plaintext.len());
        ct.copy_from_slice(plaintext);
        self.key
            .seal(self.key.nonce(header.ctr), hdr, metadata, ct, tag)
            .map_err(|TooLong| SealError::FrameTooLarge {
                len: plaintext.len(),
            })?;
        Ok(needed)
    }

    /// Seals into a new `Vec` (allocates; see [`Sender::seal_into`] for the hot path).
    pub fn seal(&mut self, metadata: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut out = vec![0u8; self.sealed_len(plaintext.len())];
        let n = self.seal_into(metadata, plaintext, &mut out)?;
        out.truncate(n);
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    // covers: SF-TX-2, SF-TX-3
    #[test]
    fn counter_exhaustion_and_no_reuse() {
        let key = BaseKey::new(&[5; 16]);
        for suite in CipherSuite::ALL {
            let mut s = Sender::with_counter(suite, Kid(1), &key, Counter(u64::MAX - 1)).unwrap();
            let a = s.seal(b"", b"x").unwrap();
            assert_eq!(s.next_counter(), Some(Counter(u64::MAX)));
            let b = s.seal(b"", b"x").unwrap();
            assert_ne!(a, b);
            assert_eq!(s.next_counter(), None);
            assert_eq!(
                s.seal(b"", b"x"),
                Err(SealError::CounterExhausted { kid: Kid(1) })
            );
            let mut out = [0u8; 64];
            assert_eq!(
                s.seal_into(b"", b"x", &mut out),
                Err(SealError::CounterExhausted { kid: Kid(1) })
            );
        }
    }

    // covers: SF-TX-4
    #[test]
    fn small_buffer_does_not_consume_counter() {
        let key = BaseKey::new(&[5; 16]);
        let mut s = Sender::new(CipherSuite::AES_128_GCM_SHA256_128, Kid(5), &key).unwrap();
        let need = s.sealed_len(10);
        assert_eq!(need, 1 + 10 + 16);
        let mut out = vec![0u8; need - 1];
        assert_eq!(
            s.seal_into(b"", &[0; 10], &mut out),
            Err(SealError::BufferTooSmall {
                needed: need,
                got: need - 1
            })
        );
        assert_eq!(s.next_counter(), Some(Counter(0)));
    }

    // covers: SF-TX-1
    #[test]
    fn in_place_equals_copying_seal() {
        let key = BaseKey::new(&[5; 16]);
        for suite in CipherSuite::ALL {
            let mut a = Sender::with_counter(suite, Kid(300), &key, Counter(70_000)).unwrap();
            let mut b = Sender::with_counter(suite, Kid(300), &key, Counter(70_000)).unwrap();
            let pt = b"in place plaintext";
            let sealed = a.seal(b"md", pt).unwrap();
            let h = b.header_len();
            let mut buf = vec![0u8; b.sealed_len(pt.len())];
            buf[h..h + pt.len()].copy_from_slice(pt);
            let n = b.seal_in_place(b"md", &mut buf, pt.len()).unwrap();
            assert_eq!(&buf[..n], &sealed[..]);
        }
    }
}
