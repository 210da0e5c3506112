//! Commit validation: everything the DS checks before it sequences a commit. Nothing here
//! changes the group; the result is a [`ValidatedCommit`], the only thing
//! [`GroupState::apply`](super::mls::GroupState::apply) merges.

use std::collections::BTreeSet;

use blindcall_policy::check_commit;
use blindcall_proto::CommitRejectReason;
use openmls::prelude::{
    ContentType, MlsMessageBodyIn, MlsMessageIn, ProcessedMessageContent, ProtocolMessage,
    PublicMessageIn, Sender, StagedCommit,
};
use openmls_rust_crypto::RustCrypto;
use tls_codec::{Deserialize as _, Serialize as _};

use super::ConnId;
use super::error::DsFault;
use super::mls::{GroupState, parse_group_info};
use crate::store::CommitRecord;

/// A commit as sequenced: the parsed MLS message of the epoch's winner.
#[derive(Debug, Clone)]
pub(crate) struct SequencedCommit {
    pub epoch: u64,
    pub message: MlsMessageIn,
}

impl SequencedCommit {
    pub fn to_bytes(&self) -> Result<Vec<u8>, DsFault> {
        self.message
            .tls_serialize_detached()
            .map_err(|_| DsFault::Serialize)
    }
}

/// Who a joiner is: the waiting connection whose KeyPackage an Add names.
#[derive(Debug, Clone)]
pub(crate) struct Joiner {
    pub conn: ConnId,
    pub signature_key: Vec<u8>,
}

/// What the DS needs to know about the committer and the room to validate a commit.
pub(crate) struct CommitContext<'a> {
    /// The committer's leaf if it is a member.
    pub committer_leaf: Option<u32>,
    /// KeyPackageRef → waiting connection, for every joiner in the waiting room.
    pub waiting: &'a [(Vec<u8>, Joiner)],
}

/// Who proposed a leaf's removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RemovedBy {
    /// The relay, as external sender (a departure).
    Relay,
    /// The leaf itself (a leave).
    Itself,
    /// Another member (a host removing it).
    Member(u32),
}

/// One leaf a commit removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Removal {
    pub leaf: u32,
    pub by: RemovedBy,
}

/// A commit that passed every check; the only thing [`GroupState::apply`] accepts.
#[must_use]
pub(crate) struct ValidatedCommit {
    pub(super) sequenced: SequencedCommit,
    pub(super) staged: StagedCommit,
    pub(super) joiners: Vec<Joiner>,
    pub(super) removed: Vec<Removal>,
    pub(super) welcome: Option<MlsMessageIn>,
    /// The new epoch's GroupInfo; `None` for another node's winner from a version 1 record
    /// (which carries none, CL-REC-2).
    pub(super) group_info: Option<MlsMessageIn>,
}

/// What merging a commit changed.
pub(crate) struct AppliedCommit {
    pub sequenced: SequencedCommit,
    pub new_epoch: u64,
    /// Joiners and the leaf each now occupies.
    pub joined: Vec<(ConnId, u32)>,
    pub removed: Vec<Removal>,
    pub welcome: Option<MlsMessageIn>,
}

/// A refusal of a commit, with the winner when the epoch is taken.
#[derive(Debug)]
pub(crate) struct Rejection {
    pub reason: CommitRejectReason,
    pub winner: Option<Box<SequencedCommit>>,
}

impl From<CommitRejectReason> for Rejection {
    fn from(reason: CommitRejectReason) -> Self {
        Self {
            reason,
            winner: None,
        }
    }
}

