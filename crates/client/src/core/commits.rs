//! Own commits and the work behind them.
//!
//! One own commit at a time (SDK-COMMIT-1). Work that needs a commit (approve, remove, commit
//! the relay's removal proposals, the path update after joining) is queued as an [`Intent`].
//! A commit is made from the next intent only when none is pending; it is sent, and its
//! [`PendingCommit`] waits for the relay's answer: `CommitAccepted` confirms it, a refusal
//! or another member's winning commit discards it and the intent is retried in the new epoch.
//! Replies are matched to the pending commit by epoch; a stale reply changes nothing
//! (SDK-COMMIT-3). A refusal because the relay cluster's room store was unavailable keeps the
//! commit pending and sends it again after a growing delay (SDK-COMMIT-6). A winning commit for the member's own epoch that it cannot process means
//! the others moved on without it: it stops committing and the call ends (SDK-DIV-1).

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blindcall_group::{Actor, ApiMisuse, PendingCommit, ProposalKind};
use blindcall_proto::{
    Body, Commit, CommitAccepted, CommitBroadcast, CommitRejectReason, CommitRejected,
    ProposalBroadcast, RelayProposal, VLBytes,
};

use super::CallCore;
use super::join::Phase;
use super::timer::{Timer, after};
use crate::error::{CallError, CallWarning, GroupFailure};
use crate::event::{EndReason, Event};
use crate::observer::{CommitPurpose, CommitSent};

/// Work that needs an own commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Intent {
    /// Add the joiner of this announced join request.
    Approve(u64),
    /// Remove the member at `leaf`, if it still holds `signature_key` when the commit is made
    /// (leaves are reused: the member asked for may have left and a joiner taken its leaf).
    Remove {
        /// Its leaf when the removal was asked for.
        leaf: u32,
        /// Its signature (identity) key.
        signature_key: Arc<[u8]>,
    },
    /// Commit the relay's queued removal proposals.
    Proposals,
    /// The path update after joining.
    PathUpdate,
}

/// The first delay before an own commit refused `STORE_UNAVAILABLE` is sent again; it doubles
/// with each refusal in a row, up to [`STORE_RETRY_MAX`].
pub(super) const STORE_RETRY_FIRST: Duration = Duration::from_millis(500);
/// The longest delay between sends of a commit refused `STORE_UNAVAILABLE`.
pub(super) const STORE_RETRY_MAX: Duration = Duration::from_secs(8);

/// The own commit waiting for the relay's answer, and why it was made.
struct Pending {
    commit: PendingCommit,
    intent: Intent,
    /// Refused `STORE_UNAVAILABLE` and waiting to be sent again (SDK-COMMIT-6).
    resend: bool,
}

impl Intent {
    fn purpose(&self) -> CommitPurpose {
        match self {
            Self::Approve(_) => CommitPurpose::Add,
            Self::Remove { .. } => CommitPurpose::Remove,
            Self::Proposals => CommitPurpose::Proposals,
            Self::PathUpdate => CommitPurpose::PathUpdate,
        }
    }
}

/// Own commits and intents.
#[derive(Default)]
pub(super) struct Commits {
    pending: Option<Pending>,
    intents: VecDeque<Intent>,
    /// The epoch in which the relay's removal proposals are queued.
    proposal_epoch: Option<u64>,
    /// Leaves proposed to be removed in that epoch (by the relay, or leaving themselves).
    pub(super) proposed_removals: BTreeSet<u32>,
    /// `STORE_UNAVAILABLE` refusals of the pending commit in a row.
    store_refusals: u32,
}

impl Commits {
    /// Queues `intent` unless it is queued already.
    pub(super) fn queue(&mut self, intent: Intent) {
        if !self.intents.contains(&intent) {
            self.intents.push_back(intent);
        }
    }

    /// A new epoch: the relay's proposals of the old one are gone with it.
    pub(super) fn entered_epoch(&mut self) {
        self.proposal_epoch = None;
        self.proposed_removals.clear();
    }

    /// Queues the intent of a commit that lost its epoch, to be made again in the new one. A
    /// path update is not queued here: the group schedules it again itself, and queueing
    /// both would commit two updates.
    fn retry(&mut self, intent: Intent) {
        if intent != Intent::PathUpdate && !self.intents.contains(&intent) {
            self.intents.push_front(intent);
        }
    }
}

