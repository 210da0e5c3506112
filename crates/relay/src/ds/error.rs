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
}

/// A KeyPackage the DS refuses (peer fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KeyPackageError {
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
    fn from(_: KeyPackageError) -> Self {
        ErrorCode::INVALID_KEY_PACKAGE
    }
}

impl From<DsFault> for ErrorCode {
    fn from(_: DsFault) -> Self {
        ErrorCode::INTERNAL
    }
}
