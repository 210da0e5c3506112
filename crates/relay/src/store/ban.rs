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
use super::record::{EncodeError, Reader, head, put_short};
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
    let mut out = Vec::with_capacity(4 + 3 + room.0.len() + 16);
    head(&mut out, KIND_BAN);
    put_short(&mut out, &room.0, MAX_ROOM_ID_LEN)?;
    out.extend_from_slice(token_id);
    Ok(out)
}

/// Check a value read under the ban key of (`room`, `token_id`): a ban record of exactly that
/// room and token.
pub fn decode_ban(bytes: &[u8], room: &RoomId, token_id: &[u8; 16]) -> Result<(), CorruptEntry> {
    let mut r = Reader(bytes);
    r.head(KIND_BAN)?;
    r.room(room)?;
    if r.take(16)? != token_id {
        return Err(CorruptEntry::WrongToken);
    }
    r.end()
}
