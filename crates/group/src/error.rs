//! Errors of the group layer, grouped by who is at fault.

use blindcall_sframe::{DropReason, Kid};

use crate::kid::KidError;
use crate::policy::PolicyViolation;

/// The openmls storage error type of our provider.
pub type StorageError = openmls_rust_crypto::MemoryStorageError;

/// Any failure of a group operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A peer (or the relay) sent bytes that are not a valid message for this call.
    #[error("invalid message: {0}")]
    InvalidMessage(#[from] InvalidMessage),
    /// A valid message the call's policy does not allow; nothing was merged.
    #[error("policy violation: {0}")]
    Policy(#[from] PolicyViolation),
    /// The caller used the API in a wrong order or with wrong arguments.
    #[error("API misuse: {0}")]
    ApiMisuse(#[from] ApiMisuse),
    /// An internal failure of the MLS library, its storage or crypto (our bug or the host's).
    #[error("MLS failure: {0}")]
    Mls(#[from] MlsFailure),
    /// SFrame key setup failed.
    #[error("SFrame key setup: {0}")]
    Key(#[from] blindcall_sframe::KeyError),
    /// A KID could not be formed.
    #[error("KID: {0}")]
    Kid(#[from] KidError),
    /// Sealing a frame failed (e.g. the stream's counter is exhausted: a new epoch is needed;
    /// a counter is never reused).
    #[error("seal: {0}")]
    Seal(#[from] blindcall_sframe::SealError),
}

/// Why an incoming message was refused before policy checks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidMessage {
    /// Not a TLS-encoded `MLSMessage`.
    #[error("not a TLS-encoded MLSMessage")]
    Malformed,
    /// An `MLSMessage` of a kind this input does not take (`expected`).
    #[error("unexpected MLSMessage kind, expected {expected}")]
    UnexpectedKind {
        /// What was expected.
        expected: &'static str,
    },
    /// Application data over MLS is never used by a call (media uses SFrame).
    #[error("MLS application message; calls carry media only over SFrame")]
    ApplicationMessage,
    /// openmls refused the message (wrong group, epoch, signature, path, ...).
    #[error("rejected by MLS validation: {0}")]
    Rejected(#[source] Box<openmls::prelude::ProcessMessageError<StorageError>>),
    /// openmls refused the Welcome.
    #[error("Welcome rejected: {0}")]
    Welcome(#[source] Box<openmls::prelude::WelcomeError<StorageError>>),
    /// A KeyPackage failed validation.
    #[error("invalid KeyPackage")]
    KeyPackage,
    /// A KeyPackage of another MLS ciphersuite.
    #[error("KeyPackage ciphersuite {got} does not match the call's {expected}")]
    KeyPackageSuite {
        /// Call's suite id.
        expected: u16,
        /// KeyPackage's suite id.
        got: u16,
    },
    /// The group context lacks or has malformed call parameters.
    #[error("call parameters missing or malformed ({field})")]
    CallParams {
        /// Offending field.
        field: &'static str,
    },
}

/// Wrong use of the API by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiMisuse {
    /// A commit is pending: confirm or discard it first.
    #[error("a pending commit from epoch {epoch} must be confirmed or discarded first")]
    PendingCommitOutstanding {
        /// Epoch the pending commit was made in.
        epoch: u64,
    },
    /// This `PendingCommit` does not belong to this call or is stale.
    #[error("this PendingCommit does not belong to this call's current pending commit")]
    ForeignPendingCommit,
    /// This member is no longer in the call.
    #[error("not a member of the call any more")]
    NotAMember,
    /// This member asked to leave and may not commit any more.
    #[error("leaving the call; no further commits")]
    Leaving,
    /// The local member lacks the right for this operation.
    #[error("the call's policy does not allow this member to do that")]
    NotAllowed,
    /// No such member.
    #[error("no member at leaf {leaf}")]
    UnknownMember {
        /// Requested leaf.
        leaf: u32,
    },
    /// An empty list was given.
    #[error("empty input")]
    EmptyInput,
    /// Display identity must be 1..=255 bytes.
    #[error("display identity of {len} bytes (must be 1..=255)")]
    InvalidIdentity {
        /// Given length.
        len: usize,
    },
    /// The stream context does not fit in the call's context bits.
    #[error("stream context {context} not below {max}")]
    ContextOutOfRange {
        /// Requested context.
        context: u64,
        /// Number of contexts.
        max: u64,
    },
    /// The configuration is inconsistent.
    #[error("invalid configuration")]
    InvalidConfig,
}

/// Failures inside the MLS library, its storage or crypto.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MlsFailure {
    /// Creating the group failed.
    #[error("group creation: {0}")]
    NewGroup(#[source] Box<openmls::prelude::NewGroupError<StorageError>>),
    /// Building a commit failed.
    #[error("commit creation: {0}")]
    CreateCommit(#[source] Box<openmls::prelude::CreateCommitError>),
    /// Staging a built commit failed.
    #[error("commit staging: {0}")]
    StageCommit(#[source] Box<openmls::prelude::CommitBuilderStageError<StorageError>>),
    /// Merging a commit failed.
    #[error("merge: {0}")]
    Merge(#[source] Box<openmls::prelude::MergeCommitError<StorageError>>),
    /// Merging the own pending commit failed.
    #[error("merge of pending commit: {0}")]
    MergePending(#[source] Box<openmls::prelude::MergePendingCommitError<StorageError>>),
    /// Creating a proposal failed.
    #[error("proposal creation: {0}")]
    Leave(#[source] Box<openmls::prelude::LeaveGroupError<StorageError>>),
    /// The exporter failed.
    #[error("MLS exporter")]
    Export,
    /// Storage failed.
    #[error("MLS storage")]
    Storage,
    /// A crypto primitive failed.
    #[error("crypto")]
    Crypto,
    /// Building a KeyPackage failed.
    #[error("KeyPackage creation")]
    KeyPackage,
    /// TLS encoding failed.
    #[error("TLS encoding")]
    Encode,
    /// An openmls result violated an invariant we rely on (our bug).
    #[error("internal invariant violated: {0}")]
    Unreachable(&'static str),
}

/// Why a media frame was dropped, for per-sender counters (ordered, so it can key a map).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum FrameDropReason {
    /// SFrame header unparsable or frame too short.
    Malformed,
    /// KID has bits outside the call's layout.
    KidOutOfLayout,
    /// KID names an epoch whose keys are not (or no longer) held.
    UnknownEpoch,
    /// KID names a leaf that is not a member in that epoch.
    UnknownSender,
    /// KID names a leaf that a newer epoch removed: its old-epoch frames are refused.
    SenderRemoved,
    /// The stream is pinned to another member: a frame under someone else's KID on it is an
    /// attack (refused before decryption).
    ForeignSender,
    /// The frame impersonates its claimed sender (its signed manifests contradict it, never
    /// cover it, or name another stream), or its stream is blocked for that sender.
    Impersonated,
    /// Authentication failed.
    TagMismatch,
    /// Counter already seen.
    Replay,
    /// Counter left of the replay window.
    TooOld,
    /// Other SFrame refusal.
    Other,
}

impl From<DropReason> for FrameDropReason {
    fn from(r: DropReason) -> Self {
        match r {
            DropReason::Malformed => Self::Malformed,
            DropReason::UnknownKid => Self::UnknownEpoch,
            DropReason::TagMismatch => Self::TagMismatch,
            DropReason::Replay => Self::Replay,
            DropReason::TooOld => Self::TooOld,
            #[allow(unreachable_patterns)]
            _ => Self::Other,
        }
    }
}

/// Where a frame claims to come from, decoded from its KID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameOrigin {
    /// Sender's leaf index.
    pub leaf: u32,
    /// Sender's stream context.
    pub context: u64,
    /// Full epoch if a held epoch matches the KID's low bits, else `None`.
    pub epoch: Option<u64>,
    /// Low E bits of the epoch from the KID.
    pub epoch_low: u64,
}

/// A dropped frame with its reason and, when the KID is decodable, its claimed origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("frame dropped ({reason:?}, kid {kid:?}, origin {origin:?})")]
pub struct FrameError {
    /// Why it was dropped.
    pub reason: FrameDropReason,
    /// KID from the header, if it parsed.
    pub kid: Option<Kid>,
    /// Claimed origin, if the KID fits the layout.
    pub origin: Option<FrameOrigin>,
}
