//! The receiving side: KID → key lookup (never trial decryption) and a replay window per KID.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::error::{KeyError, OpenError};
use crate::header::{Header, Kid};
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
}

/// Decrypts frames; key chosen by KID only; per-KID replay window updated only after the
/// tag verifies.
pub struct Receiver {
    config: ReceiverConfig,
    keys: HashMap<Kid, Entry, BuildHasherDefault<KidHasher>>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("config", &self.config)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl Receiver {
    /// An empty receiver.
    pub fn new(config: ReceiverConfig) -> Receiver {
        Receiver {
            config,
            keys: HashMap::default(),
        }
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
        self.keys.insert(kid, Entry { key, window });
        Ok(())
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

    /// Zero-allocation open: decrypts in place inside `frame` (header || ct || tag).
    ///
    /// On error the frame's ciphertext bytes may have been overwritten.
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
        let (hdr, body) = frame.split_at_mut(hlen);
        let n = entry
            .key
            .open(entry.key.nonce(ctr), hdr, metadata, body)
            .map_err(|_| OpenError::TagMismatch { kid, ctr })?;
        entry.window.record(ctr.0);
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
}

impl Entry {
    #[inline]
    fn key_nt(&self) -> usize {
        self.key.nt()
    }
}
