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
use super::record::{EncodeError, Reader, head, put_long, put_short};
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

impl WaitingRecord {
    /// The record's bytes.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        head(&mut out, KIND_WAITING);
        put_short(&mut out, &self.room.0, MAX_ROOM_ID_LEN)?;
        out.extend_from_slice(&self.token_id);
        put_long(&mut out, &self.display_name)?;
        put_long(&mut out, &self.key_package)?;
        match &self.join_proof {
            Some(p) => {
                out.push(1);
                put_long(&mut out, p)?;
            }
            None => out.push(0),
        }
        Ok(out)
    }

    /// Decode a value read under a waiting key of `room`.
    pub fn decode(bytes: &[u8], room: &RoomId) -> Result<Self, CorruptEntry> {
        let mut r = Reader(bytes);
        r.head(KIND_WAITING)?;
        r.room(room)?;
        let token_id: [u8; 16] = r.array()?;
        let display_name = r.long()?.to_vec();
        let key_package = r.long()?.to_vec();
        let join_proof = match r.u8()? {
            0 => None,
            1 => Some(r.long()?.to_vec()),
            _ => return Err(CorruptEntry::Truncated),
        };
        r.end()?;
        Ok(Self {
            room: room.clone(),
            token_id,
            display_name,
            key_package,
            join_proof,
        })
    }
}
