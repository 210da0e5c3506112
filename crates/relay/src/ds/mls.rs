//! The delivery service's view of a room's MLS group: public state only.
//!
//! Everything here goes through openmls' `PublicGroup`, which holds the ratchet tree and group
//! context but no epoch secret. A commit is turned into a [`ValidatedCommit`] by
//! [`GroupState::validate_commit`] (which changes nothing) and only that type can be merged by
//! [`GroupState::apply`]: the DS never stores or sequences raw commit bytes.

use std::collections::{BTreeSet, VecDeque};

use blindcall_proto::CommitRejectReason;
use openmls::prelude::ContentType;
use openmls::prelude::{
    Credential, ExternalProposal, ExternalSender, GroupEpoch, KeyPackage, LeafNodeIndex,
    MlsMessageBodyIn, MlsMessageIn, ProcessedMessageContent, ProposalStore, ProtocolMessage,
    ProtocolVersion, PublicGroup, RatchetTreeIn, Sender, SenderExtensionIndex, SignaturePublicKey,
    SignatureScheme, StagedCommit,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::{MemoryStorage, OpenMlsRustCrypto, RustCrypto};
use tls_codec::{Deserialize as _, Serialize as _};

use super::ConnId;
use super::error::{DsFault, GroupInfoError, KeyPackageError};

/// The relay's MLS external-sender identity: the key it signs Remove proposals with.
///
/// The group creator lists [`RelayIdentity::external_sender`] in the group's `external_senders`
/// extension; the DS refuses to bootstrap a group that does not.
pub struct RelayIdentity {
    signer: SignatureKeyPair,
    credential: Credential,
}

impl std::fmt::Debug for RelayIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayIdentity")
            .field("public_key", &hex::encode(self.signer.public()))
            .finish_non_exhaustive()
    }
}

impl RelayIdentity {
    /// Wrap the relay's signature key pair (the caller generates or loads it) and a credential.
    pub fn new(signer: SignatureKeyPair, credential: Credential) -> Self {
        Self { signer, credential }
    }

    /// The entry a group creator puts in the `external_senders` extension.
    pub fn external_sender(&self) -> ExternalSender {
        ExternalSender::new(
            SignaturePublicKey::from(self.signer.to_public_vec()),
            self.credential.clone(),
        )
    }

    /// The signature public key.
    pub fn signature_public_key(&self) -> &[u8] {
        self.signer.public()
    }

    /// The credential.
    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// The signature scheme of its key.
    pub fn signature_scheme(&self) -> SignatureScheme {
        self.signer.signature_scheme()
    }

    pub(crate) fn credential_bytes(&self) -> Vec<u8> {
        // Serializing an in-memory basic credential only fails past 2^30 bytes.
        self.credential.tls_serialize_detached().unwrap_or_default()
    }
}

/// The relay's external-sender identities, one per signature scheme: a group's
/// `external_senders` entry must sign with its ciphersuite's scheme (RFC 9420 §12.1.8.1), so
/// rooms of ciphersuite 1 (Ed25519) and 2 (ECDSA P-256) each get the matching one.
#[derive(Debug)]
pub struct RelayIdentities {
    identities: Vec<RelayIdentity>,
}

impl RelayIdentities {
    /// Identities with pairwise distinct signature schemes; a later one with the scheme of an
    /// earlier one is ignored.
    pub fn new(identities: impl IntoIterator<Item = RelayIdentity>) -> Self {
        let mut out: Vec<RelayIdentity> = Vec::new();
        for id in identities {
            if !out
                .iter()
                .any(|o| o.signature_scheme() == id.signature_scheme())
            {
                out.push(id);
            }
        }
        Self { identities: out }
    }

    /// The identity that signs with `scheme`.
    pub fn for_scheme(&self, scheme: SignatureScheme) -> Option<&RelayIdentity> {
        self.identities
            .iter()
            .find(|i| i.signature_scheme() == scheme)
    }

    /// Every identity, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &RelayIdentity> {
        self.identities.iter()
    }
}

/// A validated, stored KeyPackage (single use).
#[derive(Debug, Clone)]
pub(crate) struct StoredKeyPackage {
    pub kp_ref: Vec<u8>,
    pub message: MlsMessageIn,
    pub signature_key: Vec<u8>,
}

/// Validate a KeyPackage message (signature, lifetime, version) for a group of `ciphersuite`.
pub(crate) fn validate_key_package(
    crypto: &RustCrypto,
    bytes: &[u8],
    ciphersuite: Option<openmls::prelude::Ciphersuite>,
) -> Result<StoredKeyPackage, KeyPackageError> {
    let message =
        MlsMessageIn::tls_deserialize_exact(bytes).map_err(|_| KeyPackageError::Malformed)?;
    let MlsMessageBodyIn::KeyPackage(kp_in) = message.clone().extract() else {
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
    let kp_ref = kp
        .hash_ref(crypto)
        .map_err(|_| KeyPackageError::Invalid)?
        .as_slice()
        .to_vec();
    Ok(StoredKeyPackage {
        kp_ref,
        signature_key: kp.leaf_node().signature_key().as_slice().to_vec(),
        message,
    })
}

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

/// What the DS needs to know about the committer to apply its policy.
pub(crate) struct CommitPolicy<'a> {
    /// The committer's leaf if it is a member.
    pub committer_leaf: Option<u32>,
    /// Whether the committer holds a host token.
    pub committer_is_host: bool,
    /// Whether a non-member committer may join by external commit.
    pub may_join_externally: bool,
    /// KeyPackageRef → waiting connection, for every joiner in the waiting room.
    pub waiting: &'a [(Vec<u8>, Joiner)],
    /// Leaves whose connection left.
    pub departed: &'a BTreeSet<u32>,
}

