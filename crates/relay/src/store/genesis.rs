//! A room's genesis as stored: the creator's GroupInfo (with its ratchet tree), written once by
//! the node that accepts the room's first `CreateGroup` (spec/cluster.md, CL-GEN-1).
//!
//! ```text
//! struct {
//!     opaque magic[4] = "BCRS";
//!     uint8  version = 2;
//!     uint8  kind = 2;               // genesis
//!     opaque room_id<1..64>;         // one length byte
//!     uint64 epoch;                  // the group's epoch at creation
//!     opaque group_info<0..2^32-1>;  // four length bytes: CreateGroup.group_info as accepted
//! } GenesisRecord;                   // nothing after it
//! ```
//!
//! The GroupInfo is not trusted because it is stored: a node that loads it bootstraps the group
//! from it exactly as from a creator's `CreateGroup` (signature, one member who is a host, this
//! relay an external sender).

use super::record::{EncodeError, Reader, head, put_long, put_short};
use super::{CorruptEntry, StoreError};
use crate::ds::RoomId;
use crate::token::MAX_ROOM_ID_LEN;

/// The record kind of a room's genesis.
pub const KIND_GENESIS: u8 = 2;

/// The KV key of a room's genesis: `room.<hex room id>.genesis` (CL-GEN-1).
pub fn genesis_key(room: &RoomId) -> String {
    format!("room.{}.genesis", hex::encode(&room.0))
}

/// A room's genesis: the GroupInfo its group was created from, and that epoch.
#[derive(Clone, PartialEq, Eq)]
pub struct GenesisRecord {
    room: RoomId,
    epoch: u64,
    group_info: Vec<u8>,
}

impl std::fmt::Debug for GenesisRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenesisRecord")
            .field("room", &hex::encode(&self.room.0))
            .field("epoch", &self.epoch)
            .field("group_info_len", &self.group_info.len())
            .finish()
    }
}

/// The outcome of writing a room's genesis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Genesis {
    /// This record is the room's genesis (written now, or found already holding the key: the
    /// same bytes, as after a retry).
    Created,
    /// Another genesis holds the room: its group exists.
    Exists {
        /// The room's genesis.
        holder: GenesisRecord,
    },
}

impl GenesisRecord {
    /// The genesis of `room`'s group, created at `epoch` from `group_info`.
    pub fn new(room: RoomId, epoch: u64, group_info: Vec<u8>) -> Self {
        Self {
            room,
            epoch,
            group_info,
        }
    }

    /// The room.
    pub fn room(&self) -> &RoomId {
        &self.room
    }

    /// The group's epoch at creation.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The creator's GroupInfo (with its ratchet tree).
    pub fn group_info(&self) -> &[u8] {
        &self.group_info
    }

    /// The record's bytes.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(4 + 3 + self.room.0.len() + 12 + self.group_info.len());
        head(&mut out, KIND_GENESIS);
        put_short(&mut out, &self.room.0, MAX_ROOM_ID_LEN)?;
        out.extend_from_slice(&self.epoch.to_be_bytes());
        put_long(&mut out, &self.group_info)?;
        Ok(out)
    }

    /// Decode a record read under `room`'s genesis key, checking that it is a genesis record
    /// of this room.
    pub fn decode(bytes: &[u8], room: &RoomId) -> Result<Self, CorruptEntry> {
        let mut r = Reader(bytes);
        r.head(KIND_GENESIS)?;
        r.room(room)?;
        let epoch = r.u64()?;
        let group_info = r.long()?.to_vec();
        r.end()?;
        Ok(Self {
            room: room.clone(),
            epoch,
            group_info,
        })
    }
}

/// The decision once a genesis key's holder is known: the same bytes are ours.
pub(super) fn decide_genesis(ours: &GenesisRecord, holder: GenesisRecord) -> Genesis {
    if holder == *ours {
        Genesis::Created
    } else {
        Genesis::Exists { holder }
    }
}

/// A genesis read under `key` could not be decoded.
pub(super) fn corrupt(key: String) -> impl FnOnce(CorruptEntry) -> StoreError {
    move |reason| StoreError::Corrupt { key, reason }
}
