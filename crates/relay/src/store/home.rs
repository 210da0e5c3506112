//! Nodes and room homes as stored (spec/cluster.md, CL-NODE-4, CL-HOME-1).
//!
//! A node's heartbeat is the key `node.<node id>` of the nodes bucket (`blindcall_nodes`),
//! `put` by that node only, every heartbeat interval, and deleted when it exits cleanly:
//!
//! ```text
//! struct {
//!     opaque magic[4] = "BCRS";
//!     uint8  version = 2;
//!     uint8  kind = 6;                // node heartbeat
//!     opaque node_id<1..64>;          // one length byte, as in the key
//!     opaque addr<1..255>;            // advertised client address host:port, one length byte
//!     uint64 started_unix_ms;
//!     uint64 seq;                     // increments every beat
//!     uint8  draining;                // 0 or 1
//!     uint32 rooms;
//!     uint32 members;
//!     uint32 connections;
//! } NodeRecord;                       // nothing after it
//! ```
//!
//! A room's home of term *t* is the create-only key `room.<hex room id>.home.<t>` of the
//! rooms bucket; the holder of the highest term is the room's home:
//!
//! ```text
//! struct {
//!     opaque magic[4] = "BCRS";
//!     uint8  version = 2;
//!     uint8  kind = 7;                // room home
//!     opaque room_id<1..64>;          // one length byte
//!     uint64 term;                    // as in the key
//!     opaque node_id<1..64>;          // one length byte
//!     opaque addr<1..255>;            // one length byte
//! } HomeRecord;                       // nothing after it
//! ```

use super::CorruptEntry;
use super::record::{EncodeError, Reader, head, put_short};
use crate::ds::RoomId;
use crate::token::MAX_ROOM_ID_LEN;

/// The record kind of a node heartbeat.
pub const KIND_NODE: u8 = 6;
/// The record kind of a room home.
pub const KIND_HOME: u8 = 7;
/// The default bucket of the nodes' heartbeats.
pub const DEFAULT_NODES_BUCKET: &str = "blindcall_nodes";
/// The keys of every node's heartbeat, for a watch.
pub const NODE_KEYS: &str = "node.*";
/// The keys of every room's homes, for a watch.
pub const HOME_KEYS: &str = "room.*.home.*";

/// Whether `id` is a valid node id: 1..=64 of `[A-Za-z0-9_-]`.
pub fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn valid_addr(addr: &str) -> bool {
    (1..=255).contains(&addr.len()) && !addr.chars().any(|c| c.is_control() || c == ' ')
}

/// The key of node `node_id`'s heartbeat: `node.<node id>`.
pub fn node_key(node_id: &str) -> String {
    format!("node.{node_id}")
}

/// The node id a heartbeat key names, if it is one.
pub fn parse_node_key(key: &str) -> Option<String> {
    let id = key.strip_prefix("node.")?;
    valid_node_id(id).then(|| id.to_owned())
}

/// The key of term `term` of `room`'s home: `room.<hex room id>.home.<term>`.
pub fn home_key(room: &RoomId, term: u64) -> String {
    format!("room.{}.home.{term}", hex::encode(&room.0))
}

/// The (room, term) a home key names, if it is one (canonical spelling only).
pub fn parse_home_key(key: &str) -> Option<(RoomId, u64)> {
    let mut parts = key.split('.');
    let (Some("room"), Some(room), Some("home"), Some(term), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let room = hex::decode(room).ok().filter(|r| hex::encode(r) == room)?;
    let term: u64 = term.parse().ok().filter(|t: &u64| t.to_string() == term)?;
    Some((RoomId(room), term))
}

/// A node's heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    /// The node's id (as in its key).
    pub node_id: String,
    /// The address clients reach it at, `host:port`.
    pub addr: String,
    /// When the node started (its own wall clock, informative only).
    pub started_unix_ms: u64,
    /// Increments every beat: a beat with a seq not seen before is a sign of life.
    pub seq: u64,
    /// The node is handing its rooms over and takes no new room.
    pub draining: bool,
    /// Rooms it serves.
    pub rooms: u32,
    /// Members connected to it.
    pub members: u32,
    /// Connections to it.
    pub connections: u32,
}

