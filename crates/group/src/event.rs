//! Events a [`crate::CallGroup`] reports through `poll_event`.

use std::time::Duration;

use blindcall_sframe::Kid;

use crate::code::SecurityCode;
use crate::identity::RosterMember;
use crate::media_auth::{ImpersonationReason, StreamRef};
use crate::policy::{Actor, ProposalKind};

/// Why an epoch's receive keys were dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RetireReason {
    /// The retention time after the transition passed.
    Expired,
    /// A newer epoch uses the same low E bits of the KID.
    EpochBitsReused,
    /// This member left or was removed.
    NoLongerMember,
}

/// Something the application should know or act on.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The group moved to `epoch`; show `code` on screen.
    EpochChanged {
        /// New epoch.
        epoch: u64,
        /// New security code.
        code: SecurityCode,
    },
    /// Members joined in `epoch`.
    MembersJoined {
        /// Epoch in which they are members.
        epoch: u64,
        /// Who joined.
        members: Vec<RosterMember>,
    },
    /// Members left or were removed in `epoch`.
    MembersLeft {
        /// Epoch from which they are no longer members.
        epoch: u64,
        /// Who left.
        members: Vec<RosterMember>,
    },
    /// A proposal passed policy and waits for a commit (e.g. the relay asks to remove someone).
    ProposalQueued {
        /// Who proposed it.
        proposer: Actor,
        /// What kind.
        kind: ProposalKind,
        /// For a Remove: the leaf it removes.
        removed: Option<u32>,
    },
    /// This member joined from a Welcome and should now send a path-update commit
    /// (call `CallGroup::self_update`).
    PathUpdateDue,
    /// Receive keys of `epoch` were zeroized.
    EpochKeysRetired {
        /// Epoch.
        epoch: u64,
        /// Why.
        reason: RetireReason,
    },
    /// Own senders now use `epoch`; request a keyframe. `forced` if the old send epoch's keys
    /// expired before the application activated the new one.
    SendEpochActivated {
        /// New send epoch.
        epoch: u64,
        /// Whether the group switched on its own at expiry.
        forced: bool,
    },
    /// This member was removed (or its leave was committed); all keys are gone.
    RemovedFromCall {
        /// Epoch of the removal commit.
        epoch: u64,
    },
    /// Every other member that confirms epochs confirmed `epoch` with the same tag: all are in
    /// the same group with the same keys.
    EpochConsistent {
        /// Epoch.
        epoch: u64,
    },
    /// `member` signed a confirmation of `epoch` with a different tag: it is in another group
    /// state for the same epoch (the relay confirmed two different commits, splitting the
    /// call). Media between the two sides no longer opens; reported, not repaired.
    GroupSplit {
        /// Epoch.
        epoch: u64,
        /// The member on the other side.
        member: RosterMember,
    },
    /// These members did not confirm `epoch` within the confirmation timeout (slow, cut off,
    /// or on the other side of a split whose confirmations the relay withholds).
    EpochUnconfirmed {
        /// Epoch.
        epoch: u64,
        /// Who did not confirm.
        members: Vec<RosterMember>,
    },
    /// Frames on `stream` claim to come from `claimed` but do not (detected `detected_after`
    /// the first such frame was opened); the stream is blocked for that member, so they never
    /// play under its name again. The member's own streams are not affected.
    Impersonation {
        /// The member whose identity was claimed (if still in the roster).
        claimed: Option<RosterMember>,
        /// Its leaf.
        leaf: u32,
        /// KID of the offending frame.
        kid: Kid,
        /// The stream that carried it.
        stream: StreamRef,
        /// What gave it away.
        reason: ImpersonationReason,
        /// Time from the first offending frame to detection.
        detected_after: Duration,
    },
    /// `member` does not sign its media (e.g. another MLS implementation): its frames play,
    /// shown as unauthenticated within the group.
    SenderUnauthenticated {
        /// The member (if still in the roster).
        member: Option<RosterMember>,
        /// Its leaf.
        leaf: u32,
        /// Epoch in which this was first seen.
        epoch: u64,
    },
    /// A block on `stream` for `leaf` ended: a late manifest of that member vouched for it.
    StreamUnblocked {
        /// Leaf.
        leaf: u32,
        /// Stream.
        stream: StreamRef,
    },
}