/// The `Commit` message that sends `commit`.
fn commit_body(commit: &PendingCommit) -> Commit {
    Commit {
        epoch: commit.from_epoch(),
        commit: VLBytes::new(commit.commit().to_vec()),
        welcome: commit.welcome().map(|w| VLBytes::new(w.to_vec())),
        group_info: commit.group_info().map(|w| VLBytes::new(w.to_vec())),
    }
}

fn group_warning(e: &blindcall_group::Error) -> CallWarning {
    tracing::debug!(error = %e, "group operation failed");
    CallWarning::Group(GroupFailure::from(e))
}

fn refused_warning(e: &blindcall_group::Error) -> CallWarning {
    tracing::debug!(error = %e, "handshake message refused");
    CallWarning::HandshakeRefused(GroupFailure::from(e))
}

/// Why the sequenced winner of the member's own epoch could not be processed, unless the
/// refusal is benign (an own commit still outstanding: the winner is merged once it is
/// discarded).
fn divergence(e: &blindcall_group::Error) -> Option<GroupFailure> {
    match e {
        blindcall_group::Error::ApiMisuse(ApiMisuse::PendingCommitOutstanding { .. }) => None,
        e => {
            tracing::debug!(error = %e, "the relay's winning commit was refused");
            Some(GroupFailure::from(e))
        }
    }
}

impl CallCore {
    /// `Command::Remove`: queue the removal of the member at `leaf`, if it still holds
    /// `identity_key` (names are not unique; a leaf may have been reused).
    pub(super) fn remove(&mut self, leaf: u32, identity_key: &[u8]) -> Result<(), CallError> {
        let Some(g) = self.group() else {
            return Err(CallError::NotMember);
        };
        if g.roster()
            .get(leaf)
            .is_none_or(|m| m.signature_key != identity_key)
        {
            return Err(CallError::UnknownMember(leaf));
        }
        self.commits.queue(Intent::Remove {
            leaf,
            signature_key: identity_key.into(),
        });
        Ok(())
    }

    pub(super) fn on_commit_accepted(&mut self, now: Instant, a: &CommitAccepted) {
        // Replies can be stale: an own commit discarded because another member's won its
        // epoch still gets its refusal later. Only the reply for the commit now pending
        // counts; confirming another one would fork this member off.
        let Some(p) = self
            .commits
            .pending
            .take_if(|p| p.commit.from_epoch().checked_add(1) == Some(a.epoch))
        else {
            return;
        };
        let Some(g) = self.group() else { return };
        if let Err(e) = p.commit.confirm(g, now) {
            let w = group_warning(&e);
            self.warn(w);
        }
    }

    pub(super) fn on_commit_rejected(&mut self, now: Instant, r: &CommitRejected) {
        if r.reason == CommitRejectReason::STORE_UNAVAILABLE {
            self.store_unavailable(now, r.epoch);
            return;
        }
        let Some(p) = self
            .commits
            .pending
            .take_if(|p| p.commit.from_epoch() == r.epoch)
        else {
            return;
        };
        let Some(g) = self.group() else { return };
        let intent = p.intent;
        let mut warnings = Vec::new();
        if let Err(e) = p.commit.discard(g) {
            warnings.push(group_warning(&e));
        }
        if r.reason == CommitRejectReason::EPOCH_TAKEN {
            if let Some(w) = &r.winner
                && g.epoch() == r.epoch
                && let Err(e) = g.handle_message(now, w.as_slice())
            {
                match divergence(&e) {
                    Some(reason) => return self.diverged(now, r.epoch, reason, warnings),
                    None => warnings.push(refused_warning(&e)),
                }
            }
            self.commits.retry(intent);
        } else {
            warnings.push(CallWarning::CommitRejected {
                epoch: r.epoch,
                reason: r.reason,
            });
        }
        for w in warnings {
            self.warn(w);
        }
    }

    pub(super) fn on_commit_broadcast(&mut self, now: Instant, b: &CommitBroadcast) {
        let Phase::Member(g) = &mut self.phase else {
            return;
        };
        let mut warnings = Vec::new();
        if let Some(p) = self
            .commits
            .pending
            .take_if(|p| p.commit.from_epoch() == b.epoch)
        {
            if p.commit.commit() == b.commit.as_slice() {
                // The own commit won, its reply was lost with a connection; the relay replays
                // it on resuming: merge it as confirmed.
                if let Err(e) = p.commit.confirm(g, now) {
                    warnings.push(group_warning(&e));
                }
                for w in warnings {
                    self.warn(w);
                }
                return;
            }
            // Another member's commit won this epoch.
            let intent = p.intent;
            if let Err(e) = p.commit.discard(g) {
                warnings.push(group_warning(&e));
            }
            self.commits.retry(intent);
        }
        if b.epoch == g.epoch()
            && let Err(e) = g.handle_message(now, b.commit.as_slice())
        {
            match divergence(&e) {
                Some(reason) => return self.diverged(now, b.epoch, reason, warnings),
                None => warnings.push(refused_warning(&e)),
            }
        }
        for w in warnings {
            self.warn(w);
        }
    }

