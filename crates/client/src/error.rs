//! Errors of the SDK, grouped by who is at fault.

use std::net::SocketAddr;

use blindcall_group::{ApiMisuse, PolicyViolation};
use blindcall_media::PacketizeError;
use blindcall_proto::{CommitRejectReason, ErrorCode, RefusedReason};
use blindcall_sframe::SealError;

/// Why [`crate::Call::join`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The options or arguments are unusable (caller's fault).
    #[error("invalid join arguments: {0}")]
    Options(#[from] OptionsError),
    /// TCP connect to the relay failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The relay address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TLS handshake failed (certificate not trusted, protocol mismatch, ...).
    #[error("TLS handshake with the relay failed: {0}")]
    Tls(std::io::Error),
    /// The relay refused admission.
    #[error("the relay refused admission: {0}")]
    Refused(RefusedReason),
    /// The relay cluster's nodes redirected this participant more than 3 times in a row
    /// without admitting it, and no other relay of the list was left to try (SDK-REDIR-3).
    #[error("the relay cluster redirected too many times in a row")]
    TooManyRedirects,
    /// The relay broke the control protocol.
    #[error("control protocol: {0}")]
    Protocol(#[from] ProtocolError),
    /// The relay did not answer in time.
    #[error("timed out waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: &'static str,
    },
    /// The group layer failed (creating credentials or the group).
    #[error("group: {0}")]
    Group(#[from] blindcall_group::Error),
    /// The trust store file could not be read (it is left as it is).
    #[error("{0}")]
    TrustStore(#[from] crate::trust::TrustStoreError),
}

/// Unusable options or arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionsError {
    /// The token is not a `bct1.` capability token.
    #[error("the token is not a blindcall capability token")]
    MalformedToken,
    /// The trust anchor holds no usable certificate or fingerprint.
    #[error("trust anchor: {0}")]
    TrustAnchor(&'static str),
    /// The relay's server name is not a valid DNS name or IP address.
    #[error("invalid server name {0:?}")]
    ServerName(String),
    /// The identity key is for another MLS suite than `mls_suite`.
    #[error("the identity key is for another MLS suite than the call's")]
    IdentitySuite,
    /// The invite is for another room than the token's.
    #[error("the invite is for another room than the token's")]
    InviteRoom,
}

/// The relay sent something the client cannot accept at this point.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame or message did not decode.
    #[error("undecodable control message")]
    Malformed,
    /// A message of a kind not expected now.
    #[error("unexpected {got} while waiting for {expected}")]
    Unexpected {
        /// What arrived (message type name).
        got: &'static str,
        /// What was expected.
        expected: &'static str,
    },
    /// The relay reported an error for our last message.
    #[error("relay error {0}")]
    RelayError(ErrorCode),
    /// The HelloAck lists no external sender for this participant's ciphersuite, or its
    /// credential is not a basic credential.
    #[error("relay external-sender identity missing or unusable for this ciphersuite")]
    RelayCredential,
    /// The relay closed the connection.
    #[error("connection closed by the relay")]
    Closed,
    /// The Welcome that was to make this participant a member was refused by the group layer.
    #[error("Welcome refused: {0}")]
    WelcomeRefused(GroupFailure),
}

/// What the group layer refused or failed at, as facts the application can match on (the
/// full error is logged at debug level).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupFailure {
    /// The bytes are not a valid MLS message for this call (wrong group or epoch, bad
    /// signature, malformed, ...).
    #[error("invalid MLS message")]
    InvalidMessage,
    /// A valid message the call's policy does not allow.
    #[error("policy violation: {0}")]
    Policy(PolicyViolation),
    /// The group was used in a wrong order (e.g. no longer a member).
    #[error("{0}")]
    ApiMisuse(ApiMisuse),
    /// A failure inside the group layer (MLS library, storage, key derivation).
    #[error("internal failure of the group layer")]
    Internal,
}

impl From<&blindcall_group::Error> for GroupFailure {
    fn from(e: &blindcall_group::Error) -> Self {
        use blindcall_group::Error as E;
        match e {
            E::InvalidMessage(_) => Self::InvalidMessage,
            E::Policy(p) => Self::Policy(p.clone()),
            E::ApiMisuse(m) => Self::ApiMisuse(*m),
            _ => Self::Internal,
        }
    }
}

