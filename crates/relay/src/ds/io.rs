//! The shell-facing types: configuration, inputs, outputs, events.

use std::time::Duration;

use blindcall_proto::{
    CommitRejectReason, DEFAULT_MAX_FRAME_LEN, ErrorCode, RefusedReason, ResumeRefusedReason, Role,
};

use super::{
    ChallengeSeed, ClaimRequest, DsFault, FetchRequest, GenesisRequest, RelayIdentities, RoomId,
};
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

/// Default number of commits a room holds behind its claim in flight (store mode).
pub const DEFAULT_MAX_QUEUED_COMMITS: usize = 16;

/// How the DS sequences a room's commits (spec/cluster.md, CL-DS-1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StoreMode {
    /// This DS alone decides each epoch's winner while handling the commit's frame (one relay
    /// process; the default).
    #[default]
    Local,
    /// A room store shared by several relay nodes decides: a validated commit is claimed
    /// through [`Output::Claim`] and merged only once [`Ds::handle_claim`](super::Ds::handle_claim)
    /// says it won.
    Shared,
}

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
    /// Who decides each epoch's commit: this DS alone, or a shared room store.
    pub store_mode: StoreMode,
    /// In [`StoreMode::Shared`], how many commits of one room may wait behind its claim in
    /// flight; one more is answered `CommitRejected(STORE_UNAVAILABLE)`.
    pub max_queued_commits: usize,
    /// In [`StoreMode::Shared`]: rooms have a home node that serves them entirely; a node that
    /// is not a room's home redirects its connections there (spec/cluster.md, CL-HOME-*).
    /// `None` (the default) serves every room here.
    pub homes: Option<HomesConfig>,
}

/// Default lease of a node: a node with no new heartbeat for this long is dead (CL-NODE-5).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(3);

/// This node in a cluster with room homes (spec/cluster.md, CL-HOME-*, CL-NODE-4..6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomesConfig {
    /// This node's id (as in its heartbeat key and the homes it holds).
    pub node_id: String,
    /// The address clients reach this node at, `host:port` (sent in redirects to it).
    pub addr: String,
    /// A node with no new heartbeat received for this long is dead: its rooms are taken over.
    pub lease: Duration,
    /// How often nodes beat; a node with no new heartbeat for 1.5 intervals is suspect.
    pub heartbeat: Duration,
    /// On shutdown, hand the rooms served here to other nodes first (CL-DRAIN-1).
    pub drain: bool,
}

impl HomesConfig {
    /// The default lease (3 s) and a heartbeat of a third of it.
    pub fn new(node_id: impl Into<String>, addr: impl Into<String>) -> Self {
        Self {
            node_id: node_id.into(),
            addr: addr.into(),
            lease: DEFAULT_LEASE,
            heartbeat: DEFAULT_LEASE / 3,
            drain: false,
        }
    }

    /// How long a connection may wait parked for its room's home before it is refused
    /// `STORE_UNAVAILABLE`: the lease plus 5 s.
    pub fn park_timeout(&self) -> Duration {
        self.lease.saturating_add(Duration::from_secs(5))
    }
}

