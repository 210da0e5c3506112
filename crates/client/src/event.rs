//! What a running call reports to the application.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use blindcall_group::media_auth::LatencyHistogram;
use blindcall_group::{PeerMessageError, RosterMember, SecurityCode};
use blindcall_media::MediaKind;
use blindcall_proto::{RefusedReason, Role};

use crate::error::{CallWarning, GroupFailure, ProtocolError};

pub use crate::trust::Trust;
/// Sender-authentication counters of frames (the group's, under the SDK's name).
pub use blindcall_group::media_auth::AuthCounters;
/// What gave an impersonation away (the group's reason, under the SDK's name).
pub use blindcall_group::media_auth::ImpersonationReason;

/// Why a frame from a sender was not delivered to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DropCause {
    /// SFrame refused it (tag, replay, unknown key, ...).
    Frame(FrameReason),
    /// The depacketizer gave up on an incomplete frame (lost packets); never opened.
    Incomplete,
    /// An RTP payload that was not a valid SFrame-over-RTP packet.
    MalformedPacket,
    /// Sealed under an epoch before this member joined (expected for a new member).
    BeforeJoin,
    /// Sealed under an epoch this member never received a commit for in time.
    FutureEpochExpired,
    /// Sealed under the next epoch and held for its commit, but pushed out by newer held
    /// frames: the hold queue is bounded in frames and bytes.
    HeldOverflow,
}

/// Why SFrame refused a frame: the group's [`FrameDropReason`], under the SDK's name.
pub use blindcall_group::FrameDropReason as FrameReason;

impl std::fmt::Display for DropCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Frame(r) => write!(f, "{r:?}"),
            Self::Incomplete => f.write_str("Incomplete"),
            Self::MalformedPacket => f.write_str("MalformedPacket"),
            Self::BeforeJoin => f.write_str("BeforeJoin"),
            Self::FutureEpochExpired => f.write_str("FutureEpochExpired"),
            Self::HeldOverflow => f.write_str("HeldOverflow"),
        }
    }
}

/// Decrypt health of one incoming stream source (a remote participant's connection).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SenderHealth {
    /// The relay's id of the remote participant's media connection.
    pub participant: u64,
    /// The sender's identity, once a frame from it authenticated.
    pub identity: Option<Arc<str>>,
    /// Frames opened.
    pub opened: u64,
    /// Frames dropped, by cause.
    pub dropped: BTreeMap<DropCause, u64>,
    /// RTP packets received.
    pub packets: u64,
    /// Frames delivered already verified: a signed manifest of their sender vouched for them.
    pub delivered_verified: u64,
    /// Frames delivered while their sender's manifest was still awaited (play, then verify:
    /// each is verified later or reported as an impersonation).
    pub delivered_pending: u64,
    /// Frames delivered from a sender that does not sign its media (authenticated as some
    /// member of the call only).
    pub delivered_unauthenticated: u64,
    /// Sender authentication of every frame on this participant's streams, as the group's
    /// verifier counted it (verified includes frames verified after delivery; `forged`,
    /// `no_signature`, `wrong_participant`, `foreign` and `blocked` are impersonation).
    pub auth: AuthCounters,
}

impl SenderHealth {
    /// Frames dropped for any cause except [`DropCause::BeforeJoin`].
    pub fn dropped_unexpected(&self) -> u64 {
        self.dropped
            .iter()
            .filter(|(c, _)| **c != DropCause::BeforeJoin)
            .map(|(_, n)| n)
            .sum()
    }

    /// Frames taken for impersonation on this participant's streams (refused, or delivered
    /// as pending and flagged afterwards).
    pub fn impersonated(&self) -> u64 {
        impersonated(&self.auth)
    }
}

/// The impersonation counters of `c`, summed.
pub(crate) fn impersonated(c: &AuthCounters) -> u64 {
    c.forged + c.no_signature + c.wrong_participant + c.foreign + c.blocked
}

/// Why a call ended for this participant.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndReason {
    /// The application called [`crate::Call::leave`].
    Left,
    /// A commit removed this member.
    Removed,
    /// The host denied the join request (or removed the participant from the waiting room).
    Denied,
    /// The relay refused or expelled the connection.
    Refused(RefusedReason),
    /// The control connection broke.
    ConnectionLost,
    /// The relay broke the protocol.
    ProtocolError(ProtocolError),
    /// The relay sequenced a commit for this member's epoch that this member cannot process:
    /// the others moved on without it. It stops rather than commit on a branch of its own
    /// (see [`Event::Diverged`]).
    Diverged {
        /// The epoch this member was in.
        epoch: u64,
        /// Why the winning commit was refused.
        reason: GroupFailure,
    },
    /// After a lost connection, the relay refused to let this member resume (e.g. it was
    /// removed meanwhile, or was away longer than the relay keeps the commits it missed).
    /// Joining again goes through the waiting room.
    ResumeRefused(blindcall_proto::ResumeRefusedReason),
}

