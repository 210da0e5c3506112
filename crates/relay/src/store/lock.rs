//! A room's lock changes as stored (spec/cluster.md, CL-LOCK-2): one create-only entry per
//! change, `room.<hex room id>.lock.<n>`; the highest `n` is the room's state.
//!
//! ```text
//! struct {
//!     opaque magic[4] = "BCRS";
//!     uint8  version = 2;
//!     uint8  kind = 4;               // lock change
//!     opaque room_id<1..64>;         // one length byte
//!     uint64 n;                      // the change's number, as in its key
//!     uint8  locked;                 // 1 locked, 0 unlocked
//! } LockRecord;                      // nothing after it
//! ```

use super::CorruptEntry;
use super::record::{EncodeError, Reader, head, put_short};
use crate::ds::RoomId;
use crate::token::MAX_ROOM_ID_LEN;

/// The record kind of a lock change.
pub const KIND_LOCK: u8 = 4;

/// The keys of every room's lock changes, for a watch.
pub const LOCK_KEYS: &str = "room.*.lock.*";

/// The outcome of writing a lock change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockWrite {
    /// This change holds its number (written now, or found there with the same value).
    Written,
    /// Another change holds the number; this is its value.
    Taken {
        /// The holder's state.
        locked: bool,
    },
}

/// The KV key of lock change `n` of `room`: `room.<hex room id>.lock.<n>`.
pub fn lock_key(room: &RoomId, n: u64) -> String {
    format!("room.{}.lock.{n}", hex::encode(&room.0))
}

/// The (room, n) a lock key names, if it is one (canonical spelling only).
pub fn parse_lock_key(key: &str) -> Option<(RoomId, u64)> {
    let mut parts = key.split('.');
    let (Some("room"), Some(room), Some("lock"), Some(n), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let room = hex::decode(room).ok().filter(|r| hex::encode(r) == room)?;
    let n: u64 = n.parse().ok().filter(|v: &u64| v.to_string() == n)?;
    Some((RoomId(room), n))
}

/// The record of lock change `n` of `room`.
pub fn encode_lock(room: &RoomId, n: u64, locked: bool) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(4 + 3 + room.0.len() + 9);
    head(&mut out, KIND_LOCK);
    put_short(&mut out, &room.0, MAX_ROOM_ID_LEN)?;
    out.extend_from_slice(&n.to_be_bytes());
    out.push(u8::from(locked));
    Ok(out)
}

/// Decode a value read under the key of lock change `n` of `room`: its state.
pub fn decode_lock(bytes: &[u8], room: &RoomId, n: u64) -> Result<bool, CorruptEntry> {
    let mut r = Reader(bytes);
    r.head(KIND_LOCK)?;
    r.room(room)?;
    if r.u64()? != n {
        return Err(CorruptEntry::WrongLock);
    }
    let locked = match r.u8()? {
        0 => false,
        1 => true,
        _ => return Err(CorruptEntry::WrongLock),
    };
    r.end()?;
    Ok(locked)
}
