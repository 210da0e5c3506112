//! Control-channel messages between blindcall clients and the blind relay.
//!
//! Every message is a [`ControlMessage`]: a protocol version, a [`MessageType`] and a body, encoded
//! in the TLS presentation language (RFC 8446 §3, with MLS `<V>` variable-length vectors, RFC 9420
//! §2.1.2) via `tls_codec`. MLS messages travel inside as opaque byte vectors, so the relay can hand
//! them to openmls untouched. On the stream, each message is one frame: a `u32` big-endian length
//! then the message ([`frame`]). Decoding never panics on any input; it returns a typed
//! [`DecodeError`]. The normative description is `spec/control-protocol.md`.

mod codes;
mod error;
pub mod frame;
pub mod media;
mod messages;
pub mod tls;

pub use codes::{
    CommitRejectReason, ErrorCode, MessageType, ProtocolVersion, RefusedReason,
    ResumeRefusedReason, Role,
};
pub use error::{DecodeError, EncodeError};
pub use frame::{FrameDecoder, FrameError, encode_frame};
pub use media::{MAX_VIDEO_FILTER_IDS, MediaSignalDecodeError, MediaSignalPayload, VideoFilter};
pub use messages::{
    Body, Commit, CommitAccepted, CommitBroadcast, CommitRejected, ControlMessage, CreateGroup,
    ErrorMessage, GroupCreated, GroupInfoResponse, Hello, HelloAck, KeyPackageAccepted,
    MAX_JOIN_PROOF_LEN, MAX_REDIRECT_ADDR_LEN, MAX_RESUME_SIGNATURE_LEN, MediaSignal,
    PeerBroadcast, PeerMessage, Ping, Pong, ProposalBroadcast, Propose, PublishKeyPackage,
    RESUME_CHALLENGE_LEN, Redirect, Refused, RelayProposal, RelaySender, RemoveParticipant, Resume,
    ResumeAccepted, ResumeRefused, RoomState, WaitingEntry, WaitingEntryRemoved, WelcomeMessage,
};
pub use tls::{ALPN, cert_fingerprint};
pub use tls_codec::VLBytes;

/// The largest frame (length prefix excluded) a peer accepts unless configured otherwise: 1 MiB.
pub const DEFAULT_MAX_FRAME_LEN: u32 = 1 << 20;
