//! The delivery service's view of a room's MLS group: public state only.
//!
//! Everything here goes through openmls' `PublicGroup`, which holds the ratchet tree and group
//! context but no epoch secret. A commit is turned into a [`ValidatedCommit`] by
//! [`GroupState::validate_commit`] (which changes nothing, see `validate.rs`) and only that type
//! can be merged by [`GroupState::apply`]: the DS never stores or sequences raw commit bytes.
//! The call's own rules come from `blindcall-policy`, the crate every member applies too.

use std::collections::{BTreeMap, VecDeque};

use blindcall_policy::{CALL_PARAMS_EXTENSION_TYPE, CallParams, Roster, display_identity};
use openmls::prelude::{
    ContentType, ExternalProposal, GroupEpoch, KeyPackage, LeafNodeIndex, MlsMessageBodyIn,
    MlsMessageIn, ProcessedMessageContent, Proposal, ProposalStore, ProtocolMessage,
    ProtocolVersion, PublicGroup, RatchetTreeIn, Sender, SenderExtensionIndex, SignatureScheme,
};
use openmls_rust_crypto::{MemoryStorage, OpenMlsRustCrypto, RustCrypto};
use openmls_traits::crypto::OpenMlsCrypto as _;
use tls_codec::{Deserialize as _, Serialize as _};

use super::RelayIdentities;
use super::error::{DsFault, GroupInfoError, KeyPackageError, ProposalError, ProposalFailure};
use super::validate::{AppliedCommit, SequencedCommit, ValidatedCommit};

/// A validated, stored KeyPackage (single use).
#[derive(Debug, Clone)]
pub(crate) struct StoredKeyPackage {
    pub kp_ref: Vec<u8>,
    pub signature_key: Vec<u8>,
    /// The join proof published with it, passed on to members untouched.
    pub join_proof: Option<Vec<u8>>,
    /// The encoded KeyPackage message as published (≤ the size cap).
    pub bytes: Vec<u8>,
}

/// Validate a KeyPackage message (size, signature, lifetime, version, credential) for a group
/// of `ciphersuite`.
pub(crate) fn validate_key_package(
    crypto: &RustCrypto,
    bytes: &[u8],
    max_len: usize,
    ciphersuite: Option<openmls::prelude::Ciphersuite>,
) -> Result<StoredKeyPackage, KeyPackageError> {
    if bytes.len() > max_len {
        return Err(KeyPackageError::TooLarge {
            len: bytes.len(),
            max: max_len,
        });
    }
    let message =
        MlsMessageIn::tls_deserialize_exact(bytes).map_err(|_| KeyPackageError::Malformed)?;
    let MlsMessageBodyIn::KeyPackage(kp_in) = message.extract() else {
        return Err(KeyPackageError::NotKeyPackage);
    };
    let kp: KeyPackage = kp_in
        .validate(crypto, ProtocolVersion::Mls10)
        .map_err(|_| KeyPackageError::Invalid)?;
    if let Some(cs) = ciphersuite
        && kp.ciphersuite() != cs
    {
        return Err(KeyPackageError::WrongCiphersuite);
    }
    // Members refuse to add anything but a basic credential with a 1..=255-byte UTF-8 identity
    // (the shared policy); such a KeyPackage would only sit in the waiting room.
    display_identity(kp.leaf_node().credential()).map_err(|_| KeyPackageError::Credential)?;
    let kp_ref = kp
        .hash_ref(crypto)
        .map_err(|_| KeyPackageError::Invalid)?
        .as_slice()
        .to_vec();
    Ok(StoredKeyPackage {
        kp_ref,
        signature_key: kp.leaf_node().signature_key().as_slice().to_vec(),
        join_proof: None,
        bytes: bytes.to_vec(),
    })
}

/// A proposal queued for the current epoch, as sent to the members (a resuming member gets
/// them again).
#[derive(Debug, Clone)]
pub(crate) enum PendingProposal {
    /// The relay's Remove of `leaf` (a departure), sent as `RelayProposal`.
    Relay { leaf: u32, bytes: Vec<u8> },
    /// A member's own proposal (a leave), sent as `ProposalBroadcast`.
    Member { bytes: Vec<u8> },
}