/// Why a published frame was not sent (nothing of it reached the transport).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameRejected {
    /// No send key for the stream (e.g. no longer a member).
    #[error("no send key: {0}")]
    SendKey(GroupFailure),
    /// SFrame refused to seal it (e.g. the key's counter is exhausted).
    #[error("seal: {0}")]
    Seal(SealError),
    /// It cannot be carried in RTP packets (empty, or more packets than a frame may take).
    #[error("packetize: {0}")]
    Packetize(PacketizeError),
}

/// Media transport trouble reported as a [`CallWarning`] (details are logged at debug level).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportWarning {
    /// The media transport could not be created: the call goes on without media.
    #[error("the media transport could not be created")]
    Open,
    /// The relay's offer could not be applied.
    #[error("the relay's offer could not be applied")]
    Offer,
    /// The media connection failed.
    #[error("the media connection failed")]
    ConnectionFailed,
    /// The media connection closed.
    #[error("the media connection closed")]
    ConnectionClosed,
    /// The transport stopped reporting events: the call goes on without media.
    #[error("the media transport stopped")]
    EventsEnded,
}

/// Why a request to a running [`crate::Call`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The call has ended; the handle is inert.
    #[error("the call has ended")]
    Ended,
    /// The connection to the relay is being re-established: the frame was dropped (not
    /// sealed, not queued); publishing works again once [`crate::Event::Reconnected`].
    #[error("reconnecting to the relay; the frame was dropped")]
    Reconnecting,
    /// No waiting-room request with this id.
    #[error("no waiting-room request {0}")]
    UnknownRequest(u64),
    /// No member at this leaf with the given identity key in the current epoch.
    #[error("no such member at leaf {0}")]
    UnknownMember(u32),
    /// This participant is not (yet) a member of the call's group.
    #[error("not a member of the call")]
    NotMember,
    /// Only a host may do this at the relay (deny or refuse a joiner, lock the room): the
    /// relay admitted this participant with another role.
    #[error("only a host may do this")]
    NotHost,
    /// Publishing is not possible (media off or receive-only).
    #[error("media publishing is not enabled for this call")]
    MediaDisabled,
    /// Own media just switched to new keys and a video keyframe is awaited: a delta frame
    /// would be the first frame under the new keys, which receivers that joined in the new
    /// epoch cannot decode. Publish a keyframe (see [`crate::Event::KeyframeRequested`]).
    #[error("a video keyframe is required after the send-epoch switch")]
    KeyframeRequired,
    /// The media connection is not up yet (wait for `Event::MediaConnected`).
    #[error("the media connection is not up yet")]
    MediaNotConnected,
    /// Sealing or packetizing the frame failed (e.g. an oversized frame).
    #[error("frame not sent: {0}")]
    FrameRejected(FrameRejected),
}

/// Non-fatal trouble the call reports as [`crate::Event::Warning`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallWarning {
    /// The relay refused one of our commits for a reason other than a lost race.
    #[error("commit for epoch {epoch} rejected: {reason}")]
    CommitRejected {
        /// Epoch of the refused commit.
        epoch: u64,
        /// The relay's reason.
        reason: CommitRejectReason,
    },
    /// A handshake message from the relay was refused by the group layer (nothing merged).
    #[error("handshake message refused: {0}")]
    HandshakeRefused(GroupFailure),
    /// A group operation failed locally.
    #[error("group operation failed: {0}")]
    Group(GroupFailure),
    /// The relay sent a message that has no meaning at this point (ignored).
    #[error("unexpected {0} from the relay")]
    UnexpectedMessage(&'static str),
    /// The relay reported an error for one of our messages.
    #[error("relay error {0}")]
    Relay(ErrorCode),
    /// Media transport trouble.
    #[error("media transport: {0}")]
    Transport(TransportWarning),
    /// An undecodable media-signaling message from the relay.
    #[error("bad media signal from the relay")]
    BadMediaSignal,
    /// The trust store could not be saved (what it learned stays in memory for this call).
    #[error("trust store {} could not be saved", path.display())]
    TrustStoreNotSaved {
        /// The file.
        path: std::path::PathBuf,
    },
}
