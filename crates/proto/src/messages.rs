//! Message bodies and the [`ControlMessage`] envelope.

use std::io::Read;

use tls_codec::{Deserialize, Serialize, Size, TlsDeserialize, TlsSerialize, TlsSize, VLBytes};

use crate::{
    CommitRejectReason, DecodeError, EncodeError, ErrorCode, MessageType, ProtocolVersion,
    RefusedReason, ResumeRefusedReason, Role, frame::encode_frame,
};

/// Client → relay, first message: which room, the capability token, a display name.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct Hello {
    /// The room the client asks to enter.
    pub room_id: VLBytes,
    /// The capability token in its text form; empty when the client has none.
    pub token: VLBytes,
    /// UTF-8 display name shown in the waiting room.
    pub display_name: VLBytes,
}

/// A room's public state as the relay sees it.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct RoomState {
    /// The MLS group's current epoch, absent before the group is created.
    pub epoch: Option<u64>,
    /// 1 when the host locked the room against new joiners, else 0.
    pub locked: u8,
    /// Number of connections that are group members.
    pub members: u32,
    /// Number of joiners in the waiting room.
    pub waiting: u32,
}

/// Relay → client: the connection is admitted.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct HelloAck {
    /// The relay's id for this connection, used in waiting-room entries and host commands.
    pub conn_id: u64,
    /// The role the token granted.
    pub role: Role,
    /// The room's state.
    pub room: RoomState,
    /// The relay's MLS external-sender identities, one per signature scheme it supports; a
    /// group creator lists the one of its ciphersuite's scheme.
    pub external_senders: Vec<RelaySender>,
    /// A fresh value, never repeated, that a member signs to resume its membership on this
    /// connection ([`Resume`]).
    pub challenge: [u8; RESUME_CHALLENGE_LEN],
}

/// The length of [`HelloAck::challenge`], in bytes.
pub const RESUME_CHALLENGE_LEN: usize = 32;

/// The longest [`Resume::signature`], in bytes (an MLS signature of any ciphersuite fits).
pub const MAX_RESUME_SIGNATURE_LEN: usize = 255;

/// Client → relay, in the lobby instead of publishing a KeyPackage: resume membership at
/// `leaf`, proven by the leaf's MLS signature key over the connection's challenge
/// (`blindcall_policy::resume_sign_content`).
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct Resume {
    /// The member's leaf index in the group.
    pub leaf: u32,
    /// The last epoch the member merged.
    pub epoch: u64,
    /// `SignWithLabel(leaf signature key, "blindcall resume v1", content)` (at most
    /// [`MAX_RESUME_SIGNATURE_LEN`] bytes).
    pub signature: VLBytes,
    /// The relay's id of the member's media streams so far (0: none): a cluster node that
    /// takes the room over keeps it when no one else in the room has it, so receivers' stream
    /// state and the member's signed manifests go on naming it. Not signed: it is only a
    /// label the relay assigns anyway.
    pub participant: u64,
}

/// Relay → client: the resume is accepted. Every commit the member missed, the epoch's pending
/// proposals and the waiting room came before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct ResumeAccepted {
    /// The group's current epoch (the member's after merging the commits sent before).
    pub epoch: u64,
    /// The relay's id of the member's media streams from now on: the one it had (a resume on
    /// the same relay keeps it), or a new one on a cluster node that took the room over. The
    /// member names it in its signed manifests.
    pub participant: u64,
}

/// Relay → client: the resume is refused; the connection stays admitted, in the lobby.
#[derive(Debug, Clone, Copy, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct ResumeRefused {
    /// Why.
    pub reason: ResumeRefusedReason,
}

/// The longest relay address a [`Redirect`] may carry, in bytes.
pub const MAX_REDIRECT_ADDR_LEN: usize = 255;

/// Relay (cluster node) → client: the room is served by the relay at `relay`; the node closes
/// the connection after this message. Sent instead of `HelloAck` to a client whose room has
/// its home on another node, and to the members of a room this node hands to another (drain).
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct Redirect {
    /// The serving relay's address for clients, `host:port` in UTF-8 (at most
    /// [`MAX_REDIRECT_ADDR_LEN`] bytes); the client keeps its TLS server name and trust roots.
    pub relay: VLBytes,
}