/// What a resume proof shows about its signer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProofCheck {
    /// Signed by the key the leaf holds in the current tree.
    Current,
    /// Signed by a key recently removed from that leaf.
    Removed,
    /// No member at the leaf, and no removed key of it verifies.
    Unknown,
    /// A member is at the leaf, and neither its key nor a removed one verifies.
    BadSignature,
}

/// A room's group as the DS tracks it.
pub(crate) struct GroupState {
    pub(super) storage: MemoryStorage,
    pub(super) group: PublicGroup,
    /// The current epoch's GroupInfo: `None` only after another node's winner read from a
    /// version 1 record (store mode, CL-FOLLOW-2), until the next commit.
    pub(super) group_info: Option<MlsMessageIn>,
    /// The call parameters of the group context (they cannot change: the policy refuses
    /// GroupContextExtensions proposals).
    pub(super) params: CallParams,
    /// The last `history_len` sequenced commits, consecutive epochs, oldest first, each with
    /// the proposals sent in its epoch (a commit may include them by reference, so a member
    /// that missed them gets them again before the commit when it resumes).
    history: VecDeque<(SequencedCommit, Vec<PendingProposal>)>,
    history_len: usize,
    /// Proposals queued for the current epoch, in the order they were sent.
    pending: Vec<PendingProposal>,
    /// (leaf, signature key) of the last `history_len` members removed, oldest first: a
    /// removed member's resume is told it was removed rather than that its proof is bad.
    removed_keys: VecDeque<(u32, Vec<u8>)>,
    /// The epoch from which each leaf's current member is in the group.
    member_since: BTreeMap<u32, u64>,
    sender_index: SenderExtensionIndex,
    /// The scheme of the relay identity listed in the group's `external_senders`.
    relay_scheme: SignatureScheme,
}

/// The number of members in a GroupInfo message's ratchet tree, if it parses.
pub(crate) fn group_info_members(bytes: &[u8]) -> Option<usize> {
    let crypto = RustCrypto::default();
    let (_, group, _) = parse_group_info(&crypto, bytes).ok()?;
    Some(group.members().count())
}

/// Parse a GroupInfo message with its ratchet tree into a fresh public group.
pub(super) fn parse_group_info(
    crypto: &RustCrypto,
    bytes: &[u8],
) -> Result<(MlsMessageIn, PublicGroup, MemoryStorage), GroupInfoError> {
    let message =
        MlsMessageIn::tls_deserialize_exact(bytes).map_err(|_| GroupInfoError::Malformed)?;
    let MlsMessageBodyIn::GroupInfo(vgi) = message.clone().extract() else {
        return Err(GroupInfoError::NotGroupInfo);
    };
    let tree: RatchetTreeIn = vgi
        .extensions()
        .ratchet_tree()
        .ok_or(GroupInfoError::MissingRatchetTree)?
        .ratchet_tree()
        .clone();
    let storage = MemoryStorage::default();
    let (group, _info) =
        PublicGroup::from_external(crypto, &storage, tree, vgi, ProposalStore::new())
            .map_err(|_| GroupInfoError::Invalid)?;
    Ok((message, group, storage))
}

/// The call's parameters from the group context.
fn call_params(group: &PublicGroup) -> Result<CallParams, GroupInfoError> {
    let raw = group
        .group_context()
        .extensions()
        .unknown(CALL_PARAMS_EXTENSION_TYPE)
        .ok_or(GroupInfoError::CallParams)?;
    CallParams::decode(&raw.0).map_err(|_| GroupInfoError::CallParams)
}

/// The index of this relay's external sender in the group context, and its signature scheme
/// (the group's).
fn relay_sender(
    group: &PublicGroup,
    relays: &RelayIdentities,
) -> Result<(u32, SignatureScheme), GroupInfoError> {
    let scheme = group.ciphersuite().signature_algorithm();
    let relay = relays
        .for_scheme(scheme)
        .ok_or(GroupInfoError::MissingExternalSender)?;
    let ours = relay.external_sender();
    let index = group
        .group_context()
        .extensions()
        .external_senders()
        .and_then(|senders| senders.iter().position(|s| *s == ours))
        .ok_or(GroupInfoError::MissingExternalSender)?;
    let index = u32::try_from(index).map_err(|_| GroupInfoError::MissingExternalSender)?;
    Ok((index, scheme))
}

