//! A joiner waiting on one node, as stored for the other nodes (spec/cluster.md, CL-WAIT-2):
//! one entry per waiting connection, `room.<hex room id>.waiting.<node>.<conn id>`, written
//! (`put`) and deleted only by the joiner's node.
//!
//! ```text
//! struct {
//!     opaque magic[4] = "BCRS";
//!     uint8  version = 2;
//!     uint8  kind = 5;                  // waiting joiner
//!     opaque room_id<1..64>;            // one length byte
//!     opaque token_id[16];
//!     opaque display_name<0..2^32-1>;   // four length bytes
//!     opaque key_package<0..2^32-1>;    // as published
//!     uint8  has_join_proof;            // 0 or 1
//!     opaque join_proof<0..2^32-1>;     // only when has_join_proof
//! } WaitingRecord;                      // nothing after it
//! ```
//!
//! Nothing in it is trusted because it is stored: a node that shows it checks the KeyPackage
//! as one published to it.

use super::CorruptEntry;
use super::record::{EncodeError, RECORD_MAGIC, RECORD_VERSION};
use crate::ds::RoomId;
use crate::token::MAX_ROOM_ID_LEN;

/// The record kind of a waiting joiner.
pub const KIND_WAITING: u8 = 5;

/// The keys of every room's waiting joiners, for a watch.
pub const WAITING_KEYS: &str = "room.*.waiting.*.*";

/// The KV key of connection `conn` of node `node` waiting in `room`.
pub fn waiting_key(room: &RoomId, node: &str, conn: u64) -> String {
    format!("room.{}.waiting.{node}.{conn}", hex::encode(&room.0))
}

/// The (room, node, connection) a waiting key names, if it is one.
pub fn parse_waiting_key(key: &str) -> Option<(RoomId, String, u64)> {
    let mut parts = key.split('.');
    let (Some("room"), Some(room), Some("waiting"), Some(node), Some(conn), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let room = hex::decode(room).ok().filter(|r| hex::encode(r) == room)?;
    let node_ok = !node.is_empty()
        && node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let conn: u64 = conn.parse().ok().filter(|c: &u64| c.to_string() == conn)?;
    node_ok.then(|| (RoomId(room), node.to_owned(), conn))
}

/// A waiting joiner as another node shows it to the room's members.
#[derive(Clone, PartialEq, Eq)]
pub struct WaitingRecord {
    /// The room.
    pub room: RoomId,
    /// The joiner's token id (bans apply to it).
    pub token_id: [u8; 16],
    /// The joiner's display name.
    pub display_name: Vec<u8>,
    /// The KeyPackage as published.
    pub key_package: Vec<u8>,
    /// The join proof published with it.
    pub join_proof: Option<Vec<u8>>,
}

impl std::fmt::Debug for WaitingRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitingRecord")
            .field("room", &hex::encode(&self.room.0))
            .field("key_package_len", &self.key_package.len())
            .finish_non_exhaustive()
    }
}

fn put_len(out: &mut Vec<u8>, b: &[u8]) -> Result<(), EncodeError> {
    let len = u32::try_from(b.len()).map_err(|_| EncodeError::TooLarge)?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b);
    Ok(())
}

impl WaitingRecord {
    /// The record's bytes.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let room_len = u8::try_from(self.room.0.len())
            .ok()
            .filter(|l| (1..=MAX_ROOM_ID_LEN).contains(&usize::from(*l)))
            .ok_or(EncodeError::RoomId)?;
        let mut out = Vec::new();
        out.extend_from_slice(&RECORD_MAGIC);
        out.push(RECORD_VERSION);
        out.push(KIND_WAITING);
        out.push(room_len);
        out.extend_from_slice(&self.room.0);
        out.extend_from_slice(&self.token_id);
        put_len(&mut out, &self.display_name)?;
        put_len(&mut out, &self.key_package)?;
        match &self.join_proof {
            Some(p) => {
                out.push(1);
                put_len(&mut out, p)?;
            }
            None => out.push(0),
        }
        Ok(out)
    }

    /// Decode a value read under a waiting key of `room`.
    pub fn decode(bytes: &[u8], room: &RoomId) -> Result<Self, CorruptEntry> {
        let mut b = bytes;
        let mut take = |n: usize| -> Result<Vec<u8>, CorruptEntry> {
            if b.len() < n {
                return Err(CorruptEntry::Truncated);
            }
            let (head, tail) = b.split_at(n);
            b = tail;
            Ok(head.to_vec())
        };
        if take(4)? != RECORD_MAGIC {
            return Err(CorruptEntry::Foreign);
        }
        let head = take(2)?;
        if head[0] != RECORD_VERSION {
            return Err(CorruptEntry::UnsupportedVersion(head[0]));
        }
        if head[1] != KIND_WAITING {
            return Err(CorruptEntry::WrongKind(head[1]));
        }
        let room_len = usize::from(take(1)?[0]);
        if room_len == 0 || room_len > MAX_ROOM_ID_LEN {
            return Err(CorruptEntry::BadRoomId);
        }
        if take(room_len)? != room.0 {
            return Err(CorruptEntry::WrongRoom);
        }
        let token_id: [u8; 16] = take(16)?.try_into().map_err(|_| CorruptEntry::Truncated)?;
        let var = |take: &mut dyn FnMut(usize) -> Result<Vec<u8>, CorruptEntry>| {
            let mut len = [0u8; 4];
            len.copy_from_slice(&take(4)?);
            let len =
                usize::try_from(u32::from_be_bytes(len)).map_err(|_| CorruptEntry::Truncated)?;
            take(len)
        };
        let display_name = var(&mut take)?;
        let key_package = var(&mut take)?;
        let join_proof = match take(1)?[0] {
            0 => None,
            1 => Some(var(&mut take)?),
            _ => return Err(CorruptEntry::Truncated),
        };
        if !b.is_empty() {
            return Err(CorruptEntry::TrailingBytes);
        }
        Ok(Self {
            room: room.clone(),
            token_id,
            display_name,
            key_package,
            join_proof,
        })
    }
}