    /// The relay's room store could not sequence the pending commit of `epoch`; nothing
    /// changed. Keep the commit (the store may hold it after all: the relay then broadcasts
    /// it, which confirms it) and send it again after a growing delay (SDK-COMMIT-6).
    fn store_unavailable(&mut self, now: Instant, epoch: u64) {
        let Some(p) = self
            .commits
            .pending
            .as_mut()
            .filter(|p| p.commit.from_epoch() == epoch)
        else {
            return;
        };
        p.resend = true;
        let doublings = self.commits.store_refusals.min(8);
        self.commits.store_refusals = self.commits.store_refusals.saturating_add(1);
        let delay = STORE_RETRY_FIRST
            .saturating_mul(1 << doublings)
            .min(STORE_RETRY_MAX);
        self.timers.set(Timer::CommitResend, after(now, delay));
        self.warn(CallWarning::CommitRejected {
            epoch,
            reason: CommitRejectReason::STORE_UNAVAILABLE,
        });
    }

    /// The delay after a `STORE_UNAVAILABLE` refusal is over: the pending commit goes again,
    /// unless it was answered meanwhile.
    pub(super) fn commit_resend_due(&mut self, now: Instant) {
        let Phase::Member(g) = &self.phase else {
            return;
        };
        let epoch = g.epoch();
        let Some(p) = self
            .commits
            .pending
            .as_mut()
            .filter(|p| p.resend && p.commit.from_epoch() == epoch)
        else {
            return;
        };
        p.resend = false;
        let (body, purpose) = (commit_body(&p.commit), p.intent.purpose());
        self.observe_sent(now, body.epoch, purpose);
        self.send(Body::Commit(body));
    }

    /// The relay's winning commit for `epoch`, this member's epoch, was refused: the other
    /// members are in the next epoch without it. Committing again would only build a branch
    /// of its own (or loop against the same winner), so it stops here and says why.
    fn diverged(
        &mut self,
        now: Instant,
        epoch: u64,
        reason: GroupFailure,
        warnings: Vec<CallWarning>,
    ) {
        for w in warnings {
            self.warn(w);
        }
        self.commits.intents.clear();
        self.emit(Event::Diverged {
            epoch,
            reason: reason.clone(),
        });
        self.end(now, EndReason::Diverged { epoch, reason });
    }

    /// A member's own proposal (its leave) as the relay passed it on: queued for the current
    /// epoch, then committed like the relay's removal proposals (SDK-PEER-2).
    pub(super) fn on_proposal_broadcast(&mut self, now: Instant, p: &ProposalBroadcast) {
        let Phase::Member(g) = &mut self.phase else {
            return;
        };
        if p.epoch != g.epoch() {
            return;
        }
        if let Err(e) = g.handle_message(now, p.proposal.as_slice()) {
            let w = refused_warning(&e);
            self.warn(w);
        }
    }

    pub(super) fn on_relay_proposal(&mut self, now: Instant, p: &RelayProposal) {
        let Phase::Member(g) = &mut self.phase else {
            return;
        };
        if p.epoch != g.epoch() {
            return;
        }
        let own = p.removed_leaf == g.own_leaf();
        match g.handle_message(now, p.proposal.as_slice()) {
            Ok(()) => {
                self.commits.proposed_removals.insert(p.removed_leaf);
                if own {
                    self.emit(Event::OwnRemovalProposed { epoch: p.epoch });
                }
            }
            Err(e) => {
                let w = refused_warning(&e);
                self.warn(w);
            }
        }
    }