impl Redirect {
    /// The address, when it is at most [`MAX_REDIRECT_ADDR_LEN`] bytes of UTF-8 of the form
    /// `host:port` (a non-empty host without control characters or spaces, a port from 1).
    pub fn address(&self) -> Option<&str> {
        let b = self.relay.as_slice();
        if b.len() > MAX_REDIRECT_ADDR_LEN {
            return None;
        }
        let s = core::str::from_utf8(b).ok()?;
        let (host, port) = s.rsplit_once(':')?;
        let port: u16 = port.parse().ok()?;
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| !c.is_control() && !c.is_whitespace() && c != '/');
        (port != 0 && host_ok).then_some(s)
    }
}

/// One MLS external-sender identity of the relay.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct RelaySender {
    /// MLS `SignatureScheme` of the key (0x0807 Ed25519, 0x0403 ECDSA P-256 SHA-256).
    pub signature_scheme: u16,
    /// The signature public key.
    pub signature_key: VLBytes,
    /// TLS-serialized MLS `Credential`.
    pub credential: VLBytes,
}

/// Relay → client: refused; the relay closes the connection after this message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct Refused {
    /// Why.
    pub reason: RefusedReason,
}

/// Client (host) → relay: bootstrap the room's group.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct CreateGroup {
    /// MLSMessage carrying the signed GroupInfo, with the ratchet_tree extension.
    pub group_info: VLBytes,
}

/// Relay → host: the group is bootstrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct GroupCreated {
    /// The group's epoch.
    pub epoch: u64,
}

/// The longest join proof, in bytes ([`PublishKeyPackage::join_proof`]).
pub const MAX_JOIN_PROOF_LEN: usize = 64;

/// Client → relay: a single-use KeyPackage.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct PublishKeyPackage {
    /// MLSMessage carrying the KeyPackage.
    pub key_package: VLBytes,
    /// The joiner's proof of holding the invite secret (≤ [`MAX_JOIN_PROOF_LEN`] bytes),
    /// opaque to the relay, which passes it on in the [`WaitingEntry`].
    pub join_proof: Option<VLBytes>,
}

/// Relay → client: the KeyPackage is stored.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct KeyPackageAccepted {
    /// The KeyPackageRef (RFC 9420 §5.2).
    pub key_package_ref: VLBytes,
}

/// One joiner in the waiting room.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct WaitingEntry {
    /// The joiner's connection id.
    pub conn_id: u64,
    /// The joiner's display name.
    pub display_name: VLBytes,
    /// MLSMessage carrying the joiner's KeyPackage, ready for an Add.
    pub key_package: VLBytes,
    /// The join proof the joiner published with its KeyPackage, if any.
    pub join_proof: Option<VLBytes>,
}

/// Relay → members: a joiner left the waiting room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct WaitingEntryRemoved {
    /// The joiner's connection id, as in its [`WaitingEntry`].
    pub conn_id: u64,
}

/// Client → relay: a commit for `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct Commit {
    /// The epoch the commit was created in.
    pub epoch: u64,
    /// MLSMessage carrying the commit as a PublicMessage.
    pub commit: VLBytes,
    /// MLSMessage carrying the Welcome for added members.
    pub welcome: Option<VLBytes>,
    /// MLSMessage carrying the new epoch's GroupInfo (with ratchet_tree extension).
    pub group_info: Option<VLBytes>,
}

/// Relay → committer: the commit won; the group is now at `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct CommitAccepted {
    /// The new epoch.
    pub epoch: u64,
}

/// Relay → committer: the commit was not sequenced.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct CommitRejected {
    /// The epoch the refused commit was for.
    pub epoch: u64,
    /// Why.
    pub reason: CommitRejectReason,
    /// For `EPOCH_TAKEN`: the MLSMessage of the commit that won `epoch`, if the relay still has it.
    pub winner: Option<VLBytes>,
}

/// Relay → members: the commit sequenced for `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct CommitBroadcast {
    /// The epoch the commit was created in (the group is at `epoch + 1` after it).
    pub epoch: u64,
    /// MLSMessage carrying the commit.
    pub commit: VLBytes,
}

