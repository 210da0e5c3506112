//! Synthetic media sources with the shapes of real encoders, for the demo and the tests.
//!
//! Audio looks like Opus (50 frames/s, 60–200 B); video runs at 30 frames/s with a keyframe
//! every 2 s (30–100 kB) and delta frames in between (2–10 kB). Each frame carries its
//! sender id, its sequence number and a CRC-32 so that a receiver can check, end to end, that
//! what it decrypted is exactly what was sent. Bodies are pseudo-random, so no 16-byte window
//! of one frame is likely to appear by chance anywhere else.
//!
//! Frame layout (big-endian):
//! ```text
//! magic "BCF1" (4) | kind (1) | flags (1) | sender_id (4) | seq (8) | body_len (4) | body | crc32 (4)
//! ```

use std::time::Duration;

use crate::error::IntegrityError;

const MAGIC: &[u8; 4] = b"BCF1";
const FIXED: usize = 4 + 1 + 1 + 4 + 8 + 4;
const TRAILER: usize = 4;
const FLAG_KEYFRAME: u8 = 0x01;

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// Opus-like audio.
    Audio,
    /// Video with periodic keyframes.
    Video,
}

impl MediaKind {
    fn to_byte(self) -> u8 {
        match self {
            Self::Audio => 1,
            Self::Video => 2,
        }
    }

    fn from_byte(b: u8) -> Result<Self, IntegrityError> {
        match b {
            1 => Ok(Self::Audio),
            2 => Ok(Self::Video),
            other => Err(IntegrityError::BadKind(other)),
        }
    }

    /// Time between frames.
    pub fn frame_interval(self) -> Duration {
        match self {
            Self::Audio => Duration::from_millis(20),
            Self::Video => Duration::from_micros(33_333),
        }
    }

    /// RTP clock rate (Hz).
    pub fn clock_rate(self) -> u32 {
        match self {
            Self::Audio => 48_000,
            Self::Video => 90_000,
        }
    }

    /// RTP timestamp increment per frame.
    pub fn timestamp_step(self) -> u32 {
        match self {
            Self::Audio => 960,
            Self::Video => 3_000,
        }
    }
}

/// One generated frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticFrame {
    /// What the frame says about itself.
    pub info: FrameInfo,
    /// RTP timestamp for the frame.
    pub rtp_timestamp: u32,
    /// The encoded frame (plaintext, before SFrame).
    pub data: Vec<u8>,
}

/// The self-description a synthetic frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameInfo {
    /// Audio or video.
    pub kind: MediaKind,
    /// Video keyframe.
    pub keyframe: bool,
    /// The sender's id.
    pub sender_id: u32,
    /// Per-source frame sequence number, from 0.
    pub seq: u64,
}

/// SplitMix64: a small, seeded, deterministic generator for synthetic media and for seeded
/// network impairments in tests. Not for secrets.
#[derive(Debug, Clone)]
pub struct SeededRng(u64);

impl SeededRng {
    /// A generator whose whole output is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    /// A value in `0..n` (`n` > 0; 0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64().checked_rem(n).unwrap_or(0)
    }

    /// A value in `lo..=hi` (`lo` <= `hi`).
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        let span = (hi.saturating_sub(lo) as u64).saturating_add(1);
        lo + self.below(span) as usize
    }

    /// Fills `out` with pseudo-random bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// A deterministic generator of frames for one stream.
#[derive(Debug, Clone)]
pub struct SyntheticSource {
    kind: MediaKind,
    sender_id: u32,
    seq: u64,
    rtp_timestamp: u32,
    keyframe_due: bool,
    silent: bool,
    rng: SeededRng,
}

/// Video frames between keyframes (2 s at 30 frames/s).
pub const KEYFRAME_INTERVAL: u64 = 60;

/// Time between audio frames during silence (Opus DTX sends a comfort-noise update every
/// 400 ms instead of a frame every 20 ms).
pub const DTX_INTERVAL: Duration = Duration::from_millis(400);

/// Smallest synthetic frame: the self-describing header and the CRC trailer.
pub const MIN_FRAME: usize = FIXED + TRAILER;