impl DsConfig {
    /// Defaults: 1 MiB frames (4 KiB before Hello), 10 s Hello, 5 min waiting room, 64
    /// commits kept, 20 s resume grace, 128-byte names, 16 errors, 64 messages burst and 20
    /// per second, no idle timeout, 16 KiB KeyPackages, 128 connections per token, waiting
    /// room of 128 (100 per token), peer messages of 16 KiB at 10 per second with a burst of
    /// 40, local sequencing ([`StoreMode::Local`]) and 16 commits queued per room in store mode.
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
            store_mode: StoreMode::Local,
            max_queued_commits: DEFAULT_MAX_QUEUED_COMMITS,
            homes: None,
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
    /// Told to go to the room's home node (`Redirect`, CL-HOME-2).
    Redirected,
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
    /// Store mode only: claim the epoch in the room store for a validated commit, then
    /// answer with [`Ds::handle_claim`](super::Ds::handle_claim) under the same ticket. The
    /// commit is sent to no one before the answer.
    Claim(ClaimRequest),
    /// Store mode only: read the winner of (room, epoch) from the store and hand it to
    /// [`Ds::handle_winner`](super::Ds::handle_winner), or report
    /// [`Ds::handle_fetch_failed`](super::Ds::handle_fetch_failed) when there is none or the
    /// read fails (a gap in the winners followed, CL-FOLLOW-1).
    Fetch(FetchRequest),
    /// Store mode only: write the room's genesis, create-only, then answer with
    /// [`Ds::handle_genesis`](super::Ds::handle_genesis) under the same ticket (CL-GEN-1).
    Genesis(GenesisRequest),
    /// Store mode only: read the room's genesis and hand it (or `None`) to
    /// [`Ds::handle_genesis_loaded`](super::Ds::handle_genesis_loaded) (CL-GEN-2).
    LoadGenesis(RoomId),
    /// Store mode only: write the ban to the room store, create-only (CL-BAN-1); every node's
    /// watch of the ban entries hands it to [`Ds::handle_ban`](super::Ds::handle_ban).
    Ban(super::BanRequest),
    /// Store mode only: write the lock change to the room store, create-only (CL-LOCK-1);
    /// every node's watch of the lock entries hands it to
    /// [`Ds::handle_lock`](super::Ds::handle_lock), and a number already taken is answered
    /// with its holder the same way.
    Lock(super::LockRequest),
    /// Store mode only: put (or, with no record, delete) this node's waiting joiner in the room
    /// store for the other nodes (CL-WAIT-1); nothing is answered.
    Waiting(super::WaitingWrite),
    /// Store mode with homes: claim a term of a room's home for this node, create-only, then
    /// answer with [`Ds::handle_home_claim`](super::Ds::handle_home_claim) (CL-HOME-3).
    ClaimHome(super::HomeClaimRequest),
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
    /// Store mode: a room's group was set up from the genesis another node wrote (CL-GEN-2).
    GenesisLoaded {
        /// Room.
        room: RoomId,
        /// The group's epoch at creation.
        epoch: u64,
    },
    /// Store mode: a room's stored genesis failed the bootstrap checks; the room stays without
    /// a group on this node (CL-GEN-2).
    GenesisRefused {
        /// Room.
        room: RoomId,
        /// Why.
        reason: String,
    },
    /// Store mode with homes: a connection was sent to its room's home node (CL-HOME-2).
    Redirected {
        /// Connection.
        conn: ConnId,
        /// Room.
        room: RoomId,
        /// The home's address.
        to: String,
    },
    /// Store mode with homes: this node holds a term of the room's home (CL-HOME-3).
    HomeClaimed {
        /// Room.
        room: RoomId,
        /// The term.
        term: u64,
    },
    /// Store mode with homes: another node holds a higher term of a room served here; its
    /// connections were redirected there and the room forgotten (CL-HOME-5).
    HomeLost {
        /// Room.
        room: RoomId,
        /// The new term.
        term: u64,
        /// The new home's node id.
        to: String,
    },
    /// Store mode with homes, drain: a room served here was handed to another node, and its
    /// connections redirected there (CL-DRAIN-1).
    HandedOver {
        /// Room.
        room: RoomId,
        /// The new term.
        term: u64,
        /// The new home's node id.
        to: String,
    },
    /// Store mode with homes: a room was loaded from the store on becoming its home; its
    /// `graced` members may resume here (CL-HOME-4).
    RoomLoaded {
        /// Room.
        room: RoomId,
        /// The room's epoch (`None`: no group yet).
        epoch: Option<u64>,
        /// Members put in their resume grace.
        graced: usize,
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
    /// Store mode: another node's commit won the epoch; this DS validated and merged it and
    /// broadcast it to the room's members here.
    WinnerApplied {
        /// Room.
        room: RoomId,
        /// The new epoch.
        epoch: u64,
    },
    /// Store mode: a ban another node wrote reached this node (CL-BAN-1): the token is refused
    /// here from now on, and its `closed` connections in the room here were refused.
    BanLearned {
        /// Room.
        room: RoomId,
        /// The banned token's id.
        token_id: [u8; 16],
        /// How many of the token's connections here were closed.
        closed: usize,
    },
    /// Store mode: the epoch's winner read from the store does not validate against this
    /// node's state of the room; the room stays at `epoch` here (every later claim of it
    /// loses to the same winner).
    WinnerRefused {
        /// Room.
        room: RoomId,
        /// The epoch the winner was sequenced in.
        epoch: u64,
        /// Why it was refused.
        reason: CommitRejectReason,
    },
    /// Store mode: a room being taken over was set up from a winner's GroupInfo, at `epoch`,
    /// because the winner's commit could not be processed here (CL-HOME-9).
    RoomRestored {
        /// Room.
        room: RoomId,
        /// The epoch it is at now.
        epoch: u64,
    },
    /// Store mode: a claim failed (store unreachable, no answer in time, or a corrupt entry);
    /// the committer was answered `STORE_UNAVAILABLE` and nothing changed.
    ClaimFailed {
        /// Room.
        room: RoomId,
        /// Committer.
        conn: ConnId,
        /// The epoch claimed.
        epoch: u64,
        /// Whether the claim's outcome is unknown (it timed out): the next claim of the epoch
        /// reads the key first.
        unsettled: bool,
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