/// A commit that passed every check; the only thing [`GroupState::apply`] accepts.
#[must_use]
pub(crate) struct ValidatedCommit {
    sequenced: SequencedCommit,
    staged: StagedCommit,
    joiners: Vec<Joiner>,
    removed: Vec<u32>,
    welcome: Option<MlsMessageIn>,
    group_info: MlsMessageIn,
    external_leaf: Option<u32>,
}

/// What merging a commit changed.
pub(crate) struct AppliedCommit {
    pub sequenced: SequencedCommit,
    pub new_epoch: u64,
    /// Joiners and the leaf each now occupies.
    pub joined: Vec<(ConnId, u32)>,
    pub removed: Vec<u32>,
    pub welcome: Option<MlsMessageIn>,
    /// The leaf an external committer now occupies.
    pub external_leaf: Option<u32>,
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

/// A room's group as the DS tracks it.
pub(crate) struct GroupState {
    storage: MemoryStorage,
    group: PublicGroup,
    group_info: MlsMessageIn,
    history: VecDeque<SequencedCommit>,
    history_len: usize,
    sender_index: SenderExtensionIndex,
    /// The scheme of the relay identity listed in the group's `external_senders`.
    relay_scheme: SignatureScheme,
}

fn parse_group_info(
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
        let members: Vec<u32> = group.members().map(|m| m.index.u32()).collect();
        let [creator] = members[..] else {
            return Err(GroupInfoError::NotSingleMember);
        };
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

    /// Check a commit against the public group state and the DS policy. Changes nothing.
    pub fn validate_commit(
        &self,
        crypto: &RustCrypto,
        claimed_epoch: u64,
        commit: &[u8],
        welcome: Option<&[u8]>,
        group_info: Option<&[u8]>,
        policy: &CommitPolicy<'_>,
    ) -> Result<ValidatedCommit, Rejection> {
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
        let external = match pm.sender() {
            Sender::Member(leaf) if policy.committer_leaf == Some(leaf.u32()) => false,
            Sender::NewMemberCommit
                if policy.committer_leaf.is_none() && policy.may_join_externally =>
            {
                true
            }
            Sender::Member(_) | Sender::NewMemberCommit => {
                return Err(CommitRejectReason::SENDER_MISMATCH.into());
            }
            Sender::External(_) | Sender::NewMemberProposal => {
                return Err(CommitRejectReason::NOT_A_COMMIT.into());
            }
        };
        let processed = self
            .group
            .process_message(crypto, ProtocolMessage::from(pm.clone()))
            .map_err(|_| CommitRejectReason::INVALID)?;
        let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
            return Err(CommitRejectReason::NOT_A_COMMIT.into());
        };
        let staged = *staged;

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
            let (_, joiner) = policy
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
        let welcome = match (welcome, joiners.is_empty()) {
            (None, true) => None,
            (Some(_), true) | (None, false) => {
                return Err(CommitRejectReason::WELCOME_MISMATCH.into());
            }
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
                Some(w)
            }
        };

        // Removes: by the relay (external sender), by a host, or of a departed leaf.
        let mut removed = Vec::new();
        for rm in staged.remove_proposals() {
            let leaf = rm.remove_proposal().removed().u32();
            let allowed = matches!(rm.sender(), Sender::External(_))
                || policy.committer_is_host
                || policy.departed.contains(&leaf);
            if !allowed {
                return Err(CommitRejectReason::UNAUTHORIZED_REMOVE.into());
            }
            removed.push(leaf);
        }

        // GroupInfo of the new epoch, with the ratchet tree, signed by a member of the new tree,
        // and describing exactly the context the commit produces.
        let gi_bytes = group_info.ok_or(CommitRejectReason::BAD_GROUP_INFO)?;
        let (gi_message, scratch, _scratch_storage) =
            parse_group_info(crypto, gi_bytes).map_err(|_| CommitRejectReason::BAD_GROUP_INFO)?;
        if scratch.group_context() != staged.group_context()
            || Some(scratch.confirmation_tag()) != pm.confirmation_tag()
        {
            return Err(CommitRejectReason::BAD_GROUP_INFO.into());
        }

        let external_leaf = if external {
            Some(
                self.group
                    .ext_commit_sender_index(&staged)
                    .map_err(|_| CommitRejectReason::INVALID)?
                    .u32(),
            )
        } else {
            None
        };

        Ok(ValidatedCommit {
            sequenced: SequencedCommit { epoch, message },
            staged,
            joiners,
            removed,
            welcome,
            group_info: gi_message,
            external_leaf,
        })
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
            external_leaf: v.external_leaf,
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
}