/// Which node is a room's home from a term on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeRecord {
    /// The room.
    pub room: RoomId,
    /// The term (the highest term's holder is the home).
    pub term: u64,
    /// The home node's id.
    pub node_id: String,
    /// The home node's client address, `host:port`.
    pub addr: String,
}

/// The outcome of claiming a term of a room's home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HomeClaim {
    /// This record holds the term (written now, or found there byte for byte).
    Won,
    /// Another record holds the term.
    Lost {
        /// The term's holder.
        holder: HomeRecord,
    },
}

impl NodeRecord {
    /// The record's bytes (a node id or address that cannot be stored is
    /// [`EncodeError::RoomId`]'s sibling refusal: nothing is written).
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        if !valid_node_id(&self.node_id) || !valid_addr(&self.addr) {
            return Err(EncodeError::RoomId);
        }
        let mut out = Vec::with_capacity(6 + 2 + self.node_id.len() + self.addr.len() + 29);
        head(&mut out, KIND_NODE);
        put_short(&mut out, self.node_id.as_bytes(), 64)?;
        put_short(&mut out, self.addr.as_bytes(), 255)?;
        out.extend_from_slice(&self.started_unix_ms.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.push(u8::from(self.draining));
        out.extend_from_slice(&self.rooms.to_be_bytes());
        out.extend_from_slice(&self.members.to_be_bytes());
        out.extend_from_slice(&self.connections.to_be_bytes());
        Ok(out)
    }

    /// Decode a value read under the heartbeat key of `node_id`.
    pub fn decode(bytes: &[u8], node_id: &str) -> Result<Self, CorruptEntry> {
        let mut r = Reader(bytes);
        r.head(KIND_NODE)?;
        let id = r.text(valid_node_id)?;
        if id != node_id {
            return Err(CorruptEntry::WrongNode);
        }
        let addr = r.text(valid_addr)?;
        let started_unix_ms = r.u64()?;
        let seq = r.u64()?;
        let draining = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(CorruptEntry::WrongNode),
        };
        let rooms = r.u32()?;
        let members = r.u32()?;
        let connections = r.u32()?;
        r.end()?;
        Ok(Self {
            node_id: id,
            addr,
            started_unix_ms,
            seq,
            draining,
            rooms,
            members,
            connections,
        })
    }
}