/// Why a keyframe is requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyframeCause {
    /// Own media switched to the keys of `epoch`: receivers that joined in it can only start
    /// decoding at a keyframe. Until one is published with
    /// [`crate::Call::publish_video`], delta frames are refused
    /// ([`crate::CallError::KeyframeRequired`]). One request per switch.
    SendEpochSwitched {
        /// The new send epoch.
        epoch: u64,
    },
    /// A receiver asked for one through the relay (RTCP PLI), e.g. after selecting this
    /// participant's video.
    Receiver,
}

/// A member as shown to the application. Display names are self-asserted and need not be
/// unique: a member is its leaf and identity key; `trust` says what this device knows of that
/// name with that key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Display identity (from its credential; free of control characters).
    pub identity: Arc<str>,
    /// MLS leaf index.
    pub leaf: u32,
    /// Host role.
    pub host: bool,
    /// Its identity (signature) key.
    pub identity_key: Arc<[u8]>,
    /// What the local trust store knows of this name with this key.
    pub trust: Trust,
    /// Whether it signs its media (its frames are authenticated as its own).
    pub signs_media: bool,
}

impl Member {
    /// The SDK's view of a roster member, assessed by the trust store.
    pub fn from_roster(m: &RosterMember, trust: Trust) -> Self {
        Self {
            identity: Arc::clone(&m.identity),
            leaf: m.leaf,
            host: m.host,
            identity_key: Arc::from(m.signature_key.as_slice()),
            trust,
            signs_media: m.signs_media,
        }
    }

    /// A short fingerprint of its identity key, to show next to the name.
    pub fn fingerprint(&self) -> String {
        crate::identity::fingerprint(&self.identity_key)
    }
}

/// Whether a join request proved the call's invite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InviteCheck {
    /// The call has no invite: decide on the name and key (and `trust`).
    NotRequired,
    /// The request carries a valid proof of the call's invite.
    Valid,
}

/// Why this client refused a join request by itself (it was never offered for approval).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JoinRefusal {
    /// The call requires an invite and the request carries no proof.
    MissingProof,
    /// The request's proof is not valid for the call's invite and this KeyPackage: made up
    /// (e.g. by the relay) or taken from another request.
    InvalidProof,
    /// The call requires an invite and this device does not hold it (ask the host who made
    /// the invite link).
    InviteNotHeld,
    /// The KeyPackage is not valid for this call (signature, suite, credential).
    InvalidKeyPackage,
    /// Someone with this identity key is already in the call.
    AlreadyInCall,
}

/// How far the sender of a delivered frame is authenticated ([`crate::IncomingFrame::auth`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SenderAuth {
    /// A signed manifest of the sender covers this frame on this stream: it is the sender's.
    Verified,
    /// The sender signs its media and its manifest for this frame has not arrived yet: the
    /// frame is delivered at once (play, then verify); an impersonation is reported within
    /// the signature bound ([`Event::Impersonation`]) and stops the stream.
    Pending,
    /// The sender does not sign its media: the frame came from some member of the call, not
    /// necessarily from the one its key names.
    Unauthenticated,
}

/// Quantiles of a latency distribution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    /// Samples.
    pub samples: u64,
    /// Median (`None` without samples).
    pub p50: Option<Duration>,
    /// 99th percentile (`None` without samples).
    pub p99: Option<Duration>,
    /// Largest sample.
    pub max: Duration,
}

impl LatencySummary {
    pub(crate) fn of(h: &LatencyHistogram) -> Self {
        Self {
            samples: h.count(),
            p50: h.quantile(0.5),
            p99: h.quantile(0.99),
            max: h.max(),
        }
    }
}

/// Why a message from another member (`PeerMessage`) was refused; it changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum PeerRefusal {
    /// Undecodable.
    Malformed,
    /// For another group.
    WrongGroup,
    /// Not signed by the member it names (e.g. made up by the relay).
    BadSignature,
    /// For an epoch too old or too far ahead to be checked (routine around epoch changes).
    Stale,
    /// A signed media manifest that failed its checks.
    Manifest,
    /// Arrived while this participant was not a member.
    NotAMember,
    /// Another refusal of the group layer.
    Other,
}

impl From<&PeerMessageError> for PeerRefusal {
    fn from(e: &PeerMessageError) -> Self {
        match e {
            PeerMessageError::Malformed => Self::Malformed,
            PeerMessageError::WrongGroup => Self::WrongGroup,
            PeerMessageError::BadSignature => Self::BadSignature,
            PeerMessageError::Stale { .. } => Self::Stale,
            PeerMessageError::Manifest => Self::Manifest,
            PeerMessageError::NotAMember => Self::NotAMember,
            _ => Self::Other,
        }
    }
}