impl GroupState {
    /// Bootstrap from the creator's GroupInfo. Returns the state and the creator's leaf.
    pub fn bootstrap(
        crypto: &RustCrypto,
        relays: &RelayIdentities,
        group_info: &[u8],
        history_len: usize,
    ) -> Result<(Self, u32), GroupInfoError> {
        let (message, group, storage) = parse_group_info(crypto, group_info)?;
        let members: Vec<(u32, Vec<u8>)> = group
            .members()
            .map(|m| (m.index.u32(), m.signature_key))
            .collect();
        let [(creator, ref creator_key)] = members[..] else {
            return Err(GroupInfoError::NotSingleMember);
        };
        let params = call_params(&group)?;
        if !params.is_host(creator_key) {
            return Err(GroupInfoError::CallParams);
        }
        let (index, scheme) = relay_sender(&group, relays)?;
        let epoch = group.group_context().epoch().as_u64();
        Ok((
            Self {
                storage,
                group,
                group_info: Some(message),
                params,
                history: VecDeque::new(),
                history_len,
                pending: Vec::new(),
                removed_keys: VecDeque::new(),
                member_since: BTreeMap::from([(creator, epoch)]),
                sender_index: SenderExtensionIndex::new(index),
                relay_scheme: scheme,
            },
            creator,
        ))
    }

    /// The public state of a group from a member's GroupInfo (with its ratchet tree) of any
    /// epoch: what a cluster node that takes a room over starts from when the sequenced
    /// commits cannot be replayed from the genesis (a commit including proposals by reference
    /// that the store does not hold, CL-HOME-9). The relay's external sender must be listed;
    /// the commit log starts empty, and every member counts as a member since epoch 0 (the
    /// log decides how far back a resume reaches).
    pub fn restore(
        crypto: &RustCrypto,
        relays: &RelayIdentities,
        group_info: &[u8],
        history_len: usize,
    ) -> Result<Self, GroupInfoError> {
        let (message, group, storage) = parse_group_info(crypto, group_info)?;
        let params = call_params(&group)?;
        let (index, scheme) = relay_sender(&group, relays)?;
        let member_since = group.members().map(|m| (m.index.u32(), 0)).collect();
        Ok(Self {
            storage,
            group,
            group_info: Some(message),
            params,
            history: VecDeque::new(),
            history_len,
            pending: Vec::new(),
            removed_keys: VecDeque::new(),
            member_since,
            sender_index: SenderExtensionIndex::new(index),
            relay_scheme: scheme,
        })
    }

    pub fn epoch(&self) -> u64 {
        self.group.group_context().epoch().as_u64()
    }

    pub fn ciphersuite(&self) -> openmls::prelude::Ciphersuite {
        self.group.ciphersuite()
    }

    /// The MLS group id.
    pub fn group_id(&self) -> &[u8] {
        self.group.group_id().as_slice()
    }

    /// Whether `leaf` is occupied in the current tree.
    pub fn has_leaf(&self, leaf: u32) -> bool {
        self.group.leaf(LeafNodeIndex::new(leaf)).is_some()
    }

    /// The members of the current epoch, with the host role from the call parameters.
    /// The leaves of the group's members.
    pub fn leaves(&self) -> Vec<u32> {
        self.group.members().map(|m| m.index.u32()).collect()
    }

    pub fn roster(&self) -> Roster {
        Roster::from_public_group(&self.group, |k| self.params.is_host(k))
    }

    /// The current epoch's GroupInfo, if this node holds it.
    pub fn group_info_bytes(&self) -> Result<Option<Vec<u8>>, DsFault> {
        self.group_info
            .as_ref()
            .map(|gi| gi.tls_serialize_detached().map_err(|_| DsFault::Serialize))
            .transpose()
    }

    pub fn ratchet_tree_bytes(&self) -> Result<Vec<u8>, DsFault> {
        self.group
            .export_ratchet_tree()
            .tls_serialize_detached()
            .map_err(|_| DsFault::Serialize)
    }

    /// The winner of `epoch`, if still in the history.
    pub fn winner(&self, epoch: u64) -> Option<&SequencedCommit> {
        self.history
            .iter()
            .map(|(c, _)| c)
            .find(|c| c.epoch == epoch)
    }