impl GroupState {
    /// Check a commit against the public group state, the call's policy (the rules every
    /// member applies) and the DS's own rules. Changes nothing.
    pub fn validate_commit(
        &self,
        crypto: &RustCrypto,
        claimed_epoch: u64,
        commit: &[u8],
        welcome: Option<&[u8]>,
        group_info: Option<&[u8]>,
        ctx: &CommitContext<'_>,
    ) -> Result<ValidatedCommit, Rejection> {
        let (message, pm, staged) = self.stage_commit(crypto, claimed_epoch, commit, |leaf| {
            ctx.committer_leaf == Some(leaf)
        })?;

        // Adds: only KeyPackages of joiners in the waiting room.
        let mut joiners = Vec::new();
        let mut add_refs = BTreeSet::new();
        for add in staged.add_proposals() {
            let kp = add.add_proposal().key_package();
            let kp_ref = kp
                .hash_ref(crypto)
                .map_err(|_| CommitRejectReason::INVALID)?
                .as_slice()
                .to_vec();
            let (_, joiner) = ctx
                .waiting
                .iter()
                .find(|(r, _)| *r == kp_ref)
                .ok_or(CommitRejectReason::UNKNOWN_KEY_PACKAGE)?;
            if !add_refs.insert(kp_ref) {
                return Err(CommitRejectReason::UNKNOWN_KEY_PACKAGE.into());
            }
            joiners.push(joiner.clone());
        }

        // Welcome: present exactly when there are Adds, and addressed to exactly those joiners.
        let welcome = check_welcome(crypto, &staged, welcome)?;

        let removed = removals(&staged);

        // GroupInfo of the new epoch, with the ratchet tree, signed by a member of the new tree,
        // and describing exactly the context the commit produces.
        let gi_bytes = group_info.ok_or(CommitRejectReason::BAD_GROUP_INFO)?;
        let gi_message = check_group_info(crypto, gi_bytes, &pm, &staged)?;

        Ok(ValidatedCommit {
            sequenced: SequencedCommit {
                epoch: claimed_epoch,
                message,
            },
            staged,
            joiners,
            removed,
            welcome,
            group_info: Some(gi_message),
        })
    }

    /// The checks every commit passes, from this node's members or sequenced by another node:
    /// an MLS PublicMessage commit of a member (`sender_ok`) for the current epoch of this
    /// group that openmls accepts against the public state and the members' policy allows.
    fn stage_commit(
        &self,
        crypto: &RustCrypto,
        claimed_epoch: u64,
        commit: &[u8],
        sender_ok: impl Fn(u32) -> bool,
    ) -> Result<(MlsMessageIn, PublicMessageIn, StagedCommit), Rejection> {
        let message = MlsMessageIn::tls_deserialize_exact(commit)
            .map_err(|_| CommitRejectReason::MALFORMED)?;
        let pm = match message.clone().extract() {
            MlsMessageBodyIn::PublicMessage(pm) => pm,
            MlsMessageBodyIn::PrivateMessage(_) => {
                return Err(CommitRejectReason::NOT_PUBLIC_MESSAGE.into());
            }
            _ => return Err(CommitRejectReason::NOT_A_COMMIT.into()),
        };
        let epoch = pm.epoch().as_u64();
        if epoch != claimed_epoch {
            return Err(CommitRejectReason::EPOCH_MISMATCH.into());
        }
        if pm.group_id() != self.group.group_id() {
            return Err(CommitRejectReason::WRONG_GROUP.into());
        }
        let current = self.epoch();
        if epoch < current {
            return Err(Rejection {
                reason: CommitRejectReason::EPOCH_TAKEN,
                winner: self.winner(epoch).cloned().map(Box::new),
            });
        }
        if epoch > current {
            return Err(CommitRejectReason::FUTURE_EPOCH.into());
        }
        if pm.content_type() != ContentType::Commit {
            return Err(CommitRejectReason::NOT_A_COMMIT.into());
        }
        // Only members commit: no external commits, from anyone.
        match pm.sender() {
            Sender::NewMemberCommit => return Err(CommitRejectReason::EXTERNAL_COMMIT.into()),
            Sender::Member(leaf) if sender_ok(leaf.u32()) => {}
            Sender::Member(_) => return Err(CommitRejectReason::SENDER_MISMATCH.into()),
            Sender::External(_) | Sender::NewMemberProposal => {
                return Err(CommitRejectReason::NOT_A_COMMIT.into());
            }
        }
        let committer = pm.sender().clone();
        let processed = self
            .group
            .process_message(crypto, ProtocolMessage::from(pm.clone()))
            .map_err(|_| CommitRejectReason::INVALID)?;
        let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
            return Err(CommitRejectReason::NOT_A_COMMIT.into());
        };
        let staged = *staged;