/// Something the application should show or act on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The relay admitted the connection with `role`.
    Admitted {
        /// Granted role.
        role: Role,
    },
    /// Waiting in the waiting room for a host's approval.
    Waiting,
    /// This participant is a member of the call's group.
    Joined {
        /// First epoch held.
        epoch: u64,
        /// Members at that epoch.
        members: Vec<Member>,
    },
    /// The media connection to the relay is up and negotiated.
    MediaConnected,
    /// Someone asks to join (hosts only): answer with [`crate::Call::approve`] or
    /// [`crate::Call::deny`]. Everything here comes from the joiner's KeyPackage (checked),
    /// never from what the relay says about it.
    JoinRequested {
        /// Id to answer with (approving adds exactly this KeyPackage).
        request: u64,
        /// The member it would become (leaf 0 until added).
        joiner: Member,
        /// Whether it proved the call's invite.
        invite: InviteCheck,
    },
    /// This client refused a join request by itself; it was not offered for approval, and the
    /// relay was asked to turn the joiner away.
    JoinRefused {
        /// The request.
        request: u64,
        /// The display identity its KeyPackage names, if it was readable.
        identity: Option<String>,
        /// Why.
        reason: JoinRefusal,
    },
    /// Members joined in `epoch`.
    MembersJoined {
        /// Epoch.
        epoch: u64,
        /// Who.
        members: Vec<Member>,
    },
    /// Members left or were removed in `epoch`.
    MembersLeft {
        /// Epoch.
        epoch: u64,
        /// Who.
        members: Vec<Member>,
    },
    /// The group moved to `epoch`; new receive keys are installed. Show `code`.
    EpochChanged {
        /// Epoch.
        epoch: u64,
        /// Security code (same on every member's screen).
        code: SecurityCode,
    },
    /// Own media is now sealed under `epoch`; a [`Event::KeyframeRequested`] follows.
    SendEpochActivated {
        /// Epoch.
        epoch: u64,
    },
    /// The application should make its next video frame a keyframe (publishers of real
    /// codec frames pass it to their encoder).
    KeyframeRequested {
        /// Why.
        cause: KeyframeCause,
    },
    /// Per-sender decrypt health, every stats interval while media flows.
    DecryptHealth(Vec<SenderHealth>),
    /// The relay reports the room locked (new joiners refused) or unlocked.
    RoomLocked {
        /// Whether it is locked now.
        locked: bool,
    },
    /// A non-fatal problem.
    Warning(CallWarning),
    /// The call is over for this participant; no further events follow.
    CallEnded {
        /// Why.
        reason: EndReason,
    },
    /// Every other member confirmed `epoch` with the same keys: nobody is on another branch
    /// of the group (the relay did not split the call).
    EpochConsistent {
        /// Epoch.
        epoch: u64,
    },
    /// `member` confirmed `epoch` with different keys: the relay confirmed two different
    /// commits for one epoch and split the call in two. Media between the two sides no longer
    /// opens. Show it prominently: the relay is misbehaving (the call is not repaired).
    GroupSplit {
        /// Epoch.
        epoch: u64,
        /// A member on the other side.
        member: Member,
    },
    /// These members did not confirm `epoch` in time: slow, cut off, or on the other side of
    /// a split whose confirmations the relay withholds.
    EpochUnconfirmed {
        /// Epoch.
        epoch: u64,
        /// Who did not confirm.
        members: Vec<Member>,
    },
    /// Frames on `participant`'s `kind` stream claimed to come from `claimed` but did not
    /// (another member, or the relay, spoke in its name). That stream no longer plays as
    /// `claimed`; frames of it already delivered as [`SenderAuth::Pending`] were not its.
    /// The claimed member's own streams are not affected.
    Impersonation {
        /// The member whose identity was claimed (`None` if no longer in the call).
        claimed: Option<Member>,
        /// The relay's id of the stream's participant.
        participant: u64,
        /// The stream's media kind.
        kind: MediaKind,
        /// What gave it away.
        reason: ImpersonationReason,
        /// Time from the first offending frame to the detection.
        detected_after: Duration,
    },
    /// `member` does not sign its media (e.g. another MLS implementation): its frames are
    /// delivered as [`SenderAuth::Unauthenticated`]. Show it next to the member.
    SenderUnauthenticated {
        /// Epoch in which this was first seen.
        epoch: u64,
        /// Its leaf.
        leaf: u32,
        /// The member (`None` if no longer in the call).
        member: Option<Member>,
    },
    /// A stream blocked for missing signatures is unblocked: the member's signed manifests
    /// were only late and vouch for it.
    StreamUnblocked {
        /// The member (`None` if no longer in the call).
        member: Option<Member>,
        /// The relay's id of the stream's participant.
        participant: u64,
        /// The stream's media kind.
        kind: MediaKind,
    },
    /// The relay proposed removing **this** participant from the call in `epoch` (it does so
    /// for a connection it considers gone, and it may propose anyone's removal). Another
    /// member commits it, which ends this call with [`EndReason::Removed`]. Show: "the relay
    /// asked to remove you from the call"; if the connection was fine, the relay is acting
    /// against this participant. This member does not commit its own removal.
    OwnRemovalProposed {
        /// Epoch of the proposal.
        epoch: u64,
    },
    /// The relay sequenced a commit for `epoch` that this member cannot process: the other
    /// members moved on without it. It makes no further commits and the call ends
    /// ([`EndReason::Diverged`]); show that the call broke and why.
    Diverged {
        /// The epoch this member was in.
        epoch: u64,
        /// Why the winning commit was refused.
        reason: GroupFailure,
    },
    /// The connection to the relay was lost; attempt `attempt` to reconnect follows. The call
    /// goes on meanwhile (published frames are dropped until [`Event::Reconnected`]).
    Reconnecting {
        /// 1 for the first attempt.
        attempt: u32,
        /// The relay this attempt goes to: an index into [`crate::JoinOptions::relays`]
        /// (always 0 with a single relay). Attempts rotate through the list, the relay that
        /// was lost coming last in each round. After [`Event::Redirected`], the listed relay
        /// that redirected (the attempt goes to the redirect's address).
        relay: usize,
    },
    /// A relay cluster node sent this participant to the node at `relay` (`host:port`):
    /// the room is served there. The next connection goes to that address, with the same
    /// TLS server name and trust roots (a redirect never widens whom the client trusts);
    /// joining continues there, or a member resumes there (SDK-REDIR-1, SDK-REDIR-2). Not a
    /// failure: the call goes on.
    Redirected {
        /// The address of the node the room is served by.
        relay: String,
    },
    /// The membership was resumed on a new connection after `away`: media opens again (a
    /// keyframe is requested), no host approval, no new leaf, no rekey.
    Reconnected {
        /// Time between losing the connection and resuming.
        away: std::time::Duration,
    },
    /// The relay refused to let this member resume; the call ends next
    /// ([`EndReason::ResumeRefused`]).
    ResumeRefused {
        /// Why.
        reason: blindcall_proto::ResumeRefusedReason,
    },
}

