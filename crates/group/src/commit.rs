//! Own commits waiting for the delivery service's verdict.

use std::time::Instant;

use blindcall_sframe::BaseKey;

use crate::call::CallGroup;
use crate::error::Error;

/// What an own commit does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommitKind {
    /// Adds members (with a Welcome).
    Add,
    /// Removes members.
    Remove,
    /// Refreshes the own leaf and path (also the path update after joining).
    SelfUpdate,
    /// Commits proposals received from others (e.g. a relay's removal, a member's leave).
    PendingProposals,
}

/// The next epoch's keys, derived from the staged commit before merging.
pub(crate) struct NextEpoch {
    pub(crate) epoch: u64,
    pub(crate) secret: BaseKey,
    pub(crate) authenticator: Vec<u8>,
}

/// An own commit sent to the delivery service. Its only exits are [`PendingCommit::confirm`]
/// (the DS sequenced it: merge and install the next epoch's keys) and
/// [`PendingCommit::discard`] (another commit won the epoch: drop it, then process the winner).
#[must_use = "a PendingCommit must be confirmed (DS accepted it) or discarded (another commit won)"]
pub struct PendingCommit {
    pub(crate) id: u64,
    pub(crate) group_id: Vec<u8>,
    pub(crate) from_epoch: u64,
    pub(crate) kind: CommitKind,
    pub(crate) commit: Vec<u8>,
    pub(crate) welcome: Option<Vec<u8>>,
    pub(crate) group_info: Option<Vec<u8>>,
    pub(crate) next: NextEpoch,
}

impl std::fmt::Debug for PendingCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingCommit")
            .field("kind", &self.kind)
            .field("from_epoch", &self.from_epoch)
            .field("commit_len", &self.commit.len())
            .field("welcome", &self.welcome.is_some())
            .finish_non_exhaustive()
    }
}

impl PendingCommit {
    /// The TLS-serialized commit `MLSMessage` (a PublicMessage) to send to the DS.
    pub fn commit(&self) -> &[u8] {
        &self.commit
    }

    /// The TLS-serialized Welcome `MLSMessage` (ratchet tree included), when members are added.
    pub fn welcome(&self) -> Option<&[u8]> {
        self.welcome.as_deref()
    }

    /// The TLS-serialized GroupInfo `MLSMessage` of the next epoch (ratchet tree included), for
    /// the relay.
    pub fn group_info(&self) -> Option<&[u8]> {
        self.group_info.as_deref()
    }

    /// What this commit does.
    pub fn kind(&self) -> CommitKind {
        self.kind
    }

    /// The epoch this commit was made in.
    pub fn from_epoch(&self) -> u64 {
        self.from_epoch
    }

    /// The epoch this commit leads to.
    pub fn next_epoch(&self) -> u64 {
        self.next.epoch
    }

    /// The DS sequenced this commit: merge it, install the next epoch's receive keys at once,
    /// and start the old epoch's retention.
    pub fn confirm(self, call: &mut CallGroup, now: Instant) -> Result<(), Error> {
        call.confirm_pending(self, now)
    }

    /// Another commit won this epoch: drop this one (its keys are zeroized). Then pass the
    /// winner to [`CallGroup::handle_message`].
    pub fn discard(self, call: &mut CallGroup) -> Result<(), Error> {
        call.discard_pending(self)
    }
}