    /// The group queued a proposal: the lowest remaining leaf commits it at once, the member
    /// of rank `r` after `r × proposal_fallback_step` if nobody did (SDK-COMMIT-2). A member
    /// whose removal is proposed commits nothing (MLS forbids removing the committer).
    pub(super) fn proposal_queued(&mut self, now: Instant, proposer: &Actor, kind: ProposalKind) {
        let Phase::Member(g) = &self.phase else {
            return;
        };
        if let (Actor::Member { leaf, .. }, ProposalKind::Remove) = (proposer, kind) {
            // A member's own proposal is its leave (the relay passes on nothing else).
            self.commits.proposed_removals.insert(*leaf);
        }
        let epoch = g.epoch();
        let own = g.own_leaf();
        let Some(rank) = g
            .roster()
            .members()
            .iter()
            .filter(|m| !self.commits.proposed_removals.contains(&m.leaf))
            .position(|m| m.leaf == own)
        else {
            return;
        };
        self.commits.proposal_epoch = Some(epoch);
        let wait = u32::try_from(rank)
            .ok()
            .and_then(|r| self.opts.proposal_fallback_step.checked_mul(r))
            .unwrap_or(Duration::from_secs(3600));
        if wait.is_zero() {
            self.commits.queue(Intent::Proposals);
        } else {
            self.timers.set(Timer::ProposalFallback, after(now, wait));
        }
    }

    /// Nobody committed the relay's proposals in time: this member does.
    pub(super) fn proposal_fallback_due(&mut self) {
        let Phase::Member(g) = &self.phase else {
            return;
        };
        if self.commits.proposal_epoch == Some(g.epoch()) {
            self.commits.queue(Intent::Proposals);
        }
    }

    /// Makes the next own commit from the queued intents, unless one is pending.
    pub(super) fn next_intent(&mut self, now: Instant) {
        while self.commits.pending.is_none() {
            let Some(intent) = self.commits.intents.pop_front() else {
                return;
            };
            let Phase::Member(g) = &mut self.phase else {
                self.commits.intents.clear();
                return;
            };
            if !g.is_active() {
                self.commits.intents.clear();
                return;
            }
            let (result, purpose) = match intent {
                Intent::Approve(request) => {
                    let Some(r) = self.waiting.request(request) else {
                        continue;
                    };
                    (
                        g.add_members(&[r.key_package.as_slice()]),
                        CommitPurpose::Add,
                    )
                }
                Intent::Remove {
                    leaf,
                    ref signature_key,
                } => {
                    // The member asked for must still be the one at the leaf (SDK-COMMIT-4).
                    if g.roster()
                        .get(leaf)
                        .is_none_or(|m| *m.signature_key != **signature_key)
                    {
                        continue;
                    }
                    (g.remove_members(&[leaf]), CommitPurpose::Remove)
                }
                Intent::Proposals => {
                    if self.commits.proposal_epoch != Some(g.epoch()) {
                        continue;
                    }
                    (g.commit_pending_proposals(), CommitPurpose::Proposals)
                }
                Intent::PathUpdate => (g.self_update(), CommitPurpose::PathUpdate),
            };
            let commit = match result {
                Ok(c) => c,
                Err(e) => {
                    let w = group_warning(&e);
                    self.warn(w);
                    continue;
                }
            };
            debug_assert_eq!(purpose, intent.purpose());
            let body = commit_body(&commit);
            self.observe_sent(now, body.epoch, purpose);
            self.send(Body::Commit(body));
            self.commits.store_refusals = 0;
            self.commits.pending = Some(Pending {
                commit,
                intent,
                resend: false,
            });
        }
    }

    fn observe_sent(&self, now: Instant, from_epoch: u64, purpose: CommitPurpose) {
        if let Some(o) = &self.observer {
            o.commit_sent(&CommitSent {
                from_epoch,
                purpose,
                at: now,
            });
        }
    }

    /// Leaving: an own commit still pending is discarded, and no more are made.
    pub(super) fn drop_pending_commit(&mut self) {
        self.commits.intents.clear();
        let Phase::Member(g) = &mut self.phase else {
            return;
        };
        if let Some(p) = self.commits.pending.take()
            && let Err(e) = p.commit.discard(g)
        {
            let w = group_warning(&e);
            self.warn(w);
        }
    }

    /// After resuming: an own commit still pending was never sequenced (the relay's log does
    /// not hold it): drop it and make it again in the current epoch.
    pub(super) fn redo_pending_commit(&mut self) {
        let Phase::Member(g) = &mut self.phase else {
            return;
        };
        if let Some(p) = self.commits.pending.take() {
            let intent = p.intent;
            if let Err(e) = p.commit.discard(g) {
                let w = group_warning(&e);
                self.warn(w);
            }
            self.commits.retry(intent);
        }
    }
}