impl HomeRecord {
    /// The record's bytes.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        if !valid_node_id(&self.node_id) || !valid_addr(&self.addr) {
            return Err(EncodeError::RoomId);
        }
        let mut out = Vec::new();
        head(&mut out, KIND_HOME);
        put_short(&mut out, &self.room.0, MAX_ROOM_ID_LEN)?;
        out.extend_from_slice(&self.term.to_be_bytes());
        put_short(&mut out, self.node_id.as_bytes(), 64)?;
        put_short(&mut out, self.addr.as_bytes(), 255)?;
        Ok(out)
    }

    /// Decode a value read under the key of term `term` of `room`'s home.
    pub fn decode(bytes: &[u8], room: &RoomId, term: u64) -> Result<Self, CorruptEntry> {
        let mut r = Reader(bytes);
        r.head(KIND_HOME)?;
        r.room(room)?;
        let found = r.u64()?;
        if found != term {
            return Err(CorruptEntry::WrongEpoch { found });
        }
        let node_id = r.text(valid_node_id)?;
        let addr = r.text(valid_addr)?;
        r.end()?;
        Ok(Self {
            room: room.clone(),
            term,
            node_id,
            addr,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn node() -> NodeRecord {
        NodeRecord {
            node_id: "node-a".into(),
            addr: "relay-a.example:4433".into(),
            started_unix_ms: 1_700_000_000_000,
            seq: 7,
            draining: false,
            rooms: 2,
            members: 5,
            connections: 6,
        }
    }

    fn home() -> HomeRecord {
        HomeRecord {
            room: RoomId(b"room".to_vec()),
            term: 3,
            node_id: "node-a".into(),
            addr: "127.0.0.1:4433".into(),
        }
    }

    // covers: CL-NODE-4
    #[test]
    fn a_heartbeat_round_trips_and_is_bound_to_its_key() {
        let n = node();
        let bytes = n.encode().unwrap();
        assert_eq!(NodeRecord::decode(&bytes, "node-a").unwrap(), n);
        assert_eq!(node_key("node-a"), "node.node-a");
        assert_eq!(parse_node_key("node.node-a").as_deref(), Some("node-a"));
        assert_eq!(parse_node_key("node.a.b"), None);
        assert_eq!(parse_node_key("nodes.a"), None);
        // Another node's heartbeat under this key, tampering, truncation, trailing bytes.
        assert_eq!(
            NodeRecord::decode(&bytes, "node-b"),
            Err(CorruptEntry::WrongNode)
        );
        assert_eq!(
            NodeRecord::decode(b"hello world, not ours", "node-a"),
            Err(CorruptEntry::Foreign)
        );
        for cut in 0..bytes.len() {
            assert!(NodeRecord::decode(&bytes[..cut], "node-a").is_err());
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            NodeRecord::decode(&long, "node-a"),
            Err(CorruptEntry::TrailingBytes)
        );
        let mut kind = bytes.clone();
        kind[5] = KIND_HOME;
        assert_eq!(
            NodeRecord::decode(&kind, "node-a"),
            Err(CorruptEntry::WrongKind(KIND_HOME))
        );
        let mut version = bytes;
        version[4] = 9;
        assert_eq!(
            NodeRecord::decode(&version, "node-a"),
            Err(CorruptEntry::UnsupportedVersion(9))
        );
        // A node id or address that cannot be stored is not written.
        let mut bad = node();
        bad.node_id = "a.b".into();
        assert!(bad.encode().is_err());
        let mut bad = node();
        bad.addr = String::new();
        assert!(bad.encode().is_err());
    }

    // covers: CL-HOME-1
    #[test]
    fn a_home_round_trips_and_is_bound_to_its_room_and_term() {
        let h = home();
        let bytes = h.encode().unwrap();
        let room = RoomId(b"room".to_vec());
        assert_eq!(HomeRecord::decode(&bytes, &room, 3).unwrap(), h);
        assert_eq!(home_key(&room, 3), "room.726f6f6d.home.3");
        assert_eq!(
            parse_home_key("room.726f6f6d.home.3"),
            Some((room.clone(), 3))
        );
        assert_eq!(parse_home_key("room.726f6f6d.home.03"), None);
        assert_eq!(parse_home_key("room.726F6F6D.home.3"), None);
        assert_eq!(parse_home_key("room.726f6f6d.epoch.3.commit"), None);
        assert_eq!(
            HomeRecord::decode(&bytes, &RoomId(b"other".to_vec()), 3),
            Err(CorruptEntry::WrongRoom)
        );
        assert_eq!(
            HomeRecord::decode(&bytes, &room, 4),
            Err(CorruptEntry::WrongEpoch { found: 3 })
        );
        for cut in 0..bytes.len() {
            assert!(HomeRecord::decode(&bytes[..cut], &room, 3).is_err());
        }
        let mut long = bytes.clone();
        long.push(1);
        assert_eq!(
            HomeRecord::decode(&long, &room, 3),
            Err(CorruptEntry::TrailingBytes)
        );
        let node_bytes = node().encode().unwrap();
        assert_eq!(
            HomeRecord::decode(&node_bytes, &room, 3),
            Err(CorruptEntry::WrongKind(KIND_NODE))
        );
        // A tampered node id (not a node id) is refused, never taken.
        let mut tampered = bytes;
        let at = tampered.len() - h.addr.len() - 1 - h.node_id.len();
        tampered[at] = b'.';
        assert_eq!(
            HomeRecord::decode(&tampered, &room, 3),
            Err(CorruptEntry::WrongNode)
        );
    }
}
