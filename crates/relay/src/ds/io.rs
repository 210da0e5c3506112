//! The shell-facing types: configuration, inputs, outputs, events.

use std::time::Duration;

use blindcall_proto::{
    CommitRejectReason, DEFAULT_MAX_FRAME_LEN, ErrorCode, RefusedReason, ResumeRefusedReason, Role,
};

use super::{ChallengeSeed, DsFault, RelayIdentities, RoomId};
use crate::time::Timestamp;
use crate::token::TokenSecret;

/// Default frame limit before a connection is admitted: 4 KiB.
pub const DEFAULT_MAX_FRAME_LEN_BEFORE_HELLO: u32 = 4 * 1024;
/// Default KeyPackage size limit: 16 KiB.
pub const DEFAULT_MAX_KEY_PACKAGE_LEN: usize = 16 * 1024;
/// Default `PeerBroadcast` payload limit: 16 KiB.
pub const DEFAULT_MAX_PEER_PAYLOAD: usize = 16 * 1024;
/// Default resume grace: how long a lost member's leaf is kept before its removal is proposed.
pub const DEFAULT_RESUME_GRACE: Duration = Duration::from_secs(20);
/// Default length of each room's commit log (sequenced commits kept for resumes and late
/// committers).
pub const DEFAULT_COMMIT_HISTORY: usize = 64;

/// The shell's id for a connection (unique while the connection lives).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Configuration of a [`Ds`].
#[derive(Debug)]
pub struct DsConfig {
    /// Verifies capability tokens.
    pub token_secret: TokenSecret,
    /// The relay's MLS external-sender identities (one per signature scheme).
    pub relay_identities: RelayIdentities,
    /// The secret seed of the resume challenges sent in `HelloAck` (from the OS in the relay,
    /// fixed in tests).
    pub challenge_seed: ChallengeSeed,
    /// Largest frame accepted or sent (length prefix excluded).
    pub max_frame_len: u32,
    /// A connection must send Hello within this time.
    pub hello_timeout: Duration,
    /// A joiner not added within this time is refused.
    pub waiting_room_timeout: Duration,
    /// How many sequenced commits each room keeps: a resuming member gets those it missed if
    /// they are all still kept; a late committer gets the epoch's winner.
    pub commit_history: usize,
    /// How long a member whose connection was lost keeps its leaf, so it can resume, before
    /// the relay proposes its removal; zero proposes it at once.
    pub resume_grace: Duration,
    /// Longest display name, in bytes.
    pub max_display_name_len: usize,
    /// A connection is closed after this many error messages.
    pub max_errors_per_connection: u32,
    /// Messages a connection may send in a burst.
    pub rate_burst: u32,
    /// Sustained messages per second a connection may send.
    pub rate_per_second: u32,
    /// A connection that sends no byte for this long is refused with `IDLE_TIMEOUT`;
    /// `None` disables the check. Clients keep a quiet connection alive with `Ping`.
    pub idle_timeout: Option<Duration>,
    /// Largest frame accepted before the connection is admitted (a Hello needs well under
    /// 1 KiB), so an unauthenticated peer cannot make the relay buffer a large frame.
    pub max_frame_len_before_hello: u32,
    /// Largest KeyPackage message stored, in bytes.
    pub max_key_package_len: usize,
    /// Most connections one token may hold at once in its room.
    pub max_connections_per_token: usize,
    /// Most joiners in one room's waiting room.
    pub max_waiting_per_room: usize,
    /// Most joiners of one token in its room's waiting room.
    pub max_waiting_per_token: usize,
    /// `PeerBroadcast` messages a member may send in a burst.
    pub peer_rate_burst: u32,
    /// Sustained `PeerBroadcast` messages per second per member.
    pub peer_rate_per_second: u32,
    /// Largest `PeerBroadcast` payload, in bytes.
    pub max_peer_payload: usize,
}

impl DsConfig {
    /// Defaults: 1 MiB frames (4 KiB before Hello), 10 s Hello, 5 min waiting room, 64
    /// commits kept, 20 s resume grace, 128-byte names, 16 errors, 64 messages burst and 20
    /// per second, no idle timeout, 16 KiB KeyPackages, 128 connections per token, waiting
    /// room of 128 (100 per token), peer messages of 16 KiB at 10 per second with a burst of
    /// 40.
    pub fn new(
        token_secret: TokenSecret,
        relay_identities: RelayIdentities,
        challenge_seed: ChallengeSeed,
    ) -> Self {
        Self {
            token_secret,
            relay_identities,
            challenge_seed,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            hello_timeout: Duration::from_secs(10),
            waiting_room_timeout: Duration::from_secs(300),
            commit_history: DEFAULT_COMMIT_HISTORY,
            resume_grace: DEFAULT_RESUME_GRACE,
            max_display_name_len: 128,
            max_errors_per_connection: 16,
            rate_burst: 64,
            rate_per_second: 20,
            idle_timeout: None,
            max_frame_len_before_hello: DEFAULT_MAX_FRAME_LEN_BEFORE_HELLO,
            max_key_package_len: DEFAULT_MAX_KEY_PACKAGE_LEN,
            max_connections_per_token: 128,
            max_waiting_per_room: 128,
            max_waiting_per_token: 100,
            peer_rate_burst: 40,
            peer_rate_per_second: 10,
            max_peer_payload: DEFAULT_MAX_PEER_PAYLOAD,
        }
    }
}

