//! Per-connection and per-room state.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

use blindcall_proto::{Commit, FrameDecoder, RESUME_CHALLENGE_LEN, Role, RoomState};

use super::mls::{GroupState, StoredKeyPackage};
use super::validate::ValidatedCommit;
use super::{ClaimTicket, ConnId};
use crate::store::CommitRecord;
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
    /// Store mode with homes: the Hello passed every check, and waits for the room's home to
    /// be settled (or the room loaded) before it is admitted or redirected (CL-HOME-3).
    Parked(Box<super::homes::Parked>),
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
            Phase::AwaitingHello | Phase::Parked(_) => None,
        }
    }

    pub fn admission_mut(&mut self) -> Option<&mut Admission> {
        match &mut self.phase {
            Phase::Admitted(a) => Some(a),
            Phase::AwaitingHello | Phase::Parked(_) => None,
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
    /// Store mode: the room's claim in flight and the commits waiting behind it.
    pub claims: RoomClaims,
    /// Store mode with homes: the room is not served yet (its home is being settled or it is
    /// being loaded); `None` once it is served here.
    pub pending: Option<Box<super::homes::HomePending>>,
}

/// A room's commit claims in store mode (spec/cluster.md, CL-DS-1..4).
#[derive(Default)]
pub(crate) struct RoomClaims {
    /// The one validated commit whose epoch is being claimed in the store.
    pub in_flight: Option<InFlight>,
    /// Commits received while a claim was in flight, oldest first; each is validated when its
    /// turn comes, against the state the claim left.
    pub queued: VecDeque<(ConnId, Commit)>,
    /// The epoch of a claim that timed out: it may have landed, so the next claim of that
    /// epoch reads the key first.
    pub unsettled: Option<u64>,
    /// Winners the store sequenced (followed, CL-FOLLOW-1) not merged yet, by epoch: those
    /// after a gap, and any that came while a claim was in flight. At most
    /// [`MAX_FOLLOWED`](super::follow::MAX_FOLLOWED).
    pub followed: BTreeMap<u64, CommitRecord>,
    /// The epoch whose winner this DS asked the shell to read (`Output::Fetch`), until it
    /// comes or the read fails.
    pub fetching: Option<u64>,
    /// The epoch whose followed winner was refused: the room is stuck there on this node, so
    /// later winners are dropped rather than the refused one read again and again.
    pub refused: Option<u64>,
    /// The room's `CreateGroup` whose genesis write is in flight (CL-GEN-1).
    pub genesis: Option<super::genesis::GenesisFlight>,
    /// Whether this DS asked the shell for the room's genesis (`Output::LoadGenesis`) and
    /// awaits the answer.
    pub genesis_loading: bool,
    /// The room's genesis as this node set its group up from it: (GroupInfo bytes, the
    /// creator's leaf, the epoch), for a creator whose same `CreateGroup` reaches this node
    /// too (CL-GEN-1).
    pub genesis_seen: Option<(Vec<u8>, u32, u64)>,
}

/// A validated commit parked until the store answers its claim.
pub(crate) struct InFlight {
    pub ticket: ClaimTicket,
    pub committer: ConnId,
    pub commit: ValidatedCommit,
}

/// A lost member's leaf, kept for a resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grace {
    /// When the relay proposes the leaf's removal.
    pub until: Timestamp,
    /// The connection that was lost.
    pub conn: ConnId,
    /// The leaf's media participant id, taken over by the connection that resumes it (`None`
    /// after a takeover: the resuming connection's own id, CL-HOME-4).
    pub participant: Option<ConnId>,
}

impl Room {
    /// No connection and no leaf in its grace: nothing can happen in the room any more.
    pub fn is_idle(&self) -> bool {
        self.conns.is_empty()
            && self.grace.is_empty()
            && self.pending.as_ref().is_none_or(|p| p.parked.is_empty())
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