/// Relay → joiner: the Welcome that adds it.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct WelcomeMessage {
    /// MLSMessage carrying the Welcome.
    pub welcome: VLBytes,
    /// The new epoch's ratchet tree (TLS-serialized `RatchetTree`).
    pub ratchet_tree: VLBytes,
}

/// Relay → client: the current GroupInfo, for joining by external commit.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct GroupInfoResponse {
    /// The epoch of the GroupInfo.
    pub epoch: u64,
    /// MLSMessage carrying the GroupInfo.
    pub group_info: VLBytes,
    /// The epoch's ratchet tree (TLS-serialized `RatchetTree`).
    pub ratchet_tree: VLBytes,
}

/// Relay → members: a Remove proposal the relay made as MLS external sender.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct RelayProposal {
    /// The epoch the proposal is for.
    pub epoch: u64,
    /// The leaf the proposal removes.
    pub removed_leaf: u32,
    /// MLSMessage carrying the proposal as a PublicMessage.
    pub proposal: VLBytes,
}

/// Member → relay: the member's own proposal for `epoch` (only a Remove of its own leaf).
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct Propose {
    /// The epoch the proposal is for.
    pub epoch: u64,
    /// MLSMessage carrying the proposal as a PublicMessage.
    pub proposal: VLBytes,
}

/// Relay → members: a member's proposal the relay validated and queued.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct ProposalBroadcast {
    /// The epoch the proposal is for.
    pub epoch: u64,
    /// MLSMessage carrying the proposal as a PublicMessage.
    pub proposal: VLBytes,
}

/// Member → relay: an opaque message (signed by the sender's leaf key) for every other member.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct PeerBroadcast {
    /// The message; the relay neither reads nor changes it.
    pub payload: VLBytes,
}

/// Relay → members: another member's [`PeerBroadcast`].
///
/// `from_conn` and `from_leaf` are the relay's claim only; the payload's own signature is what
/// a member may trust.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct PeerMessage {
    /// The sender's connection id.
    pub from_conn: u64,
    /// The sender's leaf in the group, as the relay sees it.
    pub from_leaf: u32,
    /// The message, as sent.
    pub payload: VLBytes,
}

/// Client (host) → relay: remove a participant (waiting or member).
#[derive(Debug, Clone, Copy, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct RemoveParticipant {
    /// The participant's connection id.
    pub conn_id: u64,
}

/// Relay → client: the last message was not acted on.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct ErrorMessage {
    /// What went wrong.
    pub code: ErrorCode,
    /// A short ASCII fact for logs; may be empty.
    pub detail: VLBytes,
}

/// Both directions: media signaling between a member and the relay's media forwarder.
///
/// The payload (SDP offer/answer, track maps, ...) is opaque to the control protocol; the relay
/// passes it between the member's connection and its forwarder and never to another client.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct MediaSignal {
    /// The forwarder's signaling message.
    pub payload: VLBytes,
}

/// Client → relay: keep the connection alive (and measure round trips).
#[derive(Debug, Clone, Copy, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct Ping {
    /// Echoed in the [`Pong`].
    pub nonce: u64,
}

/// Relay → client: the answer to a [`Ping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct Pong {
    /// The Ping's nonce.
    pub nonce: u64,
}