/// Something that happened on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input<'a> {
    /// A transport connection was established.
    Opened(ConnId),
    /// Stream bytes arrived (any chunking).
    Received(ConnId, &'a [u8]),
    /// The transport connection ended without a goodbye (reset, end of stream without TLS
    /// close_notify, read or write failure): a member's leaf is kept for the resume grace.
    Closed(ConnId),
    /// The peer ended the connection deliberately (TLS close_notify): a member has left, and
    /// its removal is proposed at once.
    Goodbye(ConnId),
}

/// Why the DS closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Not admitted, or no longer admitted.
    Refused(RefusedReason),
    /// The peer broke the protocol.
    Protocol(ErrorCode),
}

/// What the DS wants the shell to do or know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Write a whole frame to the connection.
    Send {
        /// Destination.
        conn: ConnId,
        /// A length-prefixed frame.
        bytes: Vec<u8>,
    },
    /// Close the connection after writing what was queued for it. The DS has forgotten it.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// A member's media-signaling message for the relay's media forwarder (the shell routes it).
    MediaSignal {
        /// The member's connection (answer with [`Ds::send_media_signal`](super::Ds::send_media_signal)).
        conn: ConnId,
        /// The member's room.
        room: RoomId,
        /// The member's leaf in the room's MLS group.
        leaf: u32,
        /// The forwarder's id for the member's streams: the connection it joined on, the same
        /// across resumes (DS-RES-12).
        participant: ConnId,
        /// The opaque signaling payload.
        payload: Vec<u8>,
    },
    /// For logs and metrics.
    Event(Event),
}

/// Notable things for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A connection was admitted.
    Admitted {
        /// Connection.
        conn: ConnId,
        /// Room.
        room: RoomId,
        /// Granted role.
        role: Role,
        /// The capability token's id (the only part of a token that may be logged).
        token_id: [u8; 16],
    },
    /// A connection was refused or expelled.
    Refused {
        /// Connection.
        conn: ConnId,
        /// Reason.
        reason: RefusedReason,
    },
    /// An error message was sent.
    ProtocolError {
        /// Connection.
        conn: ConnId,
        /// Code.
        code: ErrorCode,
    },
    /// A room's group was bootstrapped.
    GroupCreated {
        /// Room.
        room: RoomId,
        /// Epoch.
        epoch: u64,
    },
    /// A joiner entered the waiting room.
    JoinerWaiting {
        /// Room.
        room: RoomId,
        /// Joiner.
        conn: ConnId,
    },
    /// A commit was sequenced.
    CommitAccepted {
        /// Room.
        room: RoomId,
        /// Committer.
        conn: ConnId,
        /// The new epoch.
        epoch: u64,
    },
    /// A commit was refused.
    CommitRejected {
        /// Room.
        room: RoomId,
        /// Committer.
        conn: ConnId,
        /// Reason.
        reason: CommitRejectReason,
    },
    /// A joiner became a member (its Welcome was routed).
    MemberJoined {
        /// Room.
        room: RoomId,
        /// Connection.
        conn: ConnId,
        /// Its leaf.
        leaf: u32,
    },
    /// A connected member was removed by a commit; the relay closes its connection.
    MemberRemoved {
        /// Room.
        room: RoomId,
        /// Connection.
        conn: ConnId,
        /// Its former leaf.
        leaf: u32,
        /// Whether another member removed it (its token is then banned in the room).
        banned: bool,
    },
    /// A member's own proposal was queued and sent to the other members.
    MemberProposed {
        /// Room.
        room: RoomId,
        /// The proposer.
        conn: ConnId,
        /// Its leaf (the one it proposes to remove).
        leaf: u32,
        /// Epoch of the proposal.
        epoch: u64,
    },
    /// A member's connection ended.
    MemberLeft {
        /// Room.
        room: RoomId,
        /// Connection.
        conn: ConnId,
        /// Its leaf.
        leaf: u32,
    },
    /// A member's connection was lost: its leaf is kept until `until` for a resume.
    GraceStarted {
        /// Room.
        room: RoomId,
        /// The lost connection.
        conn: ConnId,
        /// Its leaf.
        leaf: u32,
        /// When the relay proposes the leaf's removal unless the member resumed.
        until: Timestamp,
    },
    /// A lost member did not resume within the grace; its removal is proposed.
    GraceExpired {
        /// Room.
        room: RoomId,
        /// Leaf.
        leaf: u32,
    },
    /// A member resumed its leaf on a new connection.
    MemberResumed {
        /// Room.
        room: RoomId,
        /// The new connection.
        conn: ConnId,
        /// The leaf.
        leaf: u32,
        /// Its media participant id (unchanged by the resume).
        participant: ConnId,
        /// The epoch the member was at.
        from_epoch: u64,
        /// Commits sent to it to catch up.
        replayed: u64,
    },
    /// A resume was refused; the connection stays in the lobby.
    ResumeRefused {
        /// Room.
        room: RoomId,
        /// Connection.
        conn: ConnId,
        /// The leaf it claimed.
        leaf: u32,
        /// Reason.
        reason: ResumeRefusedReason,
    },
    /// The relay proposed a leaf's removal as external sender.
    RemoveProposed {
        /// Room.
        room: RoomId,
        /// Leaf.
        leaf: u32,
        /// Epoch of the proposal.
        epoch: u64,
    },
    /// The host locked or unlocked the room.
    RoomLocked {
        /// Room.
        room: RoomId,
        /// New state.
        locked: bool,
    },
    /// The last connection of a room left; its state is gone.
    RoomClosed {
        /// Room.
        room: RoomId,
    },
    /// The DS hit an internal fault; the room is unchanged.
    InternalFault {
        /// Connection being served.
        conn: ConnId,
        /// What failed.
        fault: DsFault,
    },
}