    /// Whether a Remove of `leaf` is queued for the current epoch (by the relay or by the
    /// leaf itself): another would make a commit that includes both invalid.
    pub fn remove_queued(&self, leaf: u32) -> Result<bool, DsFault> {
        let queued = self
            .group
            .queued_proposals(&self.storage)
            .map_err(|_| DsFault::Storage)?;
        Ok(queued
            .iter()
            .any(|(_, q)| matches!(q.proposal(), Proposal::Remove(r) if r.removed().u32() == leaf)))
    }

    /// Merge a validated commit: the group moves to the next epoch.
    pub fn apply(&mut self, v: ValidatedCommit) -> Result<AppliedCommit, DsFault> {
        if v.sequenced.epoch != self.epoch() {
            return Err(DsFault::StaleValidation);
        }
        let removed_keys: Vec<(u32, Vec<u8>)> = v
            .removed
            .iter()
            .filter_map(|r| {
                let leaf = self.group.leaf(LeafNodeIndex::new(r.leaf))?;
                Some((r.leaf, leaf.signature_key().as_slice().to_vec()))
            })
            .collect();
        self.group
            .merge_commit(&self.storage, v.staged)
            .map_err(|_| DsFault::Storage)?;
        self.group_info = v.group_info;
        let proposals = std::mem::take(&mut self.pending);
        for (leaf, key) in removed_keys {
            self.member_since.remove(&leaf);
            self.removed_keys.push_back((leaf, key));
        }
        while self.removed_keys.len() > self.history_len {
            self.removed_keys.pop_front();
        }
        let joined: Vec<(super::ConnId, u32)> = v
            .joiners
            .into_iter()
            .filter_map(|j| {
                self.group
                    .members()
                    .find(|m| m.signature_key == j.signature_key)
                    .map(|m| (j.conn, m.index.u32()))
            })
            .collect();
        let new_epoch = self.epoch();
        for (_, leaf) in &joined {
            self.member_since.insert(*leaf, new_epoch);
        }
        self.history.push_back((v.sequenced.clone(), proposals));
        while self.history.len() > self.history_len {
            self.history.pop_front();
        }
        Ok(AppliedCommit {
            sequenced: v.sequenced,
            new_epoch,
            joined,
            removed: v.removed,
            welcome: v.welcome,
        })
    }

    /// Sign a Remove proposal for `leaf` as external sender and queue it in the public group
    /// (so a member's commit referencing it validates). Returns the proposal message bytes.
    pub fn propose_remove(
        &mut self,
        crypto: &RustCrypto,
        relays: &RelayIdentities,
        leaf: u32,
    ) -> Result<Vec<u8>, DsFault> {
        let relay = relays
            .for_scheme(self.relay_scheme)
            .ok_or(DsFault::Proposal)?;
        let out = ExternalProposal::new_remove::<OpenMlsRustCrypto>(
            LeafNodeIndex::new(leaf),
            self.group.group_id().clone(),
            GroupEpoch::from(self.epoch()),
            &relay.signer,
            self.sender_index,
        )
        .map_err(|_| DsFault::Proposal)?;
        let bytes = out.to_bytes().map_err(|_| DsFault::Serialize)?;
        let message = MlsMessageIn::tls_deserialize_exact(&bytes).map_err(|_| DsFault::Proposal)?;
        let MlsMessageBodyIn::PublicMessage(pm) = message.extract() else {
            return Err(DsFault::Proposal);
        };
        let processed = self
            .group
            .process_message(crypto, ProtocolMessage::from(pm))
            .map_err(|_| DsFault::Proposal)?;
        let ProcessedMessageContent::ProposalMessage(queued) = processed.into_content() else {
            return Err(DsFault::Proposal);
        };
        self.group
            .add_proposal(&self.storage, *queued)
            .map_err(|_| DsFault::Storage)?;
        self.pending.push(PendingProposal::Relay {
            leaf,
            bytes: bytes.clone(),
        });
        Ok(bytes)
    }