/// A message body, one variant per [`MessageType`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// [`MessageType::HELLO`]
    Hello(Hello),
    /// [`MessageType::HELLO_ACK`]
    HelloAck(HelloAck),
    /// [`MessageType::REFUSED`]
    Refused(Refused),
    /// [`MessageType::CREATE_GROUP`]
    CreateGroup(CreateGroup),
    /// [`MessageType::GROUP_CREATED`]
    GroupCreated(GroupCreated),
    /// [`MessageType::PUBLISH_KEY_PACKAGE`]
    PublishKeyPackage(PublishKeyPackage),
    /// [`MessageType::KEY_PACKAGE_ACCEPTED`]
    KeyPackageAccepted(KeyPackageAccepted),
    /// [`MessageType::JOIN_REQUEST`]: enter the waiting room with the published KeyPackage.
    JoinRequest,
    /// [`MessageType::COMMIT`]
    Commit(Commit),
    /// [`MessageType::COMMIT_ACCEPTED`]
    CommitAccepted(CommitAccepted),
    /// [`MessageType::COMMIT_REJECTED`]
    CommitRejected(CommitRejected),
    /// [`MessageType::COMMIT_BROADCAST`]
    CommitBroadcast(CommitBroadcast),
    /// [`MessageType::WELCOME`]
    Welcome(WelcomeMessage),
    /// [`MessageType::GROUP_INFO_REQUEST`]
    GroupInfoRequest,
    /// [`MessageType::GROUP_INFO_RESPONSE`]
    GroupInfoResponse(GroupInfoResponse),
    /// [`MessageType::RELAY_PROPOSAL`]
    RelayProposal(RelayProposal),
    /// [`MessageType::LOCK_ROOM`]
    LockRoom,
    /// [`MessageType::UNLOCK_ROOM`]
    UnlockRoom,
    /// [`MessageType::REMOVE_PARTICIPANT`]
    RemoveParticipant(RemoveParticipant),
    /// [`MessageType::ROOM_STATE_UPDATE`]
    RoomStateUpdate(RoomState),
    /// [`MessageType::ERROR`]
    Error(ErrorMessage),
    /// [`MessageType::MEDIA_SIGNAL`]
    MediaSignal(MediaSignal),
    /// [`MessageType::PING`]
    Ping(Ping),
    /// [`MessageType::PONG`]
    Pong(Pong),
    /// [`MessageType::WAITING_ENTRY_ADDED`]
    WaitingEntryAdded(WaitingEntry),
    /// [`MessageType::WAITING_ENTRY_REMOVED`]
    WaitingEntryRemoved(WaitingEntryRemoved),
    /// [`MessageType::PROPOSE`]
    Propose(Propose),
    /// [`MessageType::PROPOSAL_BROADCAST`]
    ProposalBroadcast(ProposalBroadcast),
    /// [`MessageType::PEER_BROADCAST`]
    PeerBroadcast(PeerBroadcast),
    /// [`MessageType::PEER_MESSAGE`]
    PeerMessage(PeerMessage),
    /// [`MessageType::RESUME`]
    Resume(Resume),
    /// [`MessageType::RESUME_ACCEPTED`]
    ResumeAccepted(ResumeAccepted),
    /// [`MessageType::RESUME_REFUSED`]
    ResumeRefused(ResumeRefused),
    /// [`MessageType::REDIRECT`]
    Redirect(Redirect),
}

