//! The delivery service's view of a room's MLS group: public state only.
//!
//! Everything here goes through openmls' `PublicGroup`, which holds the ratchet tree and group
//! context but no epoch secret. A commit is turned into a [`ValidatedCommit`] by
//! [`GroupState::validate_commit`] (which changes nothing, see `validate.rs`) and only that type
//! can be merged by [`GroupState::apply`]: the DS never stores or sequences raw commit bytes.
//! The call's own rules come from `blindcall-policy`, the crate every member applies too.

use std::collections::VecDeque;

use blindcall_policy::{CALL_PARAMS_EXTENSION_TYPE, CallParams, Roster, display_identity};
use openmls::prelude::{
    ContentType, ExternalProposal, GroupEpoch, KeyPackage, LeafNodeIndex, MlsMessageBodyIn,
    MlsMessageIn, ProcessedMessageContent, Proposal, ProposalStore, ProtocolMessage,
    ProtocolVersion, PublicGroup, RatchetTreeIn, Sender, SenderExtensionIndex, SignatureScheme,
};
use openmls_rust_crypto::{MemoryStorage, OpenMlsRustCrypto, RustCrypto};
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

/// A room's group as the DS tracks it.
pub(crate) struct GroupState {
    pub(super) storage: MemoryStorage,
    pub(super) group: PublicGroup,
    pub(super) group_info: MlsMessageIn,
    /// The call parameters of the group context (they cannot change: the policy refuses
    /// GroupContextExtensions proposals).
    pub(super) params: CallParams,
    history: VecDeque<SequencedCommit>,
    history_len: usize,
    sender_index: SenderExtensionIndex,
    /// The scheme of the relay identity listed in the group's `external_senders`.
    relay_scheme: SignatureScheme,
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
        let raw = group
            .group_context()
            .extensions()
            .unknown(CALL_PARAMS_EXTENSION_TYPE)
            .ok_or(GroupInfoError::CallParams)?;
        let params = CallParams::decode(&raw.0).map_err(|_| GroupInfoError::CallParams)?;
        if !params.is_host(creator_key) {
            return Err(GroupInfoError::CallParams);
        }
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
        Ok((
            Self {
                storage,
                group,
                group_info: message,
                params,
                history: VecDeque::new(),
                history_len,
                sender_index: SenderExtensionIndex::new(index),
                relay_scheme: scheme,
            },
            creator,
        ))
    }

    pub fn epoch(&self) -> u64 {
        self.group.group_context().epoch().as_u64()
    }

    pub fn ciphersuite(&self) -> openmls::prelude::Ciphersuite {
        self.group.ciphersuite()
    }

    /// Whether `leaf` is occupied in the current tree.
    pub fn has_leaf(&self, leaf: u32) -> bool {
        self.group.leaf(LeafNodeIndex::new(leaf)).is_some()
    }

    /// The members of the current epoch, with the host role from the call parameters.
    pub fn roster(&self) -> Roster {
        Roster::from_public_group(&self.group, |k| self.params.is_host(k))
    }

    pub fn group_info_bytes(&self) -> Result<Vec<u8>, DsFault> {
        self.group_info
            .tls_serialize_detached()
            .map_err(|_| DsFault::Serialize)
    }

    pub fn ratchet_tree_bytes(&self) -> Result<Vec<u8>, DsFault> {
        self.group
            .export_ratchet_tree()
            .tls_serialize_detached()
            .map_err(|_| DsFault::Serialize)
    }

    /// The winner of `epoch`, if still in the history.
    pub fn winner(&self, epoch: u64) -> Option<&SequencedCommit> {
        self.history.iter().find(|c| c.epoch == epoch)
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
        self.group
            .merge_commit(&self.storage, v.staged)
            .map_err(|_| DsFault::Storage)?;
        self.group_info = v.group_info;
        let joined = v
            .joiners
            .into_iter()
            .filter_map(|j| {
                self.group
                    .members()
                    .find(|m| m.signature_key == j.signature_key)
                    .map(|m| (j.conn, m.index.u32()))
            })
            .collect();
        self.history.push_back(v.sequenced.clone());
        while self.history.len() > self.history_len {
            self.history.pop_front();
        }
        Ok(AppliedCommit {
            sequenced: v.sequenced,
            new_epoch: self.epoch(),
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
            .map_err(|_| DsFault::Storage.into())
    }
}
