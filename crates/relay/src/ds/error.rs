//! Delivery-service errors, grouped by who is at fault.

use blindcall_proto::ErrorCode;
use thiserror::Error;

/// A GroupInfo the DS cannot use (peer fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum GroupInfoError {
    /// Not an MLS message.
    #[error("group info does not parse")]
    Malformed,
    /// An MLS message, but not a GroupInfo.
    #[error("not a group info")]
    NotGroupInfo,
    /// No ratchet_tree extension.
    #[error("group info lacks the ratchet tree extension")]
    MissingRatchetTree,
    /// openmls refused the tree or signature.
    #[error("group info or ratchet tree invalid")]
    Invalid,
    /// A new group must have exactly its creator as member.
    #[error("a new group must have exactly one member")]
    NotSingleMember,
    /// The group's external_senders extension does not list this relay.
    #[error("the relay is not an external sender of the group")]
    MissingExternalSender,
    /// The group context lacks valid call parameters (extension 0xF0BC) naming the creator as
    /// a host: without them neither members nor the relay can apply the call's rules.
    #[error("the group lacks valid call parameters")]
    CallParams,
}

/// A KeyPackage the DS refuses (peer fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KeyPackageError {
    /// Larger than the relay stores (`DsConfig::max_key_package_len`).
    #[error("key package of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a basic credential with a UTF-8 identity of 1..=255 bytes (members never add it).
    #[error("key package credential is not a valid display identity")]
    Credential,
    /// Not an MLS message.
    #[error("key package does not parse")]
    Malformed,
    /// An MLS message, but not a KeyPackage.
    #[error("not a key package")]
    NotKeyPackage,
    /// Signature, lifetime or content invalid.
    #[error("key package invalid")]
    Invalid,
    /// Another ciphersuite than the room's group.
    #[error("key package ciphersuite differs from the group's")]
    WrongCiphersuite,
    /// Another connection in the room already holds this KeyPackage.
    #[error("key package already published")]
    Duplicate,
}

/// A member proposal the DS refuses (peer fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProposalError {
    /// Not an MLS message.
    #[error("proposal does not parse")]
    Malformed,
    /// Not a PublicMessage carrying a proposal.
    #[error("not a public proposal message")]
    NotPublicProposal,
    /// Not for the group's current epoch (or the message's epoch differs from the claimed one).
    #[error("proposal is not for the current epoch")]
    WrongEpoch,
    /// Not a Remove of the sender's own leaf (the only proposal a member may send).
    #[error("only a Remove of the proposer's own leaf is accepted")]
    NotOwnRemove,
    /// openmls refused it against the public group state.
    #[error("proposal invalid")]
    Invalid,
    /// A Remove of this leaf is already queued for the epoch.
    #[error("a removal of this leaf is already proposed")]
    Duplicate,
}

/// Why a member proposal was not queued: the peer's fault or ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProposalFailure {
    Peer(ProposalError),
    Fault(DsFault),
}

impl From<ProposalError> for ProposalFailure {
    fn from(e: ProposalError) -> Self {
        Self::Peer(e)
    }
}

impl From<DsFault> for ProposalFailure {
    fn from(f: DsFault) -> Self {
        Self::Fault(f)
    }
}

/// Why [`Ds::send_media_signal`](super::Ds::send_media_signal) did not queue a message (caller
/// fault: the shell's forwarder addressed a connection it may not signal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MediaSignalError {
    /// The connection is not open at the DS (closed, or never opened).
    #[error("unknown connection")]
    UnknownConnection,
    /// The connection is open but not a member of its room's group.
    #[error("connection is not a group member")]
    NotMember,
    /// The message would exceed the frame limit.
    #[error("media signal of {len} bytes exceeds the frame limit")]
    TooLarge {
        /// Payload length.
        len: usize,
    },
}

/// A fault inside the DS (our bug or a library error); the room state is left unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DsFault {
    /// Serializing an MLS structure failed.
    #[error("serialization failed")]
    Serialize,
    /// The in-memory MLS storage failed.
    #[error("mls storage failed")]
    Storage,
    /// Creating or queueing the relay's own proposal failed.
    #[error("external proposal failed")]
    Proposal,
    /// A validated commit was applied to another epoch than it was validated for.
    #[error("commit validated for another epoch")]
    StaleValidation,
}

impl From<GroupInfoError> for ErrorCode {
    fn from(_: GroupInfoError) -> Self {
        ErrorCode::INVALID_GROUP_INFO
    }
}

impl From<KeyPackageError> for ErrorCode {
    fn from(e: KeyPackageError) -> Self {
        match e {
            KeyPackageError::TooLarge { .. } => ErrorCode::KEY_PACKAGE_TOO_LARGE,
            _ => ErrorCode::INVALID_KEY_PACKAGE,
        }
    }
}

impl From<ProposalError> for ErrorCode {
    fn from(_: ProposalError) -> Self {
        ErrorCode::INVALID_PROPOSAL
    }
}

impl From<DsFault> for ErrorCode {
    fn from(_: DsFault) -> Self {
        ErrorCode::INTERNAL
    }
}