impl SyntheticSource {
    /// A source of `kind` for `sender_id`; `seed` fixes every size and byte.
    pub fn new(kind: MediaKind, sender_id: u32, seed: u64) -> Self {
        let mut rng =
            SeededRng::new(seed ^ (u64::from(sender_id) << 32) ^ u64::from(kind.to_byte()));
        let rtp_timestamp = (rng.next_u64() & 0xffff_ffff) as u32;
        Self {
            kind,
            sender_id,
            seq: 0,
            rtp_timestamp,
            keyframe_due: kind == MediaKind::Video,
            silent: false,
            rng,
        }
    }

    /// Audio only: `true` models silence with discontinuous transmission (one small
    /// comfort-noise frame every [`DTX_INTERVAL`]), `false` speech (the default).
    pub fn set_silent(&mut self, silent: bool) {
        self.silent = silent && self.kind == MediaKind::Audio;
    }

    /// Time until the frame after the next one is due.
    pub fn frame_interval(&self) -> Duration {
        if self.silent {
            DTX_INTERVAL
        } else {
            self.kind.frame_interval()
        }
    }

    /// Audio or video.
    pub fn kind(&self) -> MediaKind {
        self.kind
    }

    /// Makes the next video frame a keyframe (e.g. after a key switch or a PLI).
    pub fn request_keyframe(&mut self) {
        if self.kind == MediaKind::Video {
            self.keyframe_due = true;
        }
    }

    /// The next frame.
    pub fn next_frame(&mut self) -> SyntheticFrame {
        let keyframe = self.kind == MediaKind::Video
            && (self.keyframe_due || self.seq.is_multiple_of(KEYFRAME_INTERVAL));
        self.keyframe_due = false;
        let total = match (self.kind, keyframe) {
            (MediaKind::Audio, _) if self.silent => self.rng.range(MIN_FRAME, MIN_FRAME + 8),
            (MediaKind::Audio, _) => self.rng.range(60, 200),
            (MediaKind::Video, true) => self.rng.range(30_000, 100_000),
            (MediaKind::Video, false) => self.rng.range(2_000, 10_000),
        };
        let body_len = total - FIXED - TRAILER;
        let info = FrameInfo {
            kind: self.kind,
            keyframe,
            sender_id: self.sender_id,
            seq: self.seq,
        };
        let mut data = Vec::with_capacity(total);
        data.extend_from_slice(MAGIC);
        data.push(self.kind.to_byte());
        data.push(if keyframe { FLAG_KEYFRAME } else { 0 });
        data.extend_from_slice(&self.sender_id.to_be_bytes());
        data.extend_from_slice(&self.seq.to_be_bytes());
        data.extend_from_slice(&(body_len as u32).to_be_bytes());
        let body_start = data.len();
        data.resize(body_start + body_len, 0);
        self.rng.fill(&mut data[body_start..]);
        let crc = crc32fast::hash(&data);
        data.extend_from_slice(&crc.to_be_bytes());
        let frame = SyntheticFrame {
            info,
            rtp_timestamp: self.rtp_timestamp,
            data,
        };
        self.seq += 1;
        let steps = if self.silent {
            (DTX_INTERVAL.as_millis() / self.kind.frame_interval().as_millis()) as u32
        } else {
            1
        };
        self.rtp_timestamp = self
            .rtp_timestamp
            .wrapping_add(self.kind.timestamp_step().wrapping_mul(steps));
        frame
    }
}

fn be<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

