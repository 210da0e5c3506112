//! blindcall-group: a call's MLS group (RFC 9420, openmls) turning each epoch into RFC 9605
//! §5.2 SFrame keys for every sender. Sans-IO: bytes and time in; bytes, events and timers out.
//!
//! A [`Client`] publishes KeyPackages and becomes a [`CallGroup`] by creating a call or joining
//! from a Welcome. Own commits come back as a [`PendingCommit`] that must be confirmed (the
//! delivery service sequenced it) or discarded (another commit won). The admission policy is
//! enforced here, in every member's client; the relay can only propose removals.

pub mod call;
pub mod code;
pub mod commit;
pub mod config;
pub mod confirm;
pub mod error;
pub mod event;
pub mod identity;
pub mod keyring;
pub mod kid;
pub mod media_auth;
pub mod policy;

pub use call::{CallGroup, PEER_CONFIRMATION, PEER_MANIFEST, ResumeProof};
pub use code::SecurityCode;
pub use commit::{CommitKind, PendingCommit};
pub use config::{CallConfig, CallParams, MemberConfig, MlsSuite, RelaySender};
pub use confirm::PeerMessageError;
pub use error::{
    ApiMisuse, Error, FrameDropReason, FrameError, FrameOrigin, InvalidMessage, MlsFailure,
};
pub use event::{Event, RetireReason};
pub use identity::{
    Client, IdentityKey, IdentityKeyError, KeyPackageInfo, Roster, RosterMember,
    inspect_key_package,
};
pub use keyring::{EXPORTER_LABEL, OpenedFrame};
pub use kid::{KidError, KidLayout, KidParts};
pub use policy::{Actor, AddRule, PolicyViolation, ProposalKind, RemoveRule};
