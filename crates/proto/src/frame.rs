//! Length-prefixed framing: `uint32 length` (big-endian) then `length` bytes of message.
//!
//! [`FrameDecoder`] is sans-IO: feed it whatever chunks the transport delivers and it yields whole
//! frames. It buffers at most one frame (≤ its limit) plus a 4-byte header, so a peer cannot make
//! it allocate more than the limit.

use thiserror::Error;

use crate::EncodeError;

/// Length of the frame header.
pub const HEADER_LEN: usize = 4;

/// A framing failure. After one, the stream is out of sync and must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The header announces a frame longer than the limit.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Announced length.
        len: u32,
        /// The limit.
        max: u32,
    },
}

/// Prefix `message` with its `u32` big-endian length, refusing messages over `max_len`.
pub fn encode_frame(message: &[u8], max_len: u32) -> Result<Vec<u8>, EncodeError> {
    let len = u32::try_from(message.len())
        .ok()
        .filter(|l| *l <= max_len)
        .ok_or(EncodeError::FrameTooLarge {
            len: message.len(),
            max: max_len,
        })?;
    let mut out = Vec::with_capacity(HEADER_LEN + message.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    Ok(out)
}

/// Reassembles frames from a byte stream delivered in arbitrary chunks.
#[derive(Debug)]
pub struct FrameDecoder {
    max_len: u32,
    header: [u8; HEADER_LEN],
    header_filled: usize,
    /// `Some` once the header is complete: the body read so far and its announced length.
    body: Option<(Vec<u8>, usize)>,
    failed: Option<FrameError>,
}

impl FrameDecoder {
    /// A decoder that refuses frames longer than `max_len` bytes (header excluded).
    pub fn new(max_len: u32) -> Self {
        Self {
            max_len,
            header: [0; HEADER_LEN],
            header_filled: 0,
            body: None,
            failed: None,
        }
    }

    /// The configured frame limit.
    pub fn max_len(&self) -> u32 {
        self.max_len
    }

    /// Change the limit for frames whose header is not complete yet (e.g. raise a small
    /// pre-authentication limit once the peer is admitted).
    pub fn set_max_len(&mut self, max_len: u32) {
        self.max_len = max_len;
    }

    /// Whether bytes of an incomplete frame are buffered.
    pub fn has_partial(&self) -> bool {
        self.header_filled > 0 || self.body.is_some()
    }

    /// Consume bytes from the front of `input` until one frame is complete.
    ///
    /// Returns `Ok(Some(frame))` with `input` advanced past it (call again for more frames),
    /// `Ok(None)` once `input` is exhausted without completing a frame, or the error that ended
    /// the stream. Once failed, every later call returns the same error.
    pub fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Vec<u8>>, FrameError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        loop {
            match &mut self.body {
                None => {
                    if input.is_empty() {
                        return Ok(None);
                    }
                    let want = HEADER_LEN - self.header_filled;
                    let take = want.min(input.len());
                    let (head, rest) = input.split_at(take);
                    self.header[self.header_filled..self.header_filled + take]
                        .copy_from_slice(head);
                    self.header_filled += take;
                    *input = rest;
                    if self.header_filled < HEADER_LEN {
                        return Ok(None);
                    }
                    let len = u32::from_be_bytes(self.header);
                    if len > self.max_len {
                        let e = FrameError::TooLarge {
                            len,
                            max: self.max_len,
                        };
                        self.failed = Some(e);
                        return Err(e);
                    }
                    // `len <= max_len: u32`, which fits usize on every supported target.
                    let len = usize::try_from(len).unwrap_or(usize::MAX);
                    self.header_filled = 0;
                    self.body = Some((Vec::with_capacity(len.min(64 * 1024)), len));
                }
                Some((buf, len)) => {
                    let want = *len - buf.len();
                    let take = want.min(input.len());
                    let (head, rest) = input.split_at(take);
                    buf.extend_from_slice(head);
                    *input = rest;
                    if buf.len() < *len {
                        return Ok(None);
                    }
                    let frame = self.body.take().map(|(b, _)| b).unwrap_or_default();
                    return Ok(Some(frame));
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn drain(d: &mut FrameDecoder, mut input: &[u8]) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut out = Vec::new();
        while let Some(f) = d.decode(&mut input)? {
            out.push(f);
        }
        assert!(input.is_empty());
        Ok(out)
    }

    // covers: CP-FRAME-1
    #[test]
    fn frames_reassemble_from_any_chunking() {
        let frames: Vec<Vec<u8>> = vec![vec![], vec![1, 2, 3], vec![7; 300], vec![9]];
        let mut stream = Vec::new();
        for f in &frames {
            stream.extend(encode_frame(f, 1000).unwrap());
        }
        for chunk in [1usize, 2, 3, 5, 7, 64, stream.len()] {
            let mut d = FrameDecoder::new(1000);
            let mut got = Vec::new();
            for c in stream.chunks(chunk) {
                got.extend(drain(&mut d, c).unwrap());
            }
            assert_eq!(got, frames, "chunk size {chunk}");
            assert!(!d.has_partial());
        }
    }

    // covers: CP-FRAME-2
    #[test]
    fn oversized_frame_is_refused_before_buffering_and_sticks() {
        let mut d = FrameDecoder::new(16);
        let mut header = 17u32.to_be_bytes().to_vec();
        header.extend([0u8; 3]);
        assert_eq!(
            drain(&mut d, &header),
            Err(FrameError::TooLarge { len: 17, max: 16 })
        );
        // The stream is out of sync: every later call fails the same way.
        assert_eq!(
            drain(&mut d, &encode_frame(&[1], 16).unwrap()),
            Err(FrameError::TooLarge { len: 17, max: 16 })
        );
        // A frame of exactly the limit is fine; encode refuses one byte more.
        let mut ok = FrameDecoder::new(16);
        assert_eq!(
            drain(&mut ok, &encode_frame(&[5; 16], 16).unwrap()).unwrap(),
            vec![vec![5; 16]]
        );
        assert_eq!(
            encode_frame(&[5; 17], 16),
            Err(EncodeError::FrameTooLarge { len: 17, max: 16 })
        );
    }

    // covers: CP-FRAME-1
    #[test]
    fn truncated_frame_waits_for_more() {
        let mut d = FrameDecoder::new(100);
        let f = encode_frame(&[1, 2, 3, 4], 100).unwrap();
        assert!(drain(&mut d, &f[..6]).unwrap().is_empty());
        assert!(d.has_partial());
        assert_eq!(drain(&mut d, &f[6..]).unwrap(), vec![vec![1, 2, 3, 4]]);
    }
}
