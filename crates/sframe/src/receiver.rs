//! The receiving side: KID → key lookup (never trial decryption), a replay window per KID
//! and an optional bound on how far one frame may move it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use crate::error::{KeyError, OpenError};
use crate::header::{Counter, Header, Kid};
use crate::jump::JumpLimit;
use crate::key::{BaseKey, FrameKey};
use crate::replay::{Refused, ReplayWindow};
use crate::suite::CipherSuite;

/// Receiver configuration.
#[derive(Clone, Copy, Debug)]
pub struct ReceiverConfig {
    /// Replay window per KID, in frames. Clamped to `1..=`[`crate::MAX_REPLAY_WINDOW`].
    pub replay_window: u64,
}

impl Default for ReceiverConfig {
    /// A 128-frame replay window.
    fn default() -> Self {
        Self { replay_window: 128 }
    }
}

/// A successfully opened frame (borrowing the caller's buffer).
#[derive(Debug)]
pub struct Opened<'a> {
    /// The authenticated header.
    pub header: Header,
    /// The plaintext, inside the caller's frame buffer.
    pub plaintext: &'a [u8],
}

/// Multiply-fold hasher for KIDs.
///
/// The map is filled only by the local application (`add_key`), never by peers, and lookups
/// of attacker-chosen KIDs cannot grow it, so a keyed (DoS-resistant) hash buys nothing here.
#[derive(Default)]
struct KidHasher(u64);

impl Hasher for KidHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write_u64(&mut self, v: u64) {
        let p = u128::from(v ^ self.0).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
        // ok: folding the 128-bit product into 64 bits is the point of the cast.
        self.0 = (p as u64) ^ ((p >> 64) as u64);
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
}

struct Entry {
    key: FrameKey,
    window: ReplayWindow,
    /// Receiver time when the window's highest counter was accepted (`None`: no frame yet,
    /// or accepted before the receiver was given any time).
    top_at: Option<Instant>,
}

