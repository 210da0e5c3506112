//! Per-connection and per-room state.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use blindcall_proto::{FrameDecoder, RESUME_CHALLENGE_LEN, Role, RoomState};

use super::ConnId;
use super::mls::{GroupState, StoredKeyPackage};
use crate::time::Timestamp;

/// A room id (from the capability token).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(pub Vec<u8>);

/// Where an admitted connection sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seat {
    /// Admitted, not in the group, not waiting.
    Lobby,
    /// In the waiting room since the given time.
    Waiting { since: Timestamp },
    /// A group member at `leaf`.
    Member { leaf: u32 },
}

pub(crate) struct Admission {
    pub room: RoomId,
    pub role: Role,
    pub token_id: [u8; 16],
    pub display_name: Vec<u8>,
    pub key_package: Option<StoredKeyPackage>,
    pub seat: Seat,
    /// The challenge sent in this connection's HelloAck (signed by a resuming member).
    pub challenge: [u8; RESUME_CHALLENGE_LEN],
    /// Whether the connection sent a Resume (one per connection: its challenge is spent).
    pub resume_tried: bool,
    /// The media forwarder's id for this member's streams: the id of the connection it joined
    /// on, kept by every resume (DS-RES-12).
    pub participant: ConnId,
}

pub(crate) enum Phase {
    AwaitingHello,
    Admitted(Box<Admission>),
}

pub(crate) struct Conn {
    pub decoder: FrameDecoder,
    pub opened_at: Timestamp,
    /// When bytes last arrived (for the idle timeout).
    pub last_rx: Timestamp,
    pub errors: u32,
    /// Every message but `PeerBroadcast`.
    pub bucket: TokenBucket,
    /// `PeerBroadcast` only (members' signed peer messages have their own budget).
    pub peer_bucket: TokenBucket,
    pub phase: Phase,
}

/// Per-connection message rate limit, in thousandths of a message.
pub(crate) struct TokenBucket {
    level: u64,
    last: Timestamp,
}

impl TokenBucket {
    pub fn full(burst: u32, now: Timestamp) -> Self {
        Self {
            level: u64::from(burst) * 1000,
            last: now,
        }
    }

    /// Refill for the time since the last call, then take one message if available.
    pub fn take(&mut self, now: Timestamp, burst: u32, per_second: u32) -> bool {
        let elapsed_ms = now.0.saturating_sub(self.last.0);
        self.last = self.last.max(now);
        let cap = u64::from(burst) * 1000;
        self.level = self
            .level
            .saturating_add(elapsed_ms.saturating_mul(u64::from(per_second)))
            .min(cap);
        if self.level >= 1000 {
            self.level -= 1000;
            true
        } else {
            false
        }
    }
}

impl Conn {
    pub fn admission(&self) -> Option<&Admission> {
        match &self.phase {
            Phase::Admitted(a) => Some(a),
            Phase::AwaitingHello => None,
        }
    }

    pub fn admission_mut(&mut self) -> Option<&mut Admission> {
        match &mut self.phase {
            Phase::Admitted(a) => Some(a),
            Phase::AwaitingHello => None,
        }
    }
}

#[derive(Default)]
pub(crate) struct Room {
    pub locked: bool,
    pub group: Option<GroupState>,
    pub conns: BTreeSet<ConnId>,
    /// Waiting joiners, oldest first.
    pub waiting: Vec<ConnId>,
    /// Leaves whose member is gone and whose removal the relay proposes (each epoch, until a
    /// commit removes them).
    pub departed: BTreeSet<u32>,
    /// Leaves whose connection was lost, kept for a resume until the grace ends.
    pub grace: BTreeMap<u32, Grace>,
    /// Token ids a host removed (by `RemoveParticipant` or by a commit removing their member).
    pub banned_tokens: HashSet<[u8; 16]>,
}

/// A lost member's leaf, kept for a resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grace {
    /// When the relay proposes the leaf's removal.
    pub until: Timestamp,
    /// The connection that was lost.
    pub conn: ConnId,
    /// The leaf's media participant id, taken over by the connection that resumes it.
    pub participant: ConnId,
}

impl Room {
    /// No connection and no leaf in its grace: nothing can happen in the room any more.
    pub fn is_idle(&self) -> bool {
        self.conns.is_empty() && self.grace.is_empty()
    }

    pub fn state(&self, members: usize) -> RoomState {
        RoomState {
            epoch: self.group.as_ref().map(|g| g.epoch()),
            locked: u8::from(self.locked),
            members: u32::try_from(members).unwrap_or(u32::MAX),
            waiting: u32::try_from(self.waiting.len()).unwrap_or(u32::MAX),
        }
    }
}