    /// Validate a member's own proposal (sent by the member at `proposer` for `claimed_epoch`)
    /// and queue it, so a commit that references it validates. Only a Remove of the proposer's
    /// own leaf (leave) is accepted, once per epoch. Changes nothing on error.
    pub fn queue_member_proposal(
        &mut self,
        crypto: &RustCrypto,
        proposer: u32,
        claimed_epoch: u64,
        bytes: &[u8],
    ) -> Result<(), ProposalFailure> {
        let message = MlsMessageIn::tls_deserialize_exact(bytes)
            .map_err(|_| ProposalFailure::from(ProposalError::Malformed))?;
        let MlsMessageBodyIn::PublicMessage(pm) = message.extract() else {
            return Err(ProposalError::NotPublicProposal.into());
        };
        if pm.content_type() != ContentType::Proposal {
            return Err(ProposalError::NotPublicProposal.into());
        }
        let epoch = pm.epoch().as_u64();
        if epoch != claimed_epoch || pm.group_id() != self.group.group_id() {
            return Err(ProposalError::WrongEpoch.into());
        }
        if epoch != self.epoch() {
            return Err(ProposalError::WrongEpoch.into());
        }
        if !matches!(pm.sender(), Sender::Member(l) if l.u32() == proposer) {
            return Err(ProposalError::NotOwnRemove.into());
        }
        let processed = self
            .group
            .process_message(crypto, ProtocolMessage::from(pm))
            .map_err(|_| ProposalFailure::from(ProposalError::Invalid))?;
        let ProcessedMessageContent::ProposalMessage(queued) = processed.into_content() else {
            return Err(ProposalError::NotPublicProposal.into());
        };
        let own_remove =
            matches!(queued.proposal(), Proposal::Remove(r) if r.removed().u32() == proposer);
        if !own_remove {
            return Err(ProposalError::NotOwnRemove.into());
        }
        blindcall_policy::check_proposal(
            &self.params.rules(),
            &self.roster(),
            queued.sender(),
            queued.proposal(),
        )
        .map_err(|_| ProposalFailure::from(ProposalError::NotOwnRemove))?;
        if self.remove_queued(proposer)? {
            return Err(ProposalError::Duplicate.into());
        }
        self.group
            .add_proposal(&self.storage, *queued)
            .map_err(|_| ProposalFailure::from(DsFault::Storage))?;
        self.pending.push(PendingProposal::Member {
            bytes: bytes.to_vec(),
        });
        Ok(())
    }

    // ----- resume -----

    /// Check a resume proof: `signature` over `content` by the key at `leaf`, or by a key
    /// recently removed from it.
    pub fn check_resume_proof(
        &self,
        crypto: &RustCrypto,
        leaf: u32,
        content: &[u8],
        signature: &[u8],
    ) -> ProofCheck {
        let scheme = self.group.ciphersuite().signature_algorithm();
        let verifies = |key: &[u8]| {
            crypto
                .verify_signature(scheme, content, key, signature)
                .is_ok()
        };
        let occupant = self.group.leaf(LeafNodeIndex::new(leaf));
        if occupant.is_some_and(|n| verifies(n.signature_key().as_slice())) {
            return ProofCheck::Current;
        }
        if self
            .removed_keys
            .iter()
            .any(|(l, key)| *l == leaf && verifies(key))
        {
            return ProofCheck::Removed;
        }
        if occupant.is_some() {
            ProofCheck::BadSignature
        } else {
            ProofCheck::Unknown
        }
    }

    /// The epoch from which `leaf`'s current member is in the group.
    pub fn member_since(&self, leaf: u32) -> Option<u64> {
        self.member_since.get(&leaf).copied()
    }

    /// The sequenced commits of epochs `from ..= current - 1`, in order, each with the
    /// proposals sent in its epoch; `None` when the log no longer reaches back to `from` (or
    /// `from` is ahead of the group).
    pub fn commits_since(&self, from: u64) -> Option<Vec<(&SequencedCommit, &[PendingProposal])>> {
        let current = self.epoch();
        if from > current {
            return None;
        }
        if from == current {
            return Some(Vec::new());
        }
        let start = self.history.iter().position(|(c, _)| c.epoch == from)?;
        let commits: Vec<(&SequencedCommit, &[PendingProposal])> = self
            .history
            .iter()
            .skip(start)
            .map(|(c, p)| (c, p.as_slice()))
            .collect();
        // The log holds consecutive epochs ending at current - 1.
        let consecutive = commits
            .iter()
            .zip(from..)
            .all(|((c, _), epoch)| c.epoch == epoch)
            && commits
                .last()
                .is_some_and(|(c, _)| c.epoch.saturating_add(1) == current);
        consecutive.then_some(commits)
    }

    /// The proposals queued for the current epoch, in the order they were sent.
    pub fn pending(&self) -> &[PendingProposal] {
        &self.pending
    }
}