impl Body {
    /// The body's message type.
    pub fn message_type(&self) -> MessageType {
        match self {
            Self::Hello(_) => MessageType::HELLO,
            Self::HelloAck(_) => MessageType::HELLO_ACK,
            Self::Refused(_) => MessageType::REFUSED,
            Self::CreateGroup(_) => MessageType::CREATE_GROUP,
            Self::GroupCreated(_) => MessageType::GROUP_CREATED,
            Self::PublishKeyPackage(_) => MessageType::PUBLISH_KEY_PACKAGE,
            Self::KeyPackageAccepted(_) => MessageType::KEY_PACKAGE_ACCEPTED,
            Self::JoinRequest => MessageType::JOIN_REQUEST,
            Self::Commit(_) => MessageType::COMMIT,
            Self::CommitAccepted(_) => MessageType::COMMIT_ACCEPTED,
            Self::CommitRejected(_) => MessageType::COMMIT_REJECTED,
            Self::CommitBroadcast(_) => MessageType::COMMIT_BROADCAST,
            Self::Welcome(_) => MessageType::WELCOME,
            Self::GroupInfoRequest => MessageType::GROUP_INFO_REQUEST,
            Self::GroupInfoResponse(_) => MessageType::GROUP_INFO_RESPONSE,
            Self::RelayProposal(_) => MessageType::RELAY_PROPOSAL,
            Self::LockRoom => MessageType::LOCK_ROOM,
            Self::UnlockRoom => MessageType::UNLOCK_ROOM,
            Self::RemoveParticipant(_) => MessageType::REMOVE_PARTICIPANT,
            Self::RoomStateUpdate(_) => MessageType::ROOM_STATE_UPDATE,
            Self::Error(_) => MessageType::ERROR,
            Self::MediaSignal(_) => MessageType::MEDIA_SIGNAL,
            Self::Ping(_) => MessageType::PING,
            Self::Pong(_) => MessageType::PONG,
            Self::WaitingEntryAdded(_) => MessageType::WAITING_ENTRY_ADDED,
            Self::WaitingEntryRemoved(_) => MessageType::WAITING_ENTRY_REMOVED,
            Self::Propose(_) => MessageType::PROPOSE,
            Self::ProposalBroadcast(_) => MessageType::PROPOSAL_BROADCAST,
            Self::PeerBroadcast(_) => MessageType::PEER_BROADCAST,
            Self::PeerMessage(_) => MessageType::PEER_MESSAGE,
            Self::Resume(_) => MessageType::RESUME,
            Self::ResumeAccepted(_) => MessageType::RESUME_ACCEPTED,
            Self::ResumeRefused(_) => MessageType::RESUME_REFUSED,
            Self::Redirect(_) => MessageType::REDIRECT,
        }
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<(), tls_codec::Error> {
        self.message_type().tls_serialize(out)?;
        match self {
            Self::JoinRequest | Self::GroupInfoRequest | Self::LockRoom | Self::UnlockRoom => 0,
            Self::Hello(m) => m.tls_serialize(out)?,
            Self::HelloAck(m) => m.tls_serialize(out)?,
            Self::Refused(m) => m.tls_serialize(out)?,
            Self::CreateGroup(m) => m.tls_serialize(out)?,
            Self::GroupCreated(m) => m.tls_serialize(out)?,
            Self::PublishKeyPackage(m) => m.tls_serialize(out)?,
            Self::KeyPackageAccepted(m) => m.tls_serialize(out)?,
            Self::Commit(m) => m.tls_serialize(out)?,
            Self::CommitAccepted(m) => m.tls_serialize(out)?,
            Self::CommitRejected(m) => m.tls_serialize(out)?,
            Self::CommitBroadcast(m) => m.tls_serialize(out)?,
            Self::Welcome(m) => m.tls_serialize(out)?,
            Self::GroupInfoResponse(m) => m.tls_serialize(out)?,
            Self::RelayProposal(m) => m.tls_serialize(out)?,
            Self::RemoveParticipant(m) => m.tls_serialize(out)?,
            Self::RoomStateUpdate(m) => m.tls_serialize(out)?,
            Self::Error(m) => m.tls_serialize(out)?,
            Self::MediaSignal(m) => m.tls_serialize(out)?,
            Self::Ping(m) => m.tls_serialize(out)?,
            Self::Pong(m) => m.tls_serialize(out)?,
            Self::WaitingEntryAdded(m) => m.tls_serialize(out)?,
            Self::WaitingEntryRemoved(m) => m.tls_serialize(out)?,
            Self::Propose(m) => m.tls_serialize(out)?,
            Self::ProposalBroadcast(m) => m.tls_serialize(out)?,
            Self::PeerBroadcast(m) => m.tls_serialize(out)?,
            Self::PeerMessage(m) => m.tls_serialize(out)?,
            Self::Resume(m) => m.tls_serialize(out)?,
            Self::ResumeAccepted(m) => m.tls_serialize(out)?,
            Self::ResumeRefused(m) => m.tls_serialize(out)?,
            Self::Redirect(m) => m.tls_serialize(out)?,
        };
        Ok(())
    }

    fn read<R: Read>(r: &mut R) -> Result<Self, DecodeError> {
        let t = MessageType::tls_deserialize(r)?;
        Ok(match t {
            MessageType::HELLO => Self::Hello(Hello::tls_deserialize(r)?),
            MessageType::HELLO_ACK => Self::HelloAck(HelloAck::tls_deserialize(r)?),
            MessageType::REFUSED => Self::Refused(Refused::tls_deserialize(r)?),
            MessageType::CREATE_GROUP => Self::CreateGroup(CreateGroup::tls_deserialize(r)?),
            MessageType::GROUP_CREATED => Self::GroupCreated(GroupCreated::tls_deserialize(r)?),
            MessageType::PUBLISH_KEY_PACKAGE => {
                let m = PublishKeyPackage::tls_deserialize(r)?;
                check_join_proof(m.join_proof.as_ref())?;
                Self::PublishKeyPackage(m)
            }
            MessageType::KEY_PACKAGE_ACCEPTED => {
                Self::KeyPackageAccepted(KeyPackageAccepted::tls_deserialize(r)?)
            }
            MessageType::JOIN_REQUEST => Self::JoinRequest,
            MessageType::COMMIT => Self::Commit(Commit::tls_deserialize(r)?),
            MessageType::COMMIT_ACCEPTED => {
                Self::CommitAccepted(CommitAccepted::tls_deserialize(r)?)
            }
            MessageType::COMMIT_REJECTED => {
                Self::CommitRejected(CommitRejected::tls_deserialize(r)?)
            }
            MessageType::COMMIT_BROADCAST => {
                Self::CommitBroadcast(CommitBroadcast::tls_deserialize(r)?)
            }
            MessageType::WELCOME => Self::Welcome(WelcomeMessage::tls_deserialize(r)?),
            MessageType::GROUP_INFO_REQUEST => Self::GroupInfoRequest,
            MessageType::GROUP_INFO_RESPONSE => {
                Self::GroupInfoResponse(GroupInfoResponse::tls_deserialize(r)?)
            }
            MessageType::RELAY_PROPOSAL => Self::RelayProposal(RelayProposal::tls_deserialize(r)?),
            MessageType::LOCK_ROOM => Self::LockRoom,
            MessageType::UNLOCK_ROOM => Self::UnlockRoom,
            MessageType::REMOVE_PARTICIPANT => {
                Self::RemoveParticipant(RemoveParticipant::tls_deserialize(r)?)
            }
            MessageType::ROOM_STATE_UPDATE => Self::RoomStateUpdate(RoomState::tls_deserialize(r)?),
            MessageType::ERROR => Self::Error(ErrorMessage::tls_deserialize(r)?),
            MessageType::MEDIA_SIGNAL => Self::MediaSignal(MediaSignal::tls_deserialize(r)?),
            MessageType::PING => Self::Ping(Ping::tls_deserialize(r)?),
            MessageType::PONG => Self::Pong(Pong::tls_deserialize(r)?),
            MessageType::WAITING_ENTRY_ADDED => {
                let m = WaitingEntry::tls_deserialize(r)?;
                check_join_proof(m.join_proof.as_ref())?;
                Self::WaitingEntryAdded(m)
            }
            MessageType::WAITING_ENTRY_REMOVED => {
                Self::WaitingEntryRemoved(WaitingEntryRemoved::tls_deserialize(r)?)
            }
            MessageType::PROPOSE => Self::Propose(Propose::tls_deserialize(r)?),
            MessageType::PROPOSAL_BROADCAST => {
                Self::ProposalBroadcast(ProposalBroadcast::tls_deserialize(r)?)
            }
            MessageType::PEER_BROADCAST => Self::PeerBroadcast(PeerBroadcast::tls_deserialize(r)?),
            MessageType::PEER_MESSAGE => Self::PeerMessage(PeerMessage::tls_deserialize(r)?),
            MessageType::RESUME => {
                let m = Resume::tls_deserialize(r)?;
                if m.signature.as_slice().len() > MAX_RESUME_SIGNATURE_LEN {
                    return Err(DecodeError::InvalidValue);
                }
                Self::Resume(m)
            }
            MessageType::RESUME_ACCEPTED => {
                Self::ResumeAccepted(ResumeAccepted::tls_deserialize(r)?)
            }
            MessageType::RESUME_REFUSED => Self::ResumeRefused(ResumeRefused::tls_deserialize(r)?),
            MessageType::REDIRECT => {
                let m = Redirect::tls_deserialize(r)?;
                if m.address().is_none() {
                    return Err(DecodeError::InvalidValue);
                }
                Self::Redirect(m)
            }
            MessageType(other) => return Err(DecodeError::UnknownMessageType(other)),
        })
    }

    fn len_hint(&self) -> usize {
        2 + match self {
            Self::JoinRequest | Self::GroupInfoRequest | Self::LockRoom | Self::UnlockRoom => 0,
            Self::Hello(m) => m.tls_serialized_len(),
            Self::HelloAck(m) => m.tls_serialized_len(),
            Self::Refused(m) => m.tls_serialized_len(),
            Self::CreateGroup(m) => m.tls_serialized_len(),
            Self::GroupCreated(m) => m.tls_serialized_len(),
            Self::PublishKeyPackage(m) => m.tls_serialized_len(),
            Self::KeyPackageAccepted(m) => m.tls_serialized_len(),
            Self::Commit(m) => m.tls_serialized_len(),
            Self::CommitAccepted(m) => m.tls_serialized_len(),
            Self::CommitRejected(m) => m.tls_serialized_len(),
            Self::CommitBroadcast(m) => m.tls_serialized_len(),
            Self::Welcome(m) => m.tls_serialized_len(),
            Self::GroupInfoResponse(m) => m.tls_serialized_len(),
            Self::RelayProposal(m) => m.tls_serialized_len(),
            Self::RemoveParticipant(m) => m.tls_serialized_len(),
            Self::RoomStateUpdate(m) => m.tls_serialized_len(),
            Self::Error(m) => m.tls_serialized_len(),
            Self::MediaSignal(m) => m.tls_serialized_len(),
            Self::Ping(m) => m.tls_serialized_len(),
            Self::Pong(m) => m.tls_serialized_len(),
            Self::WaitingEntryAdded(m) => m.tls_serialized_len(),
            Self::WaitingEntryRemoved(m) => m.tls_serialized_len(),
            Self::Propose(m) => m.tls_serialized_len(),
            Self::ProposalBroadcast(m) => m.tls_serialized_len(),
            Self::PeerBroadcast(m) => m.tls_serialized_len(),
            Self::PeerMessage(m) => m.tls_serialized_len(),
            Self::Resume(m) => m.tls_serialized_len(),
            Self::ResumeAccepted(m) => m.tls_serialized_len(),
            Self::ResumeRefused(m) => m.tls_serialized_len(),
            Self::Redirect(m) => m.tls_serialized_len(),
        }
    }
}

/// A join proof longer than [`MAX_JOIN_PROOF_LEN`] is a value its type forbids.
fn check_join_proof(proof: Option<&VLBytes>) -> Result<(), DecodeError> {
    match proof {
        Some(p) if p.as_slice().len() > MAX_JOIN_PROOF_LEN => Err(DecodeError::InvalidValue),
        _ => Ok(()),
    }
}

/// One control message: version, type, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlMessage {
    /// The protocol version; decoders accept only [`ProtocolVersion::V1`].
    pub version: ProtocolVersion,
    /// The body (its variant determines the message type).
    pub body: Body,
}

