//! A digest of what a run did, to show that one seed always runs the same way: message types
//! and sizes on every link, the relay's events, the clients' events (without key-derived
//! values such as security codes) and the virtual time of each step. The bytes of MLS keys
//! come from the OS inside openmls and are deliberately left out; no decision depends on them.

/// FNV-1a over everything recorded.
#[derive(Debug, Clone, Copy)]
pub struct Trace(u64);

impl Default for Trace {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Trace {
    /// Mixes in bytes.
    pub fn bytes(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// Mixes in a number.
    pub fn num(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }

    /// Mixes in a string.
    pub fn text(&mut self, s: &str) {
        self.num(s.len() as u64);
        self.bytes(s.as_bytes());
    }

    /// The digest so far.
    pub fn digest(&self) -> u64 {
        self.0
    }
}