/// A snapshot of a call's counters, refreshed every stats interval.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Current epoch (`None` before joining).
    pub epoch: Option<u64>,
    /// Current security code.
    pub code: Option<String>,
    /// Own send epoch.
    pub send_epoch: Option<u64>,
    /// Frames sealed and sent, audio and video.
    pub frames_sent: u64,
    /// Frames opened from everyone.
    pub frames_opened: u64,
    /// Frames dropped from everyone, by cause.
    pub dropped: BTreeMap<DropCause, u64>,
    /// Per-sender health.
    pub senders: Vec<SenderHealth>,
    /// RTP packets sent.
    pub packets_sent: u64,
    /// RTP packets received.
    pub packets_received: u64,
    /// Media events the transport dropped because this call did not read them fast enough.
    pub transport_events_dropped: u64,
    /// Members in the current epoch.
    pub members: usize,
    /// Whether the call ended.
    pub ended: bool,
    /// Detection latency of impersonations (first offending frame to report).
    pub detection_latency: LatencySummary,
    /// Signature wait: time from delivering a frame to the manifest that verified it (0 when
    /// the manifest came first).
    pub signature_wait: LatencySummary,
    /// Own signed media manifests sent.
    pub manifests_sent: u64,
    /// Messages sent to the other members (`PeerBroadcast`: epoch confirmations, manifests).
    pub peer_messages_sent: u64,
    /// Messages from other members accepted.
    pub peer_messages_received: u64,
    /// Messages from other members refused, by reason.
    pub peer_messages_refused: BTreeMap<PeerRefusal, u64>,
    /// Frames of the next epoch currently held for its commit.
    pub held_frames: usize,
    /// Times the membership was resumed after a lost connection.
    pub reconnects: u64,
    /// Total time away (lost connection to resumed).
    pub time_away: std::time::Duration,
    /// Frames the application published while away (dropped, never sealed).
    pub frames_dropped_away: u64,
    /// The relay of the current (or last attempted) control connection: an index into
    /// [`crate::JoinOptions::relays`] (0 with a single relay).
    pub relay: usize,
    /// That relay's address, when [`crate::JoinOptions::relays`] lists it.
    pub relay_addr: Option<std::net::SocketAddr>,
    /// The address (`host:port`) the current (or last attempted) connection went to when a
    /// cluster node redirected there ([`Event::Redirected`]); `None` when it went to the
    /// listed relay `relay` itself.
    pub relay_redirect: Option<String>,
}