/// Decrypts frames; key chosen by KID only; per-KID replay window updated only after the
/// tag verifies.
///
/// With a [`JumpLimit`] (see [`Receiver::set_jump_limit`]), a frame running too far ahead of
/// its KID's highest accepted counter is refused with [`OpenError::CounterJump`]. Time is an
/// argument: the `_at` methods take the current time; the others use the latest time any
/// `_at` call gave (times earlier than that are ignored).
pub struct Receiver {
    config: ReceiverConfig,
    jump_limit: Option<JumpLimit>,
    /// Latest time given to an `_at` method.
    now: Option<Instant>,
    keys: HashMap<Kid, Entry, BuildHasherDefault<KidHasher>>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("config", &self.config)
            .field("jump_limit", &self.jump_limit)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl Receiver {
    /// An empty receiver, with no jump limit (RFC 9605 behaviour).
    pub fn new(config: ReceiverConfig) -> Receiver {
        Receiver {
            config,
            jump_limit: None,
            now: None,
            keys: HashMap::default(),
        }
    }

    /// Sets (or with `None` removes) the bound on counter jumps, for every KID.
    pub fn set_jump_limit(&mut self, limit: Option<JumpLimit>) {
        self.jump_limit = limit;
    }

    /// The bound on counter jumps, if any.
    pub fn jump_limit(&self) -> Option<JumpLimit> {
        self.jump_limit
    }

    /// Installs (or replaces, resetting the replay window) the key for `kid`.
    pub fn add_key(
        &mut self,
        suite: CipherSuite,
        kid: Kid,
        base_key: &BaseKey,
    ) -> Result<(), KeyError> {
        let key = FrameKey::new(suite, kid, base_key)?;
        let window = ReplayWindow::new(self.config.replay_window);
        self.keys.insert(
            kid,
            Entry {
                key,
                window,
                top_at: None,
            },
        );
        Ok(())
    }

    /// Gives `kid` a fresh replay window (as if no frame had been accepted), keeping its
    /// key; true if the KID has a key.
    pub fn reset_window(&mut self, kid: Kid) -> bool {
        let Some(entry) = self.keys.get_mut(&kid) else {
            return false;
        };
        entry.window.reset();
        entry.top_at = None;
        true
    }

    /// Removes and zeroizes the key; true if it existed.
    pub fn remove_key(&mut self, kid: Kid) -> bool {
        self.keys.remove(&kid).is_some()
    }

    /// True if a key is installed for `kid`.
    pub fn has_key(&self, kid: Kid) -> bool {
        self.keys.contains_key(&kid)
    }

    /// Number of installed keys.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Zero-allocation open at time `now`: decrypts in place inside `frame`
    /// (header || ct || tag).
    ///
    /// `now` feeds the jump limit; a `now` earlier than one given before counts as that
    /// earlier time. On error the frame's ciphertext bytes may have been overwritten.
    pub fn open_in_place_at<'a>(
        &mut self,
        now: Instant,
        metadata: &[u8],
        frame: &'a mut [u8],
    ) -> Result<Opened<'a>, OpenError> {
        self.advance_clock(now);
        self.open_in_place(metadata, frame)
    }

    /// Moves the receiver's clock to `now` unless it already is later.
    #[inline]
    fn advance_clock(&mut self, now: Instant) {
        match self.now {
            Some(t) if now <= t => {}
            Some(_) => self.now = Some(now),
            None => {
                // Once per receiver: highest counters accepted before any time was given
                // count as accepted now (the latest they can have been).
                self.now = Some(now);
                for entry in self.keys.values_mut() {
                    if entry.window.top().is_some() {
                        entry.top_at = Some(now);
                    }
                }
            }
        }
    }

    /// Zero-allocation open: decrypts in place inside `frame` (header || ct || tag).
    ///
    /// A jump limit is applied at the latest time given to an `_at` method; a receiver never
    /// given a time allows only the limit's `base`, so a sender gap longer than `base`
    /// frames stays refused until time is given, [`Receiver::reset_window`] or a new key:
    /// drive a receiver with a jump limit through [`Receiver::open_in_place_at`]. On error the
    /// frame's
    /// ciphertext bytes may have been overwritten.
    pub fn open_in_place<'a>(
        &mut self,
        metadata: &[u8],
        frame: &'a mut [u8],
    ) -> Result<Opened<'a>, OpenError> {
        let (header, hlen) = Header::decode(frame).map_err(OpenError::Malformed)?;
        let (kid, ctr) = (header.kid, header.ctr);
        let Some(entry) = self.keys.get_mut(&kid) else {
            return Err(OpenError::UnknownKid { kid });
        };
        let needed = hlen + entry.key_nt();
        if frame.len() < needed {
            return Err(OpenError::TooShort {
                needed,
                got: frame.len(),
            });
        }
        entry.window.check(ctr.0).map_err(|r| match r {
            Refused::Replay => OpenError::Replay { kid, ctr },
            Refused::TooOld => OpenError::TooOld { kid, ctr },
        })?;
        // The first frame of a KID (no top yet) is not limited.
        if let (Some(limit), Some(top)) = (self.jump_limit, entry.window.top()) {
            let (now, top_at) = (self.now, entry.top_at);
            if !limit.allows(top, ctr.0, || elapsed(now, top_at)) {
                return Err(OpenError::CounterJump {
                    kid,
                    ctr,
                    highest: Counter(top),
                });
            }
        }
        let (hdr, body) = frame.split_at_mut(hlen);
        let n = entry
            .key
            .open(entry.key.nonce(ctr), hdr, metadata, body)
            .map_err(|_| OpenError::TagMismatch { kid, ctr })?;
        if entry.window.record(ctr.0) {
            entry.top_at = self.now;
        }
        Ok(Opened {
            header,
            plaintext: &body[..n],
        })
    }

    /// Opens a copy of `frame`; returns the header and the plaintext (allocates).
    pub fn open(&mut self, metadata: &[u8], frame: &[u8]) -> Result<(Header, Vec<u8>), OpenError> {
        let mut buf = frame.to_vec();
        let opened = self.open_in_place(metadata, &mut buf)?;
        let header = opened.header;
        let plaintext = opened.plaintext.to_vec();
        Ok((header, plaintext))
    }

    /// [`Receiver::open`] at time `now` (see [`Receiver::open_in_place_at`]).
    pub fn open_at(
        &mut self,
        now: Instant,
        metadata: &[u8],
        frame: &[u8],
    ) -> Result<(Header, Vec<u8>), OpenError> {
        let mut buf = frame.to_vec();
        let opened = self.open_in_place_at(now, metadata, &mut buf)?;
        let header = opened.header;
        let plaintext = opened.plaintext.to_vec();
        Ok((header, plaintext))
    }
}

/// Time since the highest counter was accepted; zero if either time is unknown.
#[inline]
fn elapsed(now: Option<Instant>, top_at: Option<Instant>) -> Duration {
    match (now, top_at) {
        (Some(now), Some(at)) => now.saturating_duration_since(at),
        _ => Duration::ZERO,
    }
}

impl Entry {
    #[inline]
    fn key_nt(&self) -> usize {
        self.key.nt()
    }
}
