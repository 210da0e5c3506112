//! A ban as stored (spec/cluster.md, CL-BAN-1): one create-only entry per banned token of a
//! room, `room.<hex room id>.ban.<hex token id>`, never deleted while the room lives.
//!
//! ```text
//! struct {
//!     opaque magic[4] = "BCRS";
//!     uint8  version = 2;
//!     uint8  kind = 3;               // ban
//!     opaque room_id<1..64>;         // one length byte
//!     opaque token_id[16];
//! } BanRecord;                       // nothing after it
//! ```

use super::CorruptEntry;
use super::record::{EncodeError, RECORD_MAGIC, RECORD_VERSION};
use crate::ds::RoomId;
use crate::token::MAX_ROOM_ID_LEN;

/// The record kind of a ban.
pub const KIND_BAN: u8 = 3;

/// The keys of every room's bans, for a watch.
pub const BAN_KEYS: &str = "room.*.ban.*";

/// The KV key of `token_id`'s ban from `room`: `room.<hex room id>.ban.<hex token id>`.
pub fn ban_key(room: &RoomId, token_id: &[u8; 16]) -> String {
    format!(
        "room.{}.ban.{}",
        hex::encode(&room.0),
        hex::encode(token_id)
    )
}

/// The (room, token id) a ban key names, if it is one (canonical lower-case hex only).
pub fn parse_ban_key(key: &str) -> Option<(RoomId, [u8; 16])> {
    let mut parts = key.split('.');
    let (Some("room"), Some(room), Some("ban"), Some(token), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let room = hex::decode(room).ok().filter(|r| hex::encode(r) == room)?;
    let token = hex::decode(token)
        .ok()
        .filter(|t| hex::encode(t) == token)?;
    Some((RoomId(room), token.try_into().ok()?))
}

/// The record of `token_id`'s ban from `room`.
pub fn encode_ban(room: &RoomId, token_id: &[u8; 16]) -> Result<Vec<u8>, EncodeError> {
    let room_len = u8::try_from(room.0.len())
        .ok()
        .filter(|l| (1..=MAX_ROOM_ID_LEN).contains(&usize::from(*l)))
        .ok_or(EncodeError::RoomId)?;
    let mut out = Vec::with_capacity(4 + 3 + room.0.len() + 16);
    out.extend_from_slice(&RECORD_MAGIC);
    out.push(RECORD_VERSION);
    out.push(KIND_BAN);
    out.push(room_len);
    out.extend_from_slice(&room.0);
    out.extend_from_slice(token_id);
    Ok(out)
}

/// Check a value read under the ban key of (`room`, `token_id`): a ban record of exactly that
/// room and token.
pub fn decode_ban(bytes: &[u8], room: &RoomId, token_id: &[u8; 16]) -> Result<(), CorruptEntry> {
    let mut b = bytes;
    let mut take = |n: usize| -> Result<&[u8], CorruptEntry> {
        if b.len() < n {
            return Err(CorruptEntry::Truncated);
        }
        let (head, tail) = b.split_at(n);
        b = tail;
        Ok(head)
    };
    if take(4)? != RECORD_MAGIC {
        return Err(CorruptEntry::Foreign);
    }
    let head = take(2)?;
    if head[0] != RECORD_VERSION {
        return Err(CorruptEntry::UnsupportedVersion(head[0]));
    }
    if head[1] != KIND_BAN {
        return Err(CorruptEntry::WrongKind(head[1]));
    }
    let room_len = usize::from(take(1)?[0]);
    if room_len == 0 || room_len > MAX_ROOM_ID_LEN {
        return Err(CorruptEntry::BadRoomId);
    }
    if take(room_len)? != room.0 {
        return Err(CorruptEntry::WrongRoom);
    }
    if take(16)? != token_id {
        return Err(CorruptEntry::WrongToken);
    }
    if !b.is_empty() {
        return Err(CorruptEntry::TrailingBytes);
    }
    Ok(())
}