/// Checks a received frame end to end and returns what it says about itself.
pub fn verify(data: &[u8]) -> Result<FrameInfo, IntegrityError> {
    if data.len() < FIXED + TRAILER {
        return Err(IntegrityError::TooShort { len: data.len() });
    }
    if &data[..4] != MAGIC {
        return Err(IntegrityError::BadMagic);
    }
    let kind = MediaKind::from_byte(data[4])?;
    let declared = u32::from_be_bytes(be(data, 18)) as usize;
    let actual = data.len() - FIXED - TRAILER;
    if declared != actual {
        return Err(IntegrityError::LengthMismatch { declared, actual });
    }
    let (content, crc) = data.split_at(data.len() - TRAILER);
    if crc32fast::hash(content).to_be_bytes() != crc {
        return Err(IntegrityError::Checksum);
    }
    Ok(FrameInfo {
        kind,
        keyframe: data[5] & FLAG_KEYFRAME != 0,
        sender_id: u32::from_be_bytes(be(data, 6)),
        seq: u64::from_be_bytes(be(data, 10)),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // covers: MT-SRC-1
    #[test]
    fn audio_frames_have_opus_shapes_and_verify() {
        let mut s = SyntheticSource::new(MediaKind::Audio, 7, 1);
        assert_eq!(s.kind().frame_interval(), Duration::from_millis(20));
        let mut last_ts = None;
        for seq in 0..500 {
            let f = s.next_frame();
            assert!((60..=200).contains(&f.data.len()), "{}", f.data.len());
            let info = verify(&f.data).unwrap();
            assert_eq!(info, f.info);
            assert_eq!((info.sender_id, info.seq, info.keyframe), (7, seq, false));
            if let Some(prev) = last_ts {
                assert_eq!(f.rtp_timestamp, u32::wrapping_add(prev, 960));
            }
            last_ts = Some(f.rtp_timestamp);
        }
    }

    // covers: MT-SRC-3
    #[test]
    fn silent_audio_sends_small_dtx_frames_every_400_ms() {
        let mut s = SyntheticSource::new(MediaKind::Audio, 7, 1);
        let speech = s.next_frame();
        s.set_silent(true);
        assert_eq!(s.frame_interval(), Duration::from_millis(400));
        let mut ts = speech.rtp_timestamp.wrapping_add(960);
        for seq in 1..50 {
            let f = s.next_frame();
            assert!((MIN_FRAME..=MIN_FRAME + 8).contains(&f.data.len()));
            assert_eq!(verify(&f.data).unwrap().seq, seq, "sequence numbers run on");
            assert_eq!(f.rtp_timestamp, ts);
            ts = ts.wrapping_add(20 * 960);
        }
        s.set_silent(false);
        assert_eq!(s.frame_interval(), Duration::from_millis(20));
        assert!(s.next_frame().data.len() >= 60);
        // Video has no silence.
        let mut v = SyntheticSource::new(MediaKind::Video, 7, 1);
        v.set_silent(true);
        assert_eq!(v.frame_interval(), Duration::from_micros(33_333));
    }

    // covers: MT-SRC-1
    #[test]
    fn video_has_a_keyframe_every_two_seconds_and_on_request() {
        let mut s = SyntheticSource::new(MediaKind::Video, 3, 9);
        for seq in 0..180u64 {
            let f = s.next_frame();
            let key = seq % 60 == 0;
            assert_eq!(f.info.keyframe, key, "frame {seq}");
            let range = if key {
                30_000..=100_000
            } else {
                2_000..=10_000
            };
            assert!(range.contains(&f.data.len()));
            assert_eq!(verify(&f.data).unwrap().seq, seq);
        }
        s.request_keyframe();
        assert!(s.next_frame().info.keyframe);
        assert!(!s.next_frame().info.keyframe);
    }

    // covers: MT-SRC-2
    #[test]
    fn any_corruption_fails_verification() {
        let mut s = SyntheticSource::new(MediaKind::Audio, 1, 2);
        let f = s.next_frame();
        for i in 0..f.data.len() {
            let mut bad = f.data.clone();
            bad[i] ^= 0x01;
            assert!(verify(&bad).is_err(), "flip at byte {i} passed");
        }
        assert!(verify(&f.data[..f.data.len() - 1]).is_err());
        assert!(verify(&[]).is_err());
    }

    #[test]
    fn same_seed_same_frames_different_senders_differ() {
        let a: Vec<_> = {
            let mut s = SyntheticSource::new(MediaKind::Video, 1, 5);
            (0..3).map(|_| s.next_frame()).collect()
        };
        let b: Vec<_> = {
            let mut s = SyntheticSource::new(MediaKind::Video, 1, 5);
            (0..3).map(|_| s.next_frame()).collect()
        };
        let c = SyntheticSource::new(MediaKind::Video, 2, 5).next_frame();
        assert_eq!(a, b);
        assert_ne!(a[0].data[22..64], c.data[22..64]);
    }
}