impl ControlMessage {
    /// A version-1 message.
    pub fn new(body: Body) -> Self {
        Self {
            version: ProtocolVersion::V1,
            body,
        }
    }

    /// Encode (no frame header).
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(2 + self.body.len_hint());
        self.version.tls_serialize(&mut out)?;
        self.body.write(&mut out)?;
        Ok(out)
    }

    /// Encode and frame, refusing messages over `max_frame_len`.
    pub fn to_frame(&self, max_frame_len: u32) -> Result<Vec<u8>, EncodeError> {
        encode_frame(&self.encode()?, max_frame_len)
    }

    /// The message type of an encoded version-1 message, read from its first four bytes without
    /// decoding the body; `None` for a shorter input or another version.
    pub fn peek_type(bytes: &[u8]) -> Option<MessageType> {
        match bytes {
            [0, 1, hi, lo, ..] => Some(MessageType(u16::from_be_bytes([*hi, *lo]))),
            _ => None,
        }
    }

    /// Decode exactly one message from `bytes` (one frame's payload). Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = bytes;
        let version = ProtocolVersion::tls_deserialize(&mut r)?;
        if version != ProtocolVersion::V1 {
            return Err(DecodeError::UnsupportedVersion(version.0));
        }
        let body = Body::read(&mut r)?;
        if !r.is_empty() {
            return Err(DecodeError::TrailingData);
        }
        Ok(Self { version, body })
    }
}