        // The members' rules: who may add and remove, identities fixed, credentials valid,
        // allowed proposal kinds, call size.
        check_commit(&self.params.rules(), &self.roster(), &committer, &staged)
            .map_err(|_| CommitRejectReason::POLICY)?;
        Ok((message, pm, staged))
    }

    /// Check a winner of the current epoch that another node sequenced (store mode, CL-DS-3,
    /// CL-FOLLOW-2): the checks of [`GroupState::stage_commit`], from any member; the
    /// GroupInfo of the new epoch the record carries is checked as a committer's is (a record
    /// without one, version 1, leaves this node without the new epoch's GroupInfo); its Welcome,
    /// when there is one, is checked against the commit's Adds, and the joiners it names that
    /// wait here (their KeyPackage published to this node too) are seated here and welcomed.
    pub fn validate_winner(
        &self,
        crypto: &RustCrypto,
        record: &CommitRecord,
        waiting: &[(Vec<u8>, Joiner)],
    ) -> Result<ValidatedCommit, Rejection> {
        let epoch = record.epoch();
        let (message, pm, staged) = self.stage_commit(crypto, epoch, record.commit(), |_| true)?;
        let group_info = record
            .group_info()
            .map(|gi| check_group_info(crypto, gi, &pm, &staged))
            .transpose()?;
        // A version 1 record has no Welcome: its joiners wait here unwelcomed.
        let welcome = match record.welcome() {
            Some(w) => check_welcome(crypto, &staged, Some(w))?,
            None => None,
        };
        let mut joiners = Vec::new();
        if welcome.is_some() {
            for add in staged.add_proposals() {
                let kp_ref = add
                    .add_proposal()
                    .key_package()
                    .hash_ref(crypto)
                    .map_err(|_| CommitRejectReason::INVALID)?;
                if let Some((_, j)) = waiting.iter().find(|(r, _)| r == kp_ref.as_slice()) {
                    joiners.push(j.clone());
                }
            }
        }
        let removed = removals(&staged);
        Ok(ValidatedCommit {
            sequenced: SequencedCommit { epoch, message },
            staged,
            joiners,
            removed,
            welcome,
            group_info,
        })
    }
}

/// The GroupInfo of the epoch a commit leads to: with the ratchet tree, signed by a member of
/// the new tree, and describing exactly the context the commit produces.
fn check_group_info(
    crypto: &RustCrypto,
    bytes: &[u8],
    pm: &PublicMessageIn,
    staged: &StagedCommit,
) -> Result<MlsMessageIn, Rejection> {
    let (gi_message, scratch, _scratch_storage) =
        parse_group_info(crypto, bytes).map_err(|_| CommitRejectReason::BAD_GROUP_INFO)?;
    if scratch.group_context() != staged.group_context()
        || Some(scratch.confirmation_tag()) != pm.confirmation_tag()
    {
        return Err(CommitRejectReason::BAD_GROUP_INFO.into());
    }
    Ok(gi_message)
}

/// A commit's Welcome: present exactly when it has Adds, and addressed to exactly the
/// KeyPackages they add.
fn check_welcome(
    crypto: &RustCrypto,
    staged: &StagedCommit,
    welcome: Option<&[u8]>,
) -> Result<Option<MlsMessageIn>, Rejection> {
    let mut add_refs = BTreeSet::new();
    for add in staged.add_proposals() {
        let kp_ref = add
            .add_proposal()
            .key_package()
            .hash_ref(crypto)
            .map_err(|_| CommitRejectReason::INVALID)?;
        add_refs.insert(kp_ref.as_slice().to_vec());
    }
    match (welcome, add_refs.is_empty()) {
        (None, true) => Ok(None),
        (Some(_), true) | (None, false) => Err(CommitRejectReason::WELCOME_MISMATCH.into()),
        (Some(bytes), false) => {
            let w = MlsMessageIn::tls_deserialize_exact(bytes)
                .map_err(|_| CommitRejectReason::WELCOME_MISMATCH)?;
            let MlsMessageBodyIn::Welcome(inner) = w.clone().extract() else {
                return Err(CommitRejectReason::WELCOME_MISMATCH.into());
            };
            let addressed: BTreeSet<Vec<u8>> = inner
                .secrets()
                .iter()
                .map(|s| s.new_member().as_slice().to_vec())
                .collect();
            if addressed != add_refs || inner.secrets().len() != add_refs.len() {
                return Err(CommitRejectReason::WELCOME_MISMATCH.into());
            }
            Ok(Some(w))
        }
    }
}

/// The leaves a staged commit removes (authorized by the policy), with who proposed each, for
/// the ban rule.
fn removals(staged: &StagedCommit) -> Vec<Removal> {
    staged
        .remove_proposals()
        .map(|rm| {
            let leaf = rm.remove_proposal().removed().u32();
            let by = match rm.sender() {
                Sender::Member(p) if p.u32() == leaf => RemovedBy::Itself,
                Sender::Member(p) => RemovedBy::Member(p.u32()),
                _ => RemovedBy::Relay,
            };
            Removal { leaf, by }
        })
        .collect()
}
